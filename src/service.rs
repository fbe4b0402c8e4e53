//! Running under systemd: start-up and stop notifications, a status line for
//! `systemctl status`, and the watchdog (`Type=notify`, `WatchdogSec=` in
//! `packaging/gsmgw.service`).
//!
//! Everything here does nothing when the gateway is not started by systemd (`NOTIFY_SOCKET`
//! unset), and a notification that cannot be sent is logged, never fatal: the gateway's job is
//! SMS and relays, not pleasing the service manager.
//!
//! # Why the watchdog asks the main loop
//! A timer that pings `WATCHDOG=1` on its own proves only that the tokio runtime still runs
//! timers; a gateway whose script loop is stuck would be pinged "alive" forever. So the
//! [`watchdog`] pings only after the loop that matters has *answered* a [`Liveness`] probe.
//! That loop is the script task in `app`: every SMS, call and input change passes through it,
//! and it awaits each command it issues (GPIO, modem queue, store, MQTT), so an owner task
//! that stops answering stalls it too as soon as it is used. The probe is a request and an
//! answer rather than a heartbeat the loop sends by itself, so the loop wakes only when asked
//! (once per half watchdog period) and never runs a timer of its own.

use std::future::Future;
use std::time::Duration;

use sd_notify::NotifyState;
use tokio::sync::watch;

use crate::bus::{Event, ModemStatus};

/// True when a service manager asked to be notified (`NOTIFY_SOCKET` is set).
pub fn under_systemd() -> bool {
    std::env::var_os("NOTIFY_SOCKET").is_some()
}

/// Tells systemd that start-up is complete (`READY=1`): with `Type=notify`, `systemctl start`
/// returns and units ordered after the gateway start only now.
pub fn ready() {
    notify(&[NotifyState::Ready, NotifyState::Status("running")]);
}

/// Tells systemd that the gateway is stopping (`STOPPING=1`), so a slow drain is not taken
/// for a hang.
pub fn stopping() {
    notify(&[NotifyState::Stopping, NotifyState::Status("stopping")]);
}

/// Sets the one-line status `systemctl status gsmgw` shows.
pub fn status(text: &str) {
    notify(&[NotifyState::Status(text)]);
}

fn notify(states: &[NotifyState]) {
    // `false`: keep NOTIFY_SOCKET, later notifications (watchdog, status) need it.
    if let Err(e) = sd_notify::notify(false, states) {
        tracing::warn!(error = %e, "could not notify systemd");
    }
}

/// The status line for a modem state: `modem registered on Vodafone, signal -71 dBm`.
pub fn modem_status_text(m: &ModemStatus) -> String {
    if !m.ready {
        return "modem not ready".into();
    }
    let mut text = if m.registered {
        match &m.operator {
            Some(op) => format!("modem registered on {op}"),
            None => "modem registered".into(),
        }
    } else {
        "modem not registered".into()
    };
    if m.roaming {
        text.push_str(" (roaming)");
    }
    if let Some(dbm) = m.signal_dbm {
        text.push_str(&format!(", signal {dbm} dBm"));
    }
    text
}

/// Shows the modem's state `now` in the status line, then keeps it up to date from `events`
/// (subscribed before `now` was read, so no change falls in between) until the bus is gone.
pub async fn report_modem_status(
    now: ModemStatus,
    mut events: tokio::sync::mpsc::UnboundedReceiver<Event>,
) {
    let mut last = modem_status_text(&now);
    status(&last);
    while let Some(ev) = events.recv().await {
        if let Event::Modem(m) = ev {
            let text = modem_status_text(&m);
            // Signal polls repeat the same state every minute; systemd needs it once.
            if text != last {
                status(&text);
                last = text;
            }
        }
    }
}

/// How often to ping the watchdog: half of systemd's `WATCHDOG_USEC`, as `sd_watchdog_enabled(3)`
/// advises. `None` when systemd runs no watchdog for this process.
pub fn watchdog_period() -> Option<Duration> {
    let mut usec = 0;
    if sd_notify::watchdog_enabled(false, &mut usec) && usec > 0 {
        Some(Duration::from_micros(usec / 2).max(Duration::from_millis(1)))
    } else {
        None
    }
}

/// Creates a liveness probe: the watchdog keeps the [`Liveness`], the loop that must stay
/// alive keeps the [`Heartbeat`] and answers every probe from inside its loop.
pub fn liveness() -> (Liveness, Heartbeat) {
    let (probe_tx, probe_rx) = watch::channel(0u64);
    let (answer_tx, answer_rx) = watch::channel(0u64);
    (
        Liveness {
            probe: probe_tx,
            answer: answer_rx,
            next: 0,
        },
        Heartbeat {
            probe: probe_rx,
            answer: answer_tx,
        },
    )
}

/// The asking side of a liveness probe.
#[derive(Debug)]
pub struct Liveness {
    probe: watch::Sender<u64>,
    answer: watch::Receiver<u64>,
    next: u64,
}

