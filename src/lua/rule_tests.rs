//! Rule, callback, wall-clock timer and lock-out tests, with the fake clocks of `tests.rs`
//! (an `Instant` moved by hand and a wall-clock time set with `set_wall_clock`).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

use chrono::{Local, TimeZone};

use super::tests::{send, set, Fixture, MASTER};
use super::*;
use crate::bus::{AlarmAction, AlarmSource, Secret};

const OTHER: &str = "+447700900999";

impl Fixture {
    fn rule_with(&mut self, name: &str, source: &str, config: serde_json::Value) -> ScriptStatus {
        let path = self.write(&format!("rule_{name}"), source);
        self.host
            .load_rule(name, &path, &config, BTreeMap::new(), self.t0)
    }

    /// Writes and loads rule `name`, failing the test when it does not load.
    fn rule(&mut self, name: &str, source: &str) -> ScriptStatus {
        let status = self.rule_with(name, source, serde_json::json!({}));
        assert_eq!(status.error, None, "rule {name} should load");
        assert_eq!(status.kind, ScriptKind::Rule);
        status
    }

    fn sms_at(&mut self, from: &str, text: &str, now: Instant) -> Dispatch {
        let sms = IncomingSms {
            id: 7,
            from: from.into(),
            text: text.into(),
            time: None,
            incomplete: false,
            sender_kind: crate::bus::SenderKind::of(from),
        };
        self.host.dispatch_sms(&sms, now)
    }

    fn event(&mut self, ev: Event) -> Dispatch {
        self.host.dispatch_event(&ev, self.t0)
    }
}

fn local(day: u32, h: u32, m: u32) -> chrono::DateTime<Local> {
    match Local.with_ymd_and_hms(2026, 6, day, h, m, 0).single() {
        Some(t) => t,
        None => panic!("no such local time"),
    }
}

fn log_sms(text: &str) -> Command {
    send(OTHER, text)
}

fn example(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("rules")
        .join(format!("{name}.lua"))
}

fn input(name: &str, on: bool) -> Event {
    Event::InputChanged {
        name: name.into(),
        on,
    }
}

// ---------------------------------------------------------------------------------- filters

#[test]
fn sms_text_filter_is_exact_trimmed_and_case_insensitive() {
    let mut f = Fixture::new();
    f.rule(
        "r",
        r#"return { on = { sms = { text = "LIGHT ON" } },
            execute = function(gw, ev) gw.sms.reply(ev.type .. ":" .. ev.text) end }"#,
    );

    assert_eq!(
        f.sms(MASTER, " light on ").commands,
        vec![send(MASTER, "sms: light on ")]
    );
    assert!(f.sms(MASTER, "LIGHT ONE").commands.is_empty());
    assert!(f.sms(MASTER, "LIGHT").commands.is_empty());
}

#[test]
fn sms_from_and_pattern_filters_must_all_match() {
    let mut f = Fixture::new();
    f.rule(
        "r",
        r#"return { on = { sms = { from = {"07700 900123"}, pattern = "^GO%d" } },
            execute = function(gw, ev) gw.sms.reply("ok") end }"#,
    );

    assert_eq!(f.sms(MASTER, "GO1").commands, vec![send(MASTER, "ok")]);
    assert!(
        f.sms(MASTER, "go1").commands.is_empty(),
        "patterns are case-sensitive"
    );
    assert!(
        f.sms(OTHER, "GO1").commands.is_empty(),
        "not a listed sender"
    );
}

#[test]
fn empty_from_list_matches_nobody_and_withheld_callers_never_match() {
    let mut f = Fixture::new();
    f.rule(
        "nobody",
        r#"return { on = { sms = { from = {} } }, execute = function(gw) gw.sms.reply("x") end }"#,
    );
    f.rule(
        "listed",
        r#"return { on = { call = { from = "+447700900123" } },
            execute = function(gw, ev) gw.call.reject() end }"#,
    );

    assert!(f.sms(MASTER, "hi").commands.is_empty());
    let withheld = f.host.dispatch_call(&Call { id: 1, from: None }, f.t0);
    assert!(withheld.commands.is_empty());
    let listed = f.host.dispatch_call(
        &Call {
            id: 2,
            from: Some(MASTER.into()),
        },
        f.t0,
    );
    assert_eq!(listed.commands, vec![Command::RejectCall { call_id: 2 }]);
}

