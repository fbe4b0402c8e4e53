//! End-to-end latency of the whole gateway (`app::start` with the simulated modem on a pty,
//! simulated GPIO, the CALL/REJECT/CONN plugin, MQTT off):
//! - an SMS `STATUS` from the master arrives → its reply is seen by the modem (`AT+CMGS`);
//! - a call from a user arrives while `REJECT ALL` is set → the modem sees it rejected.
//!
//! Prints p50/p99 over its own samples, then lets criterion measure the same two paths.
//! Needs `[[bench]] name = "latency" harness = false` in Cargo.toml.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use gsmgw::app::{self, Gateway, RunOptions};
use gsmgw::bus::Event;
use gsmgw::config::Config;
use gsmgw::gpio;
use gsmgw::modem::sim::{SimConfig, SimEvent, SimHandle, SimModem};
use tokio::runtime::Runtime;
use tokio::sync::mpsc;

const MASTER: &str = "+447700900123";
const USER: &str = "+447700900456";
/// Samples per path for the printed percentiles.
const SAMPLES: usize = 300;
/// A lost reply fails the bench instead of hanging it.
const WAIT: Duration = Duration::from_secs(10);

struct Rig {
    _gateway: Gateway,
    sim: SimHandle,
    events: mpsc::UnboundedReceiver<SimEvent>,
    _dir: tempfile::TempDir,
}

impl Rig {
    async fn start() -> Rig {
        let (sim, events) = SimModem::start(SimConfig::default()).expect("sim modem starts");
        let dir = tempfile::tempdir().expect("temp dir");
        let plugins = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("plugins");
        let text = format!(
            r#"
[gateway]
device_id = "bench"
country_code = "44"
[modem]
port = "{port}"
[gpio]
backend = "sim"
[outputs.relay]
line = 17
[inputs.door]
line = 27
[store]
path = "{db}"
[lua]
plugins_dir = "{plugins}"
plugins = ["call_reject_conn"]
hot_reload = false
[plugins.call_reject_conn]
relay = "relay"
input = "door"
master = "{MASTER}"
[sms]
max_per_hour = 1000000
max_per_day = 1000000
max_per_recipient_per_hour = 1000000
max_per_recipient_per_day = 1000000
[mqtt]
enabled = false
"#,
            port = sim.path().display(),
            db = dir.path().join("gsmgw.db").display(),
            plugins = plugins.display(),
        );
        let cfg = Config::from_toml(&text, "bench.toml").expect("bench config is valid");
        let (backend, _lines) = gpio::sim_backend(&cfg);
        let gateway = app::start(
            cfg,
            RunOptions {
                gpio_backend: Some(backend),
                ..Default::default()
            },
        )
        .await
        .expect("gateway starts");
        let mut bus = gateway.handles.bus.subscribe();
        if !gateway.handles.modem.status().ready {
            tokio::time::timeout(Duration::from_secs(20), async {
                while let Some(ev) = bus.recv().await {
                    if matches!(ev, Event::Modem(ref s) if s.ready) {
                        return;
                    }
                }
            })
            .await
            .expect("modem ready");
        }
        let mut rig = Rig {
            _gateway: gateway,
            sim,
            events,
            _dir: dir,
        };
        rig.sim.inject_sms(MASTER, "ADD 07700900456");
        rig.sim.inject_sms(MASTER, "REJECT ALL");
        // Both are handled once a STATUS sent after them is answered.
        rig.sms_round_trip().await;
        rig
    }

    /// STATUS from the master → its reply leaves through the modem.
    async fn sms_round_trip(&mut self) -> Duration {
        let start = Instant::now();
        self.sim.inject_sms(MASTER, "STATUS");
        self.wait_for(|ev| matches!(ev, SimEvent::SmsSent { to, .. } if to == MASTER))
            .await;
        start.elapsed()
    }

    /// A call from a user → rejected.
    async fn call_round_trip(&mut self) -> Duration {
        let start = Instant::now();
        self.sim.ring(Some(USER));
        self.wait_for(|ev| *ev == SimEvent::CallRejected).await;
        start.elapsed()
    }

    async fn wait_for(&mut self, done: impl Fn(&SimEvent) -> bool) {
        tokio::time::timeout(WAIT, async {
            while let Some(ev) = self.events.recv().await {
                if done(&ev) {
                    return;
                }
            }
            panic!("the simulated modem stopped");
        })
        .await
        .expect("the gateway answered in time");
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let rank = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted.get(rank).copied().unwrap_or_default()
}

fn report(name: &str, mut samples: Vec<Duration>) {
    samples.sort();
    println!(
        "{name}: n={} p50={:.2?} p99={:.2?} max={:.2?}",
        samples.len(),
        percentile(&samples, 0.50),
        percentile(&samples, 0.99),
        samples.last().copied().unwrap_or_default(),
    );
}

fn latency(c: &mut Criterion) {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("GSMGW_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("gsmgw=error")),
        )
        .with_writer(std::io::stderr)
        .try_init();
    let runtime = Runtime::new().expect("tokio runtime");
    let mut rig = runtime.block_on(Rig::start());

    let sms: Vec<Duration> = (0..SAMPLES)
        .map(|_| runtime.block_on(rig.sms_round_trip()))
        .collect();
    report("sms STATUS -> reply", sms);
    let calls: Vec<Duration> = (0..SAMPLES)
        .map(|_| runtime.block_on(rig.call_round_trip()))
        .collect();
    report("call -> rejected", calls);

    let mut group = c.benchmark_group("gateway");
    group.sample_size(20);
    group.bench_function("sms STATUS -> reply", |b| {
        b.iter_custom(|iters| {
            (0..iters)
                .map(|_| runtime.block_on(rig.sms_round_trip()))
                .sum()
        })
    });
    group.bench_function("call -> rejected", |b| {
        b.iter_custom(|iters| {
            (0..iters)
                .map(|_| runtime.block_on(rig.call_round_trip()))
                .sum()
        })
    });
    group.finish();
}

criterion_group!(benches, latency);
criterion_main!(benches);
