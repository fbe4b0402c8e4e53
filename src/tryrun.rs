//! `gsmgw try`: runs a conversation through the plugins and rules with everything simulated.
//!
//! The scripts run in the real Lua host, the outputs and inputs in the real GPIO task on the
//! simulated backend, script data in the real store, the alarm panel in its real task; only the
//! modem is replaced, by a sink that records the SMS that would be sent and keeps track of
//! calls, and there is no broker: an MQTT connect request gets the answer the bridge would give
//! once connected (`host:port ID=<client id>` from `[mqtt]`). Time is simulated too: the
//! [`Runner`] drives a tokio runtime whose clock is paused and moves only on `advance` steps,
//! stopping at every script timer, timed output and alarm delay on the way, in order.
//!
//! The conversation format (one JSON object a line):
//! - optional first line `{"config":{…}}`: a JSON merge patch (RFC 7396: objects merge, `null`
//!   deletes) over the base config, e.g.
//!   `{"config":{"plugins":{"call_reject_conn":{"master":"+447700900001"}}}}`;
//! - steps: `{"sms":{"from":"+44…","text":"…"}}`, `{"call":{"from":"+44…"}}` (`null` =
//!   withheld; a call in progress ends first), `{"hangup":true}` (the caller hangs up),
//!   `{"input":{"name":"door","on":true}}`, `{"advance":"30s"}` (`ms`, `s`, `m`, `h`),
//!   `{"reload":true}`;
//! - after a step, optionally `{"expect":{…}}`: the keys present are checked against the
//!   step's [`StepResult`] (`outputs` as a subset; each `errors` entry as a part of the error).

use std::collections::BTreeMap;
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use anyhow::Context;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::alarm::AlarmHandle;
use crate::app::{self, CallAction, CommandSink, FlushReport, ScriptsHandle};
use crate::bus::{Bus, Call, Event, IncomingSms, ModemStatus, OutputAction};
use crate::config::Config;
use crate::gpio::{self, GpioHandle, SimGpio};
use crate::lua::watch::Reload;
use crate::mqtt::MqttHandle;
use crate::store::{self, InboxInsert, NewInboxSms, Store, StoreHandle};

/// The base config when none is given and there is no `config/demo.toml` here.
const BUILTIN_CONFIG: &str = include_str!("../config/demo.toml");

/// Rounds of "let every task run" before a step is declared stuck (a script that keeps
/// re-triggering itself).
const MAX_SETTLE_ROUNDS: usize = 10_000;

/// Timer firings one `advance` may go through.
const MAX_TIMER_ROUNDS: usize = 100_000;

/// One thing that happens in a conversation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Step {
    /// An SMS arrives.
    Sms { from: String, text: String },
    /// A call rings; `from: null` is a withheld number.
    Call {
        #[serde(default)]
        from: Option<String>,
    },
    /// The caller of the current call hangs up.
    Hangup(bool),
    /// An input changes (already debounced).
    Input { name: String, on: bool },
    /// Simulated time passes: `"500ms"`, `"30s"`, `"2m"`, `"1h"`.
    Advance(String),
    /// Every script is reloaded from its file, as on SIGHUP.
    Reload(bool),
}

/// An SMS the gateway sent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SentSms {
    pub to: String,
    pub text: String,
}

/// What one step did: printed as one JSON line by `gsmgw try`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepResult {
    /// The step's number, from 1.
    pub step: usize,
    /// The plugin that handled the step's SMS or call (`null`: none did, or no SMS or call).
    pub handled_by: Option<String>,
    /// Every SMS sent during the step, in order.
    pub sms_sent: Vec<SentSms>,
    /// The latest call: `ringing`, `answered`, `rejected` (hung up unanswered), `ended`.
    pub call: Option<String>,
    /// Every output after the step: `ON` or `OFF`.
    pub outputs: BTreeMap<String, String>,
    /// The alarm panel's state after the step.
    pub alarm: Option<String>,
    /// Script errors (`file:line: message`) and problems with the step itself.
    pub errors: Vec<String>,
}

/// Where a call stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CallState {
    Ringing,
    Answered,
    /// Hung up by us without being answered.
    Rejected,
    /// Hung up after being answered, or by the caller.
    Ended,
}

impl CallState {
    fn word(self) -> &'static str {
        match self {
            CallState::Ringing => "ringing",
            CallState::Answered => "answered",
            CallState::Rejected => "rejected",
            CallState::Ended => "ended",
        }
    }

    fn in_progress(self) -> bool {
        matches!(self, CallState::Ringing | CallState::Answered)
    }
}