#[test]
fn rules_see_sms_after_plugins_including_handled_ones_unless_they_ask_for_unhandled() {
    let mut f = Fixture::new();
    f.load(
        "p",
        r#"return { sms = function(m) gw.sms.reply("plugin"); return m.text == "MINE" end }"#,
    );
    f.rule(
        "all",
        r#"return { on = { sms = true },
            execute = function(gw, ev) gw.sms.reply("all " .. tostring(ev.handled_by)) end }"#,
    );
    f.rule(
        "rest",
        r#"return { on = { sms = { unhandled = true } },
            execute = function(gw, ev) gw.sms.reply("rest") end }"#,
    );

    let handled = f.sms(MASTER, "MINE");
    assert_eq!(handled.handled_by.as_deref(), Some("p"));
    assert_eq!(
        handled.commands,
        vec![send(MASTER, "plugin"), send(MASTER, "all p")]
    );

    let unhandled = f.sms(MASTER, "OTHER");
    assert_eq!(
        unhandled.commands,
        vec![
            send(MASTER, "plugin"),
            send(MASTER, "all nil"),
            send(MASTER, "rest")
        ]
    );
}

#[test]
fn input_output_alarm_and_modem_triggers_filter_by_name_and_update_the_world() {
    let mut f = Fixture::new();
    f.rule(
        "r",
        r#"return { on = { input = {"door"}, output = true, alarm = {"triggered"}, modem = true },
            execute = function(gw, ev)
                local detail = ev.name or ev.state or tostring(ev.signal)
                gw.sms.send("+447700900999", ev.type .. " " .. detail .. " " .. gw.alarm.state())
            end }"#,
    );

    assert_eq!(
        f.event(input("door", false)).commands,
        vec![log_sms("input door disarmed")]
    );
    assert!(f.event(input("window", true)).commands.is_empty());
    assert_eq!(
        f.event(Event::OutputChanged {
            name: "relay".into(),
            on: true
        })
        .commands,
        vec![log_sms("output relay disarmed")]
    );
    assert!(f
        .event(Event::Alarm {
            state: AlarmState::ArmedAway,
            by: None
        })
        .commands
        .is_empty());
    assert_eq!(
        f.event(Event::Alarm {
            state: AlarmState::Triggered,
            by: Some("door".into())
        })
        .commands,
        vec![log_sms("alarm triggered triggered")]
    );
    let modem = ModemStatus {
        signal_dbm: Some(-80),
        ..ModemStatus::default()
    };
    assert_eq!(
        f.event(Event::Modem(modem)).commands,
        vec![log_sms("modem -80 triggered")]
    );
}

#[test]
fn mqtt_trigger_subscribes_at_load_and_receives_its_topic_only() {
    let mut f = Fixture::new();
    f.rule(
        "r",
        r#"return { on = { mqtt = {"cmd/light"} },
            execute = function(gw, ev) gw.mqtt.publish("echo", ev.topic .. "=" .. ev.payload) end }"#,
    );
    assert_eq!(
        f.host.take_commands(),
        vec![Command::MqttSubscribe {
            topic: "cmd/light".into()
        }]
    );

    let d = f.event(Event::Mqtt {
        topic: "cmd/light".into(),
        payload: b"ON".to_vec(),
    });
    assert_eq!(
        d.commands,
        vec![Command::MqttPublish {
            topic: "echo".into(),
            payload: b"cmd/light=ON".to_vec(),
            retain: false
        }]
    );
    assert!(f
        .event(Event::Mqtt {
            topic: "cmd/other".into(),
            payload: Vec::new()
        })
        .commands
        .is_empty());
}

