//! Hot reload while events keep coming: reloads go through the script task's queue (the one
//! the file watcher and SIGHUP use), between two events, so none is lost or handled twice, and
//! a broken version never replaces a good one.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use gsmgw::bus::{Event, IncomingSms, ScriptKind, ScriptStatus};
use gsmgw::lua::watch::{Reload, ScriptWatcher};
use gsmgw::tryrun::{self, Simulation};
use serde_json::json;
use tokio::sync::mpsc::UnboundedReceiver;

const PLUGIN: &str = "counter";
const FROM: &str = "+447700900001";

/// A good version replies `<version>:<text>`; a broken one fails to load, at a known line.
fn version(v: u32) -> String {
    match v % 4 {
        1 | 3 => format!(
            "local V = {v}\nreturn {{\n  sms = function(msg)\n    gw.sms.send(msg.from, V .. ':' .. msg.text)\n    return true\n  end,\n}}\n"
        ),
        // Line 3: a syntax error.
        2 => format!("local V = {v}\nreturn {{\n  sms = function(msg) gw.sms.send( end,\n}}\n"),
        // Line 2: an error while loading.
        _ => format!("local V = {v}\nerror('version ' .. V .. ' refuses to start')\nreturn {{}}\n"),
    }
}

fn is_good(v: u32) -> bool {
    v % 2 == 1
}

async fn simulation(dir: &Path) -> Simulation {
    // 10 000 replies to one sender nobody enrolled: far over the reply budgets, lifted here.
    let patch = json!({
        "lua": {"plugins_dir": dir, "rules_dir": dir.join("rules"), "plugins": [PLUGIN]},
        "sms": {"reply_budget": 1_000_000, "stranger_replies_per_hour": 1_000_000},
    });
    let cfg = tryrun::load_config(
        Some(&Path::new(env!("CARGO_MANIFEST_DIR")).join("config/demo.toml")),
        Some(&patch),
    )
    .expect("config");
    Simulation::start(cfg, &dir.join("state/gsmgw.db"))
        .await
        .expect("simulation")
}

/// The next status of the plugin, waiting at most 10 s.
async fn next_status(events: &mut UnboundedReceiver<Event>) -> ScriptStatus {
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match events.recv().await {
                Some(Event::Script(status)) if status.name == PLUGIN => return status,
                Some(_) => {}
                None => panic!("bus closed"),
            }
        }
    })
    .await
    .expect("a script status within 10 s")
}

fn sms(id: i64) -> Event {
    Event::SmsReceived(IncomingSms {
        id,
        from: FROM.into(),
        text: id.to_string(),
        time: None,
        incomplete: false,
        sender_kind: gsmgw::bus::SenderKind::of(FROM),
    })
}

#[tokio::test]
async fn every_event_is_handled_once_across_100_reloads_and_broken_versions_never_win() {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("counter.lua"), version(1)).expect("write");
    let sim = simulation(dir.path()).await;
    let mut events = sim.bus.subscribe();
    let mut next_id = 0;
    for v in 2..=101 {
        // A batch of events is queued, then the new version is saved and reloaded while they
        // are still waiting.
        for _ in 0..100 {
            sim.bus.publish(sms(next_id));
            next_id += 1;
        }
        std::fs::write(dir.path().join("counter.lua"), version(v)).expect("write");
        assert!(sim.scripts.reload(Reload::Changed {
            kind: ScriptKind::Plugin,
            name: PLUGIN.into()
        }));
        let status = next_status(&mut events).await;
        match v % 4 {
            1 | 3 => assert_eq!(status.error, None, "version {v}"),
            2 => assert!(
                status
                    .error
                    .as_deref()
                    .is_some_and(|e| e.starts_with("counter.lua:3:")),
                "version {v}: {status:?}"
            ),
            _ => assert!(
                status
                    .error
                    .as_deref()
                    .is_some_and(|e| e.starts_with("counter.lua:2:") && e.contains("refuses")),
                "version {v}: {status:?}"
            ),
        }
    }
    sim.settle().await.expect("settles");

    let sent = sim.take_sms_sent();
    let mut handled: BTreeMap<i64, Vec<u32>> = BTreeMap::new();
    for s in &sent {
        assert_eq!(s.to, FROM);
        let (v, id) = s.text.split_once(':').expect("version:id");
        let v: u32 = v.parse().expect("version");
        let id: i64 = id.parse().expect("id");
        handled.entry(id).or_default().push(v);
    }
    assert_eq!(handled.len(), 10_000, "every event handled");
    assert!(
        handled.values().all(|vs| vs.len() == 1),
        "none handled twice"
    );
    let versions: Vec<u32> = handled.values().map(|vs| vs[0]).collect();
    assert!(
        versions.iter().all(|v| is_good(*v)),
        "only good versions reply"
    );
    assert!(
        versions.windows(2).all(|w| w[0] <= w[1]),
        "events are handled in order, by ever newer versions"
    );
    assert_eq!(versions.last(), Some(&101));
    // Each batch is queued before its reload is handled, so reloads land mid-stream.
    let distinct: std::collections::BTreeSet<_> = versions.iter().collect();
    assert!(distinct.len() > 10, "versions seen: {distinct:?}");
    sim.stop().await;
}

