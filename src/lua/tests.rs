//! Host tests: dispatch, reload, timers, sandbox and budgets. Time is a fake clock: an
//! `Instant` taken once and moved by hand.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::*;
use crate::bus::{AlarmState, OutputAction};

pub(super) struct Fixture {
    pub(super) dir: tempfile::TempDir,
    pub(super) host: LuaHost,
    pub(super) t0: Instant,
}

pub(super) fn opts() -> HostOptions {
    HostOptions {
        memory_limit_kb: 4096,
        instruction_limit: 1_000_000,
        country_code: Some("44".into()),
        // Far: a debug build running tests in parallel is slow, and these tests are about
        // the instruction budget (`hostile_tests` check the deadline).
        call_deadline_ms: 20_000,
        ..HostOptions::default()
    }
}

pub(super) fn world() -> World {
    World {
        outputs: BTreeMap::from([("gate".to_string(), false), ("relay".to_string(), false)]),
        inputs: BTreeMap::from([("door".to_string(), true)]),
        modem: ModemStatus {
            imei: Some("356938035643809".into()),
            signal_dbm: Some(-71),
            registered: true,
            ..ModemStatus::default()
        },
        ..World::default()
    }
}

impl Fixture {
    pub(super) fn new() -> Self {
        Self::with(opts())
    }

    pub(super) fn with(opts: HostOptions) -> Self {
        let dir = match tempfile::tempdir() {
            Ok(d) => d,
            Err(e) => panic!("tempdir: {e}"),
        };
        Self {
            dir,
            host: LuaHost::new(opts, world()),
            t0: Instant::now(),
        }
    }

    pub(super) fn write(&self, name: &str, source: &str) -> PathBuf {
        let path = self.dir.path().join(format!("{name}.lua"));
        if let Err(e) = std::fs::write(&path, source) {
            panic!("write {name}: {e}");
        }
        path
    }

    /// Writes and loads plugin `name`, failing the test when it does not load.
    pub(super) fn load(&mut self, name: &str, source: &str) -> ScriptStatus {
        let status = self.try_load(name, source);
        assert_eq!(status.error, None, "{name} should load");
        status
    }

    pub(super) fn try_load(&mut self, name: &str, source: &str) -> ScriptStatus {
        let path = self.write(name, source);
        self.host.load_plugin(
            name,
            &path,
            &serde_json::json!({"relay": "relay"}),
            BTreeMap::new(),
            self.t0,
        )
    }

    pub(super) fn sms(&mut self, from: &str, text: &str) -> Dispatch {
        let sms = IncomingSms {
            id: 12,
            from: from.into(),
            text: text.into(),
            time: None,
            incomplete: false,
            sender_kind: crate::bus::SenderKind::of(from),
        };
        self.host.dispatch_sms(&sms, self.t0)
    }

    pub(super) fn at(&self, secs: u64) -> Instant {
        self.t0 + Duration::from_secs(secs)
    }
}

pub(super) fn send(to: &str, text: &str) -> Command {
    Command::SendSms {
        to: to.into(),
        text: text.into(),
        request_id: None,
        priority: false,
    }
}

pub(super) fn set(name: &str, on: bool, secs: Option<u64>) -> Command {
    Command::SetOutput {
        name: name.into(),
        action: OutputAction::Set {
            on,
            duration: secs.map(Duration::from_secs),
        },
    }
}

pub(super) const MASTER: &str = "+447700900123";

#[test]
fn first_plugin_that_handles_an_sms_wins_and_false_passes_on() {
    let mut f = Fixture::new();
    f.load(
        "a",
        r#"return { sms = function(m) gw.sms.reply("a saw " .. m.text); return false end }"#,
    );
    f.load(
        "b",
        r#"return { sms = function(m) gw.sms.reply("b handled"); return true end }"#,
    );
    f.load(
        "c",
        r#"return { sms = function(m) gw.sms.reply("c must not run"); return true end }"#,
    );
    f.host.set_order(&["a".into(), "b".into(), "c".into()]);

    let d = f.sms(MASTER, "STATUS");

    assert_eq!(d.handled_by.as_deref(), Some("b"));
    assert_eq!(
        d.commands,
        vec![send(MASTER, "a saw STATUS"), send(MASTER, "b handled")]
    );
    assert!(d.errors.is_empty(), "{:?}", d.errors);
}