impl Liveness {
    /// Sends a new probe and waits up to `within` for the loop to answer it. False when it
    /// did not, or when the loop has ended (its [`Heartbeat`] is gone).
    pub async fn check(&mut self, within: Duration) -> bool {
        self.next += 1;
        let n = self.next;
        if self.probe.send(n).is_err() {
            return false;
        }
        matches!(
            tokio::time::timeout(within, self.answer.wait_for(|a| *a >= n)).await,
            Ok(Ok(_))
        )
    }
}

/// The answering side of a liveness probe, held by the loop being watched.
///
/// ```ignore
/// loop {
///     tokio::select! {
///         _ = heartbeat.probed() => heartbeat.answer(),
///         ev = events.recv() => handle(ev).await,
///     }
/// }
/// ```
#[derive(Debug)]
pub struct Heartbeat {
    probe: watch::Receiver<u64>,
    answer: watch::Sender<u64>,
}

impl Heartbeat {
    /// Resolves when a new probe arrives. Never resolves once the asking side is gone, so a
    /// loop selecting on it does not spin.
    pub async fn probed(&mut self) {
        if self.probe.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }

    /// Answers the latest probe. Call it from the watched loop itself: answering proves the
    /// loop came round.
    pub fn answer(&self) {
        let n = *self.probe.borrow();
        // Nobody listening (the watchdog ended) is not this loop's problem.
        let _ = self.answer.send(n);
    }
}

/// What the watchdog asks before each ping: whether everything that must stay alive answers.
pub trait Probe: Send {
    /// `Ok` when every watched loop answered (waiting at most about `within`); else which one
    /// did not, in words.
    fn check(&mut self, within: Duration) -> impl Future<Output = Result<(), String>> + Send;
}

impl Probe for Liveness {
    async fn check(&mut self, within: Duration) -> Result<(), String> {
        if Liveness::check(self, within).await {
            Ok(())
        } else {
            Err("the script loop did not answer".into())
        }
    }
}

/// Pings systemd's watchdog (`WATCHDOG=1`) every `period` while `probe` finds every watched
/// loop answering; stops pinging while one does not, so systemd restarts a hung gateway
/// (`Restart=on-failure`). Ends when `shutdown` resolves.
pub async fn watchdog(period: Duration, mut probe: impl Probe, shutdown: impl Future<Output = ()>) {
    tokio::pin!(shutdown);
    let mut ticks = tokio::time::interval(period);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut responding = true;
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            _ = ticks.tick() => {}
        }
        let verdict = tokio::select! {
            () = &mut shutdown => break,
            verdict = probe.check(period) => verdict,
        };
        match &verdict {
            Ok(()) => {
                notify(&[NotifyState::Watchdog]);
                if !responding {
                    tracing::info!("every owner answers again; watchdog pings resumed");
                    status("running");
                }
            }
            Err(why) if responding => {
                tracing::error!(
                    ?period,
                    reason = %why,
                    "an owner did not answer; watchdog pings stopped (systemd will restart the gateway)"
                );
                status(&format!("not responding: {why}"));
            }
            Err(_) => {}
        }
        responding = verdict.is_ok();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_loop_that_answers_passes_the_liveness_check() {
        let (mut liveness, mut heartbeat) = liveness();
        tokio::spawn(async move {
            loop {
                heartbeat.probed().await;
                heartbeat.answer();
            }
        });
        assert!(liveness.check(Duration::from_secs(1)).await);
        assert!(liveness.check(Duration::from_secs(1)).await);
    }

    #[tokio::test(start_paused = true)]
    async fn a_loop_that_stops_answering_fails_the_liveness_check() {
        let (mut liveness, mut heartbeat) = liveness();
        let (hang_tx, hang_rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            heartbeat.probed().await;
            heartbeat.answer();
            // Stuck, e.g. in a handler that never returns, while still holding the heartbeat.
            let _ = hang_rx.await;
            drop(heartbeat);
        });
        assert!(liveness.check(Duration::from_secs(1)).await);
        assert!(!liveness.check(Duration::from_secs(1)).await);
        drop(hang_tx);
    }

    #[tokio::test]
    async fn a_loop_that_ended_fails_the_liveness_check() {
        let (mut liveness, heartbeat) = liveness();
        drop(heartbeat);
        assert!(!liveness.check(Duration::from_secs(1)).await);
    }

    #[test]
    fn the_status_line_names_operator_and_signal() {
        let m = ModemStatus {
            ready: true,
            registered: true,
            roaming: false,
            operator: Some("Vodafone".into()),
            signal_dbm: Some(-71),
            imei: None,
        };
        assert_eq!(
            modem_status_text(&m),
            "modem registered on Vodafone, signal -71 dBm"
        );
        let lost = ModemStatus {
            registered: false,
            signal_dbm: None,
            ..m
        };
        assert_eq!(modem_status_text(&lost), "modem not registered");
    }
}
