//! Wiring: builds the owning tasks from a validated config, routes commands to them, runs the
//! Lua host, and shuts everything down in an order that leaves no SMS half-handled.

use std::collections::BTreeMap;
use std::future::Future;

use anyhow::Context;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::alarm::AlarmHandle;
use crate::bus::{Bus, Command, Event, ModemStatus, OutputAction, ScriptKind, ScriptStatus};
use crate::config::Config;
use crate::gpio::{self, GpioBackend, GpioHandle};
use crate::lua::watch::{Reload, ScriptWatcher};
use crate::lua::{HostOptions, LockoutPolicy, LuaHost, World, LOCKOUT_SCOPE};
use crate::modem::driver::{self, DriverOptions, ModemHandle};
use crate::mqtt::{self, MqttHandle};
use crate::service;
use crate::store::{self, Store, StoreHandle};

/// Choices the config file does not make: what the demo and tests substitute.
#[derive(Default)]
pub struct RunOptions {
    /// Drive this GPIO backend instead of the configured one (the simulated one).
    pub gpio_backend: Option<Box<dyn GpioBackend>>,
}

/// The handles of a running gateway.
#[derive(Clone)]
pub struct Handles {
    pub bus: Bus,
    pub gpio: GpioHandle,
    pub modem: ModemHandle,
    pub store: StoreHandle,
    pub mqtt: Option<MqttHandle>,
    pub alarm: AlarmHandle,
}

/// A running gateway: its handles and its tasks.
pub struct Gateway {
    pub handles: Handles,
    /// Reloads go here (the watcher and SIGHUP use it too).
    pub scripts: ScriptsHandle,
    /// Kept alive while the gateway runs; `None` when `lua.hot_reload` is off.
    _watcher: Option<ScriptWatcher>,
    scripts_stop: watch::Sender<bool>,
    scripts_task: JoinHandle<()>,
    stop: watch::Sender<bool>,
    tasks: Vec<(&'static str, JoinHandle<()>)>,
    store_thread: std::thread::JoinHandle<()>,
    /// Asks the script loop whether it still comes round; taken by the systemd watchdog.
    liveness: Option<service::Liveness>,
}

/// Runs the gateway until `shutdown` resolves, then drains every task.
pub async fn run(
    cfg: Config,
    opts: RunOptions,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let mut gateway = start(cfg, opts).await?;
    // Under systemd: ready only now that every task runs; the watchdog is pinged only while
    // the script loop answers (see `service`).
    service::ready();
    let mut service_tasks = Vec::new();
    if let (Some(period), Some(liveness)) = (service::watchdog_period(), gateway.liveness.take()) {
        service_tasks.push(tokio::spawn(service::watchdog(
            period,
            liveness,
            std::future::pending(),
        )));
    }
    if service::under_systemd() {
        let events = gateway.handles.bus.subscribe();
        let now = gateway.handles.modem.status();
        service_tasks.push(tokio::spawn(service::report_modem_status(now, events)));
    }
    shutdown.await;
    tracing::info!("shutting down");
    service::stopping();
    for task in service_tasks {
        task.abort();
    }
    gateway.stop().await;
    Ok(())
}

/// A future that resolves when `rx` turns true (or its sender is gone).
async fn stopped(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|stop| *stop).await;
}