#[test]
fn set_order_decides_who_sees_a_message_first() {
    let mut f = Fixture::new();
    f.load("a", "return { sms = function() return true end }");
    f.load("b", "return { sms = function() return true end }");
    f.host.set_order(&["b".into(), "a".into()]);

    assert_eq!(
        f.host.plugin_names(),
        vec!["b".to_string(), "a".to_string()]
    );
    assert_eq!(f.sms(MASTER, "x").handled_by.as_deref(), Some("b"));
}

#[test]
fn nobody_handles_when_every_plugin_passes() {
    let mut f = Fixture::new();
    f.load(
        "a",
        "return { sms = function() return nil end, call = function() return false end }",
    );
    assert_eq!(f.sms(MASTER, "x").handled_by, None);
}

#[test]
fn commands_are_emitted_in_the_order_the_script_issues_them() {
    let mut f = Fixture::new();
    f.load(
        "p",
        r#"return { sms = function(m)
            gw.output.on("relay")
            gw.sms.send("07700 900999", "relay is " .. tostring(gw.output.get("relay")))
            gw.output.pulse("gate", 3)
            gw.output.toggle("relay")
            gw.output.set("gate", false, 10)
            gw.store.set("count", 1)
            return true
        end }"#,
    );

    let d = f.sms(MASTER, "GO");

    assert!(d.errors.is_empty(), "{:?}", d.errors);
    assert_eq!(
        d.commands,
        vec![
            set("relay", true, None),
            send("+447700900999", "relay is true"),
            set("gate", true, Some(3)),
            Command::SetOutput {
                name: "relay".into(),
                action: OutputAction::Toggle
            },
            set("gate", false, Some(10)),
            Command::KvSet {
                scope: "plugin:p".into(),
                key: "count".into(),
                value: Some("1".into())
            },
        ]
    );
}

#[test]
fn call_hook_rejects_and_replies_to_the_caller() {
    let mut f = Fixture::new();
    f.load(
        "p",
        r#"return { call = function(c)
            if gw.phone.same_last_digits(c.from, "07700900123", 8) then
                gw.call.reject()
                gw.sms.reply("gate opened for call " .. c.id)
                return true
            end
        end }"#,
    );

    let d = f.host.dispatch_call(
        &Call {
            id: 3,
            from: Some(MASTER.into()),
        },
        f.t0,
    );

    assert_eq!(d.handled_by.as_deref(), Some("p"));
    assert_eq!(
        d.commands,
        vec![
            Command::RejectCall { call_id: 3 },
            send(MASTER, "gate opened for call 3")
        ]
    );
}

#[test]
fn reply_without_a_sender_is_an_error_with_file_and_line() {
    let mut f = Fixture::new();
    f.load(
        "p",
        "return {\n  call = function(c)\n    gw.sms.reply('hi')\n  end }",
    );

    let d = f.host.dispatch_call(&Call { id: 4, from: None }, f.t0);

    assert!(d.commands.is_empty());
    assert_eq!(d.errors.len(), 1);
    assert!(
        d.errors[0].starts_with("p.lua:3: gw.sms.reply"),
        "{:?}",
        d.errors
    );
}

#[test]
fn unknown_output_is_a_lua_error_with_file_and_line() {
    let mut f = Fixture::new();
    f.load(
        "p",
        "return { sms = function()\n gw.output.on('nope')\n return true end }",
    );

    let d = f.sms(MASTER, "x");

    assert!(d.commands.is_empty());
    assert_eq!(d.handled_by, None);
    assert!(
        d.errors
            .iter()
            .any(|e| e.starts_with("p.lua:2: unknown output 'nope'")),
        "{:?}",
        d.errors
    );
}

#[test]
fn reload_with_a_syntax_error_keeps_the_old_version_and_reports_file_line() {
    let mut f = Fixture::new();
    f.load(
        "p",
        "return { sms = function() gw.sms.reply('v1') return true end }",
    );

    let status = f.try_load("p", "return {\n  sms = function( gw.sms.reply('v2') end }");

    let error = status.error.unwrap_or_default();
    assert!(error.starts_with("p.lua:2:"), "{error}");
    assert_eq!(status.generation, 1);
    assert_eq!(f.sms(MASTER, "x").commands, vec![send(MASTER, "v1")]);
}