struct CallRecord {
    from: Option<String>,
    state: CallState,
}

/// What the simulated modem saw and what the scripts reported, for the current step.
#[derive(Default)]
struct Record {
    sms_sent: Vec<SentSms>,
    /// The first SMS or call dispatch of the step: who handled it.
    handled_by: Option<Option<String>>,
    errors: Vec<String>,
    calls: BTreeMap<u64, CallRecord>,
    last_call: Option<u64>,
    /// When timed outputs switch back: the simulated clock must stop there.
    reverts: Vec<Instant>,
}

/// The gateway's sinks with the modem simulated.
struct SimSink {
    bus: Bus,
    gpio: GpioHandle,
    store: StoreHandle,
    alarm: AlarmHandle,
    /// What an MQTT connect request answers: what the real bridge would once connected.
    mqtt_session: Result<String, String>,
    record: Arc<Mutex<Record>>,
}

fn lock(record: &Mutex<Record>) -> MutexGuard<'_, Record> {
    // Every update is complete before the lock is released; a panic cannot leave it half-done.
    record.lock().unwrap_or_else(|e| e.into_inner())
}

impl CommandSink for SimSink {
    fn bus(&self) -> &Bus {
        &self.bus
    }
    fn replies_committed(
        &self,
        replies: &[crate::store::NewOutboxSms],
        rows: &[crate::store::QueuedSms],
    ) {
        // Nothing leaves a simulation, so the outbox rows stay queued; a capped reply is
        // shown as an error, as the gateway would log it.
        let mut record = lock(&self.record);
        for (reply, row) in replies.iter().zip(rows) {
            match &row.capped {
                None => record.sms_sent.push(SentSms {
                    to: reply.to.clone(),
                    text: reply.text.clone(),
                }),
                Some(reason) => record
                    .errors
                    .push(format!("gateway: SMS to {} not sent: {reason}", reply.to)),
            }
        }
    }
    fn gpio(&self) -> &GpioHandle {
        &self.gpio
    }
    fn store(&self) -> &StoreHandle {
        &self.store
    }
    fn alarm(&self) -> &AlarmHandle {
        &self.alarm
    }
    fn mqtt(&self) -> Option<&MqttHandle> {
        None
    }
    async fn send_sms(
        &self,
        to: &str,
        text: &str,
        _request_id: Option<&str>,
        _priority: bool,
    ) -> Result<(), String> {
        lock(&self.record).sms_sent.push(SentSms {
            to: to.to_string(),
            text: text.to_string(),
        });
        Ok(())
    }
    async fn call(&self, action: CallAction, call_id: u64) -> Result<(), String> {
        let ended = {
            let mut record = lock(&self.record);
            let Some(call) = record.calls.get_mut(&call_id) else {
                return Err(format!("there is no call {call_id}"));
            };
            let next = match (call.state, action) {
                (CallState::Ringing, CallAction::Answer) => CallState::Answered,
                (CallState::Ringing, CallAction::Reject | CallAction::HangUp) => {
                    CallState::Rejected
                }
                (CallState::Answered, CallAction::Reject | CallAction::HangUp) => CallState::Ended,
                (state, action) => {
                    // Harmless on a real modem (a stale id is ignored), but a conversation
                    // should show it: the script lost track of its call.
                    let problem = format!(
                        "gateway: {action:?} of call {call_id}, which is {}",
                        state.word()
                    );
                    record.errors.push(problem.clone());
                    return Err(problem);
                }
            };
            call.state = next;
            (!next.in_progress()).then(|| Call {
                id: call_id,
                from: call.from.clone(),
            })
        };
        if let Some(call) = ended {
            self.bus.publish(Event::CallEnded(call));
        }
        Ok(())
    }
    fn start_mqtt_session(&self, id: u64, _seconds: u64) {
        self.bus.publish(Event::MqttSession {
            id,
            result: self.mqtt_session.clone(),
        });
    }
    fn start_ussd(&self, id: u64, code: String) {
        let _ = code;
        self.bus.publish(Event::UssdResult {
            id,
            result: Err("gsmgw try has no network for USSD".into()),
        });
    }
    fn output_commanded(&self, _name: &str, action: &OutputAction) {
        if let OutputAction::Set {
            duration: Some(d), ..
        } = action
        {
            lock(&self.record).reverts.push(Instant::now() + *d);
        }
    }
    fn handled(&self, by: Option<&str>) {
        let mut record = lock(&self.record);
        if record.handled_by.is_none() {
            record.handled_by = Some(by.map(str::to_string));
        }
    }
    fn script_errors(&self, errors: &[String]) {
        lock(&self.record).errors.extend(errors.iter().cloned());
    }
}

