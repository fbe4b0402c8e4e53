//! A dispatch whose commit fails because the disk is full is retried, and the SMS is handled
//! once: one reply, the plugin's data written once. The disk is a real small tmpfs (mounting
//! one needs root; the test skips without it, except on CI where it must run).

#[path = "support/wait.rs"]
mod wait;

use std::path::{Path, PathBuf};
use std::process::Command;

use gsmgw::app::{self, RunOptions};
use gsmgw::bus::Event;
use gsmgw::config::Config;
use gsmgw::gpio;
use gsmgw::modem::sim::{SimConfig, SimEvent, SimModem};
use wait::{next_matching, within};

const SENDER: &str = "+447700900123";

/// Counts the messages it handled and keeps 300 KB of data: its commit needs far more room
/// than storing a received SMS does.
const PLUGIN: &str = r#"
return {
  sms = function(msg)
    gw.store.set("count", (gw.store.get("count") or 0) + 1)
    for i = 1, 10 do
      gw.store.set("blob" .. i, string.rep(msg.text, 30000 // #msg.text))
    end
    gw.sms.reply("ack " .. msg.text)
    return true
  end,
}
"#;

/// A small tmpfs, unmounted on drop.
struct SmallDisk {
    path: PathBuf,
}

impl SmallDisk {
    fn mount(path: &Path) -> Option<SmallDisk> {
        std::fs::create_dir_all(path).expect("mount point");
        let mounted = Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=4m", "tmpfs"])
            .arg(path)
            .status()
            .is_ok_and(|s| s.success());
        if !mounted {
            if std::env::var("CI").as_deref() == Ok("true") {
                panic!("cannot mount a tmpfs: this test needs root on CI");
            }
            eprintln!("cannot mount a tmpfs (not root?): skipping");
            return None;
        }
        Some(SmallDisk {
            path: path.to_path_buf(),
        })
    }

    /// Fills the disk but for `free` bytes, with a file removed by [`SmallDisk::clear`].
    fn fill_but(&self, free: u64) {
        let stat = nix::sys::statvfs::statvfs(&self.path).expect("statvfs");
        let available = stat.blocks_available() as u64 * stat.fragment_size() as u64;
        let filler = vec![0u8; usize::try_from(available.saturating_sub(free)).expect("fits")];
        std::fs::write(self.path.join("filler"), filler).expect("write filler");
    }

    fn clear(&self) {
        std::fs::remove_file(self.path.join("filler")).expect("remove filler");
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.path).status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_that_fails_on_a_full_disk_is_retried_and_the_sms_handled_once() {
    let dir = tempfile::tempdir().expect("temp dir");
    let Some(disk) = SmallDisk::mount(&dir.path().join("disk")) else {
        return;
    };
    let plugins = dir.path().join("plugins");
    std::fs::create_dir_all(&plugins).expect("plugins dir");
    std::fs::write(plugins.join("blob.lua"), PLUGIN).expect("write plugin");
    let (sim, mut sim_events) = SimModem::start(SimConfig::default()).expect("sim modem starts");
    let text = format!(
        r#"
[gateway]
device_id = "retry"
country_code = "44"
[modem]
port = "{port}"
[gpio]
backend = "sim"
[store]
path = "{db}"
[lua]
plugins_dir = "{plugins}"
plugins = ["blob"]
hot_reload = false
[mqtt]
enabled = false
"#,
        port = sim.path().display(),
        db = disk.path.join("gsmgw.db").display(),
        plugins = plugins.display(),
    );
    let cfg = Config::from_toml(&text, "retry.toml").expect("config");
    let (backend, _gpio) = gpio::sim_backend(&cfg);
    let gateway = app::start(
        cfg,
        RunOptions {
            gpio_backend: Some(backend),
            ..RunOptions::default()
        },
    )
    .await
    .expect("gateway starts");
    let mut status = gateway.handles.bus.subscribe();
    if !gateway.handles.modem.status().ready {
        within(20, "the modem to be ready", async {
            while let Some(ev) = status.recv().await {
                if matches!(ev, Event::Modem(ref s) if s.ready) {
                    return;
                }
            }
        })
        .await;
    }
    let mut health = gateway.handles.store.health();
    health.borrow_and_update();

    // Room to store the SMS, not to commit what the plugin did with it.
    disk.fill_but(150 * 1024);
    sim.inject_sms(SENDER, "hello");
    let problem = within(20, "the commit to fail", async {
        loop {
            health.changed().await.expect("store alive");
            if let Some(p) = health.borrow_and_update().problem.clone() {
                return p;
            }
        }
    })
    .await;
    assert!(problem.starts_with("the store's disk is full"), "{problem}");
    disk.clear();

    let reply = next_matching(&mut sim_events, 30, "the reply", |ev| match ev {
        SimEvent::SmsSent { text, .. } => Some(text),
        _ => None,
    })
    .await;
    assert_eq!(reply, "ack hello");
    let store = &gateway.handles.store;
    assert_eq!(
        store.kv_get("plugin:blob", "count").await.ok().flatten(),
        Some("1".to_string())
    );
    // The next message is the next reply: the first was not handled twice.
    sim.inject_sms(SENDER, "again");
    let reply = next_matching(&mut sim_events, 30, "the second reply", |ev| match ev {
        SimEvent::SmsSent { text, .. } => Some(text),
        _ => None,
    })
    .await;
    assert_eq!(reply, "ack again");
    assert_eq!(
        store.kv_get("plugin:blob", "count").await.ok().flatten(),
        Some("2".to_string())
    );
    assert_eq!(
        health.borrow().problem,
        None,
        "healed once a write succeeded"
    );
    gateway.stop().await;
    sim.stop();
}