#[test]
fn reload_of_a_script_that_fails_at_the_top_or_returns_no_table_keeps_the_old_one() {
    let mut f = Fixture::new();
    f.load(
        "p",
        "return { sms = function() gw.sms.reply('v1') return true end }",
    );

    let runtime = f.try_load("p", "gw.output.on('relay')\nerror('boom')");
    let not_table = f.try_load("p", "return 42");
    let bad_hook = f.try_load("p", "return { sms = 'STATUS' }");

    assert!(runtime
        .error
        .unwrap_or_default()
        .starts_with("p.lua:2: boom"));
    assert!(not_table
        .error
        .unwrap_or_default()
        .contains("must return a table"));
    assert!(bad_hook
        .error
        .unwrap_or_default()
        .contains("'sms' must be a function"));
    // The failed load's command was dropped with it.
    assert_eq!(f.sms(MASTER, "x").commands, vec![send(MASTER, "v1")]);
}

#[test]
fn reload_carries_store_over_and_cancels_old_timers() {
    let mut f = Fixture::new();
    let path = f.write("p", "return { init = function() gw.store.set('k', {n = 1}) gw.timer.after(5, function() gw.sms.send('123', 'old timer') end) end }");
    let seeded = BTreeMap::from([("seed".to_string(), "\"from db\"".to_string())]);
    let status = f
        .host
        .load_plugin("p", &path, &serde_json::Value::Null, seeded, f.t0);
    assert_eq!(status.error, None);
    assert_eq!(f.host.poll_timeout(), Some(f.at(5)));
    f.host.take_commands();

    let reloaded = f.load(
        "p",
        "return { sms = function() gw.sms.reply(gw.store.get('k').n .. ' ' .. gw.store.get('seed')) return true end }",
    );

    assert_eq!(reloaded.generation, 2);
    assert_eq!(f.host.poll_timeout(), None);
    assert!(f.host.handle_timeout(f.at(10)).commands.is_empty());
    assert_eq!(f.sms(MASTER, "x").commands, vec![send(MASTER, "1 from db")]);
}

#[test]
fn timers_fire_via_handle_timeout_with_a_fake_clock() {
    let mut f = Fixture::new();
    f.load(
        "p",
        r#"local ticks = 0
        local every
        return { init = function()
            gw.timer.after(5, function() gw.sms.send("+441", "once") end)
            every = gw.timer.every(2, function()
                ticks = ticks + 1
                gw.sms.send("+442", "tick " .. ticks)
                if ticks == 3 then gw.timer.cancel(every) end
            end)
        end }"#,
    );

    assert_eq!(f.host.poll_timeout(), Some(f.at(2)));
    assert!(f.host.handle_timeout(f.at(1)).commands.is_empty());
    assert_eq!(
        f.host.handle_timeout(f.at(2)).commands,
        vec![send("+442", "tick 1")]
    );
    assert_eq!(f.host.poll_timeout(), Some(f.at(4)));
    assert_eq!(
        f.host.handle_timeout(f.at(4)).commands,
        vec![send("+442", "tick 2")]
    );
    // Both due at 5 and 6: earliest first.
    assert_eq!(
        f.host.handle_timeout(f.at(6)).commands,
        vec![send("+441", "once"), send("+442", "tick 3")]
    );
    assert_eq!(f.host.poll_timeout(), None);
}

#[test]
fn store_is_seeded_readable_after_write_and_deletes_on_nil() {
    let mut f = Fixture::new();
    let path = f.write(
        "p",
        r#"return { sms = function(m)
            if m.text == "bad" then gw.store.set("f", function() end) end
            gw.store.set("list", {1, 2, "x"})
            gw.store.set("seed", nil)
            gw.sms.reply(tostring(gw.store.get("seed")) .. " " .. #gw.store.get("list"))
            return true
        end }"#,
    );
    let seeded = BTreeMap::from([("seed".to_string(), "true".to_string())]);
    f.host
        .load_plugin("p", &path, &serde_json::Value::Null, seeded, f.t0);

    let d = f.sms(MASTER, "ok");
    let bad = f.sms(MASTER, "bad");

    assert_eq!(
        d.commands,
        vec![
            Command::KvSet {
                scope: "plugin:p".into(),
                key: "list".into(),
                value: Some("[1,2,\"x\"]".into())
            },
            Command::KvSet {
                scope: "plugin:p".into(),
                key: "seed".into(),
                value: None
            },
            send(MASTER, "nil 3"),
        ]
    );
    assert!(
        bad.errors
            .iter()
            .any(|e| e.starts_with("p.lua:2: gw.store.set('f')")),
        "{:?}",
        bad.errors
    );
}