/// Builds every task. Config problems were found before; what can fail here is the outside
/// world (a store that cannot be opened, a GPIO line that is busy).
pub async fn start(cfg: Config, opts: RunOptions) -> anyhow::Result<Gateway> {
    let bus = Bus::new();
    // Subscribed before anything can publish, so the Lua host misses no event.
    let script_events = bus.subscribe();

    let db = Store::open(&cfg.store.path, cfg.sms.clone())
        .with_context(|| format!("opening the store {}", cfg.store.path.display()))?;
    let (store, store_thread) = store::spawn(db);
    let (stop, stop_rx) = watch::channel(false);
    let mut tasks = Vec::new();

    let (cmd_tx, cmd_rx) = mpsc::channel::<Command>(256);
    let mqtt = if cfg.mqtt.enabled {
        let (handle, task) = mqtt::spawn(&cfg, &bus, cmd_tx.clone(), stopped(stop_rx.clone()))
            .context("starting the MQTT bridge")?;
        tasks.push(("mqtt", task));
        Some(handle)
    } else {
        None
    };

    let backend = match opts.gpio_backend {
        Some(b) => b,
        None => gpio::open_backend(&cfg).context("opening the GPIO backend")?,
    };
    let (gpio, gpio_tasks) =
        start_gpio(&cfg, backend, &bus, &store, stopped(stop_rx.clone())).await?;
    tasks.extend(gpio_tasks);

    let mut modem_opts = DriverOptions::from_config(&cfg);
    if let Some(key) = cfg.modem.power_key.clone() {
        let (gpio, pulse) = (
            gpio.clone(),
            std::time::Duration::from_millis(cfg.modem.power_key_pulse_ms),
        );
        modem_opts.power_key = Some(Box::new(move || {
            let (gpio, key) = (gpio.clone(), key.clone());
            tokio::spawn(async move {
                let press = crate::bus::OutputAction::Set {
                    on: true,
                    duration: Some(pulse),
                };
                if let Err(e) = gpio.set(&key, press).await {
                    tracing::error!(output = %key, error = %e, "could not press the modem's power key");
                }
            });
        }));
    }
    let (modem, modem_task) = driver::spawn(
        modem_opts,
        store.clone(),
        bus.clone(),
        stopped(stop_rx.clone()),
    );
    tasks.push(("modem", modem_task));

    // After GPIO (it reads the zones' levels) and before the Lua host, so the plugins see the
    // restored alarm state as the first alarm event.
    let (alarm, alarm_task) = crate::alarm::spawn(
        &cfg.alarm,
        bus.clone(),
        gpio.clone(),
        store.clone(),
        stopped(stop_rx.clone()),
    )
    .await
    .context("starting the alarm panel")?;
    tasks.push(("alarm", alarm_task));
    let handles = Handles {
        bus: bus.clone(),
        gpio,
        modem,
        store,
        mqtt,
        alarm,
    };

    let router_handles = handles.clone();
    tasks.push((
        "commands",
        tokio::spawn(route_commands(cmd_rx, router_handles)),
    ));

    // Messages stored but never handed to the plugins (the gateway stopped in between) are
    // offered first, oldest first. They go to the script task only, not on the bus: MQTT
    // announced each one when it was stored, and announces a message at most once.
    let undelivered = match handles.store.inbox_undelivered().await {
        Ok(rows) => rows
            .into_iter()
            .map(|row| {
                Event::SmsReceived(crate::bus::IncomingSms {
                    id: row.id,
                    from: row.from,
                    text: row.text,
                    time: row.sent_at,
                    incomplete: row.incomplete,
                })
            })
            .collect(),
        Err(e) => {
            tracing::error!(error = %e, "could not read undelivered messages");
            Vec::new()
        }
    };
    let (scripts_stop, scripts_stop_rx) = watch::channel(false);
    let modem_status = handles.modem.status();
    // The watchdog asks the script loop itself: it handles every SMS, call and input and
    // waits on each owner it commands, so a hang anywhere on that path stops the pings.
    let (liveness, heartbeat) = service::liveness();
    let (scripts, scripts_task) = spawn_scripts(
        &cfg,
        handles.clone(),
        undelivered,
        script_events,
        modem_status,
        Some(heartbeat),
        stopped(scripts_stop_rx),
    )
    .await?;
    let watcher = if cfg.lua.hot_reload {
        let reloads = scripts.clone();
        match ScriptWatcher::start(&cfg.lua, move |r| {
            reloads.reload(r);
        }) {
            Ok(w) => Some(w),
            Err(e) => {
                // The gateway works without it; saving a script then needs a SIGHUP.
                tracing::error!(error = %e, "hot reload is off: cannot watch the script folders");
                None
            }
        }
    } else {
        None
    };
    tasks.push((
        "sighup",
        tokio::spawn(reload_on_sighup(scripts.clone(), stopped(stop_rx.clone()))),
    ));

    Ok(Gateway {
        handles,
        scripts,
        _watcher: watcher,
        scripts_stop,
        scripts_task,
        stop,
        tasks,
        store_thread,
        liveness: Some(liveness),
    })
}

