//! Hostile scripts: each shape that used to run unbounded (a C function is one VM
//! instruction, a finalizer runs with hooks off, API calls copy data out of the state) ends
//! with an error naming the limit, and the next message is handled normally. Their time to
//! error is measured by `cargo bench --bench lua_hostile`.

use std::collections::BTreeMap;

use super::tests::{send, Fixture, MASTER};
use super::*;

/// Either budget: which one a shape meets first depends on the build (debug is slower).
const BUDGET: &str = "instruction limit exceeded (lua.instruction_limit|call deadline exceeded (lua.call_deadline_ms";

/// Runs `body` in a plugin's `sms` hook, checks that it ends with an error containing one of
/// the `|`-separated `expected` texts, and that the next SMS is handled normally.
fn stopped(body: &str, expected: &str) {
    let mut f = Fixture::with(HostOptions {
        call_deadline_ms: 300,
        ..super::tests::opts()
    });
    f.load(
        "p",
        &format!("return {{ sms = function(m)\n if m.text == 'bomb' then {body} end\n gw.sms.reply('ok') return true end }}"),
    );
    let d = f.sms(MASTER, "bomb");
    let next = f.sms(MASTER, "hello");
    assert!(
        d.errors
            .first()
            .is_some_and(|e| e.starts_with("p.lua") && expected.split('|').any(|x| e.contains(x))),
        "{body}: {:?}",
        d.errors
    );
    assert_eq!(next.commands, vec![send(MASTER, "ok")], "{body}");
    assert!(next.errors.is_empty(), "{body}: {:?}", next.errors);
}

#[test]
fn backtracking_patterns_end_with_the_instruction_limit() {
    for body in [
        r#"local s = ("a"):rep(40000) s:find(".-.-.-.-.-x")"#,
        // The stock plugins' trim, on a 39 000-character text whose spaces do not reach the end.
        r#"local s = "x" .. (" "):rep(39000) .. "x" s:match("^%s*(.-)%s*$")"#,
        r#"local s = "x" .. (" "):rep(39000) .. "x" s:gsub("^%s*(.-)%s*$", "%1")"#,
        r#"local s = ("a"):rep(40000) for w in s:gmatch(".-.-.-x") do end"#,
        r#"local s = ("ab"):rep(20000) s:find("(.-)(.-)(.-)%3%2%1x")"#,
        r#"local s = ("("):rep(40000) s:find("%b()x")"#,
        // Many cheap matches add up too.
        r#"while true do ("a"):rep(100):find("a-b") end"#,
    ] {
        stopped(body, BUDGET);
    }
}

