//! Flood harness: 100 000 MQTT messages of 10 KB through a real Mosquitto to a topic a rule
//! subscribes to, sent to the real binary (`gsmgw run`, simulated modem and GPIO). Reports the
//! gateway's RSS (from `/proc/<pid>/status`) idle, at its peak during the flood and after, and
//! how late the rule's 1 s timer fired while the flood lasted.
//!
//! The only assertions are the memory bound (peak within 20 MiB of idle) and that the timer
//! kept firing; timings are reported, not asserted. It moves 1 GB through the broker, so it is
//! not part of the normal run:
//!
//! ```text
//! cargo test --test mqtt_flood -- --ignored --nocapture
//! FLOOD_MESSAGES=20000 cargo test --test mqtt_flood -- --ignored --nocapture   # smaller
//! ```

#[path = "support/mosquitto.rs"]
mod mosquitto;
#[path = "support/wait.rs"]
mod wait;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use gsmgw::modem::sim::{SimConfig, SimModem};
use mosquitto::{Mosquitto, Observer};
use rumqttc::{AsyncClient, MqttOptions, QoS};
use wait::within;

const PREFIX: &str = "gsmgw/flood";
const PAYLOAD_BYTES: usize = 10 * 1024;
const MIB: u64 = 1024 * 1024;

/// Counts what it is handed and says so every second.
const RULE: &str = r#"
local seen = 0
return {
  on = { mqtt = { "flood/in" }, timer = { "every 1s" } },
  execute = function(gw, ev)
    if ev.type == "mqtt" then
      seen = seen + 1
    else
      gw.mqtt.publish("flood/tick", tostring(seen))
    end
  end,
}
"#;

fn write_config(dir: &Path, port: &Path, broker: &str) -> std::path::PathBuf {
    let rules = dir.join("rules");
    std::fs::create_dir_all(&rules).expect("rules dir");
    std::fs::write(rules.join("flood.lua"), RULE).expect("write rule");
    let config = format!(
        r#"
[gateway]
device_id = "flood"
country_code = "44"
[modem]
port = "{port}"
[gpio]
backend = "sim"
[store]
path = "{db}"
[lua]
plugins_dir = "{dir}"
rules_dir = "{rules}"
rules = ["flood"]
hot_reload = false
[mqtt]
url = "{broker}"
discovery = false
"#,
        port = port.display(),
        db = dir.join("gsmgw.db").display(),
        dir = dir.display(),
        rules = rules.display(),
    );
    let path = dir.join("gsmgw.toml");
    std::fs::write(&path, config).expect("write config");
    path
}

/// `VmRSS` or `VmHWM` of `pid`, in bytes.
fn proc_status_bytes(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|rest| {
            rest.trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<u64>()
                .ok()
        })
        .map(|kb| kb * 1024)
        .unwrap_or_else(|| panic!("{field} in /proc/{pid}/status"))
}

struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a 1 GB flood: run with --ignored --nocapture to measure"]
async fn a_flood_of_mqtt_messages_leaves_memory_bounded_and_timers_on_time() {
    let Some(broker) = Mosquitto::start() else {
        return;
    };
    let messages: usize = std::env::var("FLOOD_MESSAGES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let (sim, _sim_events) = SimModem::start(SimConfig::default()).expect("sim modem starts");
    let dir = tempfile::tempdir().expect("temp dir");
    let config = write_config(dir.path(), sim.path(), &broker.url());
    let mut ticks = Observer::start(broker.port, &format!("{PREFIX}/flood/tick")).await;
    let tick_topic = format!("{PREFIX}/flood/tick");
    let child = KillOnDrop(
        Command::new(env!("CARGO_BIN_EXE_gsmgw"))
            .args(["run", "-c"])
            .arg(&config)
            .env("GSMGW_LOG", "gsmgw=warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("gsmgw starts"),
    );
    let pid = child.0.id();

    // Idle: the rule runs (a tick came), its subscription stands (a probe was counted).
    let mut flood = MqttOptions::new("flooder", "127.0.0.1", broker.port);
    flood.set_max_packet_size(1 << 20, 1 << 20);
    let (client, mut eventloop) = AsyncClient::new(flood, 1000);
    let failures = Arc::new(AtomicU64::new(0));
    let polling = Arc::new(AtomicBool::new(true));
    let poller = {
        let (polling, failures) = (polling.clone(), failures.clone());
        tokio::spawn(async move {
            while polling.load(Ordering::Relaxed) {
                if eventloop.poll().await.is_err() {
                    failures.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        })
    };
    let topic = format!("{PREFIX}/flood/in");
    within(60, "the rule to count a probe", async {
        loop {
            client
                .publish(&topic, QoS::AtLeastOnce, false, "probe")
                .await
                .expect("probe");
            let tick = ticks.next_on(&tick_topic).await;
            if tick.payload.as_ref() != b"0" {
                return;
            }
        }
    })
    .await;
    // A few more ticks so start-up allocations are behind us.
    for _ in 0..3 {
        ticks.next_on(&tick_topic).await;
    }
    let idle = proc_status_bytes(pid, "VmRSS:");

    // The flood, QoS 0 as fast as the broker takes it, while ticks are timed.
    let payload = vec![b'x'; PAYLOAD_BYTES];
    let flooding = Arc::new(AtomicBool::new(true));
    let peak_sampled = Arc::new(AtomicU64::new(idle));
    let sampler = {
        let (flooding, peak) = (flooding.clone(), peak_sampled.clone());
        std::thread::spawn(move || {
            while flooding.load(Ordering::Relaxed) {
                peak.fetch_max(proc_status_bytes(pid, "VmRSS:"), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(50));
            }
        })
    };
    let started = Instant::now();
    let sender = {
        let (client, topic) = (client.clone(), topic.clone());
        tokio::spawn(async move {
            for _ in 0..messages {
                client
                    .publish(&topic, QoS::AtMostOnce, false, payload.clone())
                    .await
                    .expect("flood publish");
            }
        })
    };
    let mut gaps = Vec::new();
    let mut last = Instant::now();
    let mut sent_at = None;
    // Ticks during the flood and for 5 s after the last message was handed to the client.
    loop {
        let tick = ticks.next_on(&tick_topic).await;
        let now = Instant::now();
        gaps.push(now - last);
        last = now;
        if sender.is_finished() && sent_at.is_none() {
            sent_at = Some(now);
        }
        if sent_at.is_some_and(|t| now - t > Duration::from_secs(5)) {
            println!(
                "rule counted {} messages",
                String::from_utf8_lossy(&tick.payload)
            );
            break;
        }
    }
    let flood_time = sent_at.map_or(Duration::ZERO, |t| t - started);
    flooding.store(false, Ordering::Relaxed);
    sampler.join().expect("sampler");
    let after = proc_status_bytes(pid, "VmRSS:");
    let hwm = proc_status_bytes(pid, "VmHWM:");
    let peak = peak_sampled.load(Ordering::Relaxed).max(after);
    let worst = gaps.iter().max().copied().unwrap_or_default();
    let late = worst.saturating_sub(Duration::from_secs(1));
    println!(
        "flood: {messages} messages of {PAYLOAD_BYTES} B in {:.1} s",
        flood_time.as_secs_f64()
    );
    println!(
        "RSS idle {:.1} MiB, peak sampled {:.1} MiB, after {:.1} MiB, VmHWM {:.1} MiB",
        idle as f64 / MIB as f64,
        peak as f64 / MIB as f64,
        after as f64 / MIB as f64,
        hwm as f64 / MIB as f64,
    );
    println!(
        "1 s timer: {} ticks, longest gap {:.0} ms (at most {:.0} ms late)",
        gaps.len(),
        worst.as_secs_f64() * 1000.0,
        late.as_secs_f64() * 1000.0
    );
    polling.store(false, Ordering::Relaxed);
    poller.abort();
    assert_eq!(
        failures.load(Ordering::Relaxed),
        0,
        "the flooder's connection failed"
    );
    drop(child);
    assert!(
        hwm <= idle + 20 * MIB,
        "peak RSS {hwm} B is more than 20 MiB above idle {idle} B"
    );
    assert!(gaps.len() >= 3, "the timer kept firing");
}
