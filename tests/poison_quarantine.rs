//! A poison message: an SMS whose dispatch stalls the gateway. The real binary is killed
//! (SIGKILL, as systemd's watchdog would) each time it is stuck on it; after
//! `lua.max_dispatch_attempts` such attempts the message is quarantined at the next start:
//! handed to the rules as failed, never to the plugin again, and the SMS after it is handled.
//!
//! The plugin stalls with an endless loop under a budget set so large (instructions and
//! deadline) that nothing but the kill ends it: the stall stands for any fault that the
//! budget cannot see.

#[path = "support/wait.rs"]
mod wait;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use gsmgw::modem::sim::{SimConfig, SimEvent, SimHandle, SimModem};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tokio::sync::mpsc;
use wait::within;

const SENDER: &str = "+447700900123";
const MAX_ATTEMPTS: u32 = 3;

const STALLING_PLUGIN: &str = r#"
return {
  sms = function(msg)
    if msg.text == "POISON" then
      while true do end
    end
    gw.sms.reply("ack " .. msg.text)
    return true
  end,
}
"#;

/// Tells the sender about every SMS that was quarantined.
const FAILED_RULE: &str = r#"
return {
  on = { sms = true },
  execute = function(gw, ev)
    if ev.failed then
      gw.sms.send(ev.from, "failed " .. ev.text)
    end
  end,
}
"#;

fn write_config(dir: &Path, port: &Path) -> std::path::PathBuf {
    let plugins = dir.join("plugins");
    let rules = dir.join("rules");
    std::fs::create_dir_all(&plugins).expect("plugins dir");
    std::fs::create_dir_all(&rules).expect("rules dir");
    std::fs::write(plugins.join("stall.lua"), STALLING_PLUGIN).expect("write plugin");
    std::fs::write(rules.join("failed.lua"), FAILED_RULE).expect("write rule");
    let config = format!(
        r#"
[gateway]
device_id = "poison"
country_code = "44"
[modem]
port = "{port}"
[gpio]
backend = "sim"
[store]
path = "{db}"
[lua]
plugins_dir = "{plugins}"
rules_dir = "{rules}"
plugins = ["stall"]
rules = ["failed"]
hot_reload = false
instruction_limit = 1000000000000
call_deadline_ms = 60000
max_dispatch_attempts = {MAX_ATTEMPTS}
[mqtt]
enabled = false
"#,
        port = port.display(),
        db = dir.join("gsmgw.db").display(),
        plugins = plugins.display(),
        rules = rules.display(),
    );
    let path = dir.join("gsmgw.toml");
    std::fs::write(&path, config).expect("write config");
    path
}

fn spawn_gateway(config: &Path, log: &Path) -> Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .expect("log file");
    Command::new(env!("CARGO_BIN_EXE_gsmgw"))
        .args(["run", "-c"])
        .arg(config)
        .env("GSMGW_LOG", "gsmgw=debug")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("gsmgw starts")
}

fn signal(child: &mut Child, sig: Signal) {
    let pid = Pid::from_raw(i32::try_from(child.id()).expect("pid fits"));
    kill(pid, sig).expect("signal the gateway");
}

/// Waits for the command starting with `prefix`, recording the texts sent meanwhile.
async fn command(
    events: &mut mpsc::UnboundedReceiver<SimEvent>,
    prefix: &str,
    sent: &mut Vec<String>,
) {
    within(20, &format!("the gateway to send {prefix}"), async {
        while let Some(ev) = events.recv().await {
            match ev {
                SimEvent::SmsSent { text, .. } => sent.push(text),
                SimEvent::Command(c) if c.starts_with(prefix) => return,
                _ => {}
            }
        }
        panic!("the simulated modem stopped");
    })
    .await
}

/// The dispatch attempts recorded for the inbox row with `text` (0 when there is none yet).
fn attempts(db: &Path, text: &str) -> u32 {
    let Ok(conn) = rusqlite::Connection::open(db) else {
        return 0;
    };
    let _ = conn.busy_timeout(Duration::from_secs(5));
    conn.query_row(
        "SELECT dispatch_attempts FROM inbox WHERE text = ?1",
        [text],
        |r| r.get(0),
    )
    .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_that_stalls_dispatch_is_quarantined_and_later_sms_are_handled() {
    let (sim, mut events): (SimHandle, _) =
        SimModem::start(SimConfig::default()).expect("sim modem starts");
    let dir = tempfile::tempdir().expect("temp dir");
    let config = write_config(dir.path(), sim.path());
    let log = dir.path().join("gsmgw.log");
    let db = dir.path().join("gsmgw.db");
    let mut sent = Vec::new();

    for attempt in 1..=MAX_ATTEMPTS {
        let mut child = spawn_gateway(&config, &log);
        if attempt == 1 {
            command(&mut events, "AT+CMGL=4", &mut sent).await;
            sim.inject_sms(SENDER, "POISON");
        }
        // Stuck in its dispatch once the attempt is counted (the count is committed before
        // the plugin runs); the watchdog's kill is the only way out.
        within(
            30,
            &format!("dispatch attempt {attempt} to be counted"),
            async {
                while attempts(&db, "POISON") < attempt {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            },
        )
        .await;
        signal(&mut child, Signal::SIGKILL);
        child.wait().expect("the killed gateway is reaped");
    }

    let mut child = spawn_gateway(&config, &log);
    command(&mut events, "AT+CMGL=4", &mut sent).await;
    sim.inject_sms(SENDER, "after");
    within(30, "the failed notice and the ack of the next SMS", async {
        loop {
            let done = ["failed POISON", "ack after"]
                .iter()
                .all(|want| sent.iter().any(|s| s == want));
            if done {
                return;
            }
            match events.recv().await {
                Some(SimEvent::SmsSent { text, .. }) => sent.push(text),
                Some(_) => {}
                None => panic!("the simulated modem stopped"),
            }
        }
    })
    .await;
    signal(&mut child, Signal::SIGTERM);
    let status = within(10, "the gateway to stop", async {
        tokio::task::spawn_blocking(move || child.wait())
            .await
            .expect("join")
    })
    .await
    .expect("the gateway exits");
    assert!(status.success(), "clean exit after SIGTERM: {status}");

    let conn = rusqlite::Connection::open(&db).expect("open the store");
    let (delivered, quarantined, error): (bool, bool, Option<String>) = conn
        .query_row(
            "SELECT delivered_at IS NOT NULL, quarantined, dispatch_error FROM inbox WHERE text = 'POISON'",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .expect("the poison row");
    assert!(delivered && quarantined, "quarantined as delivered");
    assert!(
        error
            .as_deref()
            .is_some_and(|e| e.contains("cut off 3 times")),
        "{error:?}"
    );
    assert!(
        !sent.iter().any(|s| s == "ack POISON"),
        "the plugin never finished it: {sent:?}"
    );
    let after: bool = conn
        .query_row(
            "SELECT delivered_at IS NOT NULL FROM inbox WHERE text = 'after'",
            [],
            |r| r.get(0),
        )
        .expect("the next row");
    assert!(after, "the SMS after it was handled");
}