#[test]
fn patterns_give_the_same_results_as_the_c_library() {
    let cases = [
        r#"return string.find("hello world", "o w")"#,
        r#"return string.find("hello world", "l+")"#,
        r#"return string.find("hello", "l", -2)"#,
        r#"return string.find("hello", "", 10)"#,
        r#"return string.find("hello", "", 6)"#,
        r#"return string.find("a.b", ".", 1, true)"#,
        r#"return string.find("  key = value  ", "^%s*(%w+)%s*=%s*(.-)%s*$")"#,
        r#"return string.match("  trim me  ", "^%s*(.-)%s*$")"#,
        r#"return string.match("2024-05-06", "(%d+)-(%d+)-(%d+)")"#,
        r#"return string.match("hello", "()ll()")"#,
        r#"return string.match("THE (quick) fox", "%((%a+)%)")"#,
        r#"return string.match("f(a(b)c)d", "%b()")"#,
        r#"return string.match("THE (quick) fox", "%f[%a]%a+", 5)"#,
        r#"return string.match("abc", "[^%a]")"#,
        r#"return string.match("a]b", "[]]")"#,
        r#"return string.match("x-y", "[a-z%-]+")"#,
        r#"return string.match("hello", "(h)(e)(l)(l)(o)")"#,
        r#"return string.match("abab", "(ab)%1")"#,
        r#"return string.match("a+b", "a%+b")"#,
        r#"return string.match("hello", "h?ello")"#,
        r#"return string.match("\t\v x", "^%s+()")"#,
        r#"return string.match("key=val", "^(%w+)=(%w*)$")"#,
        r#"return string.match(12345, "%d%d")"#,
        r#"return string.gsub("hello world", "o", "0")"#,
        r#"return string.gsub("hello world", "(%w+)", "<%1>")"#,
        r#"return string.gsub("hello world", "%w+", "%0 %0", 1)"#,
        r#"return string.gsub("abc", "", "-")"#,
        r#"return string.gsub("hello", "l", {l = "L"})"#,
        r#"return string.gsub("hello", "(l)", function(c) return nil end)"#,
        r#"return string.gsub("$name is $age", "%$(%w+)", {name = "Ann", age = 7})"#,
        r#"return string.gsub("abc", "%w", "%%")"#,
        r#"return string.gsub("hello", "^h", "H")"#,
        r#"return string.gsub("a,b,,c", ",", ";", 2)"#,
        r#"return string.gsub("x", "x", 5)"#,
        r#"local t = {} for k, v in string.gmatch("a=1, b=2", "(%w+)=(%w+)") do t[#t+1] = k .. v end return table.concat(t, ",")"#,
        r#"local t = {} for w in ("one two  three"):gmatch("%a+") do t[#t+1] = w end return table.concat(t, "|")"#,
        r#"local t = {} for w in ("abc"):gmatch("") do t[#t+1] = "." end return #t"#,
        r#"local t = {} for a, b in ("abcd"):gmatch("()(.)", 3) do t[#t+1] = a .. b end return table.concat(t)"#,
        r#"return pcall(string.find, "a", "%")"#,
        r#"return pcall(string.find, "a", "[a")"#,
        r#"return pcall(string.find, "a", "(a")"#,
        r#"return pcall(string.find, "a", "a)")"#,
        r#"return pcall(string.gsub, "a", "a", "%2")"#,
        r#"return pcall(string.match, "a", "%f")"#,
    ];
    let sandbox = match sandbox::new_state(HostOptions::default().limits()) {
        Ok((lua, _)) => lua,
        Err(e) => panic!("sandbox: {e}"),
    };
    let reference = Lua::new();
    let run = |lua: &Lua, code: &str| -> String {
        match lua.load(code).eval::<MultiValue>() {
            Ok(values) => values
                .iter()
                .map(|v| match v {
                    Value::String(s) => format!("{:?}", s.to_string_lossy()),
                    Value::Error(_) => "error".to_string(),
                    other => format!("{other:?}").chars().take(40).collect(),
                })
                .collect::<Vec<_>>()
                .join(", "),
            Err(_) => "error".to_string(),
        }
    };
    for code in cases {
        let theirs = run(&reference, code);
        let ours = run(&sandbox, code);
        // An error is an error, whatever its wording.
        let same = ours == theirs
            || (code.starts_with("return pcall") && ours.starts_with("Boolean(false)"));
        assert!(same, "{code}\n  C library: {theirs}\n  ours:      {ours}");
    }
}

