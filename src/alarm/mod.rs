//! The alarm panel: disarmed, arming (exit delay), armed away / home, pending (entry delay),
//! triggered. Zones are inputs (`[alarm.zones.<input>]`); a siren is an output.
//!
//! # Layering
//! - [`AlarmPanel`] is the sans-IO state machine: requests, input changes and timeouts in, with
//!   `now` passed in; [`Effect`]s (state changes, siren on/off) out.
//! - [`spawn`] starts the one task that owns the panel: it restores the saved state, feeds the
//!   panel the bus's `InputChanged` events, its requests and its timers, saves every change in
//!   the store (kv scope `alarm`) before publishing it as `Event::Alarm`, and drives the siren
//!   through the GPIO task. Everyone else holds an [`AlarmHandle`].
//!
//! # Who may arm and disarm
//! When `[alarm] code` is set, a request must carry it, except from a *trusted* source: a Lua
//! dialect plugin or rule, which authenticates its own users (P-Word user PINs, the
//! password-comma password, a master number). Trust is an [`AlarmSource`] set out of band by
//! whoever routes the request (the Lua host names the calling script; the MQTT bridge says
//! `External`), never read from the request: `by` is only a label for logs and events.
//! Everything outside (MQTT `alarm/set`, Home Assistant) needs the code. A code that *is* given
//! is always checked, whoever gives it.
//!
//! # Answers
//! [`AlarmHandle::command`] returns the new state or an [`AlarmError`];
//! [`AlarmError::reason`] turns a refusal into the short word scripts get in their callback
//! (`zone_open:<zone>`, `code_required`, `wrong_code`, `not_configured`, `busy`).
//!
//! # Notifications
//! Every change is an `Event::Alarm { state, by }`; `by` is the user or caller that asked, or
//! `zone:<input>` when a zone started the entry delay or triggered the alarm. Dialect plugins
//! send their own SMS (P-Word RPEX numbers) from that event.

mod panel;

use std::collections::BTreeMap;
use std::future::Future;

use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

pub use panel::{AlarmPanel, Effect, SavedState};

use crate::bus::{AlarmAction, AlarmSource, AlarmState, Bus, Event, OutputAction, Secret};
use crate::config::AlarmConfig;
use crate::gpio::{GpioError, GpioHandle};
use crate::store::{StoreError, StoreHandle};

/// The store scope and key of the saved state.
pub const STORE_SCOPE: &str = "alarm";
const STORE_KEY: &str = "state";

/// How many requests may wait for the alarm task before callers wait too.
const REQUEST_QUEUE: usize = 16;