/// Starts the GPIO task on `backend` with the output states saved in `store` restored, and the
/// task that saves them as they change. Shared by the gateway and `gsmgw try`.
pub async fn start_gpio(
    cfg: &Config,
    backend: Box<dyn GpioBackend>,
    bus: &Bus,
    store: &StoreHandle,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<(GpioHandle, Vec<(&'static str, JoinHandle<()>)>)> {
    let restored = store
        .output_states()
        .await
        .context("reading the saved output states")?;
    let persist_store = store.clone();
    let (persist_tx, mut persist_rx) = mpsc::unbounded_channel::<(String, bool)>();
    // Output states are written in the order they change, by one task, so the last write wins.
    let persist_task = tokio::spawn(async move {
        while let Some((name, on)) = persist_rx.recv().await {
            if let Err(e) = persist_store.output_state_set(&name, on).await {
                tracing::error!(output = %name, error = %e, "could not save the output state");
            }
        }
    });
    let (gpio, gpio_task) = gpio::spawn(
        cfg,
        backend,
        bus.clone(),
        restored,
        Some(Box::new(move |name: &str, on: bool| {
            let _ = persist_tx.send((name.to_string(), on));
        })),
        shutdown,
    )
    .context("starting GPIO")?;
    Ok((
        gpio,
        vec![("output-states", persist_task), ("gpio", gpio_task)],
    ))
}

impl Gateway {
    /// Stops the Lua host first (it finishes the event in hand and the ones queued), then the
    /// owners of the resources, and waits for all of them.
    pub async fn stop(self) {
        let _ = self.scripts_stop.send(true);
        if let Err(e) = self.scripts_task.await {
            tracing::error!(error = %e, "the script task failed");
        }
        let _ = self.stop.send(true);
        for (name, task) in self.tasks {
            if let Err(e) = task.await {
                tracing::error!(task = name, error = %e, "task failed");
            }
        }
        // Last: every write the other tasks made on their way out is committed first.
        if let Err(e) = self.handles.store.shutdown().await {
            tracing::error!(error = %e, "the store did not shut down cleanly");
        }
        let thread = self.store_thread;
        let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        tracing::info!("stopped");
    }
}

/// What a call command asks of the modem.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallAction {
    Reject,
    Answer,
    HangUp,
}

/// The answer to an MQTT connect request when `mqtt.enabled` is false.
pub const MQTT_DISABLED: &str = "MQTT is disabled in the config";

/// The owners [`execute_on`] hands commands to. The gateway's [`Handles`] reach the real tasks;
/// `gsmgw try` keeps the real GPIO, store and bus but simulates the modem and records what
/// would leave the box. The routing itself lives in one place, [`execute_on`].
pub trait CommandSink: Sync {
    fn bus(&self) -> &Bus;
    fn gpio(&self) -> &GpioHandle;
    fn store(&self) -> &StoreHandle;
    fn alarm(&self) -> &AlarmHandle;
    /// The MQTT bridge, when enabled.
    fn mqtt(&self) -> Option<&MqttHandle>;
    /// Queues an outgoing SMS.
    fn send_sms(
        &self,
        to: &str,
        text: &str,
        request_id: Option<&str>,
    ) -> impl Future<Output = Result<(), String>> + Send;
    /// Rejects, answers or hangs up call `call_id`.
    fn call(
        &self,
        action: CallAction,
        call_id: u64,
    ) -> impl Future<Output = Result<(), String>> + Send;
    /// Starts a USSD session; the answer comes back later as [`Event::UssdResult`].
    fn start_ussd(&self, id: u64, code: String);
    /// Connects the on-demand MQTT session for `seconds`; the answer comes back later as
    /// [`Event::MqttSession`]. By default through [`CommandSink::mqtt`].
    fn start_mqtt_session(&self, id: u64, seconds: u64) {
        // Answered later as an event: connecting may take seconds, and the caller (a
        // script) must not hold up the events behind it.
        let (mqtt, bus) = (self.mqtt().cloned(), self.bus().clone());
        tokio::spawn(async move {
            let result = match mqtt {
                Some(m) => m.connect_for(seconds).await.map_err(|e| e.to_string()),
                None => Err(MQTT_DISABLED.to_string()),
            };
            bus.publish(Event::MqttSession { id, result });
        });
    }
    /// Told before an output command goes to the GPIO task (a simulated clock needs to know
    /// when timed outputs fall due).
    fn output_commanded(&self, _name: &str, _action: &OutputAction) {}
    /// Told which plugin handled an SMS or a call (`None`: no plugin did).
    fn handled(&self, _by: Option<&str>) {}
    /// Told every script error (`file:line: message`), after it is logged.
    fn script_errors(&self, _errors: &[String]) {}
    /// Replies to a received SMS, already committed to the outbox with its delivery: announce
    /// them and get them sent.
    fn replies_committed(&self, replies: &[store::NewOutboxSms], rows: &[store::QueuedSms]);
}

impl CommandSink for Handles {
    fn bus(&self) -> &Bus {
        &self.bus
    }
    fn replies_committed(&self, replies: &[store::NewOutboxSms], rows: &[store::QueuedSms]) {
        for (reply, row) in replies.iter().zip(rows) {
            self.modem
                .announce_queued(&reply.to, reply.request_id.as_deref(), row);
        }
        self.modem.kick();
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
        self.mqtt.as_ref()
    }
    async fn send_sms(&self, to: &str, text: &str, request_id: Option<&str>) -> Result<(), String> {
        self.modem
            .queue_sms(to, text, request_id)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
    async fn call(&self, action: CallAction, call_id: u64) -> Result<(), String> {
        let result = match action {
            CallAction::Reject => self.modem.reject_call(call_id).await,
            CallAction::Answer => self.modem.answer_call(call_id).await,
            CallAction::HangUp => self.modem.hang_up(call_id).await,
        };
        result.map_err(|e| e.to_string())
    }
    fn start_ussd(&self, id: u64, code: String) {
        let (modem, bus) = (self.modem.clone(), self.bus.clone());
        tokio::spawn(async move {
            let result = modem.ussd(&code).await.map_err(|e| e.to_string());
            bus.publish(Event::UssdResult { id, result });
        });
    }
}

/// Carries out one command on the task that owns its resource. Failures are logged: the
/// caller (a script, an MQTT message) has moved on.
pub async fn execute(h: &Handles, cmd: Command) {
    execute_on(h, cmd).await
}

/// [`execute`] on any [`CommandSink`].
pub async fn execute_on<S: CommandSink>(h: &S, cmd: Command) {
    match cmd {
        Command::SetOutput { name, action } => {
            h.output_commanded(&name, &action);
            if let Err(e) = h.gpio().set(&name, action).await {
                tracing::warn!(output = %name, error = %e, "output command failed");
            }
        }
        Command::SendSms {
            to,
            text,
            request_id,
        } => {
            if let Err(e) = h.send_sms(&to, &text, request_id.as_deref()).await {
                tracing::warn!(to = %to, error = %e, "SMS not queued");
            }
        }
        Command::RejectCall { call_id } => log_call(h.call(CallAction::Reject, call_id).await),
        Command::AnswerCall { call_id } => log_call(h.call(CallAction::Answer, call_id).await),
        Command::HangUp { call_id } => log_call(h.call(CallAction::HangUp, call_id).await),
        Command::KvSet { scope, key, value } => {
            if let Err(e) = h.store().kv_set(&scope, &key, value.as_deref()).await {
                tracing::error!(scope = %scope, key = %key, error = %e, "could not save script data");
            }
        }
        Command::MqttPublish {
            topic,
            payload,
            retain,
        } => match h.mqtt() {
            Some(m) => {
                if let Err(e) = m.publish(&topic, payload, retain).await {
                    tracing::warn!(topic = %topic, error = %e, "MQTT publish failed");
                }
            }
            None => tracing::debug!(topic = %topic, "MQTT disabled; publish dropped"),
        },
        Command::MqttSubscribe { topic } => match h.mqtt() {
            Some(m) => {
                if let Err(e) = m.subscribe(&topic).await {
                    tracing::warn!(topic = %topic, error = %e, "MQTT subscribe failed");
                }
            }
            None => tracing::debug!(topic = %topic, "MQTT disabled; subscription ignored"),
        },
        Command::MqttConnect { id, seconds } => h.start_mqtt_session(id, seconds),
        Command::Alarm { action, by, code } => {
            if let Err(e) = h
                .alarm()
                .command(action, by.as_deref(), code.as_ref())
                .await
            {
                tracing::warn!(?action, by = by.as_deref().unwrap_or("-"), error = %e, "alarm request refused");
            }
        }
        Command::Ussd { id, code } => h.start_ussd(id, code),
    }
}

fn log_call(result: Result<(), String>) {
    if let Err(e) = result {
        tracing::warn!(error = %e, "call command failed");
    }
}

async fn route_commands(mut rx: mpsc::Receiver<Command>, handles: Handles) {
    while let Some(cmd) = rx.recv().await {
        execute(&handles, cmd).await;
    }
}

async fn reload_on_sighup(scripts: ScriptsHandle, shutdown: impl Future<Output = ()>) {
    let mut hangups = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for SIGHUP; reload by saving the scripts");
            return;
        }
    };
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            got = hangups.recv() => match got {
                Some(()) => {
                    tracing::info!("SIGHUP: reloading every script");
                    scripts.reload(Reload::All);
                }
                None => break,
            },
        }
    }
}

