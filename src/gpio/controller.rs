//! The one task that owns the lines, and the handle everyone else uses to reach it.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::{start_states, GpioBackend, GpioError, InputEdge, EDGE_QUEUE};
use crate::bus::{Bus, Event, OutputAction};
use crate::config::Config;
use crate::deadline::Later;

/// How many requests may wait for the owning task before callers wait too.
const REQUEST_QUEUE: usize = 32;

/// Every output's and input's logical state at one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GpioSnapshot {
    pub outputs: BTreeMap<String, bool>,
    pub inputs: BTreeMap<String, bool>,
}

/// Called with an output's resting state whenever it changes, for outputs with `restore`. It
/// runs inside the owning task, so it must not block (hand the write to the store's task).
pub type PersistFn = Box<dyn Fn(&str, bool) + Send>;

enum Request {
    Set {
        name: String,
        action: OutputAction,
        reply: oneshot::Sender<Result<bool, GpioError>>,
    },
    Output {
        name: String,
        reply: oneshot::Sender<Result<bool, GpioError>>,
    },
    Input {
        name: String,
        reply: oneshot::Sender<Result<bool, GpioError>>,
    },
    Snapshot {
        reply: oneshot::Sender<GpioSnapshot>,
    },
}

/// A cheap, cloneable way to reach the task that owns the lines. The task ends when every
/// handle is dropped (or on shutdown); calls then return [`GpioError::Closed`].
#[derive(Debug, Clone)]
pub struct GpioHandle {
    requests: mpsc::Sender<Request>,
}

impl GpioHandle {
    /// Applies `action` to the output `name`; returns its new logical state.
    pub async fn set(&self, name: &str, action: OutputAction) -> Result<bool, GpioError> {
        self.ask(|reply| Request::Set {
            name: name.into(),
            action,
            reply,
        })
        .await?
    }

    /// The logical state of the output `name`.
    pub async fn output(&self, name: &str) -> Result<bool, GpioError> {
        self.ask(|reply| Request::Output {
            name: name.into(),
            reply,
        })
        .await?
    }

    /// The debounced logical state of the input `name`.
    pub async fn input(&self, name: &str) -> Result<bool, GpioError> {
        self.ask(|reply| Request::Input {
            name: name.into(),
            reply,
        })
        .await?
    }

    /// Every output's and input's state.
    pub async fn snapshot(&self) -> Result<GpioSnapshot, GpioError> {
        self.ask(|reply| Request::Snapshot { reply }).await
    }

    async fn ask<T>(
        &self,
        request: impl FnOnce(oneshot::Sender<T>) -> Request,
    ) -> Result<T, GpioError> {
        let (tx, rx) = oneshot::channel();
        self.requests
            .send(request(tx))
            .await
            .map_err(|_| GpioError::Closed)?;
        rx.await.map_err(|_| GpioError::Closed)
    }
}

struct OutputState {
    on: bool,
    restore: bool,
    /// A pulse in progress: when to switch, and to what.
    revert: Option<(Instant, bool)>,
    /// The resting state last handed to `persist`, so unchanged states are not written again.
    persisted: Option<bool>,
}

struct InputState {
    /// The accepted (debounced) state.
    on: bool,
    debounce: Duration,
    /// When the line will have been quiet long enough to read it.
    settles_at: Option<Instant>,
}

/// The state the owning task keeps; every method takes `now` so the timing is explicit.
struct Lines {
    backend: Box<dyn GpioBackend>,
    bus: Bus,
    persist: Option<PersistFn>,
    outputs: BTreeMap<String, OutputState>,
    inputs: BTreeMap<String, InputState>,
}

