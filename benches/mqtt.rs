//! `output/<name>/set` → GPIO change → state published: latency through the whole gateway
//! (`app::start`, simulated modem and GPIO) on a loopback Mosquitto. Prints p50 and p99 over
//! 1 000 commands. Run with `cargo bench --bench mqtt`; skipped without Mosquitto.
//!
//! Measured (dev profile, loopback, 2 shared cores): p50 92 ms before TCP_NODELAY; 47.5 ms
//! with it on the gateway's and the observer's sockets; 0.86 ms (p99 17 ms) with Mosquitto's
//! `set_tcp_nodelay true` as well.

#[path = "../tests/support/mosquitto.rs"]
mod mosquitto;
#[path = "../tests/support/mqtt_gateway.rs"]
mod rig;

use std::time::{Duration, Instant};

use mosquitto::Mosquitto;
use rig::Rig;

const COMMANDS: usize = 1000;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted.get(index).copied().unwrap_or_default()
}

fn main() {
    // Mosquitto's own Nagle (off only with set_tcp_nodelay) adds a delayed ACK (~40 ms) to
    // each round trip: that is the broker's setting, not the gateway's latency.
    let Some(broker) = Mosquitto::start_with(|_, _| "set_tcp_nodelay true\n".into()) else {
        return;
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(async {
        let mut rig = Rig::start(&broker).await;
        let set = rig.topic("output/relay/set");
        let state = rig.topic("output/relay");
        let mut latencies = Vec::with_capacity(COMMANDS);
        for n in 0..COMMANDS {
            let on = n % 2 == 0;
            let payload = if on { "ON" } else { "OFF" };
            let started = Instant::now();
            rig.observer.publish(&set, payload, false).await;
            rig.observer.wait_for(&state, payload).await;
            latencies.push(started.elapsed());
            assert_eq!(rig.gpio.output_level("relay"), Some(on), "the line follows");
        }
        latencies.sort();
        println!(
            "mqtt output/set -> GPIO -> state published, {COMMANDS} commands: p50 {:?}, p99 {:?}, max {:?}",
            percentile(&latencies, 0.50),
            percentile(&latencies, 0.99),
            latencies.last().copied().unwrap_or_default(),
        );
        rig.stop().await;
    });
}