/// What the script task is asked besides events. Requests share the task with events, so each
/// one happens between two events: none is lost or handled twice.
enum ScriptRequest {
    Reload(Reload),
    /// Run the due timers and every queued event (and what they cause), then report.
    Flush(oneshot::Sender<FlushReport>),
}

/// What a flush found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlushReport {
    /// Events and timer rounds handled by this flush; 0 when the task was idle.
    pub handled: usize,
    /// When the next script timer is due.
    pub next_timer: Option<Instant>,
}

/// A cloneable way to reach the script task.
#[derive(Clone)]
pub struct ScriptsHandle {
    requests: mpsc::UnboundedSender<ScriptRequest>,
}

impl ScriptsHandle {
    /// Queues a reload, handled between two events; false when the script task has ended.
    pub fn reload(&self, reload: Reload) -> bool {
        self.requests.send(ScriptRequest::Reload(reload)).is_ok()
    }

    /// Waits until the task has run its due timers and handled every event queued so far;
    /// `None` when the task has ended.
    pub async fn flush(&self) -> Option<FlushReport> {
        let (tx, rx) = oneshot::channel();
        self.requests.send(ScriptRequest::Flush(tx)).ok()?;
        rx.await.ok()
    }
}

/// The Lua host with what it needs to reload scripts and carry out their commands.
struct ScriptTask<S> {
    host: LuaHost,
    cfg: Config,
    sink: S,
}