#[test]
fn string_rep_is_charged_by_count_and_size() {
    stopped(r#"local s = string.rep("", 2^60)"#, BUDGET);
    stopped(r#"local s = string.rep("", math.maxinteger, "")"#, BUDGET);
    stopped(r#"while true do local s = string.rep("", 1e5) end"#, BUDGET);
}

#[test]
fn table_functions_over_huge_ranges_are_refused() {
    for body in [
        "table.move({}, 1, math.maxinteger, 2)",
        "table.move({}, math.mininteger, math.maxinteger, 1)",
        "table.move({}, -2^53, 2^53, 1)",
        "table.concat(setmetatable({}, {__index = function() return 'x' end}), '', 1, 1e12)",
        "table.unpack({}, 1, 1e8)",
        "table.unpack({}, math.mininteger, math.maxinteger)",
        "local t = {} for i = 1, 1e5 do t[i] = i end while true do table.insert(t, 1, 0) end",
        "local t = {} for i = 1, 1e5 do t[i] = -i end while true do table.sort(t) end",
    ] {
        stopped(body, BUDGET);
    }
}

#[test]
fn string_and_utf8_functions_are_charged_by_size() {
    for body in [
        "local s = ('x'):rep(1e6) while true do local t = string.format('%s', s) end",
        "local s = ('x'):rep(1.5e6) local t = { s:byte(1, -1) }",
        "local s = ('x'):rep(1e6) while true do local t = s:upper() end",
        "local s = ('x'):rep(1e6) while true do local t = s:sub(2) end",
        "local s = ('9'):rep(1e6) while true do local n = tonumber(s) end",
        "local t = {} for i = 1, 1e4 do t[i] = 0x10FFFF end while true do local s = utf8.char(table.unpack(t)) end",
        "local s = ('é'):rep(1e6) while true do local n = utf8.len(s) end",
        "local s = ('x'):rep(1e6) while true do local n = s:find('y', 1, true) end",
        "local s = 'return ' .. ('1+'):rep(2e5) .. '1' while true do load(s) end",
        "local t = {} for i = 1, 2e4 do t[i] = {} end while true do collectgarbage() end",
    ] {
        stopped(body, BUDGET);
    }
}

#[test]
fn finalizers_cannot_be_set() {
    stopped(
        "setmetatable({}, {__gc = function() while true do end end})",
        "__gc finalizers are not allowed",
    );
    // A `__gc` added after `setmetatable` is never registered by Lua, so it never runs.
    let mut f = Fixture::new();
    f.load(
        "p",
        "return { sms = function(m)
            local mt = {} setmetatable({}, mt) mt.__gc = function() while true do end end
            collectgarbage() collectgarbage()
            gw.sms.reply('ok') return true end }",
    );
    assert_eq!(f.sms(MASTER, "x").commands, vec![send(MASTER, "ok")]);
    assert_eq!(f.sms(MASTER, "y").commands, vec![send(MASTER, "ok")]);
}

#[test]
fn instructions_of_unbounded_cost_end_at_the_call_deadline() {
    // Comparing two distinct 1 MB strings is one instruction that reads 2 MB: within the
    // instruction budget this loop would run for many seconds.
    stopped(
        "local a, b = ('x'):rep(1e6), ('x'):rep(1e6) while true do local same = a == b end",
        "call deadline exceeded (lua.call_deadline_ms = 300)",
    );
    stopped(
        "local a = ('x'):rep(1e6) while true do local c = a .. 'y' end",
        "lua.call_deadline_ms",
    );
}

#[test]
fn commands_per_call_are_capped() {
    for body in [
        "for i = 1, 1e9 do gw.mqtt.publish('t', 'x') end",
        "for i = 1, 1e9 do gw.output.on('relay') end",
        "for i = 1, 1e9 do gw.store.set('k', i) end",
        "for i = 1, 1e9 do gw.sms.send('+447700900999', 'x') end",
        "for i = 1, 1e9 do pcall(gw.mqtt.publish, 't', 'x') end",
    ] {
        stopped(body, "lua.max_commands_per_call = 100");
    }
}

#[test]
fn bytes_leaving_the_state_are_capped() {
    stopped(
        "local s = ('x'):rep(1024 * 1024) while true do gw.mqtt.publish('big', s) end",
        "lua.max_mqtt_payload_bytes (65536)",
    );
    stopped(
        "local t = {} for i = 1, 1e4 do t[i] = 'xxxxxxxx' end gw.mqtt.publish('big', t)",
        "lua.max_mqtt_payload_bytes",
    );
    stopped(
        "gw.store.set('k', ('x'):rep(1e5))",
        "lua.max_store_value_bytes",
    );
    stopped(
        "for i = 1, 1e9 do gw.store.set('k' .. i, 1) end",
        "lua.max_",
    );
    stopped(
        "gw.sms.send('+447700900999', ('x'):rep(1601))",
        "lua.max_sms_chars (1600",
    );
    stopped("gw.sms.reply(('x'):rep(1e6))", "lua.max_sms_chars");
    stopped(
        "for i = 1, 1e9 do gw.timer.after(10, function() end) end",
        "lua.max_timers = 1000",
    );
}

#[test]
fn durations_outside_their_bounds_are_lua_errors() {
    for body in [
        "gw.timer.after(1e19, function() end)",
        "gw.timer.after(604801, function() end)",
        "gw.timer.every(-1, function() end)",
        "gw.timer.every(0/0, function() end)",
        "gw.timer.after(math.huge, function() end)",
        "gw.output.on('relay', 1e19)",
        "gw.output.off('relay', -math.huge)",
        "gw.output.pulse('relay', 0/0)",
        "gw.mqtt.connect_for(1e19)",
    ] {
        stopped(body, "(lua.max_duration_s)");
    }
    // A week is allowed.
    let mut f = Fixture::new();
    f.load(
        "p",
        "return { sms = function() gw.timer.after(604800, function() end) gw.output.on('relay', 604800) return true end }",
    );
    let d = f.sms(MASTER, "x");
    assert!(d.errors.is_empty(), "{:?}", d.errors);
}

#[test]
fn outputs_read_as_confirmed_by_the_gpio_owner_after_the_call() {
    let mut f = Fixture::new();
    f.load(
        "p",
        "return { sms = function(m)
            if m.text == 'on' then gw.output.on('relay') gw.sms.reply(tostring(gw.output.get('relay')))
            else gw.sms.reply(tostring(gw.output.get('relay'))) end
            return true end }",
    );
    // Within the call that asked, its own request is what it reads.
    assert_eq!(f.sms(MASTER, "on").commands[1], send(MASTER, "true"));
    // The GPIO owner has not confirmed: the next call reads the real state.
    assert_eq!(f.sms(MASTER, "get").commands, vec![send(MASTER, "false")]);
    let confirmed = Event::OutputChanged {
        name: "relay".into(),
        on: true,
    };
    f.host.dispatch_event(&confirmed, f.t0);
    assert_eq!(f.sms(MASTER, "get").commands, vec![send(MASTER, "true")]);
}

#[test]
fn overruns_on_oversize_sms_do_not_disable_a_plugin() {
    let mut f = Fixture::new();
    f.load(
        "p",
        "return { sms = function(m)
            if #m.text > 200 then while true do end end
            gw.sms.reply('ok') return true end }",
    );
    let long = "x".repeat(300);
    for _ in 0..10 {
        let d = f.sms(MASTER, &long);
        assert_eq!(d.errors.len(), 1, "{:?}", d.errors);
        assert!(d.statuses.is_empty(), "{:?}", d.statuses);
    }
    assert_eq!(f.sms(MASTER, "hi").commands, vec![send(MASTER, "ok")]);
}