/// Requests every configured line, publishes every output's and input's state (so retained MQTT
/// state is complete from the start), and spawns the task that owns the lines.
///
/// Outputs start in their `initial` state, or for `restore` outputs in the state `restored`
/// holds for them. The task ends when `shutdown` resolves or every [`GpioHandle`] is dropped.
/// It then cancels pending pulse reverts but leaves every output as it is: a restart (an
/// upgrade, a crash) should not drop a relay that heats a house or holds a door, and a relay
/// whose state matters across restarts is restored from the store at the next start anyway.
///
/// Must be called inside a tokio runtime.
pub fn spawn(
    cfg: &Config,
    backend: Box<dyn GpioBackend>,
    bus: Bus,
    restored: HashMap<String, bool>,
    persist: Option<PersistFn>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(GpioHandle, JoinHandle<()>), GpioError> {
    let (lines, edges) = Lines::start(cfg, backend, bus, restored, persist)?;
    let (tx, rx) = mpsc::channel(REQUEST_QUEUE);
    let task = tokio::spawn(run(lines, rx, edges, shutdown));
    Ok((GpioHandle { requests: tx }, task))
}

async fn run(
    mut lines: Lines,
    mut requests: mpsc::Receiver<Request>,
    mut edges: mpsc::Receiver<InputEdge>,
    shutdown: impl Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    loop {
        let deadline = lines.next_deadline();
        let wake = tokio::select! {
            () = &mut shutdown => break,
            request = requests.recv() => match request {
                Some(request) => Wake::Request(request),
                None => break,
            },
            Some(edge) = edges.recv() => Wake::Edge(edge),
            () = sleep_until(deadline) => Wake::Timer,
        };
        let now = Instant::now();
        // Due timers first, whatever woke us: a request that arrives just as a pulse ends must
        // see it ended.
        lines.handle_timeouts(now);
        match wake {
            Wake::Request(request) => lines.handle_request(request, now),
            Wake::Edge(edge) => lines.handle_edge(edge, now),
            Wake::Timer => {}
        }
    }
    let pending = lines
        .outputs
        .values()
        .filter(|o| o.revert.is_some())
        .count();
    if pending > 0 {
        tracing::info!(
            pending,
            "gpio task ending: pending pulse reverts cancelled, outputs left as they are"
        );
    } else {
        tracing::debug!("gpio task ending, outputs left as they are");
    }
}

enum Wake {
    Request(Request),
    Edge(InputEdge),
    Timer,
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

impl Lines {
    /// Requests every line and publishes every starting state; see [`spawn`].
    fn start(
        cfg: &Config,
        mut backend: Box<dyn GpioBackend>,
        bus: Bus,
        restored: HashMap<String, bool>,
        persist: Option<PersistFn>,
    ) -> Result<(Self, mpsc::Receiver<InputEdge>), GpioError> {
        let mut outputs = BTreeMap::new();
        for (name, on) in start_states(cfg, &restored) {
            let Some(out) = cfg.outputs.get(&name) else {
                continue;
            };
            backend.request_output(&name, out, on)?;
            let persisted = if out.restore {
                restored.get(&name).copied()
            } else {
                None
            };
            outputs.insert(
                name,
                OutputState {
                    on,
                    restore: out.restore,
                    revert: None,
                    persisted,
                },
            );
        }
        let software_debounce = !backend.debounces();
        let mut inputs = BTreeMap::new();
        for (name, input) in &cfg.inputs {
            backend.request_input(name, input)?;
            let on = backend.read_input(name)?;
            let debounce = if software_debounce {
                Duration::from_millis(input.debounce_ms)
            } else {
                Duration::ZERO
            };
            inputs.insert(
                name.clone(),
                InputState {
                    on,
                    debounce,
                    settles_at: None,
                },
            );
        }
        let (edge_tx, edge_rx) = mpsc::channel(EDGE_QUEUE);
        backend.watch_inputs(edge_tx)?;
        tracing::info!(backend = %backend.describe(), outputs = outputs.len(), inputs = inputs.len(), "gpio lines requested");

        for (name, out) in &outputs {
            bus.publish(Event::OutputChanged {
                name: name.clone(),
                on: out.on,
            });
        }
        for (name, input) in &inputs {
            bus.publish(Event::InputChanged {
                name: name.clone(),
                on: input.on,
            });
        }

        Ok((
            Lines {
                backend,
                bus,
                persist,
                outputs,
                inputs,
            },
            edge_rx,
        ))
    }

    fn handle_request(&mut self, request: Request, now: Instant) {
        // A caller that gave up waiting is no reason to stop; the send result is ignored.
        match request {
            Request::Set {
                name,
                action,
                reply,
            } => {
                let _ = reply.send(self.set(&name, action, now));
            }
            Request::Output { name, reply } => {
                let state = self
                    .outputs
                    .get(&name)
                    .map(|o| o.on)
                    .ok_or(GpioError::UnknownOutput(name));
                let _ = reply.send(state);
            }
            Request::Input { name, reply } => {
                let state = self
                    .inputs
                    .get(&name)
                    .map(|i| i.on)
                    .ok_or(GpioError::UnknownInput(name));
                let _ = reply.send(state);
            }
            Request::Snapshot { reply } => {
                let _ = reply.send(GpioSnapshot {
                    outputs: self
                        .outputs
                        .iter()
                        .map(|(n, o)| (n.clone(), o.on))
                        .collect(),
                    inputs: self.inputs.iter().map(|(n, i)| (n.clone(), i.on)).collect(),
                });
            }
        }
    }

    fn set(&mut self, name: &str, action: OutputAction, now: Instant) -> Result<bool, GpioError> {
        let out = self
            .outputs
            .get(name)
            .ok_or_else(|| GpioError::UnknownOutput(name.into()))?;
        let (on, revert) = match action {
            OutputAction::Set { on, duration: None } => (on, None),
            OutputAction::Set {
                on,
                duration: Some(d),
            } => (on, Some((now.later(d), !on))),
            OutputAction::Toggle => (!out.on, None),
        };
        if let Err(e) = self.backend.set_output(name, on) {
            // The pending revert, if any, stays: the line is still in its pulse.
            tracing::error!(output = name, error = %e, "gpio: cannot set output");
            return Err(e);
        }
        let resting = revert.map_or(on, |(_, back)| back);
        let Some(out) = self.outputs.get_mut(name) else {
            return Err(GpioError::UnknownOutput(name.into()));
        };
        out.revert = revert;
        let changed = out.on != on;
        out.on = on;
        let persist = out.restore && out.persisted != Some(resting);
        if persist {
            out.persisted = Some(resting);
        }
        if changed {
            self.bus.publish(Event::OutputChanged {
                name: name.into(),
                on,
            });
        }
        if let (true, Some(persist_fn)) = (persist, &self.persist) {
            persist_fn(name, resting);
        }
        Ok(on)
    }

    fn handle_edge(&mut self, edge: InputEdge, now: Instant) {
        let Some(input) = self.inputs.get_mut(&edge.name) else {
            tracing::warn!(input = %edge.name, "gpio: edge from an input that is not configured");
            return;
        };
        if input.debounce.is_zero() {
            if input.on != edge.on {
                input.on = edge.on;
                self.bus.publish(Event::InputChanged {
                    name: edge.name,
                    on: edge.on,
                });
            }
        } else {
            // Every edge restarts the wait: the level counts only once it has held still.
            input.settles_at = Some(now.later(input.debounce));
        }
    }

    fn handle_timeouts(&mut self, now: Instant) {
        let due_outputs: Vec<(String, bool)> = self
            .outputs
            .iter()
            .filter_map(|(name, o)| match o.revert {
                Some((at, back)) if at <= now => Some((name.clone(), back)),
                _ => None,
            })
            .collect();
        for (name, back) in due_outputs {
            let result = self.backend.set_output(&name, back);
            let Some(out) = self.outputs.get_mut(&name) else {
                continue;
            };
            out.revert = None;
            match result {
                Ok(()) => {
                    if out.on != back {
                        out.on = back;
                        self.bus.publish(Event::OutputChanged { name, on: back });
                    }
                }
                Err(e) => {
                    tracing::error!(output = %name, error = %e, "gpio: pulse could not switch back")
                }
            }
        }

        let settled: Vec<String> = self
            .inputs
            .iter()
            .filter(|(_, i)| i.settles_at.is_some_and(|at| at <= now))
            .map(|(name, _)| name.clone())
            .collect();
        for name in settled {
            let level = self.backend.read_input(&name);
            let Some(input) = self.inputs.get_mut(&name) else {
                continue;
            };
            input.settles_at = None;
            match level {
                Ok(on) if on != input.on => {
                    input.on = on;
                    self.bus.publish(Event::InputChanged { name, on });
                }
                Ok(_) => {}
                Err(e) => tracing::error!(input = %name, error = %e, "gpio: cannot read input"),
            }
        }
    }

    fn next_deadline(&self) -> Option<Instant> {
        let reverts = self
            .outputs
            .values()
            .filter_map(|o| o.revert.map(|(at, _)| at));
        let settles = self.inputs.values().filter_map(|i| i.settles_at);
        reverts.chain(settles).min()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::config::{Bias, InputConfig, LineId, OutputConfig};
    use crate::gpio::{sim_backend, SimGpio};

    fn relay(line: u32, active_low: bool, initial: bool, restore: bool) -> OutputConfig {
        OutputConfig {
            line: LineId::Offset(line),
            active_low,
            initial,
            restore,
        }
    }

    /// gate: active-low, off; heating: restore; light: initially on; door: 50 ms debounce.
    fn config() -> Config {
        let mut cfg = Config::default();
        cfg.gpio.backend = crate::config::GpioBackendKind::Sim;
        cfg.outputs
            .insert("gate".into(), relay(17, true, false, false));
        cfg.outputs
            .insert("heating".into(), relay(27, false, false, true));
        cfg.outputs
            .insert("light".into(), relay(22, false, true, false));
        cfg.inputs.insert(
            "door".into(),
            InputConfig {
                line: LineId::Offset(4),
                active_low: false,
                bias: Bias::PullDown,
                debounce_ms: 50,
                device_class: Some("door".into()),
            },
        );
        cfg
    }

    type PersistLog = Arc<Mutex<Vec<(String, bool)>>>;

    fn recording_persist() -> (PersistFn, PersistLog) {
        let log = PersistLog::default();
        let writer = log.clone();
        let persist: PersistFn = Box::new(move |name: &str, on: bool| {
            writer
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push((name.to_string(), on));
        });
        (persist, log)
    }

    fn persisted(log: &PersistLog) -> Vec<(String, bool)> {
        log.lock().map(|p| p.clone()).unwrap_or_default()
    }

    fn drain(events: &mut mpsc::UnboundedReceiver<Event>) -> Vec<Event> {
        let mut all = Vec::new();
        while let Ok(event) = events.try_recv() {
            all.push(event);
        }
        all
    }

    fn output_changed(name: &str, on: bool) -> Event {
        Event::OutputChanged {
            name: name.into(),
            on,
        }
    }

    fn input_changed(name: &str, on: bool) -> Event {
        Event::InputChanged {
            name: name.into(),
            on,
        }
    }

    fn pulse_ms(ms: u64) -> OutputAction {
        OutputAction::Set {
            on: true,
            duration: Some(Duration::from_millis(ms)),
        }
    }

    const ON: OutputAction = OutputAction::Set {
        on: true,
        duration: None,
    };

    /// The owning task's state driven by hand, with a clock the test steps: every call takes
    /// the time in ms since start, the way the task's loop hands `now` in.
    struct Core {
        lines: Lines,
        edges: mpsc::Receiver<InputEdge>,
        sim: SimGpio,
        events: mpsc::UnboundedReceiver<Event>,
        persisted: PersistLog,
        t0: Instant,
    }

    impl Core {
        fn start(cfg: &Config, restored: HashMap<String, bool>) -> Core {
            let (backend, sim) = sim_backend(cfg);
            let bus = Bus::new();
            let events = bus.subscribe();
            let (persist, log) = recording_persist();
            let (lines, edges) = match Lines::start(cfg, backend, bus, restored, Some(persist)) {
                Ok(started) => started,
                Err(e) => panic!("start failed: {e}"),
            };
            Core {
                lines,
                edges,
                sim,
                events,
                persisted: log,
                t0: Instant::now(),
            }
        }

        fn at(&self, ms: u64) -> Instant {
            self.t0 + Duration::from_millis(ms)
        }

        fn tick(&mut self, ms: u64) {
            self.lines.handle_timeouts(self.at(ms));
        }

        fn set(&mut self, name: &str, action: OutputAction, ms: u64) -> Result<bool, GpioError> {
            self.tick(ms);
            self.lines.set(name, action, self.at(ms))
        }

        fn output(&self, name: &str) -> Option<bool> {
            self.lines.outputs.get(name).map(|o| o.on)
        }

        fn input(&self, name: &str) -> Option<bool> {
            self.lines.inputs.get(name).map(|i| i.on)
        }

        /// Drives the sim input and hands its edges to the core at `ms`.
        fn flip(&mut self, input: &str, on: bool, ms: u64) {
            self.tick(ms);
            self.sim.set_input(input, on);
            while let Ok(edge) = self.edges.try_recv() {
                self.lines.handle_edge(edge, self.at(ms));
            }
        }
    }

    #[test]
    fn every_output_and_input_is_published_at_start() {
        let mut core = Core::start(&config(), HashMap::new());
        assert_eq!(
            drain(&mut core.events),
            vec![
                output_changed("gate", false),
                output_changed("heating", false),
                output_changed("light", true),
                input_changed("door", false),
            ]
        );
    }

    #[test]
    fn setting_to_the_same_state_publishes_nothing() {
        let mut core = Core::start(&config(), HashMap::new());
        drain(&mut core.events);
        assert_eq!(core.set("gate", ON, 0).ok(), Some(true));
        assert_eq!(core.set("gate", ON, 1).ok(), Some(true));
        assert_eq!(drain(&mut core.events), vec![output_changed("gate", true)]);
    }

    #[test]
    fn pulse_ends_off_after_its_duration() {
        let mut core = Core::start(&config(), HashMap::new());
        drain(&mut core.events);
        assert_eq!(core.set("gate", pulse_ms(2000), 0).ok(), Some(true));
        core.tick(1999);
        assert_eq!(core.output("gate"), Some(true));
        assert_eq!(core.lines.next_deadline(), Some(core.at(2000)));
        core.tick(2000);
        assert_eq!(core.output("gate"), Some(false));
        assert_eq!(
            core.sim.output_level("gate"),
            Some(true),
            "active-low: off is high"
        );
        assert_eq!(
            drain(&mut core.events),
            vec![output_changed("gate", true), output_changed("gate", false)]
        );
        assert_eq!(core.lines.next_deadline(), None);
    }

    #[test]
    fn a_pulse_too_long_for_the_clock_never_reverts_and_does_not_panic() {
        let mut core = Core::start(&config(), HashMap::new());
        let forever = OutputAction::Set {
            on: true,
            duration: Some(Duration::MAX),
        };
        assert_eq!(core.set("gate", forever, 0).ok(), Some(true));
        core.tick(3_600_000);
        assert_eq!(core.output("gate"), Some(true));
        assert!(core
            .lines
            .next_deadline()
            .is_some_and(|at| at > core.at(3_600_000 * 24 * 365)));
    }

    #[test]
    fn an_off_pulse_ends_on() {
        let mut core = Core::start(&config(), HashMap::new());
        let off_pulse = OutputAction::Set {
            on: false,
            duration: Some(Duration::from_secs(1)),
        };
        assert_eq!(core.set("light", off_pulse, 0).ok(), Some(false));
        core.tick(1000);
        assert_eq!(core.output("light"), Some(true));
    }

    #[test]
    fn a_new_command_cancels_the_pending_revert() {
        let mut core = Core::start(&config(), HashMap::new());
        assert!(core.set("gate", pulse_ms(2000), 0).is_ok());
        assert!(core.set("gate", ON, 500).is_ok());
        assert_eq!(core.lines.next_deadline(), None);
        core.tick(10_000);
        assert_eq!(core.output("gate"), Some(true));
    }

    #[test]
    fn toggle_during_a_pulse_cancels_its_revert() {
        let mut core = Core::start(&config(), HashMap::new());
        assert!(core.set("gate", pulse_ms(2000), 0).is_ok());
        assert_eq!(
            core.set("gate", OutputAction::Toggle, 500).ok(),
            Some(false)
        );
        assert!(core.set("gate", ON, 600).is_ok());
        core.tick(10_000);
        assert_eq!(core.output("gate"), Some(true));
    }

    #[test]
    fn a_second_pulse_restarts_the_timer() {
        let mut core = Core::start(&config(), HashMap::new());
        assert!(core.set("gate", pulse_ms(2000), 0).is_ok());
        assert!(core.set("gate", pulse_ms(2000), 1000).is_ok());
        core.tick(2500);
        assert_eq!(core.output("gate"), Some(true));
        core.tick(3000);
        assert_eq!(core.output("gate"), Some(false));
    }

    #[test]
    fn persist_gets_the_resting_state_only_for_restore_outputs() {
        let mut core = Core::start(&config(), HashMap::new());
        assert!(core.set("heating", ON, 0).is_ok());
        assert!(core.set("heating", pulse_ms(5000), 1).is_ok());
        assert!(core.set("gate", ON, 2).is_ok());
        let expected = vec![
            ("heating".to_string(), true),
            ("heating".to_string(), false),
        ];
        assert_eq!(persisted(&core.persisted), expected);
        // The pulse's end changes the state but not the resting state: nothing more to write.
        core.tick(6000);
        assert_eq!(core.output("heating"), Some(false));
        assert_eq!(persisted(&core.persisted).len(), 2);
    }

    #[test]
    fn persist_is_not_repeated_for_an_unchanged_resting_state() {
        let restored = HashMap::from([("heating".to_string(), true)]);
        let mut core = Core::start(&config(), restored);
        assert!(core.set("heating", ON, 0).is_ok());
        assert_eq!(persisted(&core.persisted), vec![]);
    }

    #[test]
    fn a_bouncing_input_gives_one_event_once_it_settles() {
        let mut core = Core::start(&config(), HashMap::new());
        drain(&mut core.events);
        // Eleven edges within 20 ms: off → on ten times alternating, ending on.
        for i in 0..11u64 {
            core.flip("door", i % 2 == 0, i * 2);
        }
        core.tick(69);
        assert_eq!(
            core.input("door"),
            Some(false),
            "not settled yet: last edge at 20 ms"
        );
        core.tick(70);
        assert_eq!(core.input("door"), Some(true));
        assert_eq!(drain(&mut core.events), vec![input_changed("door", true)]);
    }

    #[test]
    fn a_burst_that_ends_where_it_started_gives_no_event() {
        let mut core = Core::start(&config(), HashMap::new());
        drain(&mut core.events);
        for i in 0..10u64 {
            core.flip("door", i % 2 == 0, i * 2);
        }
        core.tick(1000);
        assert_eq!(core.input("door"), Some(false));
        assert_eq!(drain(&mut core.events), vec![]);
    }

    #[test]
    fn zero_debounce_takes_edges_as_they_come() {
        let mut cfg = config();
        if let Some(door) = cfg.inputs.get_mut("door") {
            door.debounce_ms = 0;
        }
        let mut core = Core::start(&cfg, HashMap::new());
        drain(&mut core.events);
        core.flip("door", true, 0);
        assert_eq!(core.input("door"), Some(true));
        assert_eq!(drain(&mut core.events), vec![input_changed("door", true)]);
    }

    // The task and its handle, on the real runtime. Nothing here depends on time passing,
    // except `a_pulse_switches_back_in_the_running_task`, which waits (bounded) for the event.

    struct Rig {
        gpio: GpioHandle,
        sim: SimGpio,
        events: mpsc::UnboundedReceiver<Event>,
        task: JoinHandle<()>,
        stop: oneshot::Sender<()>,
    }

    fn start(cfg: &Config, restored: HashMap<String, bool>) -> Rig {
        let (backend, sim) = sim_backend(cfg);
        let bus = Bus::new();
        let events = bus.subscribe();
        let (stop, stopped) = oneshot::channel::<()>();
        let shutdown = async move {
            let _ = stopped.await;
        };
        let (gpio, task) = match spawn(cfg, backend, bus, restored, None, shutdown) {
            Ok(started) => started,
            Err(e) => panic!("spawn failed: {e}"),
        };
        Rig {
            gpio,
            sim,
            events,
            task,
            stop,
        }
    }

    #[tokio::test]
    async fn set_then_get_returns_the_new_state() {
        let rig = start(&config(), HashMap::new());
        assert_eq!(rig.gpio.set("gate", ON).await.ok(), Some(true));
        assert_eq!(rig.gpio.output("gate").await.ok(), Some(true));
    }

    #[tokio::test]
    async fn toggle_inverts_the_current_state() {
        let rig = start(&config(), HashMap::new());
        assert_eq!(
            rig.gpio.set("light", OutputAction::Toggle).await.ok(),
            Some(false)
        );
        assert_eq!(
            rig.gpio.set("light", OutputAction::Toggle).await.ok(),
            Some(true)
        );
        assert_eq!(rig.gpio.output("light").await.ok(), Some(true));
    }

    #[tokio::test]
    async fn active_low_output_is_driven_low_when_on() {
        let rig = start(&config(), HashMap::new());
        assert_eq!(rig.sim.output_level("gate"), Some(true));
        assert!(rig.gpio.set("gate", ON).await.is_ok());
        assert_eq!(rig.sim.output_level("gate"), Some(false));
        assert!(rig.gpio.set("light", ON).await.is_ok());
        assert_eq!(rig.sim.output_level("light"), Some(true));
    }

    #[tokio::test]
    async fn outputs_start_in_their_initial_state() {
        let rig = start(&config(), HashMap::new());
        assert_eq!(rig.gpio.output("light").await.ok(), Some(true));
        assert_eq!(rig.sim.output_level("light"), Some(true));
        assert_eq!(rig.gpio.output("heating").await.ok(), Some(false));
    }

    #[tokio::test]
    async fn restore_outputs_start_in_their_restored_state_and_others_ignore_it() {
        let restored = HashMap::from([("heating".to_string(), true), ("light".to_string(), false)]);
        let rig = start(&config(), restored);
        assert_eq!(rig.gpio.output("heating").await.ok(), Some(true));
        assert_eq!(rig.sim.output_level("heating"), Some(true));
        assert_eq!(rig.gpio.output("light").await.ok(), Some(true));
    }

    #[tokio::test]
    async fn unknown_names_are_errors_not_panics() {
        let rig = start(&config(), HashMap::new());
        assert!(
            matches!(rig.gpio.set("nope", ON).await, Err(GpioError::UnknownOutput(n)) if n == "nope")
        );
        assert!(matches!(
            rig.gpio.output("nope").await,
            Err(GpioError::UnknownOutput(_))
        ));
        assert!(matches!(
            rig.gpio.input("gate").await,
            Err(GpioError::UnknownInput(_))
        ));
        assert_eq!(
            rig.gpio.output("gate").await.ok(),
            Some(false),
            "task still serves"
        );
    }

    #[tokio::test]
    async fn snapshot_holds_every_state() {
        let rig = start(&config(), HashMap::new());
        assert!(rig.gpio.set("gate", ON).await.is_ok());
        let snapshot = rig.gpio.snapshot().await.ok();
        let expected = GpioSnapshot {
            outputs: BTreeMap::from([
                ("gate".to_string(), true),
                ("heating".to_string(), false),
                ("light".to_string(), true),
            ]),
            inputs: BTreeMap::from([("door".to_string(), false)]),
        };
        assert_eq!(snapshot, Some(expected));
    }

    #[tokio::test]
    async fn a_pulse_switches_back_in_the_running_task() {
        let mut rig = start(&config(), HashMap::new());
        drain(&mut rig.events);
        assert!(rig.gpio.set("gate", pulse_ms(5)).await.is_ok());
        let mut seen = Vec::new();
        while seen.len() < 2 {
            match tokio::time::timeout(Duration::from_secs(5), rig.events.recv()).await {
                Ok(Some(event)) => seen.push(event),
                _ => break,
            }
        }
        assert_eq!(
            seen,
            vec![output_changed("gate", true), output_changed("gate", false)]
        );
        assert_eq!(rig.gpio.output("gate").await.ok(), Some(false));
    }

    #[tokio::test]
    async fn a_settled_input_change_reaches_the_bus_from_the_running_task() {
        let mut cfg = config();
        if let Some(door) = cfg.inputs.get_mut("door") {
            door.debounce_ms = 1;
        }
        let mut rig = start(&cfg, HashMap::new());
        drain(&mut rig.events);
        assert!(rig.sim.set_input("door", true));
        let event = tokio::time::timeout(Duration::from_secs(5), rig.events.recv()).await;
        assert_eq!(event.ok().flatten(), Some(input_changed("door", true)));
        assert_eq!(rig.gpio.input("door").await.ok(), Some(true));
    }

    #[tokio::test]
    async fn shutdown_ends_the_task_leaving_outputs_as_they_are() {
        let Rig {
            gpio,
            sim,
            task,
            stop,
            ..
        } = start(&config(), HashMap::new());
        assert!(gpio.set("gate", pulse_ms(60_000)).await.is_ok());
        let _ = stop.send(());
        assert!(task.await.is_ok());
        // Still on (physically low, active-low): shutdown does not switch anything.
        assert_eq!(sim.output_level("gate"), Some(false));
        assert!(matches!(gpio.output("gate").await, Err(GpioError::Closed)));
    }

    #[tokio::test]
    async fn the_task_ends_when_every_handle_is_dropped() {
        let Rig {
            gpio,
            task,
            stop: _stop,
            ..
        } = start(&config(), HashMap::new());
        let second = gpio.clone();
        drop(gpio);
        drop(second);
        assert!(tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .is_ok());
    }

    #[tokio::test]
    async fn spawn_fails_when_a_line_cannot_be_requested() {
        let (backend, _sim) = sim_backend(&Config::default());
        let result = spawn(
            &config(),
            backend,
            Bus::new(),
            HashMap::new(),
            None,
            std::future::pending(),
        );
        assert!(matches!(result, Err(GpioError::UnknownOutput(_))));
    }
}