/// The simulated gateway, inside whatever tokio runtime the caller runs. [`Runner`] wraps it
/// with a paused clock; tests that want real time (the file watcher) use it directly.
pub struct Simulation {
    /// The gateway's event bus: publish events here as the modem or GPIO task would.
    pub bus: Bus,
    /// The script task's queue: reloads go here, as the watcher's do.
    pub scripts: ScriptsHandle,
    gpio: GpioHandle,
    sim_gpio: SimGpio,
    store: StoreHandle,
    alarm: AlarmHandle,
    record: Arc<Mutex<Record>>,
    next_call_id: u64,
    stop: watch::Sender<bool>,
    scripts_task: JoinHandle<()>,
    tasks: Vec<(&'static str, JoinHandle<()>)>,
    store_thread: std::thread::JoinHandle<()>,
}

impl Simulation {
    /// Starts the store at `store_path`, the GPIO task on the simulated backend and the
    /// configured scripts. Inputs are taken as debounced (steps give settled levels).
    pub async fn start(mut cfg: Config, store_path: &Path) -> anyhow::Result<Simulation> {
        cfg.store.path = store_path.to_path_buf();
        // No broker: connect requests are answered as the bridge would once connected.
        let mqtt_session = if cfg.mqtt.enabled {
            crate::mqtt::session_name(&cfg.mqtt, &cfg.gateway.device_id).map_err(|e| e.to_string())
        } else {
            Err(app::MQTT_DISABLED.to_string())
        };
        cfg.mqtt.enabled = false;
        for input in cfg.inputs.values_mut() {
            input.debounce_ms = 0;
        }
        let bus = Bus::new();
        let script_events = bus.subscribe();
        let db = Store::open(&cfg.store.path, cfg.sms.clone())
            .with_context(|| format!("opening the store {}", cfg.store.path.display()))?;
        let (store, store_thread) = store::spawn(db);
        let (stop, stop_rx) = watch::channel(false);
        let stopped = move || {
            let mut rx = stop_rx.clone();
            async move {
                let _ = rx.wait_for(|stop| *stop).await;
            }
        };
        let (backend, sim_gpio) = gpio::sim_backend(&cfg);
        let mut tasks = Vec::new();
        let (gpio, gpio_tasks) = app::start_gpio(&cfg, backend, &bus, &store, stopped()).await?;
        tasks.extend(gpio_tasks);
        let (alarm, alarm_task) = crate::alarm::spawn(
            &cfg.alarm,
            bus.clone(),
            gpio.clone(),
            store.clone(),
            stopped(),
        )
        .await
        .context("starting the alarm panel")?;
        tasks.push(("alarm", alarm_task));
        let record = Arc::new(Mutex::new(Record::default()));
        let sink = SimSink {
            bus: bus.clone(),
            gpio: gpio.clone(),
            store: store.clone(),
            alarm: alarm.clone(),
            mqtt_session,
            record: record.clone(),
        };
        let (scripts, scripts_task) = app::spawn_scripts(
            &cfg,
            sink,
            Vec::new(),
            script_events,
            modem_status(),
            None,
            stopped(),
        )
        .await?;
        Ok(Simulation {
            bus,
            scripts,
            gpio,
            sim_gpio,
            store,
            alarm,
            record,
            next_call_id: 0,
            stop,
            scripts_task,
            tasks,
            store_thread,
        })
    }

    /// Runs one step and everything it causes; `step` in the result is 0.
    pub async fn step(&mut self, step: &Step) -> StepResult {
        {
            let mut record = lock(&self.record);
            record.sms_sent.clear();
            record.handled_by = None;
            record.errors.clear();
        }
        let mut problems = Vec::new();
        if let Err(e) = self.act(step).await {
            problems.push(e);
        }
        if let Err(e) = self.settle().await {
            problems.push(e);
        }
        let outputs = match self.gpio.snapshot().await {
            Ok(s) => s
                .outputs
                .into_iter()
                .map(|(name, on)| (name, if on { "ON" } else { "OFF" }.to_string()))
                .collect(),
            Err(e) => {
                problems.push(format!("gateway: {e}"));
                BTreeMap::new()
            }
        };
        let mut record = lock(&self.record);
        let call = record
            .last_call
            .and_then(|id| record.calls.get(&id))
            .map(|c| c.state.word().to_string());
        let mut errors = std::mem::take(&mut record.errors);
        errors.extend(problems);
        StepResult {
            step: 0,
            handled_by: record.handled_by.take().flatten(),
            sms_sent: std::mem::take(&mut record.sms_sent),
            call,
            outputs,
            alarm: Some(self.alarm.state().as_str().to_string()),
            errors,
        }
    }