#[test]
fn a_disabled_plugin_is_tried_again_after_its_cool_down() {
    let mut f = Fixture::with(HostOptions {
        disabled_retry_s: 600,
        ..super::tests::opts()
    });
    f.load(
        "p",
        "return { sms = function(m)
            if m.text == 'bad' then error('broken') end
            gw.sms.reply('ok') return true end }",
    );
    for _ in 0..5 {
        f.sms(MASTER, "bad");
    }
    assert!(f.host.status("p").and_then(|s| s.error).is_some());
    assert!(f.sms(MASTER, "hi").commands.is_empty(), "disabled");
    assert_eq!(f.host.poll_timeout(), Some(f.at(600)));

    let sms = IncomingSms {
        id: 13,
        from: MASTER.into(),
        text: "hi".into(),
        time: None,
        incomplete: false,
        sender_kind: crate::bus::SenderKind::International,
    };
    let d = f.host.dispatch_sms(&sms, f.at(600));
    assert_eq!(d.commands, vec![send(MASTER, "ok")]);
    assert!(
        d.statuses
            .iter()
            .any(|s| s.name == "p" && s.error.is_none()),
        "{:?}",
        d.statuses
    );
}

#[test]
fn a_quarantined_sms_reaches_rules_as_failed_and_no_plugin() {
    let mut f = Fixture::new();
    f.load(
        "p",
        "return { sms = function(m) gw.sms.reply('plugin') return true end }",
    );
    let rule = f.write(
        "rule_r",
        "return { on = { sms = true }, execute = function(gw, ev)
            gw.sms.reply('failed: ' .. tostring(ev.failed) .. ' ' .. tostring(ev.handled_by)) end }",
    );
    let status = f
        .host
        .load_rule("r", &rule, &serde_json::json!({}), BTreeMap::new(), f.t0);
    assert_eq!(status.error, None);
    let sms = IncomingSms {
        id: 14,
        from: MASTER.into(),
        text: "POISON".into(),
        time: None,
        incomplete: false,
        sender_kind: crate::bus::SenderKind::International,
    };
    let d = f.host.dispatch_failed_sms(&sms, "cut off 3 times", f.t0);
    assert_eq!(
        d.commands,
        vec![send(MASTER, "failed: cut off 3 times nil")]
    );
}