#[test]
fn malformed_rules_are_refused_with_the_field_named() {
    let mut f = Fixture::new();
    let cases = [
        (
            "return { on = { sms = true } }",
            "'execute' must be a function",
        ),
        (
            "return { on = { sms = { frm = 'x' } }, execute = function() end }",
            "on.sms: unknown field 'frm'",
        ),
        (
            "return { on = { timer = 'every day' }, execute = function() end }",
            "on.timer: \"every day\"",
        ),
        (
            "return { on = {}, mode = 'fast', execute = function() end }",
            "mode 'fast'",
        ),
        (
            "return { on = { sms = { pattern = '[' } }, execute = function() end }",
            "on.sms.pattern",
        ),
        (
            "return { on = {}, exec = function() end }",
            "unknown field 'exec'",
        ),
        ("return function() end", "a rule must return a table"),
        (
            "return { on = { mqtt = 'a/#' }, execute = function() end }",
            "wildcard",
        ),
    ];
    for (source, expected) in cases {
        let status = f.rule_with("bad", source, serde_json::json!({}));
        let error = status.error.unwrap_or_default();
        assert!(
            error.starts_with("rule_bad.lua: ") && error.contains(expected),
            "{source}: {error}"
        );
    }
    assert!(f.host.rule_names().is_empty());
}

// ----------------------------------------------------------------------------------- timers

#[test]
fn every_timer_trigger_runs_execute_with_a_fake_clock() {
    let mut f = Fixture::new();
    f.rule(
        "r",
        r#"return { on = { timer = "every 5m" },
            execute = function(gw, ev) gw.sms.send("+447700900999", ev.type .. " " .. ev.timer) end }"#,
    );
    assert_eq!(f.host.poll_timeout(), Some(f.at(300)));
    assert!(f.host.handle_timeout(f.at(299)).commands.is_empty());
    assert_eq!(
        f.host.handle_timeout(f.at(300)).commands,
        vec![log_sms("timer every 5m")]
    );
    assert_eq!(f.host.poll_timeout(), Some(f.at(600)));
}

#[test]
fn at_timers_fire_daily_at_the_local_wall_clock_time() {
    let mut f = Fixture::new();
    f.host.set_wall_clock(f.t0, local(10, 21, 0));
    f.rule(
        "r",
        r#"gw.timer.at("21:30", function() gw.sms.send("+447700900999", "lua timer") end)
           return { on = { timer = "at 22:00" },
            execute = function(gw, ev) gw.sms.send("+447700900999", ev.timer) end }"#,
    );

    assert_eq!(f.host.poll_timeout(), Some(f.at(1800)));
    assert_eq!(
        f.host.handle_timeout(f.at(1800)).commands,
        vec![log_sms("lua timer")]
    );
    assert_eq!(
        f.host.handle_timeout(f.at(3600)).commands,
        vec![log_sms("at 22:00")]
    );
    // Both again the next day, at the same wall-clock times.
    assert_eq!(f.host.poll_timeout(), Some(f.at(1800 + 86_400)));
    let next_day = f.host.handle_timeout(f.at(3600 + 86_400)).commands;
    assert_eq!(next_day, vec![log_sms("lua timer"), log_sms("at 22:00")]);
}

#[test]
fn a_wall_clock_jump_reschedules_daily_timers_without_catching_up() {
    let mut f = Fixture::new();
    f.host.set_wall_clock(f.t0, local(10, 7, 0));
    f.rule(
        "r",
        r#"return { on = { timer = "at 08:00" },
            execute = function(gw) gw.sms.send("+447700900999", "status") end }"#,
    );
    assert_eq!(f.host.poll_timeout(), Some(f.at(3600)));

    // NTP sets the clock to 09:00 ten seconds later: 08:00 today is gone, the next is tomorrow.
    f.host.set_wall_clock(f.at(10), local(10, 9, 0));

    assert_eq!(f.host.poll_timeout(), Some(f.at(10 + 23 * 3600)));
    assert!(f.host.handle_timeout(f.at(3600)).commands.is_empty());
}

// ------------------------------------------------------------------------------------- data