#[tokio::test]
async fn saving_a_file_reloads_the_plugin_through_the_watcher() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("counter.lua");
    std::fs::write(&file, version(1)).expect("write");
    let sim = simulation(dir.path()).await;
    let mut events = sim.bus.subscribe();
    let cfg = gsmgw::config::LuaConfig {
        plugins_dir: dir.path().to_path_buf(),
        rules_dir: dir.path().join("rules"),
        ..Default::default()
    };
    let scripts = sim.scripts.clone();
    let _watcher = ScriptWatcher::start(&cfg, move |r| {
        scripts.reload(r);
    })
    .expect("watcher");

    // As editors do: write a temporary file, rename it over the script.
    let temp = dir.path().join(".counter.lua.tmp");
    std::fs::write(&temp, version(3)).expect("write");
    std::fs::rename(&temp, &file).expect("rename");
    let status = next_status(&mut events).await;
    assert_eq!((status.generation, status.error), (2, None));

    sim.bus.publish(sms(1));
    sim.settle().await.expect("settles");
    let sent = sim.take_sms_sent();
    assert_eq!(sent.first().map(|s| s.text.as_str()), Some("3:1"));

    std::fs::remove_file(&file).expect("delete");
    let status = next_status(&mut events).await;
    assert!(status.error.is_some_and(|e| e.contains("removed")));
    sim.bus.publish(sms(2));
    sim.settle().await.expect("settles");
    assert_eq!(
        sim.take_sms_sent(),
        vec![],
        "an unloaded plugin does not reply"
    );
    sim.stop().await;
}

#[tokio::test]
async fn a_new_file_that_is_not_configured_is_not_loaded() {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("counter.lua"), version(1)).expect("write");
    let sim = simulation(dir.path()).await;
    let mut events = sim.bus.subscribe();
    std::fs::write(dir.path().join("stranger.lua"), version(3)).expect("write");
    assert!(sim.scripts.reload(Reload::Changed {
        kind: ScriptKind::Plugin,
        name: "stranger".into()
    }));
    sim.bus.publish(sms(7));
    sim.settle().await.expect("settles");
    assert_eq!(
        sim.take_sms_sent().first().map(|s| s.text.clone()),
        Some("1:7".to_string())
    );
    while let Ok(ev) = events.try_recv() {
        assert!(
            !matches!(ev, Event::Script(ref s) if s.name == "stranger"),
            "{ev:?}"
        );
    }
    sim.stop().await;
}

#[tokio::test]
async fn plugin_data_survives_a_reload() {
    let dir = tempfile::tempdir().expect("temp dir");
    let counting = |tag: &str| {
        format!(
            "return {{ sms = function(msg)\n  local n = (gw.store.get('n') or 0) + 1\n  gw.store.set('n', n)\n  gw.sms.send(msg.from, '{tag}' .. n)\n  return true\nend }}\n"
        )
    };
    std::fs::write(dir.path().join("counter.lua"), counting("a")).expect("write");
    let sim = simulation(dir.path()).await;
    sim.bus.publish(sms(1));
    sim.settle().await.expect("settles");
    std::fs::write(dir.path().join("counter.lua"), counting("b")).expect("write");
    assert!(sim.scripts.reload(Reload::All));
    sim.bus.publish(sms(2));
    sim.settle().await.expect("settles");
    let texts: Vec<String> = sim.take_sms_sent().into_iter().map(|s| s.text).collect();
    assert_eq!(texts, vec!["a1", "b2"]);
    sim.stop().await;
}

#[tokio::test]
async fn saving_a_library_reloads_the_plugins_that_require_it() {
    let dir = tempfile::tempdir().expect("temp dir");
    let lib = dir.path().join("lib");
    std::fs::create_dir(&lib).expect("lib folder");
    std::fs::write(lib.join("greeting.lua"), "return 'one'").expect("write lib");
    std::fs::write(
        dir.path().join("counter.lua"),
        "local g = require('greeting')\nreturn { sms = function(msg) gw.sms.send(msg.from, g .. ':' .. msg.text) return true end }\n",
    )
    .expect("write plugin");
    let sim = simulation(dir.path()).await;
    let mut events = sim.bus.subscribe();
    let cfg = gsmgw::config::LuaConfig {
        plugins_dir: dir.path().to_path_buf(),
        rules_dir: dir.path().join("rules"),
        ..Default::default()
    };
    let scripts = sim.scripts.clone();
    let _watcher = ScriptWatcher::start(&cfg, move |r| {
        scripts.reload(r);
    })
    .expect("watcher");

    let temp = lib.join(".greeting.lua.tmp");
    std::fs::write(&temp, "return 'two'").expect("write");
    std::fs::rename(&temp, lib.join("greeting.lua")).expect("rename");
    let status = next_status(&mut events).await;
    assert_eq!((status.generation, status.error), (2, None));
    sim.bus.publish(sms(1));
    sim.settle().await.expect("settles");
    let sent = sim.take_sms_sent();
    assert_eq!(sent.first().map(|s| s.text.as_str()), Some("two:1"));

    // A broken library fails the reload; the running version keeps answering.
    std::fs::write(lib.join("greeting.lua"), "return (").expect("write");
    let status = next_status(&mut events).await;
    assert!(
        status
            .error
            .as_deref()
            .is_some_and(|e| e.contains("lib/greeting.lua")),
        "{status:?}"
    );
    sim.bus.publish(sms(2));
    sim.settle().await.expect("settles");
    let sent = sim.take_sms_sent();
    assert_eq!(sent.first().map(|s| s.text.as_str()), Some("two:2"));
    sim.stop().await;
}
