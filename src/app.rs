//! Wiring: builds the owning tasks from a validated config, routes commands to them, runs the
//! Lua host, and shuts everything down in an order that leaves no SMS half-handled.

use std::future::Future;

use anyhow::Context;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::alarm::AlarmHandle;
use crate::bus::{Bus, Command, Event, OutputAction, ScriptKind};
use crate::config::Config;
use crate::gpio::{self, GpioBackend, GpioHandle};
pub use crate::lua::task::{spawn_scripts, FlushReport, ScriptsHandle};
use crate::lua::watch::{Reload, ScriptWatcher};
use crate::lua::{HostOptions, World};
use crate::modem::driver::{self, DriverOptions, ModemHandle};
use crate::mqtt::{self, MqttHandle};
use crate::service;
use crate::store::{self, Store, StoreHandle};

/// Choices the config file does not make: what the demo and tests substitute.
#[derive(Default)]
pub struct RunOptions {
    /// Drive this GPIO backend instead of the configured one (the simulated one).
    pub gpio_backend: Option<Box<dyn GpioBackend>>,
    /// Use this bus (subscribed to already, so nothing published at start is missed).
    pub bus: Option<Bus>,
    /// The config file, re-read on SIGHUP; without it SIGHUP reloads the scripts only.
    pub config_path: Option<std::path::PathBuf>,
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
    let bus = opts.bus.unwrap_or_default();
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
                    sender_kind: row.kind(),
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
        tokio::spawn(reload_on_sighup(
            scripts.clone(),
            opts.config_path.map(|path| (path, cfg.clone())),
            stopped(stop_rx.clone()),
        )),
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
    /// Queues an outgoing SMS; `priority` may use the caps' priority reserve.
    fn send_sms(
        &self,
        to: &str,
        text: &str,
        request_id: Option<&str>,
        priority: bool,
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
    async fn send_sms(
        &self,
        to: &str,
        text: &str,
        request_id: Option<&str>,
        priority: bool,
    ) -> Result<(), String> {
        self.modem
            .queue_sms(to, text, request_id, priority)
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
            priority,
        } => {
            if let Err(e) = h
                .send_sms(&to, &text, request_id.as_deref(), priority)
                .await
            {
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
        Command::Alarm {
            action,
            source,
            by,
            code,
            reply,
        } => {
            let result = h
                .alarm()
                .command(action, &source, by.as_deref(), code.as_ref())
                .await;
            if let Err(e) = &result {
                tracing::warn!(?action, by = by.as_deref().unwrap_or("-"), error = %e, "alarm request refused");
            }
            // The asking script hears the answer as an event, after the state change.
            if let Some(id) = reply {
                let result = result.map(|_| ()).map_err(|e| e.reason());
                h.bus().publish(Event::AlarmResult { id, result });
            }
        }
        Command::Ussd { id, code } => h.start_ussd(id, code),
        // The script task owns the lock-outs: it gets the request as an event.
        Command::Unlock { number, by } => h.bus().publish(Event::UnlockRequest { number, by }),
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

/// SIGHUP: re-reads the config file (when there is one) and hands its script sections to the
/// script task, which reloads every script; what else changed is named as needing a restart
/// (the modem, GPIO, store, MQTT and alarm owners are built once, at start). A config that
/// does not load changes nothing: the scripts are reloaded with the running config.
async fn reload_on_sighup(
    scripts: ScriptsHandle,
    config: Option<(std::path::PathBuf, Config)>,
    shutdown: impl Future<Output = ()>,
) {
    let (path, mut running) = match config {
        Some((path, cfg)) => (Some(path), Some(cfg)),
        None => (None, None),
    };
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
                Some(()) => match (&path, &mut running) {
                    (Some(path), Some(running)) => match Config::load(path) {
                        Ok(new) => {
                            let restart = needs_restart(running, &new);
                            if !restart.is_empty() {
                                tracing::warn!(
                                    changed = %restart.join(", "),
                                    "SIGHUP: these settings changed and take effect only after a restart (systemctl restart gsmgw)"
                                );
                            }
                            tracing::info!(config = %path.display(), "SIGHUP: config re-read; reloading every script");
                            *running = new.clone();
                            scripts.reconfigure(new);
                        }
                        Err(e) => {
                            tracing::error!(config = %path.display(), error = %e, "SIGHUP: the config does not load, nothing of it applied; reloading every script");
                            scripts.reload(Reload::All);
                        }
                    },
                    _ => {
                        tracing::info!("SIGHUP: reloading every script");
                        scripts.reload(Reload::All);
                    }
                },
                None => break,
            },
        }
    }
}

/// The settings that differ between `old` and `new` and that only a restart applies: every
/// section but the scripts' (`lua.plugins`, `lua.rules`, the script folders, `[plugins.*]`,
/// `[rules.*]`, which SIGHUP applies).
pub fn needs_restart(old: &Config, new: &Config) -> Vec<String> {
    // Debug shows every field, but secrets redacted: those are compared on their own.
    fn differs<T: std::fmt::Debug>(a: &T, b: &T) -> bool {
        format!("{a:?}") != format!("{b:?}")
    }
    let mut out = Vec::new();
    let sections: [(&str, bool); 10] = [
        ("[gateway]", differs(&old.gateway, &new.gateway)),
        (
            "[modem]",
            differs(&old.modem, &new.modem) || old.modem.pin != new.modem.pin,
        ),
        ("[sms]", differs(&old.sms, &new.sms)),
        ("[gpio]", differs(&old.gpio, &new.gpio)),
        ("[outputs]", differs(&old.outputs, &new.outputs)),
        ("[inputs]", differs(&old.inputs, &new.inputs)),
        ("[store]", differs(&old.store, &new.store)),
        (
            "[mqtt]",
            differs(&old.mqtt, &new.mqtt) || old.mqtt.password != new.mqtt.password,
        ),
        (
            "[alarm]",
            differs(&old.alarm, &new.alarm) || old.alarm.code != new.alarm.code,
        ),
        ("[security]", differs(&old.security, &new.security)),
    ];
    out.extend(
        sections
            .into_iter()
            .filter(|(_, changed)| *changed)
            .map(|(name, _)| name.to_string()),
    );
    // Of [lua], SIGHUP applies the lists and folders; any other key needs a restart.
    let mut applied = old.lua.clone();
    applied.plugins = new.lua.plugins.clone();
    applied.rules = new.lua.rules.clone();
    applied.plugins_dir = new.lua.plugins_dir.clone();
    applied.plugin_path = new.lua.plugin_path.clone();
    applied.rules_dir = new.lua.rules_dir.clone();
    if differs(&applied, &new.lua) {
        out.push("[lua] (other than plugins, rules and their folders)".to_string());
    }
    out
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
    check_devices(&cfg, path, &mut report);
    let opts = HostOptions {
        country_code: cfg.country_code().map(str::to_string),
        ..HostOptions::from(&cfg.lua)
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

/// The modem port exists (it is not opened: the running gateway may hold it) and, with the cdev
/// backend, every line resolves on the real chip (line info only, no request).
fn check_devices(cfg: &Config, path: &std::path::Path, report: &mut CheckReport) {
    let port = &cfg.modem.port;
    if port.exists() {
        report
            .lines
            .push(format!("modem port {}: exists", port.display()));
    } else {
        report.problems.push(format!(
            "{}: modem.port: {} does not exist (help: `ls /dev/serial/by-id/` for USB modems; \
             /dev/serial0 needs the UART enabled)",
            path.display(),
            port.display()
        ));
    }
    if cfg.gpio.backend != crate::config::GpioBackendKind::Cdev {
        return;
    }
    let lines = cfg
        .outputs
        .iter()
        .map(|(n, o)| ("output", n, &o.line))
        .chain(cfg.inputs.iter().map(|(n, i)| ("input", n, &i.line)));
    for (kind, name, line) in lines {
        match gpio::resolve_cdev_line(&cfg.gpio.chip, line) {
            Ok(found) => report
                .lines
                .push(format!("{kind} {name}: resolves to {found}")),
            Err(e) => report
                .problems
                .push(format!("{}: {kind}s.{name}.line: {e}", path.display())),
        }
    }
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
