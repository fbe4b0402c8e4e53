//! `systemctl reload gsmgw` (SIGHUP to the real binary): the config file is re-read, the
//! scripts' sections take effect without a restart, a script no longer listed is unloaded,
//! and what only a restart applies is named in the log.

#[path = "support/wait.rs"]
mod wait;

use std::path::Path;
use std::process::{Child, Command, Stdio};

use gsmgw::modem::sim::{SimConfig, SimEvent, SimModem};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tokio::sync::mpsc;
use wait::{eventually, within};

/// Replies with its configured word.
const WORD_PLUGIN: &str = r#"
return {
  sms = function(msg)
    if msg.text ~= "WORD" then return false end
    gw.sms.reply(gw.config.word or "none")
    return true
  end,
}
"#;

/// Replies "echo" to ECHO.
const ECHO_PLUGIN: &str = r#"
return {
  sms = function(msg)
    if msg.text ~= "ECHO" then return false end
    gw.sms.reply("echo")
    return true
  end,
}
"#;

fn write_config(dir: &Path, port: &Path, word: &str, plugins: &str, poll_s: u32) {
    let config = format!(
        r#"
[gateway]
device_id = "hup"
country_code = "44"
[modem]
port = "{port}"
poll_interval_s = {poll_s}
[gpio]
backend = "sim"
[store]
path = "{db}"
[lua]
plugins_dir = "{plugins_dir}"
plugins = [{plugins}]
hot_reload = false
[plugins.word]
word = "{word}"
[mqtt]
enabled = false
"#,
        port = port.display(),
        db = dir.join("gsmgw.db").display(),
        plugins_dir = dir.join("plugins").display(),
    );
    std::fs::write(dir.join("gsmgw.toml"), config).expect("write config");
}

async fn next_sms(events: &mut mpsc::UnboundedReceiver<SimEvent>, what: &str) -> String {
    wait::next_matching(events, 20, what, |ev| match ev {
        SimEvent::SmsSent { text, .. } => Some(text),
        _ => None,
    })
    .await
}

fn log_text(log: &Path) -> String {
    std::fs::read_to_string(log).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_rereads_the_config_applies_script_sections_and_names_what_needs_a_restart() {
    let (sim, mut events) = SimModem::start(SimConfig::default()).expect("sim modem");
    let dir = tempfile::tempdir().expect("temp dir");
    let plugins = dir.path().join("plugins");
    std::fs::create_dir_all(&plugins).expect("mkdir");
    std::fs::write(plugins.join("word.lua"), WORD_PLUGIN).expect("write");
    std::fs::write(plugins.join("echo.lua"), ECHO_PLUGIN).expect("write");
    write_config(dir.path(), sim.path(), "one", "\"word\", \"echo\"", 60);
    let log = dir.path().join("gsmgw.log");
    let mut child: Child = Command::new(env!("CARGO_BIN_EXE_gsmgw"))
        .args(["run", "-c"])
        .arg(dir.path().join("gsmgw.toml"))
        .env("GSMGW_LOG", "gsmgw=info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log"))
        .spawn()
        .expect("gsmgw run");
    let pid = Pid::from_raw(i32::try_from(child.id()).expect("pid"));

    // Started (the SIGHUP handler is installed before the modem is set up).
    wait::next_matching(&mut events, 20, "the start-up sweep", |ev| {
        matches!(ev, SimEvent::Command(ref c) if c.starts_with("AT+CMGL")).then_some(())
    })
    .await;
    sim.inject_sms("+447700900123", "WORD");
    assert_eq!(next_sms(&mut events, "the first reply").await, "one");

    // The plugin's section changes, echo leaves the list, and a modem setting changes.
    write_config(dir.path(), sim.path(), "two", "\"word\"", 30);
    kill(pid, Signal::SIGHUP).expect("SIGHUP");
    eventually(20, "the reload in the log", || {
        let text = log_text(&log);
        async move { text.contains("SIGHUP: config re-read").then_some(()) }
    })
    .await;
    sim.inject_sms("+447700900123", "WORD");
    assert_eq!(next_sms(&mut events, "the reply after SIGHUP").await, "two");
    sim.inject_sms("+447700900123", "ECHO");
    sim.inject_sms("+447700900123", "WORD");
    assert_eq!(
        next_sms(&mut events, "the reply after ECHO").await,
        "two",
        "the unlisted echo plugin must not answer"
    );
    let text = log_text(&log);
    let warning = text
        .lines()
        .find(|l| l.contains("only after a restart"))
        .unwrap_or_default();
    assert!(warning.contains("[modem]"), "{text}");
    assert!(!warning.contains("[plugins"), "{warning}");

    // A broken config changes nothing: the running one stays.
    std::fs::write(dir.path().join("gsmgw.toml"), "[lua\n").expect("write");
    kill(pid, Signal::SIGHUP).expect("SIGHUP");
    eventually(20, "the refusal in the log", || {
        let text = log_text(&log);
        async move { text.contains("the config does not load").then_some(()) }
    })
    .await;
    sim.inject_sms("+447700900123", "WORD");
    assert_eq!(
        next_sms(&mut events, "the reply after a bad config").await,
        "two"
    );

    kill(pid, Signal::SIGTERM).expect("SIGTERM");
    within(20, "the gateway to stop", async {
        tokio::task::spawn_blocking(move || child.wait())
            .await
            .expect("join")
            .expect("wait")
    })
    .await;
}

#[test]
fn a_changed_secret_is_named_as_needing_a_restart_and_a_script_section_is_not() {
    let load = |text: &str| gsmgw::config::Config::from_toml(text, "t.toml").expect("valid");
    let base = load("[modem]\npin = \"1111\"\n[plugins.x]\nword = \"one\"\n");
    let pin = load("[modem]\npin = \"2222\"\n[plugins.x]\nword = \"one\"\n");
    let section = load("[modem]\npin = \"1111\"\n[plugins.x]\nword = \"two\"\n");
    assert_eq!(gsmgw::app::needs_restart(&base, &pin), vec!["[modem]"]);
    assert!(gsmgw::app::needs_restart(&base, &section).is_empty());
}

#[test]
fn a_lua_limit_needs_a_restart_but_the_plugin_list_does_not() {
    let load = |text: &str| gsmgw::config::Config::from_toml(text, "t.toml").expect("valid");
    let base = load("[lua]\nplugins = [\"a\"]\ninstruction_limit = 1000000\n");
    let list = load("[lua]\nplugins = [\"a\", \"b\"]\ninstruction_limit = 1000000\n");
    let limit = load("[lua]\nplugins = [\"a\"]\ninstruction_limit = 2000000\n");
    assert!(gsmgw::app::needs_restart(&base, &list).is_empty());
    let named = gsmgw::app::needs_restart(&base, &limit);
    assert!(
        named.len() == 1 && named[0].starts_with("[lua]"),
        "{named:?}"
    );
}