#[test]
fn config_world_modem_and_phone_are_visible_to_scripts() {
    let mut f = Fixture::new();
    f.load(
        "p",
        r#"return { sms = function(m)
            gw.sms.reply(table.concat({
                gw.config.relay, tostring(gw.input.get("door")), table.concat(gw.output.names(), ","),
                gw.modem.imei(), tostring(gw.modem.signal()), tostring(gw.modem.registered()),
                gw.phone.normalise("07700 900123"), tostring(gw.phone.same("07700900123", m.from)),
            }, " "))
            return true
        end }"#,
    );

    let d = f.sms(MASTER, "x");

    assert!(d.errors.is_empty(), "{:?}", d.errors);
    assert_eq!(
        d.commands,
        vec![send(
            MASTER,
            "relay true gate,relay 356938035643809 -71 true +447700900123 true"
        )]
    );
}

#[test]
fn events_update_the_world_and_reach_every_plugins_hooks() {
    let mut f = Fixture::new();
    let hooks = r#"return {
        input = function(ev) gw.sms.send("+441", NAME .. " input " .. ev.name .. " " .. tostring(ev.on)) end,
        output = function(ev) gw.sms.send("+441", NAME .. " output " .. ev.name .. " " .. tostring(gw.output.get(ev.name))) end,
        call_ended = function(c) gw.sms.send("+441", NAME .. " ended " .. c.id) end,
    }"#;
    f.load("a", &format!("NAME = 'a' {hooks}"));
    f.load("b", &format!("NAME = 'b' {hooks}"));

    let input = f.host.dispatch_event(
        &Event::InputChanged {
            name: "door".into(),
            on: false,
        },
        f.t0,
    );
    let output = f.host.dispatch_event(
        &Event::OutputChanged {
            name: "relay".into(),
            on: true,
        },
        f.t0,
    );
    let ended = f
        .host
        .dispatch_event(&Event::CallEnded(Call { id: 9, from: None }), f.t0);

    assert_eq!(
        input.commands,
        vec![
            send("+441", "a input door false"),
            send("+441", "b input door false")
        ]
    );
    assert_eq!(
        output.commands,
        vec![
            send("+441", "a output relay true"),
            send("+441", "b output relay true")
        ]
    );
    assert_eq!(
        ended.commands,
        vec![send("+441", "a ended 9"), send("+441", "b ended 9")]
    );
}

#[test]
fn alarm_changes_reach_every_plugins_alarm_hook_with_state_and_by() {
    let mut f = Fixture::new();
    let hook = r#"return {
        alarm = function(ev)
            gw.sms.send("+441", NAME .. " " .. ev.state .. " " .. tostring(ev.by) .. " " .. gw.alarm.state())
        end,
    }"#;
    f.load("a", &format!("NAME = 'a' {hook}"));
    f.load("b", &format!("NAME = 'b' {hook}"));

    let armed = f.host.dispatch_event(
        &Event::Alarm {
            state: AlarmState::ArmedAway,
            by: Some("john".into()),
        },
        f.t0,
    );
    let pending = f.host.dispatch_event(
        &Event::Alarm {
            state: AlarmState::Pending,
            by: None,
        },
        f.t0,
    );

    assert!(armed.errors.is_empty(), "{:?}", armed.errors);
    assert_eq!(
        armed.commands,
        vec![
            send("+441", "a armed_away john armed_away"),
            send("+441", "b armed_away john armed_away")
        ]
    );
    assert_eq!(
        pending.commands,
        vec![
            send("+441", "a pending nil pending"),
            send("+441", "b pending nil pending")
        ]
    );
}

#[test]
fn a_plugin_alarm_hook_that_is_not_a_function_is_a_load_error() {
    let mut f = Fixture::new();
    let status = f.try_load("p", "return { alarm = 3 }");
    let error = status.error.unwrap_or_default();
    assert!(error.contains("'alarm' must be a function"), "{error}");
}

#[test]
fn modem_event_updates_what_gw_modem_reports() {
    let mut f = Fixture::new();
    f.load("p", "return { sms = function() gw.sms.reply(tostring(gw.modem.signal()) .. ' ' .. tostring(gw.modem.operator())) return true end }");
    let status = ModemStatus {
        operator: Some("EE".into()),
        signal_dbm: None,
        ..ModemStatus::default()
    };

    f.host.dispatch_event(&Event::Modem(status), f.t0);

    assert_eq!(f.sms(MASTER, "x").commands, vec![send(MASTER, "nil EE")]);
}