#[test]
fn rule_data_starts_from_defaults_persists_and_survives_reload_and_restart() {
    let mut f = Fixture::new();
    let source = r#"return { on = { sms = true }, data = { count = 0, name = "x" },
        execute = function(gw, ev)
            gw.data.count = gw.data.count + 1
            gw.sms.reply(gw.data.name .. gw.data.count)
        end }"#;
    f.rule("counter", source);

    let first = f.sms(MASTER, "a");
    assert_eq!(
        first.commands,
        vec![
            Command::KvSet {
                scope: "rule:counter".into(),
                key: "count".into(),
                value: Some("1".into())
            },
            send(MASTER, "x1"),
        ]
    );
    f.rule("counter", source);
    assert_eq!(
        f.sms(MASTER, "b").commands.get(1),
        Some(&send(MASTER, "x2"))
    );

    // A restart: a new host, the data from the store.
    let mut g = Fixture::new();
    let path = g.write("counter", source);
    let saved = BTreeMap::from([("count".to_string(), "41".to_string())]);
    let status = g
        .host
        .load_rule("counter", &path, &serde_json::json!({}), saved, g.t0);
    assert_eq!(status.error, None);
    assert_eq!(
        g.sms(MASTER, "c").commands.get(1),
        Some(&send(MASTER, "x42"))
    );
}

// ------------------------------------------------------------------------------------ modes

/// A rule that starts a 10 s timer on each SMS and reports when it ends.
fn slow_rule(mode: &str) -> String {
    format!(
        r#"return {{ on = {{ sms = true }}, mode = "{mode}",
            execute = function(gw, ev)
                gw.sms.reply("start " .. ev.text)
                gw.timer.after(10, function() gw.sms.send("+447700900999", "end " .. ev.text) end)
            end }}"#
    )
}

#[test]
fn mode_single_ignores_triggers_while_a_run_is_pending() {
    let mut f = Fixture::new();
    f.rule("r", &slow_rule("single"));
    assert_eq!(f.sms(MASTER, "1").commands, vec![send(MASTER, "start 1")]);
    assert!(f.sms(MASTER, "2").commands.is_empty());
    assert_eq!(
        f.host.handle_timeout(f.at(10)).commands,
        vec![log_sms("end 1")]
    );
    let now = f.at(11);
    assert_eq!(
        f.sms_at(MASTER, "3", now).commands,
        vec![send(MASTER, "start 3")]
    );
}

#[test]
fn mode_queued_runs_a_waiting_trigger_when_the_pending_run_ends() {
    let mut f = Fixture::new();
    f.rule("r", &slow_rule("queued"));
    f.sms(MASTER, "1");
    assert!(f.sms(MASTER, "2").commands.is_empty());
    assert_eq!(
        f.host.handle_timeout(f.at(10)).commands,
        vec![log_sms("end 1"), send(MASTER, "start 2")]
    );
    assert_eq!(
        f.host.handle_timeout(f.at(20)).commands,
        vec![log_sms("end 2")]
    );
}

#[test]
fn mode_restart_cancels_the_pending_run() {
    let mut f = Fixture::new();
    f.rule("r", &slow_rule("restart"));
    f.sms(MASTER, "1");
    let now = f.at(5);
    assert_eq!(
        f.sms_at(MASTER, "2", now).commands,
        vec![send(MASTER, "start 2")]
    );
    assert!(f.host.handle_timeout(f.at(10)).commands.is_empty());
    assert_eq!(
        f.host.handle_timeout(f.at(15)).commands,
        vec![log_sms("end 2")]
    );
}

#[test]
fn mode_parallel_is_the_default_and_runs_every_trigger() {
    let mut f = Fixture::new();
    f.rule(
        "r",
        &slow_rule("parallel").replace("mode = \"parallel\",", ""),
    );
    f.sms(MASTER, "1");
    assert_eq!(f.sms(MASTER, "2").commands, vec![send(MASTER, "start 2")]);
    assert_eq!(
        f.host.handle_timeout(f.at(10)).commands,
        vec![log_sms("end 1"), log_sms("end 2")]
    );
}

// -------------------------------------------------------------------------------- callbacks