/// Why the panel refused a request, or could not start.
#[derive(Debug, thiserror::Error)]
pub enum AlarmError {
    /// The code given does not match the panel's code.
    #[error("wrong alarm code")]
    WrongCode,
    /// The panel has a code and the request came without one from a source that is not
    /// trusted to authenticate its own users.
    #[error("the alarm code is required")]
    CodeRequired,
    /// Arming was asked while the alarm is pending or triggered: it must be disarmed first.
    #[error("the alarm is {}; disarm it first", .state.as_str())]
    NotNow {
        /// The state the panel is in.
        state: AlarmState,
    },
    /// A zone that guards the mode is open and `refuse_open_zones` is set.
    #[error("zone {zone} is open (help: close it, or set alarm.refuse_open_zones = false)")]
    ZoneOpen {
        /// The zone (input) name.
        zone: String,
    },
    /// The saved state could not be read at start.
    #[error("reading the saved alarm state")]
    Store(#[from] StoreError),
    /// The inputs' levels could not be read at start.
    #[error("reading the zones' inputs")]
    Gpio(#[from] GpioError),
    /// The alarm task has ended.
    #[error("the alarm task has stopped")]
    Stopped,
}

impl AlarmError {
    /// The reason scripts get for a refusal: `zone_open:<zone>`, `code_required`,
    /// `wrong_code`, `not_configured` (no panel task), `busy` (pending or triggered, or the
    /// panel could not be asked).
    pub fn reason(&self) -> String {
        match self {
            AlarmError::WrongCode => "wrong_code".into(),
            AlarmError::CodeRequired => "code_required".into(),
            AlarmError::ZoneOpen { zone } => format!("zone_open:{zone}"),
            AlarmError::Stopped => "not_configured".into(),
            AlarmError::NotNow { .. } | AlarmError::Store(_) | AlarmError::Gpio(_) => "busy".into(),
        }
    }
}

struct Request {
    action: AlarmAction,
    source: AlarmSource,
    by: Option<String>,
    code: Option<Secret>,
    reply: oneshot::Sender<Result<AlarmState, AlarmError>>,
}

/// A cloneable handle to the alarm task. The default handle has no task: its requests fail
/// with [`AlarmError::Stopped`] and its state is disarmed.
#[derive(Clone)]
pub struct AlarmHandle {
    requests: mpsc::Sender<Request>,
    /// Answered with the panel's next timer once it is idle (see [`AlarmHandle::idle`]).
    probes: mpsc::Sender<oneshot::Sender<Option<Instant>>>,
    state: watch::Receiver<AlarmState>,
}

impl Default for AlarmHandle {
    fn default() -> Self {
        let (requests, _) = mpsc::channel(1);
        let (probes, _) = mpsc::channel(1);
        let (_, state) = watch::channel(AlarmState::Disarmed);
        Self {
            requests,
            probes,
            state,
        }
    }
}

impl AlarmHandle {
    /// Asks the panel to arm, disarm or trigger on behalf of `source` (`by` is a label);
    /// returns its new state.
    pub async fn command(
        &self,
        action: AlarmAction,
        source: &AlarmSource,
        by: Option<&str>,
        code: Option<&Secret>,
    ) -> Result<AlarmState, AlarmError> {
        let (reply, rx) = oneshot::channel();
        let request = Request {
            action,
            source: source.clone(),
            by: by.map(str::to_string),
            code: code.cloned(),
            reply,
        };
        self.requests
            .send(request)
            .await
            .map_err(|_| AlarmError::Stopped)?;
        rx.await.map_err(|_| AlarmError::Stopped)?
    }

    /// The current state.
    pub fn state(&self) -> AlarmState {
        *self.state.borrow()
    }

    /// Waits until the panel has nothing waiting (no request, no bus event, no timer it has
    /// seen fall due) and returns when its next timer falls due. A simulated clock (`gsmgw
    /// try`) uses it to settle the panel and to stop at its exit and entry delays.
    pub async fn idle(&self) -> Result<Option<Instant>, AlarmError> {
        let (reply, answer) = oneshot::channel();
        self.probes
            .send(reply)
            .await
            .map_err(|_| AlarmError::Stopped)?;
        answer.await.map_err(|_| AlarmError::Stopped)
    }
}

/// Restores the saved state and starts the task that owns the panel.
///
/// The task subscribes to `bus` before it reads the inputs, so no zone change is missed. The
/// (restored) state is published before this returns, so retained MQTT state is right from the
/// start. It
/// ends when `shutdown` resolves or the bus is gone; it then switches a sounding siren off
/// (best effort: the GPIO task may have stopped first, and then the siren output goes back to
/// its initial state, off, at the next start).
pub async fn spawn(
    cfg: &AlarmConfig,
    bus: Bus,
    gpio: GpioHandle,
    store: StoreHandle,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(AlarmHandle, JoinHandle<()>), AlarmError> {
    let events = bus.subscribe();
    let inputs: BTreeMap<String, bool> = gpio.snapshot().await?.inputs;
    let mut panel = AlarmPanel::new(cfg, &inputs);
    let saved = store.kv_get(STORE_SCOPE, STORE_KEY).await?;
    let now = Instant::now().into_std();
    let first = match saved.as_deref().map(serde_json::from_str::<SavedState>) {
        Some(Ok(saved)) => panel.restore(&saved, now),
        Some(Err(e)) => {
            tracing::error!(error = %e, "the saved alarm state cannot be read; starting disarmed");
            panel.restore(&disarmed(), now)
        }
        None => panel.restore(&disarmed(), now),
    };
    let (state_tx, state_rx) = watch::channel(panel.state());
    let (tx, rx) = mpsc::channel(REQUEST_QUEUE);
    let (probes, probes_rx) = mpsc::channel(REQUEST_QUEUE);
    let mut driver = Driver {
        panel,
        siren: cfg.siren.clone(),
        bus,
        gpio,
        store,
        state: state_tx,
    };
    // Published before returning, so whoever subscribes after start-up sees no stale state.
    driver.apply(first).await;
    let task = tokio::spawn(driver.run(rx, probes_rx, events, shutdown));
    Ok((
        AlarmHandle {
            requests: tx,
            probes,
            state: state_rx,
        },
        task,
    ))
}

fn disarmed() -> SavedState {
    SavedState {
        state: AlarmState::Disarmed.as_str().to_string(),
        mode: None,
        zone: None,
        by: None,
    }
}

/// The alarm task's I/O around the panel.
struct Driver {
    panel: AlarmPanel,
    siren: Option<String>,
    bus: Bus,
    gpio: GpioHandle,
    store: StoreHandle,
    state: watch::Sender<AlarmState>,
}

impl Driver {
    async fn run(
        mut self,
        mut requests: mpsc::Receiver<Request>,
        mut probes: mpsc::Receiver<oneshot::Sender<Option<Instant>>>,
        mut events: mpsc::UnboundedReceiver<Event>,
        shutdown: impl Future<Output = ()>,
    ) {
        tokio::pin!(shutdown);
        loop {
            let timer = self.panel.poll_timeout().map(Instant::from_std);
            tokio::select! {
                biased;
                _ = &mut shutdown => break,
                // Disabled once every handle is gone; zones keep being watched.
                Some(req) = requests.recv() => {
                    let now = Instant::now().into_std();
                    let result = self.panel.handle(
                        req.action,
                        &req.source,
                        req.by.as_deref(),
                        req.code.as_ref(),
                        now,
                    );
                    let reply = match result {
                        Ok(effects) => {
                            self.apply(effects).await;
                            Ok(self.panel.state())
                        }
                        Err(e) => {
                            tracing::warn!(action = ?req.action, by = req.by.as_deref().unwrap_or("-"), error = %e, "alarm request refused");
                            Err(e)
                        }
                    };
                    let _ = req.reply.send(reply);
                }
                ev = events.recv() => match ev {
                    Some(Event::InputChanged { name, on }) => {
                        let effects = self.panel.handle_input(&name, on, Instant::now().into_std());
                        self.apply(effects).await;
                    }
                    Some(_) => {}
                    None => break,
                },
                _ = sleep_until_some(timer) => {
                    let effects = self.panel.handle_timeout(Instant::now().into_std());
                    self.apply(effects).await;
                }
                // Last: answered only when nothing above is ready, i.e. the panel is idle.
                Some(probe) = probes.recv() => {
                    let _ = probe.send(timer);
                }
            }
        }
        if self.panel.siren_on() {
            self.siren(false).await;
        }
    }

    /// Saves the state (once per batch, before anyone hears of it), then publishes each change
    /// and drives the siren, in order.
    async fn apply(&mut self, effects: Vec<Effect>) {
        if effects.iter().any(|e| matches!(e, Effect::State { .. })) {
            self.save().await;
        }
        for effect in effects {
            match effect {
                Effect::State { state, by } => {
                    tracing::info!(
                        state = state.as_str(),
                        by = by.as_deref().unwrap_or("-"),
                        "alarm"
                    );
                    self.state.send_replace(state);
                    self.bus.publish(Event::Alarm { state, by });
                }
                Effect::Siren(on) => self.siren(on).await,
            }
        }
    }

    async fn save(&self) {
        let saved = self.panel.saved();
        let json = match serde_json::to_string(&saved) {
            Ok(json) => json,
            Err(e) => {
                tracing::error!(error = %e, "could not encode the alarm state");
                return;
            }
        };
        if let Err(e) = self.store.kv_set(STORE_SCOPE, STORE_KEY, Some(&json)).await {
            tracing::error!(error = %e, "could not save the alarm state");
        }
    }

    async fn siren(&self, on: bool) {
        let Some(name) = &self.siren else {
            return;
        };
        let action = OutputAction::Set { on, duration: None };
        if let Err(e) = self.gpio.set(name, action).await {
            tracing::error!(output = %name, on, error = %e, "could not switch the siren");
        }
    }
}

async fn sleep_until_some(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests;
