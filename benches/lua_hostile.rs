//! Time to error of each hostile script shape (issue 10) under the default limits: the call
//! that tries it, then an ordinary SMS handled normally by the same plugin (which also keeps
//! the plugin from being disabled by five failures in a row). Needs
//! `[[bench]] name = "lua_hostile" harness = false`.

use std::collections::BTreeMap;
use std::hint::black_box;
use std::time::Instant;

use criterion::{criterion_group, criterion_main, Criterion};
use gsmgw::bus::IncomingSms;
use gsmgw::config::LuaConfig;
use gsmgw::lua::{HostOptions, LuaHost, World};

/// Each shape, by the SMS text that triggers it.
const SHAPES: &[(&str, &str)] = &[
    (
        "find .-.-.-.-.-x on 40 000 a",
        r#"("a"):rep(40000):find(".-.-.-.-.-x")"#,
    ),
    (
        "trim ^%s*(.-)%s*$ on 39 000 spaces",
        r#"("x" .. (" "):rep(39000) .. "x"):match("^%s*(.-)%s*$")"#,
    ),
    (
        "gsub backtracking",
        r#"(("a"):rep(40000)):gsub(".-.-.-x", "")"#,
    ),
    ("string.rep('', 2^60)", r#"string.rep("", 2^60)"#),
    (
        "table.move over maxinteger",
        "table.move({}, 1, math.maxinteger, 2)",
    ),
    (
        "table.concat 1e12 via __index",
        "table.concat(setmetatable({}, {__index = function() return 'x' end}), '', 1, 1e12)",
    ),
    ("table.unpack 1e8", "table.unpack({}, 1, 1e8)"),
    (
        "string.format %s of 4 MB in a loop",
        "local s = ('x'):rep(4e6) while true do local t = string.format('%s', s) end",
    ),
    (
        "setmetatable with __gc",
        "setmetatable({}, {__gc = function() while true do end end})",
    ),
    (
        "compare two 4 MB strings in a loop (deadline)",
        "local a, b = ('x'):rep(4e6), ('x'):rep(4e6) while true do local same = a == b end",
    ),
    (
        "gw.mqtt.publish of 4 MiB in a loop",
        "local s = ('x'):rep(4 * 1024 * 1024) while true do gw.mqtt.publish('big', s) end",
    ),
    (
        "gw.mqtt.publish in a loop (command cap)",
        "while true do gw.mqtt.publish('t', 'x') end",
    ),
    (
        "gw.timer.after(1e19)",
        "gw.timer.after(1e19, function() end)",
    ),
    ("while true do end", "while true do end"),
];

fn plugin_source() -> String {
    let mut source = String::from("local shapes = {}\n");
    for (name, body) in SHAPES {
        source.push_str(&format!("shapes[{name:?}] = function() {body} end\n"));
    }
    source.push_str(
        "return { sms = function(m)
            local shape = shapes[m.text]
            if shape then shape() end
            gw.sms.reply('ok') return true end }",
    );
    source
}

fn sms(text: &str) -> IncomingSms {
    IncomingSms {
        id: 1,
        from: "+447700900123".into(),
        text: text.into(),
        time: None,
        incomplete: false,
        sender_kind: gsmgw::bus::SenderKind::International,
    }
}

fn hostile_shapes(c: &mut Criterion) {
    let dir = match tempfile::tempdir() {
        Ok(d) => d,
        Err(e) => panic!("tempdir: {e}"),
    };
    let path = dir.path().join("hostile.lua");
    if let Err(e) = std::fs::write(&path, plugin_source()) {
        panic!("write: {e}");
    }
    let mut opts = HostOptions::from(&LuaConfig::default());
    opts.country_code = Some("44".into());
    let world = World {
        outputs: BTreeMap::from([("relay".to_string(), false)]),
        ..World::default()
    };
    let mut host = LuaHost::new(opts, world);
    let status = host.load_plugin(
        "hostile",
        &path,
        &serde_json::json!({}),
        BTreeMap::new(),
        Instant::now(),
    );
    assert_eq!(status.error, None);
    let ordinary = sms("hello");
    let mut g = c.benchmark_group("hostile shape to error");
    g.sample_size(10);
    for (name, _) in SHAPES {
        let bomb = sms(name);
        let first = host.dispatch_sms(&bomb, Instant::now());
        println!("{name}: {:?}", first.errors.first());
        assert_eq!(first.errors.len(), 1, "{name} must end with an error");
        g.bench_function(*name, |b| {
            b.iter(|| {
                black_box(host.dispatch_sms(&bomb, Instant::now()));
                let next = host.dispatch_sms(&ordinary, Instant::now());
                assert!(next.errors.is_empty());
            })
        });
    }
    g.finish();
}

criterion_group!(benches, hostile_shapes);
criterion_main!(benches);
