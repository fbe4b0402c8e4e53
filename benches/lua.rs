//! Lua host throughput and footprint: events per second through the host with 10 rules
//! loaded, the memory one loaded script's state uses, and how long the default instruction
//! budget lets a runaway loop run. Needs `[[bench]] name = "lua" harness = false`.

use std::collections::BTreeMap;
use std::hint::black_box;
use std::path::PathBuf;
use std::time::Instant;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use gsmgw::bus::{Event, IncomingSms, ScriptKind};
use gsmgw::config::LuaConfig;
use gsmgw::lua::{HostOptions, LuaHost, World};

/// Ten rules of the kinds people write: input watchers, SMS commands, a forwarder, timers.
fn rule_source(i: usize) -> String {
    match i % 5 {
        0 => format!(
            r#"return {{ on = {{ input = {{"door"}} }}, data = {{ n = 0 }},
                execute = function(gw, ev) if ev.on and gw.alarm.state() ~= "disarmed" then gw.sms.send("+447700900123", "door {i}") end end }}"#
        ),
        1 => format!(
            r#"return {{ on = {{ sms = {{ text = "LIGHT{i} ON" }} }},
                execute = function(gw, ev) gw.output.on("light") end }}"#
        ),
        2 => r#"return { on = { sms = { pattern = "^STATUS" }, input = true },
                execute = function(gw, ev) local x = ev.name or ev.text end }"#
            .to_string(),
        3 => r#"return { on = { output = true, timer = "every 5m" },
                execute = function(gw, ev) local s = gw.output.get("light") end }"#
            .to_string(),
        _ => r#"return { on = { sms = true, input = {"window"} },
                execute = function(gw, ev) if ev.type == "sms" then gw.mqtt.publish("sms/forward", ev.text) end end }"#
            .to_string(),
    }
}

fn opts() -> HostOptions {
    let mut o = HostOptions::from(&LuaConfig::default());
    o.country_code = Some("44".into());
    o
}

fn world() -> World {
    World {
        outputs: BTreeMap::from([("light".to_string(), false)]),
        inputs: BTreeMap::from([("door".to_string(), false), ("window".to_string(), false)]),
        ..World::default()
    }
}

fn host_with_rules(dir: &std::path::Path, n: usize) -> LuaHost {
    let mut host = LuaHost::new(opts(), world());
    let now = Instant::now();
    for i in 0..n {
        let path = dir.join(format!("r{i}.lua"));
        if let Err(e) = std::fs::write(&path, rule_source(i)) {
            panic!("write rule: {e}");
        }
        let status = host.load_rule(
            &format!("r{i}"),
            &path,
            &serde_json::json!({}),
            BTreeMap::new(),
            now,
        );
        assert_eq!(status.error, None);
    }
    host.take_commands();
    host
}

fn dir() -> tempfile::TempDir {
    match tempfile::tempdir() {
        Ok(d) => d,
        Err(e) => panic!("tempdir: {e}"),
    }
}

fn events_through_ten_rules(c: &mut Criterion) {
    let dir = dir();
    let mut host = host_with_rules(dir.path(), 10);
    let now = Instant::now();
    let mut g = c.benchmark_group("10 rules");
    g.throughput(Throughput::Elements(1));
    let door = Event::InputChanged {
        name: "door".into(),
        on: true,
    };
    g.bench_function("input event", |b| {
        b.iter(|| black_box(host.dispatch_event(black_box(&door), now)))
    });
    let sms = IncomingSms {
        id: 1,
        from: "+447700900123".into(),
        text: "STATUS".into(),
        time: None,
        incomplete: false,
        sender_kind: gsmgw::bus::SenderKind::of("+447700900123"),
    };
    g.bench_function("sms", |b| {
        b.iter(|| black_box(host.dispatch_sms(black_box(&sms), now)))
    });
    g.finish();
}

/// Not a timing: prints what a loaded script's state uses, once.
fn memory_per_script(_: &mut Criterion) {
    let dir = dir();
    let host = host_with_rules(dir.path(), 10);
    let rules = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("rules");
    let mut examples = LuaHost::new(opts(), world());
    for name in [
        "alarm_input_notify",
        "daily_status",
        "sms_to_mqtt",
        "light_command",
    ] {
        let path = rules.join(format!("{name}.lua"));
        examples.load_rule(
            name,
            &path,
            &serde_json::json!({}),
            BTreeMap::new(),
            Instant::now(),
        );
    }
    for (h, name) in [
        (&host, "r0"),
        (&host, "r1"),
        (&examples, "alarm_input_notify"),
        (&examples, "daily_status"),
        (&examples, "sms_to_mqtt"),
        (&examples, "light_command"),
    ] {
        if let Some(bytes) = h.memory_used(ScriptKind::Rule, name) {
            println!("memory: rule {name}: {:.1} KiB", bytes as f64 / 1024.0);
        }
    }
}

/// How long a `while true do end` runs before the default budget stops it.
fn runaway_loop_with_the_default_budget(c: &mut Criterion) {
    let dir = dir();
    let mut host = LuaHost::new(opts(), world());
    let path = dir.path().join("loop.lua");
    let source = r#"return { on = { sms = true }, execute = function(gw, ev)
        if ev.text == "spin" then while true do end end
        local t = {} for i = 1, 1e9 do t[i % 64 + 1] = i .. "" end end }"#;
    if let Err(e) = std::fs::write(&path, source) {
        panic!("write: {e}");
    }
    host.load_rule(
        "loop",
        &path,
        &serde_json::json!({}),
        BTreeMap::new(),
        Instant::now(),
    );
    let mut g = c.benchmark_group("default budget");
    g.sample_size(10);
    for (label, text) in [("empty loop", "spin"), ("table and string work", "work")] {
        let sms = IncomingSms {
            id: 1,
            from: "+447700900123".into(),
            text: text.into(),
            time: None,
            incomplete: false,
            sender_kind: gsmgw::bus::SenderKind::of("+447700900123"),
        };
        g.bench_function(label, |b| {
            // Reloaded each time: five stopped calls in a row would disable it.
            b.iter(|| {
                host.load_rule(
                    "loop",
                    &path,
                    &serde_json::json!({}),
                    BTreeMap::new(),
                    Instant::now(),
                );
                black_box(host.dispatch_sms(&sms, Instant::now()))
            })
        });
    }
    g.finish();
}

criterion_group!(
    benches,
    events_through_ten_rules,
    memory_per_script,
    runaway_loop_with_the_default_budget
);
criterion_main!(benches);