    async fn act(&mut self, step: &Step) -> Result<(), String> {
        match step {
            Step::Sms { from, text } => self.receive_sms(from, text).await,
            Step::Call { from } => {
                self.caller_hangs_up();
                self.next_call_id += 1;
                let call = Call {
                    id: self.next_call_id,
                    from: from.clone(),
                };
                {
                    let mut record = lock(&self.record);
                    record.calls.insert(
                        call.id,
                        CallRecord {
                            from: from.clone(),
                            state: CallState::Ringing,
                        },
                    );
                    record.last_call = Some(call.id);
                }
                self.bus.publish(Event::CallRinging(call));
                Ok(())
            }
            Step::Hangup(_) => {
                if self.caller_hangs_up() {
                    Ok(())
                } else {
                    Err("hangup: no call is in progress".into())
                }
            }
            Step::Input { name, on } => self.set_input(name, *on).await,
            Step::Advance(text) => self.advance(parse_duration(text)?).await,
            Step::Reload(_) => {
                if self.scripts.reload(Reload::All) {
                    Ok(())
                } else {
                    Err("the script task has stopped".into())
                }
            }
        }
    }

    /// An SMS is stored in the inbox and handed to the scripts, as the modem task does.
    async fn receive_sms(&self, from: &str, text: &str) -> Result<(), String> {
        let row = NewInboxSms {
            // Unique, so that the same text twice (or again in a later run) is two messages.
            pdu_hash: format!("try-{:032x}", rand::random::<u128>()),
            from: from.to_string(),
            text: text.to_string(),
            sent_at: None,
            incomplete: false,
        };
        let id = match self.store.inbox_insert(&row).await {
            Ok(InboxInsert::New(id) | InboxInsert::Duplicate(id)) => id,
            Err(e) => return Err(format!("gateway: the inbox refused the SMS: {e}")),
        };
        self.bus.publish(Event::SmsReceived(IncomingSms {
            id,
            from: from.to_string(),
            text: text.to_string(),
            time: None,
            incomplete: false,
            sender_kind: crate::bus::SenderKind::of(from),
        }));
        Ok(())
    }

    /// The caller of the call in progress hangs up; false when there is none.
    fn caller_hangs_up(&self) -> bool {
        let ended = {
            let mut record = lock(&self.record);
            let Some(id) = record.last_call else {
                return false;
            };
            match record.calls.get_mut(&id) {
                Some(call) if call.state.in_progress() => {
                    call.state = CallState::Ended;
                    Call {
                        id,
                        from: call.from.clone(),
                    }
                }
                _ => return false,
            }
        };
        self.bus.publish(Event::CallEnded(ended));
        true
    }

    async fn set_input(&self, name: &str, on: bool) -> Result<(), String> {
        if !self.sim_gpio.set_input(name, on) {
            return Err(format!("input: there is no input called {name:?}"));
        }
        // The edge reaches the GPIO task on its own channel; once it reports the new level,
        // the change is on the bus.
        for _ in 0..MAX_SETTLE_ROUNDS {
            match self.gpio.input(name).await {
                Ok(level) if level == on => return Ok(()),
                Ok(_) => tokio::task::yield_now().await,
                Err(e) => return Err(format!("input {name}: {e}")),
            }
        }
        Err(format!("input {name}: the GPIO task never saw the change"))
    }

    /// Moves the paused clock by `by`, stopping at each script timer and timed output on the
    /// way so that they happen in order, each at its own time.
    async fn advance(&mut self, by: Duration) -> Result<(), String> {
        let target = Instant::now() + by;
        for _ in 0..MAX_TIMER_ROUNDS {
            let report = self.settle().await?;
            let now = Instant::now();
            let next_revert = {
                let mut record = lock(&self.record);
                record.reverts.retain(|at| *at > now);
                record.reverts.iter().min().copied()
            };
            let next = [report.next_timer, next_revert]
                .into_iter()
                .flatten()
                .filter(|at| *at > now)
                .min();
            match next {
                Some(at) if at <= target => tokio::time::advance(at - now).await,
                _ => {
                    tokio::time::advance(target.saturating_duration_since(now)).await;
                    return Ok(());
                }
            }
        }
        Err(format!(
            "advance: more than {MAX_TIMER_ROUNDS} timer rounds; is a timer re-arming itself at once?"
        ))
    }

