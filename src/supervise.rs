//! Supervision of the owner tasks: the probes the systemd watchdog asks before each ping, and
//! the gateway's health on MQTT (`<p>/health`, retained).
//!
//! Every resource has one owner task (see DESIGN.md); an owner that hangs or ends leaves its
//! resource dead while the rest carries on. So the watchdog asks each owner, from inside its
//! own loop, and the gateway stops (exit status 1, so that systemd restarts it) as soon as one
//! ends, saying which and why (see [`crate::app::run`]).

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use crate::app::Handles;
use crate::mqtt::MqttHandle;
use crate::service::{self, Liveness};
use crate::store::StoreHealth;

/// The MQTT topic (under the prefix) of the gateway's health.
pub const HEALTH_TOPIC: &str = "health";

/// How long one probe waits for its owner's answer before the watchdog moves on; an owner
/// that is merely busy answers later and counts as alive within its grace.
const ANSWER_WAIT: Duration = Duration::from_secs(1);

/// How long the modem task may be busy without answering: a queue of SMS is sent one AT
/// exchange after another (each up to 60 s), and its probe waits behind them.
const MODEM_GRACE: Duration = Duration::from_secs(300);

/// How long the MQTT publisher may wait for the broker: while it is away a publish waits for
/// the reconnect, whose back-off reaches 60 s.
const MQTT_GRACE: Duration = Duration::from_secs(180);

type Answer = Pin<Box<dyn Future<Output = bool> + Send>>;

/// One owner's probe: a request its task answers from its own loop.
struct OwnerProbe {
    name: &'static str,
    /// How long the owner may go without answering before it counts as hung; at least the
    /// watchdog period.
    grace: Duration,
    ask: Box<dyn Fn() -> Answer + Send>,
    /// A request not answered yet: asked again only once it is.
    pending: Option<Answer>,
    last_answer: Instant,
}