#[test]
fn sandbox_escapes_are_refused() {
    let escapes = [
        "io.open('/etc/passwd')",
        "os.execute('true')",
        "os.getenv('HOME')",
        "os.remove('/tmp/x')",
        "os.exit(1)",
        "assert(load(string.char(27) .. 'LuaT\\0\\25\\147\\r\\n\\26\\n'))",
        "assert(load(string.char(27) .. 'Lua', 'x', 'b'))",
        "debug.getinfo(1)",
        "string.dump(function() end)",
        "('').dump(function() end)",
        "require('os')",
        "package.loadlib('libc.so.6', 'system')",
        "dofile('/etc/passwd')",
        "loadfile('/etc/passwd')",
        "collectgarbage('stop')",
    ];
    for escape in escapes {
        let mut f = Fixture::new();
        f.load(
            "p",
            &format!("return {{ sms = function() {escape} return true end }}"),
        );

        let d = f.sms(MASTER, "x");

        assert_eq!(d.handled_by, None, "{escape} ran");
        assert!(
            d.errors.first().is_some_and(|e| e.starts_with("p.lua:1:")),
            "{escape}: {:?}",
            d.errors
        );
    }
}

#[test]
fn text_load_still_works_in_the_sandbox() {
    let mut f = Fixture::new();
    f.load(
        "p",
        "return { sms = function(m) gw.sms.reply(load('return 1 + 1')() .. '') return true end }",
    );
    assert_eq!(f.sms(MASTER, "x").commands, vec![send(MASTER, "2")]);
}

/// Loads a plugin whose `sms` hook runs `body` for "bomb" and answers "ok" otherwise, checks
/// the bomb ends with an error and that the next SMS is handled normally.
fn assert_stopped_and_next_dispatch_works(body: &str, expected: &str) {
    let mut f = Fixture::new();
    f.load(
        "p",
        &format!("return {{ sms = function(m)\n if m.text == 'bomb' then {body} end\n gw.sms.reply('ok') return true end }}"),
    );

    let d = f.sms(MASTER, "bomb");
    let next = f.sms(MASTER, "hello");

    assert!(
        d.errors
            .first()
            .is_some_and(|e| e.starts_with("p.lua") && e.contains(expected)),
        "{body}: {:?}",
        d.errors
    );
    assert_eq!(next.commands, vec![send(MASTER, "ok")], "{body}");
    assert!(next.errors.is_empty(), "{body}: {:?}", next.errors);
}

#[test]
fn infinite_loop_is_stopped_and_the_next_dispatch_works() {
    assert_stopped_and_next_dispatch_works("while true do end", "instruction limit exceeded");
}

#[test]
fn loop_of_pcalls_around_an_infinite_loop_is_stopped() {
    assert_stopped_and_next_dispatch_works(
        "while true do pcall(function() while true do end end) end",
        "instruction limit exceeded",
    );
}

#[test]
fn infinite_loop_in_a_coroutine_is_stopped() {
    assert_stopped_and_next_dispatch_works(
        "while true do coroutine.resume(coroutine.create(function() while true do end end)) end",
        "instruction limit exceeded",
    );
}

#[test]
fn huge_string_rep_is_stopped() {
    // 8 MB: within the instruction budget `string.rep` is charged, beyond the 4 MiB limit.
    assert_stopped_and_next_dispatch_works("local s = string.rep('x', 8e6)", "memory");
    // 1 GB is refused by the budget before anything is allocated.
    assert_stopped_and_next_dispatch_works(
        "local s = string.rep('x', 1e9)",
        "instruction limit exceeded",
    );
}

#[test]
fn growing_table_is_stopped() {
    assert_stopped_and_next_dispatch_works(
        "local t = {} while true do t[#t + 1] = ('x'):rep(1000) .. #t end",
        "memory",
    );
}

#[test]
fn a_script_failing_five_times_in_a_row_is_disabled() {
    let mut f = Fixture::new();
    f.load("bad", "return { sms = function() error('broken') end }");
    f.load(
        "good",
        "return { sms = function() gw.sms.reply('good') return true end }",
    );
    f.host.set_order(&["bad".into(), "good".into()]);

    let results: Vec<Dispatch> = (0..5).map(|_| f.sms(MASTER, "x")).collect();
    let after = f.sms(MASTER, "x");

    assert!(results
        .iter()
        .all(|d| d.errors.len() == 1 && d.handled_by.as_deref() == Some("good")));
    assert!(results[..4].iter().all(|d| d.statuses.is_empty()));
    assert_eq!(results[4].statuses.len(), 1);
    assert!(results[4].statuses[0]
        .error
        .as_deref()
        .is_some_and(|e| e.contains("disabled")));
    assert!(after.errors.is_empty(), "a disabled script is not called");
    assert!(f.host.status("bad").and_then(|s| s.error).is_some());
}