/// Creates the Lua host, loads the configured plugins in order and spawns the task that feeds
/// it `events` (subscribe before anything is published, so that none is missed). The task
/// ends when `shutdown` resolves, after the events already queued.
pub async fn spawn_scripts<S: CommandSink + Send + 'static>(
    cfg: &Config,
    sink: S,
    backlog: Vec<Event>,
    events: mpsc::UnboundedReceiver<Event>,
    modem: ModemStatus,
    heartbeat: Option<service::Heartbeat>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<(ScriptsHandle, JoinHandle<()>)> {
    let snapshot = sink.gpio().snapshot().await.context("reading GPIO state")?;
    let world = World {
        outputs: snapshot.outputs,
        inputs: snapshot.inputs,
        modem,
        alarm: sink.alarm().state(),
    };
    let host = LuaHost::new(host_options(cfg), world);
    let mut task = ScriptTask {
        host,
        cfg: cfg.clone(),
        sink,
    };
    for name in &cfg.lua.plugins {
        // Saved data that cannot be read would be overwritten by a plugin that starts empty.
        let data = task
            .sink
            .store()
            .kv_all(&plugin_scope(name))
            .await
            .with_context(|| format!("reading the saved data of plugin {name}"))?;
        task.load_plugin(name, data).await;
    }
    task.host.set_order(&cfg.lua.plugins);
    task.host.set_lockout_policy(LockoutPolicy {
        failures: cfg.lua.lockout_failures,
        window: std::time::Duration::from_secs(cfg.lua.lockout_seconds),
    });
    let lockouts = task
        .sink
        .store()
        .kv_all(LOCKOUT_SCOPE)
        .await
        .context("reading the saved lock-outs")?;
    task.host
        .restore_lockouts(&lockouts, Instant::now().into_std());
    for (name, _) in cfg.rule_paths() {
        let data = task
            .sink
            .store()
            .kv_all(&rule_scope(&name))
            .await
            .with_context(|| format!("reading the saved data of rule {name}"))?;
        task.load_rule(&name, data).await;
    }
    let (tx, rx) = mpsc::unbounded_channel();
    let join = tokio::spawn(task.run(backlog, events, rx, heartbeat, shutdown));
    Ok((ScriptsHandle { requests: tx }, join))
}

fn host_options(cfg: &Config) -> HostOptions {
    HostOptions {
        memory_limit_kb: cfg.lua.memory_limit_kb,
        instruction_limit: cfg.lua.instruction_limit,
        country_code: cfg.country_code().map(str::to_string),
    }
}

fn plugin_scope(name: &str) -> String {
    format!("plugin:{name}")
}

fn rule_scope(name: &str) -> String {
    format!("rule:{name}")
}