    /// Lets every task run until the scripts and the alarm panel are idle: due timers run,
    /// every event is handled and every command carried out, including the events those
    /// commands cause. `next_timer` in the report is the next script or alarm timer.
    pub async fn settle(&self) -> Result<FlushReport, String> {
        for _ in 0..MAX_SETTLE_ROUNDS {
            tokio::task::yield_now().await;
            // The GPIO task runs its due reverts before it answers.
            let _ = self.gpio.snapshot().await;
            // The panel answers only once it has handled every event and request before, so
            // what it published is on the bus before the scripts are flushed.
            let alarm_timer = self
                .alarm
                .idle()
                .await
                .map_err(|e| format!("gateway: {e}"))?;
            let mut report = self
                .scripts
                .flush()
                .await
                .ok_or("gateway: the script task has stopped")?;
            // A timer at `now` has not run yet: its effects are still to come.
            let alarm_due = alarm_timer.is_some_and(|at| at <= Instant::now());
            if report.handled == 0 && !alarm_due {
                report.next_timer = [report.next_timer, alarm_timer].into_iter().flatten().min();
                return Ok(report);
            }
        }
        Err(format!(
            "gateway: still busy after {MAX_SETTLE_ROUNDS} rounds; do scripts trigger each other forever?"
        ))
    }

    /// The SMS sent since the last step (or the last call of this), in order.
    pub fn take_sms_sent(&self) -> Vec<SentSms> {
        std::mem::take(&mut lock(&self.record).sms_sent)
    }

    /// Stops the scripts, then GPIO and the store, and waits for them.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        if let Err(e) = self.scripts_task.await {
            tracing::error!(error = %e, "the script task failed");
        }
        for (name, task) in self.tasks {
            if let Err(e) = task.await {
                tracing::error!(task = name, error = %e, "task failed");
            }
        }
        if let Err(e) = self.store.shutdown().await {
            tracing::error!(error = %e, "the store did not shut down cleanly");
        }
        let thread = self.store_thread;
        let _ = tokio::task::spawn_blocking(move || thread.join()).await;
    }
}

/// What the simulated modem reports: registered, with the simulated modem's IMEI.
fn modem_status() -> ModemStatus {
    ModemStatus {
        ready: true,
        registered: true,
        roaming: false,
        operator: Some("gsmgw try".into()),
        signal_dbm: Some(-71),
        imei: Some(crate::modem::sim::SimConfig::default().imei),
    }
}

/// Runs steps one at a time on a simulated gateway with a paused clock.
pub struct Runner {
    simulation: Option<Simulation>,
    steps: usize,
    load_errors: Vec<String>,
    /// Keeps a blocking task alive: tokio does not move a paused clock on its own while one
    /// runs, so time passes only when an `advance` step says so (not while the store thread
    /// works, say).
    clock_hold: Option<std::sync::mpsc::Sender<()>>,
    /// The store's folder when it is ours to delete.
    temp_dir: Option<PathBuf>,
    runtime: tokio::runtime::Runtime,
}

impl Runner {
    /// A simulated gateway for `cfg`, its store in `state_dir` (kept) or in a temporary folder
    /// (deleted when the runner is dropped).
    pub fn new(mut cfg: Config, state_dir: Option<&Path>) -> anyhow::Result<Runner> {
        // Nothing leaves a simulation, so there is no credit to protect; a conversation may
        // send more replies in its simulated minutes than the hourly caps allow.
        cfg.sms.max_per_hour = u32::MAX;
        cfg.sms.max_per_day = u32::MAX;
        cfg.sms.max_per_recipient_per_hour = u32::MAX;
        cfg.sms.max_per_recipient_per_day = u32::MAX;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .build()
            .context("starting the tokio runtime")?;
        let (clock_hold, held) = std::sync::mpsc::channel::<()>();
        runtime.spawn_blocking(move || {
            let _ = held.recv();
        });
        let (dir, temp_dir) = match state_dir {
            Some(dir) => (dir.to_path_buf(), None),
            None => {
                let dir = std::env::temp_dir().join(format!(
                    "gsmgw-try-{}-{:016x}",
                    std::process::id(),
                    rand::random::<u64>()
                ));
                (dir.clone(), Some(dir))
            }
        };
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        crate::demo::find_stock_plugins(&mut cfg, &dir)?;
        let started = runtime.block_on(Simulation::start(cfg, &dir.join("gsmgw.db")));
        let mut runner = Runner {
            simulation: None,
            steps: 0,
            load_errors: Vec::new(),
            clock_hold: Some(clock_hold),
            temp_dir,
            runtime,
        };
        let simulation = started?;
        // What loading the scripts did (errors, init commands) is not any step's.
        let _ = runner.runtime.block_on(simulation.settle());
        runner.load_errors = std::mem::take(&mut lock(&simulation.record).errors);
        runner.simulation = Some(simulation);
        Ok(runner)
    }