#[test]
fn ussd_callback_gets_the_result_of_its_own_request() {
    let mut f = Fixture::new();
    f.rule(
        "r",
        r#"return { on = { sms = { text = "BALANCE" } },
            execute = function(gw, ev)
                local from = ev.from
                gw.modem.ussd("*100#", function(ok, text)
                    gw.sms.send(from, (ok and "ok: " or "failed: ") .. text)
                end)
            end }"#,
    );
    let d = f.sms(MASTER, "balance");
    assert_eq!(
        d.commands,
        vec![Command::Ussd {
            id: 1,
            code: "*100#".into()
        }]
    );

    let d = f.event(Event::UssdResult {
        id: 1,
        result: Ok("Balance 5.00".into()),
    });
    assert_eq!(d.commands, vec![send(MASTER, "ok: Balance 5.00")]);
    // A second result for the same id finds nobody waiting.
    let again = f.event(Event::UssdResult {
        id: 1,
        result: Err("late".into()),
    });
    assert!(again.commands.is_empty());
}

#[test]
fn a_late_callback_for_an_old_generation_does_nothing() {
    let mut f = Fixture::new();
    let source = r#"return { on = { sms = true },
        execute = function(gw, ev)
            gw.mqtt.connect_for(60, function(ok, detail) gw.sms.send("+447700900999", detail) end)
        end }"#;
    f.rule("r", source);
    let d = f.sms(MASTER, "x");
    assert_eq!(
        d.commands,
        vec![Command::MqttConnect { id: 1, seconds: 60 }]
    );

    f.rule("r", source);
    let late = f.event(Event::MqttSession {
        id: 1,
        result: Ok("broker:1883 ID=gw".into()),
    });
    assert!(late.commands.is_empty());
    assert!(late.errors.is_empty());

    // The new generation's own request is answered.
    let d = f.sms(MASTER, "y");
    assert_eq!(
        d.commands,
        vec![Command::MqttConnect { id: 2, seconds: 60 }]
    );
    let answered = f.event(Event::MqttSession {
        id: 2,
        result: Ok("broker:1883 ID=gw".into()),
    });
    assert_eq!(answered.commands, vec![log_sms("broker:1883 ID=gw")]);
}

#[test]
fn mqtt_publish_encodes_tables_as_json_and_refuses_bad_topics() {
    let mut f = Fixture::new();
    f.host.set_mqtt_connected(Some(true));
    f.load(
        "p",
        r#"return { sms = function(m)
            local s = gw.mqtt.status()
            gw.mqtt.publish("state", { n = 1, connected = s.connected and s.enabled }, true)
            gw.mqtt.subscribe("cmd/x")
            gw.mqtt.publish("/bad", "x")
        end }"#,
    );
    let d = f.sms(MASTER, "x");
    assert_eq!(
        d.commands,
        vec![
            Command::MqttPublish {
                topic: "state".into(),
                payload: br#"{"connected":true,"n":1}"#.to_vec(),
                retain: true
            },
            Command::MqttSubscribe {
                topic: "cmd/x".into()
            },
        ]
    );
    assert_eq!(d.errors.len(), 1);
    assert!(
        d.errors[0].contains("gw.mqtt.publish: the topic \"/bad\""),
        "{:?}",
        d.errors
    );
}

#[test]
fn alarm_requests_carry_the_sender_and_a_secret_code() {
    let mut f = Fixture::new();
    f.load(
        "p",
        r#"return { sms = function(m)
            gw.alarm.arm("away")
            gw.alarm.disarm("alice", "1234")
            gw.alarm.trigger("door")
            gw.alarm.arm("night")
        end }"#,
    );
    let d = f.sms(MASTER, "x");
    assert_eq!(
        d.commands,
        vec![
            Command::Alarm {
                action: AlarmAction::ArmAway,
                source: AlarmSource::Script("plugin:p".into()),
                by: Some(MASTER.into()),
                code: None,
                reply: None,
            },
            Command::Alarm {
                action: AlarmAction::Disarm,
                source: AlarmSource::Script("plugin:p".into()),
                by: Some("alice".into()),
                code: Some(Secret("1234".into())),
                reply: None,
            },
            Command::Alarm {
                action: AlarmAction::Trigger,
                source: AlarmSource::Script("plugin:p".into()),
                by: Some("door".into()),
                code: None,
                reply: None,
            },
        ]
    );
    assert!(d.errors[0].contains("mode \"night\""), "{:?}", d.errors);
    assert_eq!(format!("{:?}", d.commands[1]).matches("1234").count(), 0);
}