impl<S: CommandSink> ScriptTask<S> {
    /// Events and timers are handled one at a time, in order, and each handler's commands are
    /// carried out before the next event.
    async fn run(
        mut self,
        backlog: Vec<Event>,
        mut events: mpsc::UnboundedReceiver<Event>,
        mut requests: mpsc::UnboundedReceiver<ScriptRequest>,
        mut heartbeat: Option<service::Heartbeat>,
        shutdown: impl Future<Output = ()>,
    ) {
        tokio::pin!(shutdown);
        // Messages stored but never handed to the plugins before the last stop come first.
        for ev in backlog {
            self.handle_event(ev).await;
        }
        let mut requests_open = true;
        loop {
            let timer = self.host.poll_timeout().map(Instant::from_std);
            tokio::select! {
                biased;
                _ = &mut shutdown => break,
                // Before events, so a flood of them cannot starve the watchdog's probe.
                _ = probed(&mut heartbeat) => {
                    if let Some(h) = &heartbeat {
                        h.answer();
                    }
                }
                // Before events: a reload takes effect from the next event on.
                req = requests.recv(), if requests_open => match req {
                    Some(ScriptRequest::Reload(r)) => self.reload(r).await,
                    Some(ScriptRequest::Flush(reply)) => {
                        let report = self.flush(&mut events).await;
                        let _ = reply.send(report);
                    }
                    None => requests_open = false,
                },
                ev = events.recv() => match ev {
                    Some(ev) => self.handle_event(ev).await,
                    None => break,
                },
                _ = sleep_until_some(timer) => self.run_timers().await,
            }
        }
        // Events already queued are handled before stopping; anything after is redelivered
        // from the store at the next start.
        while let Ok(ev) = events.try_recv() {
            self.handle_event(ev).await;
        }
    }

    async fn flush(&mut self, events: &mut mpsc::UnboundedReceiver<Event>) -> FlushReport {
        let mut handled = 0;
        loop {
            let due = self
                .host
                .poll_timeout()
                .is_some_and(|at| Instant::from_std(at) <= Instant::now());
            if due {
                self.run_timers().await;
                handled += 1;
            } else if let Ok(ev) = events.try_recv() {
                self.handle_event(ev).await;
                handled += 1;
            } else {
                break;
            }
        }
        FlushReport {
            handled,
            next_timer: self.host.poll_timeout().map(Instant::from_std),
        }
    }

    async fn run_timers(&mut self) {
        self.sync_host();
        let d = self.host.handle_timeout(Instant::now().into_std());
        self.finish_dispatch(d).await;
    }

    /// Gives the host what it cannot observe itself: the wall-clock time and the MQTT
    /// connection.
    fn sync_host(&mut self) {
        self.host
            .set_wall_clock(Instant::now().into_std(), chrono::Local::now());
        self.host
            .set_mqtt_connected(self.sink.mqtt().map(|m| m.connected()));
    }

    async fn handle_event(&mut self, ev: Event) {
        self.sync_host();
        let now = Instant::now().into_std();
        match ev {
            Event::SmsReceived(sms) => self.handle_sms(sms).await,
            Event::CallRinging(call) => {
                let d = self.host.dispatch_call(&call, now);
                self.sink.handled(d.handled_by.as_deref());
                self.finish_dispatch(d).await;
            }
            other => {
                let d = self.host.dispatch_event(&other, now);
                self.finish_dispatch(d).await;
            }
        }
    }

    /// Offers a received SMS to the scripts exactly once. The durable part of what they
    /// asked for (replies, script data) is written in the same store transaction that marks
    /// the SMS delivered: a crash before it redelivers the SMS with no effect kept, a crash
    /// after it never redelivers it. Outputs and call commands are carried out afterwards,
    /// as for any event; a crash between the commit and them loses them rather than
    /// repeating them.
    async fn handle_sms(&mut self, sms: crate::bus::IncomingSms) {
        // The same row can be offered twice (announced by the modem task while start-up also
        // redelivers it); only the first offer may reach the plugins.
        match self.sink.store().inbox_delivered(sms.id).await {
            Ok(Some(false)) => {}
            Ok(None) => {
                // Not from the inbox (a test or a simulation made it up): there is no
                // delivery to record, so it is handled like any other event.
                let d = self.host.dispatch_sms(&sms, Instant::now().into_std());
                self.sink.handled(d.handled_by.as_deref());
                self.finish_dispatch(d).await;
                return;
            }
            Ok(Some(true)) => {
                tracing::debug!(
                    inbox_id = sms.id,
                    "SMS already delivered; not offered again"
                );
                return;
            }
            Err(e) => {
                // Not offered now: it stays undelivered and is offered again at the next start.
                tracing::error!(inbox_id = sms.id, error = %e, "could not check an SMS; not delivered");
                return;
            }
        }
        let mut d = self.host.dispatch_sms(&sms, Instant::now().into_std());
        if d.handled_by.is_none() {
            tracing::info!(from = %sms.from, "no plugin handled the SMS");
        }
        self.sink.handled(d.handled_by.as_deref());
        let mut replies = Vec::new();
        let mut data = Vec::new();
        let mut rest = Vec::new();
        for cmd in std::mem::take(&mut d.commands) {
            match cmd {
                Command::SendSms {
                    to,
                    text,
                    request_id,
                } => replies.push(store::NewOutboxSms {
                    to,
                    text,
                    request_id,
                }),
                Command::KvSet { scope, key, value } => {
                    data.push(store::KvChange { scope, key, value })
                }
                other => rest.push(other),
            }
        }
        match self
            .sink
            .store()
            .commit_dispatch(sms.id, replies.clone(), data)
            .await
        {
            Ok(store::DispatchCommit::Committed(queued)) => {
                self.sink.replies_committed(&replies, &queued);
            }
            Ok(store::DispatchCommit::AlreadyDelivered) => {
                tracing::warn!(
                    inbox_id = sms.id,
                    "SMS was delivered meanwhile; its replies dropped"
                );
                return;
            }
            Err(e) => {
                tracing::error!(inbox_id = sms.id, error = %e, "could not record an SMS as handled; it will be offered again at the next start");
                return;
            }
        }
        d.commands = rest;
        self.finish_dispatch(d).await;
    }