    /// What went wrong while the gateway started: scripts that did not load (`file:line:
    /// message`) and errors their top level or `init` raised.
    pub fn load_errors(&self) -> &[String] {
        &self.load_errors
    }

    /// Runs `step` and everything it causes.
    pub fn step(&mut self, step: &Step) -> StepResult {
        self.steps += 1;
        let mut result = match self.simulation.as_mut() {
            Some(sim) => self.runtime.block_on(sim.step(step)),
            None => StepResult {
                errors: vec!["gateway: not running".into()],
                ..StepResult::default()
            },
        };
        result.step = self.steps;
        result
    }
}

impl Drop for Runner {
    fn drop(&mut self) {
        if let Some(sim) = self.simulation.take() {
            self.runtime.block_on(sim.stop());
        }
        // The runtime waits for its blocking tasks when dropped: release ours first.
        self.clock_hold = None;
        if let Some(dir) = &self.temp_dir {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// `"500ms"`, `"30s"`, `"2m"`, `"1h"`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let at = text
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| format!("advance: {text:?} has no unit (ms, s, m or h)"))?;
    let (number, unit) = text.split_at(at);
    let n: u64 = number
        .parse()
        .map_err(|e| format!("advance: {text:?}: {e}"))?;
    let seconds = |factor: u64| {
        n.checked_mul(factor)
            .map(Duration::from_secs)
            .ok_or_else(|| format!("advance: {text:?} is too long"))
    };
    match unit {
        "ms" => Ok(Duration::from_millis(n)),
        "s" => seconds(1),
        "m" => seconds(60),
        "h" => seconds(3600),
        _ => Err(format!(
            "advance: {text:?}: unknown unit {unit:?} (ms, s, m or h)"
        )),
    }
}

/// One line of a conversation.
#[derive(Debug, Clone, PartialEq)]
pub enum Line {
    /// `{"config":{…}}`: a merge patch over the base config (first line only).
    Config(Value),
    /// `{"expect":{…}}`: checked against the result of the step before it.
    Expect(Value),
    Step(Step),
}

/// Parses one non-empty line of a conversation.
pub fn parse_line(line: &str) -> Result<Line, String> {
    let value: Value = serde_json::from_str(line).map_err(|e| format!("not JSON: {e}"))?;
    if let Some(config) = value.get("config") {
        return Ok(Line::Config(config.clone()));
    }
    if let Some(expect) = value.get("expect") {
        return Ok(Line::Expect(expect.clone()));
    }
    serde_json::from_value(value.clone())
        .map(Line::Step)
        .map_err(|e| format!("not a step ({e}): {value}"))
}

/// Checks the keys of `expect` against `result`; the error says what was expected and got.
pub fn check_expect(result: &StepResult, expect: &Value) -> Result<(), String> {
    let Some(expect) = expect.as_object() else {
        return Err(format!("expect must be an object, not {expect}"));
    };
    let got = serde_json::to_value(result).map_err(|e| e.to_string())?;
    let mut problems = Vec::new();
    for (key, want) in expect {
        let have = got.get(key).cloned().unwrap_or(Value::Null);
        match key.as_str() {
            "sms_sent" | "call" | "handled_by" | "alarm" => {
                if *want != have {
                    problems.push(format!("{key}: expected {want}, got {have}"));
                }
            }
            "outputs" => {
                let Some(want) = want.as_object() else {
                    problems.push(format!("outputs: expected an object, not {want}"));
                    continue;
                };
                for (name, state) in want {
                    let actual = result.outputs.get(name);
                    if actual.map(|s| Value::String(s.clone())).as_ref() != Some(state) {
                        problems.push(format!(
                            "outputs.{name}: expected {state}, got {}",
                            actual.map_or("no such output".to_string(), |s| format!("{s:?}"))
                        ));
                    }
                }
            }
            "errors" => {
                let want: Vec<String> = serde_json::from_value(want.clone())
                    .map_err(|e| format!("errors: expected a list of strings: {e}"))?;
                let matches = want.len() == result.errors.len()
                    && want.iter().zip(&result.errors).all(|(w, g)| g.contains(w));
                if !matches {
                    problems.push(format!(
                        "errors: expected {want:?}, got {:?}",
                        result.errors
                    ));
                }
            }
            other => problems.push(format!(
                "unknown expectation {other:?} (sms_sent, call, outputs, handled_by, alarm, errors)"
            )),
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("; "))
    }
}

/// The base config: `path` (with the environment overrides, as `gsmgw run` reads it, when
/// there is no patch), else `config/demo.toml` when it is here, else the built-in copy of it;
/// with `patch` (a conversation's first line) merged over it.
pub fn load_config(path: Option<&Path>, patch: Option<&Value>) -> anyhow::Result<Config> {
    if let (Some(path), None) = (path, patch) {
        // As the gateway loads it: with the GSMGW_* environment overrides.
        return Ok(Config::load(path)?);
    }
    let demo = Path::new("config/demo.toml");
    let (text, name) = match path {
        Some(p) => (
            std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?,
            p.display().to_string(),
        ),
        None if demo.is_file() => (
            std::fs::read_to_string(demo).context("reading config/demo.toml")?,
            demo.display().to_string(),
        ),
        None => (
            BUILTIN_CONFIG.to_string(),
            "demo.toml (built in)".to_string(),
        ),
    };
    let Some(patch) = patch else {
        return Ok(Config::from_toml(&text, &name)?);
    };
    let base: toml::Table =
        toml::from_str(&text).with_context(|| format!("{name}: not valid TOML"))?;
    let mut merged = serde_json::to_value(base).context("converting the config")?;
    merge_patch(&mut merged, patch);
    let merged: toml::Value = toml::Value::try_from(merged)
        .context("the conversation's config does not fit in a TOML config")?;
    let text = toml::to_string(&merged).context("writing the merged config")?;
    Ok(Config::from_toml(
        &text,
        &format!("{name} + conversation config"),
    )?)
}

/// RFC 7396: objects merge key by key, `null` deletes, anything else replaces.
fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(patch) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Default::default());
    }
    if let Value::Object(target) = target {
        for (key, value) in patch {
            if value.is_null() {
                target.remove(key);
            } else {
                merge_patch(target.entry(key.clone()).or_insert(Value::Null), value);
            }
        }
    }
}

