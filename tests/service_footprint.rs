//! A measuring harness, not part of the normal suite (`#[ignore]`): runs the real `gsmgw run`
//! binary as systemd would (a fake `NOTIFY_SOCKET`), against the simulated modem on a pty, with
//! every plugin in `plugins/` and the rules in `rules/` loaded, and reports its memory and the
//! CPU it uses while idle. The numbers go to README "Footprint"; nothing here asserts on them.
//!
//! ```sh
//! cargo test --release --test service_footprint -- --ignored --nocapture
//! FOOTPRINT_BIN=/path/to/gsmgw FOOTPRINT_IDLE_SECS=60 cargo test --test service_footprint -- --ignored --nocapture
//! ```
//!
//! What it does check: the binary starts, says READY=1, reports the registered modem in its
//! status line, and stops cleanly on SIGTERM with STOPPING=1.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use gsmgw::modem::sim::{SimConfig, SimModem};
use tokio::net::UnixDatagram;

fn repo(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// Every plugin file in `plugins/`, by name.
fn plugin_names() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(repo("plugins"))
        .map(|dir| {
            dir.filter_map(Result::ok)
                .filter_map(|e| {
                    let p = e.path();
                    (p.extension()? == "lua")
                        .then(|| p.file_stem()?.to_str().map(str::to_string))?
                })
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

fn config(dir: &Path, port: &Path) -> String {
    let plugins = plugin_names();
    let mut text = format!(
        r#"
[gateway]
device_id = "footprint"
country_code = "44"
[modem]
port = "{port}"
[gpio]
backend = "sim"
[outputs.relay]
line = 17
active_low = true
restore = true
[outputs.relay2]
line = 18
active_low = true
[inputs.door]
line = 27
[inputs.input2]
line = 22
[store]
path = "{db}"
[lua]
plugin_path = ["{plugins_dir}"]
rules_dir = "{rules_dir}"
rules = ["*"]
plugins = {plugin_list:?}
hot_reload = true
# Idle means no broker to talk to: a configured, reachable broker adds its keep-alive pings.
[mqtt]
enabled = false
"#,
        port = port.display(),
        db = dir.join("gsmgw.db").display(),
        plugins_dir = repo("plugins").display(),
        rules_dir = repo("rules").display(),
        plugin_list = plugins,
    );
    // Each dialect's section: the settings the shipped examples use; unknown keys are ignored
    // by plugins that do not read them.
    for name in &plugins {
        text.push_str(&format!(
            "[plugins.{name}]\nrelay = \"relay\"\ninput = \"door\"\nmaster = \"+447700900123\"\n"
        ));
    }
    text
}

/// `key:  1234 kB` from /proc/<pid>/status.
fn status_kb(pid: u32, key: &str) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = text.lines().find(|l| l.starts_with(key))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// utime + stime of the whole process, in clock ticks (fields 14 and 15 of /proc/<pid>/stat).
fn cpu_ticks(pid: u32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces; the fields after it are split at the last ')'.
    let rest = &text[text.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
}

/// Context switches of every thread: how often the process woke up.
fn wakeups(pid: u32) -> u64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    tasks
        .filter_map(Result::ok)
        .filter_map(|t| std::fs::read_to_string(t.path().join("status")).ok())
        .flat_map(|s| {
            s.lines()
                .filter(|l| l.contains("ctxt_switches"))
                .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
                .collect::<Vec<_>>()
        })
        .sum()
}

/// The next notification; fails with the gateway's log when none comes within 60 s.
async fn next_message(sock: &UnixDatagram, what: &str, log: &Path) -> String {
    let mut buf = [0u8; 1024];
    match tokio::time::timeout(Duration::from_secs(60), sock.recv(&mut buf)).await {
        Ok(got) => {
            let n = got.expect("recv");
            String::from_utf8_lossy(&buf[..n]).into_owned()
        }
        Err(_) => panic!(
            "no {what} within 60 s; the gateway's log:\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        ),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measuring harness: takes a minute; run with --ignored --nocapture"]
async fn footprint_of_an_idle_gateway() {
    let bin = std::env::var_os("FOOTPRINT_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_gsmgw")));
    let idle_secs: u64 = std::env::var("FOOTPRINT_IDLE_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    let dir = tempfile::tempdir().expect("temp dir");
    let (sim, _sim_events) = SimModem::start(SimConfig::default()).expect("sim modem");
    let cfg_path = dir.path().join("gsmgw.toml");
    std::fs::write(&cfg_path, config(dir.path(), sim.path())).expect("write config");
    let notify_path = dir.path().join("notify");
    let notify = UnixDatagram::bind(&notify_path).expect("bind notify socket");
    let log_path = dir.path().join("gsmgw.log");

    let mut child = Command::new(&bin)
        .args(["run", "-c"])
        .arg(&cfg_path)
        .env("NOTIFY_SOCKET", &notify_path)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log_path).expect("log file"))
        .spawn()
        .expect("start gsmgw");
    let pid = child.id();

    let ready = next_message(&notify, "READY=1", &log_path).await;
    assert!(ready.lines().any(|l| l == "READY=1"), "{ready:?}");
    // Idle starts once the modem is set up (its init is the busiest part of a start).
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let log = loop {
        let log = std::fs::read_to_string(&log_path).unwrap_or_default();
        if log.contains("modem ready") {
            break log;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the modem was not ready within 60 s; the gateway's log:\n{log}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let loaded = log.matches("plugin loaded").count();
    let rules = log.matches("rule loaded").count();

    let rss_start = status_kb(pid, "VmRSS:").expect("VmRSS");
    let ticks_start = cpu_ticks(pid).expect("stat");
    let wakeups_start = wakeups(pid);
    // A harness measuring idle time: waiting is the point, nothing is waited *for*.
    tokio::time::sleep(Duration::from_secs(idle_secs)).await;
    let ticks_end = cpu_ticks(pid).expect("stat");
    let wakeups_end = wakeups(pid);
    let rss_end = status_kb(pid, "VmRSS:").expect("VmRSS");
    let hwm = status_kb(pid, "VmHWM:").unwrap_or(0);
    let threads = std::fs::read_dir(format!("/proc/{pid}/task")).map_or(0, |d| d.count());
    // The kernel's USER_HZ is 100 on every Linux the gateway runs on.
    let cpu_ms = (ticks_end - ticks_start) * 10;
    let size = std::fs::metadata(&bin).map_or(0, |m| m.len());

    println!("footprint: binary {} ({} KiB)", bin.display(), size / 1024);
    println!(
        "footprint: plugins configured {:?}, loaded {loaded}; rules loaded {rules}",
        plugin_names()
    );
    println!("footprint: threads {threads}");
    println!("footprint: VmRSS after start {rss_start} KiB, after {idle_secs} s idle {rss_end} KiB, peak (VmHWM) {hwm} KiB");
    println!(
        "footprint: CPU over {idle_secs} s idle: {cpu_ms} ms ({:.3} %), context switches {}",
        cpu_ms as f64 / (idle_secs as f64 * 10.0),
        wakeups_end - wakeups_start
    );

    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .expect("SIGTERM");
    loop {
        let msg = next_message(&notify, "STOPPING=1", &log_path).await;
        if msg.lines().any(|l| l == "STOPPING=1") {
            break;
        }
    }
    let status = tokio::task::spawn_blocking(move || child.wait())
        .await
        .expect("join")
        .expect("wait");
    assert!(status.success(), "gsmgw exited with {status}");
}