    async fn finish_dispatch(&mut self, d: crate::lua::Dispatch) {
        for e in &d.errors {
            tracing::warn!(error = %e, "script error");
        }
        if !d.errors.is_empty() {
            self.sink.script_errors(&d.errors);
        }
        for status in d.statuses {
            self.sink.bus().publish(Event::Script(status));
        }
        for event in d.events {
            self.sink.bus().publish(event);
        }
        for cmd in d.commands {
            execute_on(&self.sink, cmd).await;
        }
    }

    /// Loads (or reloads) plugin `name`; `data` is used only when it is not running yet (a
    /// running version hands its own data over). Publishes the outcome.
    async fn load_plugin(&mut self, name: &str, data: BTreeMap<String, String>) {
        // Looked up again on every load: a copy saved in an overriding folder takes over.
        let path = self
            .cfg
            .plugin_paths()
            .into_iter()
            .find(|(n, _)| n == name)
            .map(|(_, p)| p)
            .unwrap_or_else(|| self.cfg.lua.plugins_dir.join(format!("{name}.lua")));
        let empty = serde_json::Value::Object(Default::default());
        let section = self.cfg.plugins.get(name).unwrap_or(&empty);
        let status = self
            .host
            .load_plugin(name, &path, section, data, Instant::now().into_std());
        if let Some(e) = &status.error {
            self.sink.script_errors(std::slice::from_ref(e));
        }
        self.sink.bus().publish(Event::Script(status));
        // What the script did while loading (top level, `init`).
        for cmd in self.host.take_commands() {
            execute_on(&self.sink, cmd).await;
        }
    }

    /// Loads (or reloads) rule `name`, like [`Self::load_plugin`].
    async fn load_rule(&mut self, name: &str, data: BTreeMap<String, String>) {
        let Some((_, path)) = self.cfg.rule_paths().into_iter().find(|(n, _)| n == name) else {
            tracing::info!(rule = %name, "not among lua.rules, so not loaded");
            return;
        };
        let empty = serde_json::Value::Object(Default::default());
        let section = self.cfg.rules.get(name).unwrap_or(&empty);
        let status = self
            .host
            .load_rule(name, &path, section, data, Instant::now().into_std());
        if let Some(e) = &status.error {
            self.sink.script_errors(std::slice::from_ref(e));
        }
        self.sink.bus().publish(Event::Script(status));
        for cmd in self.host.take_commands() {
            execute_on(&self.sink, cmd).await;
        }
    }

    async fn reload_rule(&mut self, name: &str) {
        let data = if self.host.rule_status(name).is_some() {
            BTreeMap::new()
        } else {
            match self.sink.store().kv_all(&rule_scope(name)).await {
                Ok(data) => data,
                Err(e) => {
                    tracing::error!(rule = %name, error = %e, "cannot read its saved data; not loaded");
                    return;
                }
            }
        };
        self.load_rule(name, data).await;
    }

