//! No stale commands (issue 11.10): SMS found undelivered at start reach the plugins only when
//! younger than `sms.max_command_age_s` (default 900 s); older ones reach the rules with
//! `ev.stale = true` and MQTT `<p>/sms/received` with `"stale": true`, and no plugin acts on
//! them (a day-old `OPEN` opens nothing).

use crate::host_rig;
use crate::mosquitto::{Mosquitto, Observer};

const OWNER: &str = "+447700900123";

/// Opens the relay on `OPEN…` and says so.
const PLUGIN: &str = r#"return { sms = function(msg)
    gw.output.set("relay", true)
    gw.sms.reply("plugin " .. msg.text)
    return true
end }"#;

const RULE: &str = r#"return { on = { sms = true }, execute = function(gw, ev)
    gw.sms.send("+447700900555", (ev.stale and "stale " or "fresh ") .. ev.text)
end }"#;

#[tokio::test]
async fn old_undelivered_sms_reach_rules_and_mqtt_marked_stale_but_no_plugin() {
    let Some(broker) = Mosquitto::start() else {
        return;
    };
    let mut observer = Observer::start(broker.port, "gsmgw/sec/sms/received").await;
    let rig = host_rig::start(
        &[("gate", PLUGIN)],
        &[("log", RULE)],
        Some(broker.port),
        "max_command_age_s = 900",
        |db| {
            host_rig::stored_undelivered(db, "h-old", OWNER, "OPEN day-old", 24 * 3600);
            host_rig::stored_undelivered(db, "h-late", OWNER, "OPEN 16 min", 16 * 60);
            host_rig::stored_undelivered(db, "h-new", OWNER, "OPEN fresh", 60);
        },
    )
    .await;
    let mut stale = std::collections::BTreeMap::new();
    for _ in 0..3 {
        let p = observer.next_on("gsmgw/sec/sms/received").await;
        let json: serde_json::Value = serde_json::from_slice(&p.payload).expect("JSON");
        stale.insert(
            json["text"].as_str().unwrap_or_default().to_string(),
            json["stale"].as_bool(),
        );
    }
    assert_eq!(
        stale,
        [
            ("OPEN 16 min".to_string(), Some(true)),
            ("OPEN day-old".to_string(), Some(true)),
            ("OPEN fresh".to_string(), Some(false)),
        ]
        .into_iter()
        .collect()
    );
    rig.gateway.scripts.flush().await;
    let dir = rig.stop().await;
    let db = rusqlite::Connection::open(host_rig::db_path(dir.path())).expect("open");
    let mut texts: Vec<String> = db
        .prepare("SELECT text FROM outbox ORDER BY text")
        .and_then(|mut st| st.query_map([], |r| r.get(0))?.collect())
        .expect("outbox");
    texts.sort();
    assert_eq!(
        texts,
        vec![
            "fresh OPEN fresh",
            "plugin OPEN fresh",
            "stale OPEN 16 min",
            "stale OPEN day-old"
        ]
    );
    let undelivered: u32 = db
        .query_row(
            "SELECT COUNT(*) FROM inbox WHERE delivered_at IS NULL",
            [],
            |r| r.get(0),
        )
        .expect("inbox");
    assert_eq!(
        undelivered, 0,
        "stale messages are delivered (to the rules), once"
    );
}