#[test]
fn a_success_resets_the_failure_count() {
    let mut f = Fixture::new();
    f.load(
        "p",
        "return { sms = function(m) if m.text == 'bad' then error('no') end return true end }",
    );

    for _ in 0..4 {
        f.sms(MASTER, "bad");
    }
    f.sms(MASTER, "good");
    for _ in 0..4 {
        f.sms(MASTER, "bad");
    }

    assert_eq!(f.host.status("p").and_then(|s| s.error), None);
    assert_eq!(f.sms(MASTER, "good").handled_by.as_deref(), Some("p"));
}

#[test]
fn unload_stops_a_plugin_and_its_timers() {
    let mut f = Fixture::new();
    f.load("p", "return { init = function() gw.timer.every(1, function() gw.sms.send('1', 'x') end) end, sms = function() return true end }");

    f.host.unload("p");

    assert_eq!(f.host.poll_timeout(), None);
    assert!(f.host.handle_timeout(f.at(3)).commands.is_empty());
    assert_eq!(f.sms(MASTER, "x").handled_by, None);
}

#[test]
fn call_commands_in_a_timer_need_an_explicit_id() {
    let mut f = Fixture::new();
    f.load(
        "p",
        "return { call = function(c)\n gw.timer.after(5, function() gw.call.hangup(c.id) gw.call.hangup() end)\n return true end }",
    );
    f.host.dispatch_call(&Call { id: 7, from: None }, f.t0);

    let d = f.host.handle_timeout(f.at(5));

    assert_eq!(d.commands, vec![Command::HangUp { call_id: 7 }]);
    assert!(
        d.errors
            .first()
            .is_some_and(|e| e.starts_with("p.lua:2: gw.call.hangup")),
        "{:?}",
        d.errors
    );
}

#[test]
fn check_script_reports_file_and_line() {
    let f = Fixture::new();
    let good = f.write("good", "return { sms = function() return gw.config.x end }");
    let bad = f.write("bad", "return {\n\n sms = functio() end }");

    assert_eq!(check_script(&good, &opts()), Ok(()));
    let error = check_script(&bad, &opts()).err().unwrap_or_default();
    assert!(error.starts_with("bad.lua:3:"), "{error}");
}

#[test]
fn endless_recursion_is_stopped() {
    assert_stopped_and_next_dispatch_works("local function f() return 1 + f() end f()", "p.lua");
}

#[test]
fn the_complete_plugin_in_the_docs_answers_status_to_the_master_only() {
    let mut f = Fixture::new();
    let docs = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/lua-api.md"))
        .unwrap_or_default();
    let example = docs
        .split("-- plugins/status.lua")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .unwrap_or_default();
    let path = f.write("status", &format!("--{example}"));
    let config = serde_json::json!({"master": "07700900123"});
    let status = f
        .host
        .load_plugin("status", &path, &config, BTreeMap::new(), f.t0);
    assert_eq!(status.error, None);

    let master = f.sms(MASTER, "status.");
    let stranger = f.sms("+447700900999", "STATUS");

    assert_eq!(master.commands, vec![send(MASTER, "RELAY OPEN INPUT LOW")]);
    assert_eq!(stranger.handled_by.as_deref(), Some("status"));
    assert!(stranger.commands.is_empty());
}

#[test]
fn sms_time_reaches_the_hook_as_utc_rfc3339() {
    let mut f = Fixture::new();
    f.load(
        "p",
        "return { sms = function(m) gw.sms.reply(m.time .. ' ' .. m.id) return true end }",
    );
    let time = chrono::DateTime::parse_from_rfc3339("2026-03-01T11:15:00+01:00").ok();
    let sms = IncomingSms {
        id: 12,
        from: MASTER.into(),
        text: "x".into(),
        time,
        incomplete: false,
        sender_kind: crate::bus::SenderKind::of(MASTER),
    };

    let d = f.host.dispatch_sms(&sms, f.t0);

    assert_eq!(d.commands, vec![send(MASTER, "2026-03-01T10:15:00Z 12")]);
}