    async fn reload(&mut self, reload: Reload) {
        match reload {
            Reload::All => {
                tracing::info!("reloading every script");
                for name in self.cfg.lua.plugins.clone() {
                    self.reload_plugin(&name).await;
                }
                for (name, _) in self.cfg.rule_paths() {
                    self.reload_rule(&name).await;
                }
            }
            Reload::Changed {
                kind: ScriptKind::Plugin,
                name,
            } => {
                if self.cfg.lua.plugins.contains(&name) {
                    self.reload_plugin(&name).await;
                } else {
                    tracing::info!(plugin = %name, "not in lua.plugins, so not loaded");
                }
            }
            Reload::Removed {
                kind: ScriptKind::Plugin,
                name,
            } => {
                if self.host.status(&name).is_some() {
                    self.host.unload(&name);
                    let status = ScriptStatus {
                        kind: ScriptKind::Plugin,
                        name: name.clone(),
                        generation: 0,
                        error: Some(format!("{name}.lua: the file was removed; plugin unloaded")),
                    };
                    self.sink.bus().publish(Event::Script(status));
                }
            }
            Reload::Changed {
                kind: ScriptKind::Rule,
                name,
            } => self.reload_rule(&name).await,
            Reload::Removed {
                kind: ScriptKind::Rule,
                name,
            } => {
                if self.host.rule_status(&name).is_some() {
                    self.host.unload_rule(&name);
                    let status = ScriptStatus {
                        kind: ScriptKind::Rule,
                        name: name.clone(),
                        generation: 0,
                        error: Some(format!("{name}.lua: the file was removed; rule unloaded")),
                    };
                    self.sink.bus().publish(Event::Script(status));
                }
            }
        }
    }

    async fn reload_plugin(&mut self, name: &str) {
        let data = if self.host.status(name).is_some() {
            BTreeMap::new()
        } else {
            match self.sink.store().kv_all(&plugin_scope(name)).await {
                Ok(data) => data,
                Err(e) => {
                    tracing::error!(plugin = %name, error = %e, "cannot read its saved data; not loaded");
                    return;
                }
            }
        };
        self.load_plugin(name, data).await;
    }
}

/// Resolves at the watchdog's next probe; never when nobody watches.
async fn probed(heartbeat: &mut Option<service::Heartbeat>) {
    match heartbeat {
        Some(h) => h.probed().await,
        None => std::future::pending().await,
    }
}

async fn sleep_until_some(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// What `gsmgw check` found: what would be used, and every problem.
#[derive(Debug, Default)]
pub struct CheckReport {
    /// What the config sets up (backend and lines, plugins).
    pub lines: Vec<String>,
    /// `FILE: key: problem` and `file:line: message` lines; empty when all is well.
    pub problems: Vec<String>,
}

/// Validates the config at `path` and compiles every configured script.
pub fn check(path: &std::path::Path) -> CheckReport {
    let mut report = CheckReport::default();
    let cfg = match Config::load(path) {
        Ok(cfg) => cfg,
        Err(e) => {
            report.problems = e.lines();
            return report;
        }
    };
    report.lines.extend(gpio::describe(&cfg));
    let opts = HostOptions {
        memory_limit_kb: cfg.lua.memory_limit_kb,
        instruction_limit: cfg.lua.instruction_limit,
        country_code: cfg.country_code().map(str::to_string),
    };
    for (name, script) in cfg.plugin_paths() {
        if !script.is_file() {
            report.problems.push(format!(
                "{}: lua.plugins: plugin {name:?} has no file {} (help: check lua.plugins_dir or lua.plugin_path)",
                path.display(),
                script.display()
            ));
            continue;
        }
        let around = checked_against(&cfg, cfg.plugins.get(&name));
        match crate::lua::check_in(ScriptKind::Plugin, &script, &opts, &around) {
            Ok(()) => report
                .lines
                .push(format!("plugin {name}: {} compiles", script.display())),
            Err(e) => report.problems.push(e),
        }
    }
    for (name, script) in cfg.rule_paths() {
        let around = checked_against(&cfg, cfg.rules.get(&name));
        match crate::lua::check_in(ScriptKind::Rule, &script, &opts, &around) {
            Ok(()) => report
                .lines
                .push(format!("rule {name}: {} compiles", script.display())),
            Err(e) => report.problems.push(e),
        }
    }
    report
}

/// The gateway a script will run in, as far as the config tells: every output and input
/// (off), and the script's own section.
fn checked_against(cfg: &Config, section: Option<&serde_json::Value>) -> crate::lua::Checked {
    crate::lua::Checked {
        world: World {
            outputs: cfg.outputs.keys().map(|n| (n.clone(), false)).collect(),
            inputs: cfg.inputs.keys().map(|n| (n.clone(), false)).collect(),
            ..World::default()
        },
        config: section
            .cloned()
            .unwrap_or_else(|| serde_json::Value::Object(Default::default())),
    }
}