/// Runs the conversation `text` (named `name` in errors) on a fresh simulated gateway with the
/// default base config; the error is `name:line: …` for the first line that does not hold.
pub fn check_conversation(name: &str, text: &str) -> Result<(), String> {
    let mut lines = text
        .lines()
        .enumerate()
        .map(|(at, line)| (at + 1, line.trim()))
        .filter(|(_, line)| !line.is_empty())
        .map(|(at, line)| {
            parse_line(line)
                .map(|l| (at, l))
                .map_err(|e| format!("{name}:{at}: {e}"))
        })
        .peekable();
    let patch = match lines.peek() {
        Some(Ok((_, Line::Config(patch)))) => {
            let patch = patch.clone();
            lines.next();
            Some(patch)
        }
        _ => None,
    };
    let cfg = load_config(None, patch.as_ref()).map_err(|e| format!("{name}:1: {e:#}"))?;
    let mut runner = Runner::new(cfg, None).map_err(|e| format!("{name}: {e:#}"))?;
    let mut last: Option<(usize, StepResult)> = None;
    let mut expectations = 0;
    for line in lines {
        let (at, line) = line?;
        match line {
            Line::Config(_) => {
                return Err(format!(
                    "{name}:{at}: config is allowed on the first line only"
                ))
            }
            Line::Expect(expect) => {
                let (step_at, result) = last
                    .as_ref()
                    .ok_or_else(|| format!("{name}:{at}: expect without a step before it"))?;
                check_expect(result, &expect)
                    .map_err(|e| format!("{name}:{at}: after the step on line {step_at}: {e}"))?;
                expectations += 1;
            }
            Line::Step(step) => last = Some((at, runner.step(&step))),
        }
    }
    if expectations == 0 {
        return Err(format!("{name}: no expectation, so it checks nothing"));
    }
    Ok(())
}