// --------------------------------------------------------------------------------- lock-out

/// A plugin checking a password; a wrong one counts as a failure.
const PASSWORD_PLUGIN: &str = r#"return {
    sms = function(m)
        if gw.auth.check(m.text, "secret") then gw.sms.reply("welcome") return true end
        local locked = gw.auth.fail(m.from)
        gw.sms.reply(locked and "locked" or "wrong")
        return true
    end,
    call = function(c) gw.call.reject() return true end,
}"#;

#[test]
fn five_wrong_passwords_lock_the_sender_out_of_sms_to_every_plugin_and_rule_for_an_hour() {
    let mut f = Fixture::new();
    f.host.set_wall_clock(f.t0, local(10, 12, 0));
    f.load("p", PASSWORD_PLUGIN);
    f.rule(
        "r",
        r#"return { on = { sms = true, call = true, lockout = true },
            execute = function(gw, ev) gw.sms.send("+447700900999", ev.type .. " " .. (ev.number or "")) end }"#,
    );

    for i in 0..4 {
        let d = f.sms_at(MASTER, "guess", f.at(i * 60));
        assert_eq!(d.commands.first(), Some(&send(MASTER, "wrong")));
    }
    let d = f.sms_at(MASTER, "guess", f.at(240));
    let until = local(10, 13, 4).to_utc();
    assert_eq!(
        d.events,
        vec![Event::Lockout {
            number: MASTER.into(),
            until
        }]
    );
    assert_eq!(
        d.commands.first(),
        Some(&Command::KvSet {
            scope: LOCKOUT_SCOPE.into(),
            key: MASTER.into(),
            value: Some(format!(
                "\"{}\"",
                until.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            ))
        })
    );

    // Locked: even the right password reaches nobody. Calls still do: SMS failures block SMS
    // commands only (docs/security.md), so spoofed SMS cannot close the gate to its owner.
    let ignored = f.sms_at("07700 900123", "secret", f.at(300));
    assert_eq!(ignored, Dispatch::default());
    let call = f.host.dispatch_call(
        &Call {
            id: 9,
            from: Some(MASTER.into()),
        },
        f.at(300),
    );
    assert_eq!(call.commands[0], Command::RejectCall { call_id: 9 });
    // Others are not affected.
    assert_eq!(
        f.sms_at(OTHER, "secret", f.at(300)).commands.first(),
        Some(&send(OTHER, "welcome"))
    );

    // The lock-out event, coming back from the bus, reaches rules with on.lockout.
    let echoed = f.host.dispatch_event(
        &Event::Lockout {
            number: MASTER.into(),
            until,
        },
        f.at(300),
    );
    assert_eq!(echoed.commands, vec![log_sms(&format!("lockout {MASTER}"))]);

    // An hour after the lock-out it ends, and is deleted from the store.
    let after = f.sms_at(MASTER, "secret", f.at(240 + 3600));
    assert_eq!(
        after.commands[..2],
        [
            Command::KvSet {
                scope: LOCKOUT_SCOPE.into(),
                key: MASTER.into(),
                value: None
            },
            send(MASTER, "welcome")
        ]
    );
}

#[test]
fn failures_spread_over_more_than_an_hour_do_not_lock_out() {
    let mut f = Fixture::new();
    f.load("p", PASSWORD_PLUGIN);
    for i in 0..10 {
        let d = f.sms_at(MASTER, "guess", f.at(i * 1000));
        assert!(d.events.is_empty(), "failure {i}");
    }
    assert!(!f.host.is_locked_out(MASTER, f.at(10_000)));
}