impl OwnerProbe {
    fn new<F, Fut>(name: &'static str, grace: Duration, ask: F) -> Self
    where
        F: Fn() -> Fut + Send + 'static,
        Fut: Future<Output = bool> + Send + 'static,
    {
        OwnerProbe {
            name,
            grace,
            ask: Box::new(move || Box::pin(ask())),
            pending: None,
            last_answer: Instant::now(),
        }
    }

    async fn check(&mut self, period: Duration) -> Result<(), String> {
        let mut answer = self.pending.take().unwrap_or_else(|| (self.ask)());
        match tokio::time::timeout(ANSWER_WAIT.min(period), &mut answer).await {
            Ok(true) => {
                self.last_answer = Instant::now();
                Ok(())
            }
            Ok(false) => Err(format!("the {} task has stopped", self.name)),
            Err(_) => {
                self.pending = Some(answer);
                let silent = self.last_answer.elapsed();
                if silent < self.grace.max(period) {
                    Ok(())
                } else {
                    Err(format!(
                        "the {} task has not answered for {} s",
                        self.name,
                        silent.as_secs()
                    ))
                }
            }
        }
    }
}

/// The watchdog's probe of every owner: the script loop (which answers itself, see
/// [`service`]), the store, GPIO, the alarm panel, the modem and the MQTT bridge.
pub struct Probes {
    scripts: Liveness,
    owners: Vec<OwnerProbe>,
}

impl Probes {
    pub fn new(scripts: Liveness, handles: &Handles) -> Self {
        let (store, gpio, alarm, modem) = (
            handles.store.clone(),
            handles.gpio.clone(),
            handles.alarm.clone(),
            handles.modem.clone(),
        );
        let mut owners = vec![
            OwnerProbe::new("store", Duration::ZERO, move || {
                let store = store.clone();
                async move { store.ping().await.is_ok() }
            }),
            OwnerProbe::new("gpio", Duration::ZERO, move || {
                let gpio = gpio.clone();
                async move { gpio.snapshot().await.is_ok() }
            }),
            OwnerProbe::new("alarm", Duration::ZERO, move || {
                let alarm = alarm.clone();
                async move { alarm.idle().await.is_ok() }
            }),
            OwnerProbe::new("modem", MODEM_GRACE, move || {
                let modem = modem.clone();
                async move { modem.ping().await.is_ok() }
            }),
        ];
        if let Some(mqtt) = handles.mqtt.clone() {
            owners.push(OwnerProbe::new("mqtt", MQTT_GRACE, move || {
                let mqtt = mqtt.clone();
                async move { mqtt.ping().await.is_ok() }
            }));
        }
        Probes { scripts, owners }
    }
}

impl service::Probe for Probes {
    async fn check(&mut self, within: Duration) -> Result<(), String> {
        service::Probe::check(&mut self.scripts, within).await?;
        for owner in &mut self.owners {
            owner.check(within).await?;
        }
        Ok(())
    }
}

/// The health payload: `{"status":"ok"}`, `{"status":"degraded","store":"…"}` while the
/// store reports a problem, `{"status":"failed","owner":"…","error":"…"}` when an owner
/// ended and the gateway stops.
pub fn health_payload(store: &StoreHealth, failed: Option<(&str, &str)>) -> Vec<u8> {
    let value = match (failed, &store.problem) {
        (Some((owner, error)), _) => serde_json::json!({
            "status": "failed",
            "owner": owner,
            "error": error,
        }),
        (None, Some(problem)) => serde_json::json!({
            "status": "degraded",
            "store": problem,
        }),
        (None, None) => serde_json::json!({ "status": "ok" }),
    };
    value.to_string().into_bytes()
}

/// Publishes the store's health whenever it changes, until the store has ended or `shutdown`
/// resolves.
pub async fn report_store_health(
    mut health: watch::Receiver<StoreHealth>,
    mqtt: MqttHandle,
    shutdown: impl Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    loop {
        let now = health.borrow_and_update().clone();
        if !now.fatal {
            // A fatal problem is published by the gateway as it stops, naming the owner.
            publish(&mqtt, health_payload(&now, None)).await;
        }
        tokio::select! {
            () = &mut shutdown => return,
            changed = health.changed() => if changed.is_err() {
                return;
            },
        }
    }
}

/// Publishes `payload` on `<p>/health`, retained.
pub async fn publish(mqtt: &MqttHandle, payload: Vec<u8>) {
    if let Err(e) = mqtt.publish(HEALTH_TOPIC, payload, true).await {
        tracing::warn!(error = %e, "could not publish the gateway's health");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_health_payload_names_the_problem_or_the_failed_owner() {
        let fine = StoreHealth::default();
        assert_eq!(health_payload(&fine, None), br#"{"status":"ok"}"#);
        let full = StoreHealth {
            problem: Some("the store's disk is full".into()),
            fatal: false,
        };
        let v: serde_json::Value = serde_json::from_slice(&health_payload(&full, None)).unwrap();
        assert_eq!(v["status"], "degraded");
        assert_eq!(v["store"], "the store's disk is full");
        let v: serde_json::Value =
            serde_json::from_slice(&health_payload(&full, Some(("gpio", "panicked: x")))).unwrap();
        assert_eq!(v["status"], "failed");
        assert_eq!(v["owner"], "gpio");
        assert_eq!(v["error"], "panicked: x");
    }

    #[tokio::test(start_paused = true)]
    async fn a_busy_owner_counts_as_alive_within_its_grace_then_as_hung() {
        let (_keep, never) = tokio::sync::oneshot::channel::<()>();
        let never = std::sync::Arc::new(tokio::sync::Mutex::new(Some(never)));
        let mut probe = OwnerProbe::new("modem", Duration::from_secs(300), move || {
            let never = never.clone();
            async move {
                let rx = never.lock().await.take();
                match rx {
                    Some(rx) => rx.await.is_ok(),
                    None => std::future::pending().await,
                }
            }
        });
        let period = Duration::from_secs(30);
        assert_eq!(probe.check(period).await, Ok(()));
        tokio::time::advance(Duration::from_secs(290)).await;
        assert_eq!(probe.check(period).await, Ok(()));
        tokio::time::advance(Duration::from_secs(20)).await;
        let err = probe.check(period).await.unwrap_err();
        assert!(
            err.starts_with("the modem task has not answered for 31"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn an_owner_that_ended_fails_its_probe_at_once() {
        let mut probe = OwnerProbe::new("gpio", Duration::ZERO, || async { false });
        assert_eq!(
            probe.check(Duration::from_secs(30)).await,
            Err("the gpio task has stopped".into())
        );
    }
}