/// [`check_conversation`] on the file at `path`.
pub fn check_conversation_file(path: &Path) -> Result<(), String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    check_conversation(&path.display().to_string(), &text)
}

/// The `gsmgw try` command: steps from stdin, one JSON result a line on stdout. `expect`
/// lines are checked; a failed one is reported on stderr and makes the exit code 1. So does a
/// script that failed to load: its error is also in the first step's `errors`.
pub fn run_cli(config: Option<&Path>, state: Option<&Path>) -> anyhow::Result<ExitCode> {
    let stdin = std::io::stdin();
    let mut runner: Option<Runner> = None;
    let mut patch: Option<Value> = None;
    let mut last: Option<StepResult> = None;
    let mut failed = false;
    for (at, line) in stdin.lock().lines().enumerate() {
        let at = at + 1;
        let line = line.context("reading stdin")?;
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let parsed = match parse_line(line) {
            Ok(parsed) => parsed,
            Err(e) => {
                eprintln!("stdin:{at}: {e}");
                failed = true;
                continue;
            }
        };
        match parsed {
            Line::Config(p) if runner.is_none() => patch = Some(p),
            Line::Config(_) => {
                eprintln!("stdin:{at}: config must come before the first step");
                failed = true;
            }
            Line::Expect(expect) => match &last {
                Some(result) => {
                    if let Err(e) = check_expect(result, &expect) {
                        eprintln!("stdin:{at}: {e}");
                        failed = true;
                    }
                }
                None => {
                    eprintln!("stdin:{at}: expect without a step before it");
                    failed = true;
                }
            },
            Line::Step(step) => {
                let (runner, first) = match &mut runner {
                    Some(r) => (r, false),
                    None => {
                        let cfg = load_config(config, patch.as_ref())?;
                        (runner.insert(Runner::new(cfg, state)?), true)
                    }
                };
                let mut result = runner.step(&step);
                if first && !runner.load_errors().is_empty() {
                    // A conversation against a half-loaded gateway proves little: say so in
                    // the output (the first step's errors) and in the exit code.
                    for e in runner.load_errors() {
                        eprintln!("not loaded: {e}");
                    }
                    let mut errors = runner.load_errors().to_vec();
                    errors.append(&mut result.errors);
                    result.errors = errors;
                    failed = true;
                }
                println!("{}", serde_json::to_string(&result)?);
                last = Some(result);
            }
        }
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn durations_take_ms_s_m_and_h() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert!(parse_duration("30").is_err());
        assert!(parse_duration("3d").is_err());
        assert!(parse_duration("99999999999999999999h").is_err());
    }

    #[test]
    fn steps_parse_from_their_json_lines() {
        assert_eq!(
            parse_line(r#"{"call":{"from":null}}"#),
            Ok(Line::Step(Step::Call { from: None }))
        );
        assert_eq!(
            parse_line(r#"{"sms":{"from":"+44","text":"HI"}}"#),
            Ok(Line::Step(Step::Sms {
                from: "+44".into(),
                text: "HI".into()
            }))
        );
        assert_eq!(
            parse_line(r#"{"hangup":true}"#),
            Ok(Line::Step(Step::Hangup(true)))
        );
        assert!(parse_line(r#"{"dance":true}"#).is_err());
    }

    #[test]
    fn merge_patch_merges_objects_and_null_deletes() {
        let mut base = json!({"a": {"b": 1, "c": 2}, "d": 3});
        merge_patch(&mut base, &json!({"a": {"b": 5, "c": null}, "e": [1]}));
        assert_eq!(base, json!({"a": {"b": 5}, "d": 3, "e": [1]}));
    }

    #[test]
    fn expectations_name_what_differs() {
        let result = StepResult {
            step: 1,
            outputs: BTreeMap::from([("relay".to_string(), "ON".to_string())]),
            errors: vec!["x.lua:3: boom".into()],
            ..StepResult::default()
        };
        assert_eq!(
            check_expect(
                &result,
                &json!({"outputs": {"relay": "ON"}, "errors": ["x.lua:3"]})
            ),
            Ok(())
        );
        let e = check_expect(
            &result,
            &json!({"outputs": {"relay": "OFF"}, "call": "ringing"}),
        );
        assert_eq!(
            e,
            Err(
                "call: expected \"ringing\", got null; outputs.relay: expected \"OFF\", got \"ON\""
                    .to_string()
            )
        );
        assert!(check_expect(&result, &json!({"handeld_by": null})).is_err());
    }
}