#[test]
fn a_saved_lock_out_is_restored_and_an_ended_one_is_deleted() {
    let mut f = Fixture::new();
    f.host.set_wall_clock(f.t0, local(10, 12, 0));
    let saved = BTreeMap::from([
        (
            MASTER.to_string(),
            format!("\"{}\"", local(10, 12, 30).to_utc().to_rfc3339()),
        ),
        (
            OTHER.to_string(),
            format!("\"{}\"", local(10, 11, 0).to_utc().to_rfc3339()),
        ),
    ]);
    f.host.restore_lockouts(&saved, f.t0);

    assert!(f.host.is_locked_out(MASTER, f.at(1799)));
    assert!(!f.host.is_locked_out(MASTER, f.at(1800)));
    assert!(!f.host.is_locked_out(OTHER, f.t0));
    assert_eq!(
        f.host.take_commands(),
        vec![Command::KvSet {
            scope: LOCKOUT_SCOPE.into(),
            key: OTHER.into(),
            value: None
        }]
    );
}

#[test]
fn auth_check_compares_whole_strings_and_withheld_numbers_are_never_authorised() {
    let mut f = Fixture::new();
    f.load(
        "p",
        r#"return { sms = function(m)
            local r = {
                gw.auth.check("1234", "1234"), gw.auth.check("1234", "12345"),
                gw.auth.check("", ""), gw.auth.check(nil, "x"),
                gw.phone.withheld(nil), gw.phone.withheld("anonymous"), gw.phone.withheld(m.from),
                gw.phone.in_list(m.from, {"07700 900123"}), gw.phone.in_list(nil, {"x"}),
                gw.auth.fail(nil), gw.auth.locked(m.from),
                -- (an empty sender is not tracked and gets nothing: fail(nil) says "locked")
            }
            local s = {}
            for i = 1, 11 do s[i] = tostring(r[i]) end
            gw.sms.reply(table.concat(s, ","))
        end }"#,
    );
    assert_eq!(
        f.sms(MASTER, "x").commands,
        vec![send(
            MASTER,
            "true,false,true,false,true,true,false,true,false,true,false"
        )]
    );
}

// ---------------------------------------------------------------------------------- sandbox

#[test]
fn rules_are_sandboxed_stopped_and_disabled_like_plugins() {
    let mut f = Fixture::new();
    f.rule(
        "r",
        r#"return { on = { sms = true }, execute = function(gw, ev)
            if ev.text == "loop" then while true do end end
            if ev.text == "escape" then return os.execute("true") end
            gw.sms.reply(tostring(io) .. tostring(package) .. tostring(debug))
        end }"#,
    );
    assert_eq!(f.sms(MASTER, "x").commands, vec![send(MASTER, "nilnilnil")]);
    let d = f.sms(MASTER, "loop");
    assert!(
        d.errors[0].contains("instruction limit exceeded"),
        "{:?}",
        d.errors
    );
    let d = f.sms(MASTER, "escape");
    assert!(d.errors[0].contains("execute"), "{:?}", d.errors);
    for _ in 0..3 {
        f.sms(MASTER, "loop");
    }
    assert_eq!(
        f.host
            .rule_status("r")
            .and_then(|s| s.error)
            .map(|e| e.contains("disabled")),
        Some(true)
    );
    assert!(f.sms(MASTER, "x").commands.is_empty());
}

#[test]
fn a_runaway_string_rep_in_a_loop_is_charged_to_the_budget() {
    let mut f = Fixture::new();
    f.rule(
        "r",
        r#"n = 0
        return { on = { sms = true }, execute = function(gw, ev)
            if ev.text == "count" then return gw.sms.reply(tostring(n)) end
            for i = 1, 1e9 do n = i; local s = string.rep("x", 100000) end
        end }"#,
    );
    let d = f.sms(MASTER, "x");
    assert!(
        d.errors[0].contains("instruction limit exceeded"),
        "{:?}",
        d.errors
    );
    // Uncharged, the loop would run ~200 000 times (5 instructions each) copying 20 GB.
    let count = f.sms(MASTER, "count").commands;
    let Some(Command::SendSms { text, .. }) = count.first() else {
        panic!("no count: {count:?}");
    };
    let n: u64 = text.parse().unwrap_or(u64::MAX);
    assert!(n < 1000, "{n} iterations");
}

// --------------------------------------------------------------------------- example rules

fn load_example(f: &mut Fixture, name: &str, config: serde_json::Value) {
    let status = f
        .host
        .load_rule(name, &example(name), &config, BTreeMap::new(), f.t0);
    assert_eq!(status.error, None, "rules/{name}.lua");
}

#[test]
fn example_alarm_input_notify_texts_only_while_armed() {
    let mut f = Fixture::new();
    load_example(
        &mut f,
        "alarm_input_notify",
        serde_json::json!({ "notify": [OTHER], "inputs": ["door"] }),
    );
    assert!(f.event(input("door", true)).commands.is_empty(), "disarmed");
    f.event(Event::Alarm {
        state: AlarmState::ArmedAway,
        by: None,
    });
    assert_eq!(
        f.event(input("door", true)).commands,
        vec![log_sms("ALARM armed_away: door opened")]
    );
    assert!(f.event(input("door", false)).commands.is_empty(), "closing");
    assert!(
        f.event(input("window", true)).commands.is_empty(),
        "not watched"
    );
}

#[test]
fn example_daily_status_texts_the_state_at_eight() {
    let mut f = Fixture::new();
    f.host.set_wall_clock(f.t0, local(10, 7, 0));
    load_example(&mut f, "daily_status", serde_json::json!({ "to": OTHER }));
    assert_eq!(f.host.poll_timeout(), Some(f.at(3600)));
    assert_eq!(
        f.host.handle_timeout(f.at(3600)).commands,
        vec![log_sms(
            "STATUS gate=OFF relay=OFF door=ON alarm=disarmed signal=-71dBm"
        )]
    );
}

#[test]
fn example_sms_to_mqtt_forwards_every_sms_also_handled_ones() {
    let mut f = Fixture::new();
    f.load("p", "return { sms = function() return true end }");
    load_example(&mut f, "sms_to_mqtt", serde_json::json!({}));
    let d = f.sms(MASTER, "Hello");
    assert_eq!(
        d.commands,
        vec![Command::MqttPublish {
            topic: "sms/forward".into(),
            payload: br#"{"from":"+447700900123","handled_by":"p","text":"Hello"}"#.to_vec(),
            retain: false
        }]
    );
}

#[test]
fn example_light_command_switches_for_listed_numbers_only() {
    let mut f = Fixture::new();
    load_example(
        &mut f,
        "light_command",
        serde_json::json!({ "numbers": ["07700 900123"], "output": "relay" }),
    );
    assert_eq!(
        f.sms(MASTER, "light on").commands,
        vec![set("relay", true, None), send(MASTER, "LIGHT ON")]
    );
    assert_eq!(
        f.sms(MASTER, "LIGHT OFF").commands,
        vec![set("relay", false, None), send(MASTER, "LIGHT OFF")]
    );
    assert!(f.sms(OTHER, "LIGHT ON").commands.is_empty(), "not listed");

    // Without numbers in the config nobody may switch.
    let mut g = Fixture::new();
    load_example(&mut g, "light_command", serde_json::json!({}));
    assert!(g.sms(MASTER, "LIGHT ON").commands.is_empty());
}

#[test]
fn rules_star_loads_every_example_rule_and_each_passes_check() {
    let mut cfg = crate::config::Config::default();
    cfg.lua.rules_dir = example("x").parent().map(PathBuf::from).unwrap_or_default();
    cfg.lua.rules = vec!["*".into()];
    let names: Vec<String> = cfg.rule_paths().into_iter().map(|(n, _)| n).collect();
    assert_eq!(
        names,
        [
            "alarm_input_notify",
            "daily_status",
            "light_command",
            "sms_to_mqtt"
        ]
    );
    for (name, path) in cfg.rule_paths() {
        assert_eq!(check_rule(&path, &super::tests::opts()), Ok(()), "{name}");
    }
    // A plugin is not a rule.
    let plugin = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("plugins/call_reject_conn.lua");
    assert!(check_rule(&plugin, &super::tests::opts()).is_err());
}
