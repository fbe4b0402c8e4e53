//! Wiring: builds the owning tasks from a validated config, routes commands to them, runs the
//! Lua host, and shuts everything down in an order that leaves no SMS half-handled.

use std::collections::BTreeMap;
use std::future::Future;

use anyhow::Context;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::alarm::AlarmHandle;
use crate::bus::{Bus, Command, Event};
use crate::config::Config;
use crate::gpio::{self, GpioBackend, GpioHandle};
use crate::lua::{HostOptions, LuaHost, World};
use crate::modem::driver::{self, DriverOptions, ModemHandle};
use crate::mqtt::{self, MqttHandle};
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
    scripts_stop: watch::Sender<bool>,
    scripts_task: JoinHandle<()>,
    stop: watch::Sender<bool>,
    tasks: Vec<(&'static str, JoinHandle<()>)>,
    store_thread: std::thread::JoinHandle<()>,
}

/// Runs the gateway until `shutdown` resolves, then drains every task.
pub async fn run(
    cfg: Config,
    opts: RunOptions,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let gateway = start(cfg, opts).await?;
    shutdown.await;
    tracing::info!("shutting down");
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
        let (handle, task) = mqtt::spawn(
            &cfg,
            &bus,
            cmd_tx.clone(),
            stopped(stop_rx.clone()),
        )
        .context("starting the MQTT bridge")?;
        tasks.push(("mqtt", task));
        Some(handle)
    } else {
        None
    };

    let restored = store
        .output_states()
        .await
        .context("reading the saved output states")?;
    let backend = match opts.gpio_backend {
        Some(b) => b,
        None => gpio::open_backend(&cfg).context("opening the GPIO backend")?,
    };
    let persist_store = store.clone();
    let (persist_tx, mut persist_rx) = mpsc::unbounded_channel::<(String, bool)>();
    // Output states are written in the order they change, by one task, so the last write wins.
    tasks.push((
        "output-states",
        tokio::spawn(async move {
            while let Some((name, on)) = persist_rx.recv().await {
                if let Err(e) = persist_store.output_state_set(&name, on).await {
                    tracing::error!(output = %name, error = %e, "could not save the output state");
                }
            }
        }),
    ));
    let (gpio, gpio_task) = gpio::spawn(
        &cfg,
        backend,
        bus.clone(),
        restored,
        Some(Box::new(move |name: &str, on: bool| {
            let _ = persist_tx.send((name.to_string(), on));
        })),
        stopped(stop_rx.clone()),
    )
    .context("starting GPIO")?;
    tasks.push(("gpio", gpio_task));

    let (modem, modem_task) = driver::spawn(
        DriverOptions {
            modem: cfg.modem.clone(),
            send_attempts: cfg.sms.send_attempts,
            country_code: cfg.country_code().map(str::to_string),
        },
        store.clone(),
        bus.clone(),
        stopped(stop_rx.clone()),
    );
    tasks.push(("modem", modem_task));

    let alarm = AlarmHandle::default();
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

    let host = load_scripts(&cfg, &handles).await?;
    let (scripts_stop, scripts_stop_rx) = watch::channel(false);
    let scripts_task = tokio::spawn(run_scripts(
        host,
        script_events,
        handles.clone(),
        stopped(scripts_stop_rx),
    ));

    // Messages stored but never handed to the plugins (the gateway stopped in between) are
    // delivered now, oldest first.
    match handles.store.inbox_undelivered().await {
        Ok(rows) => {
            for row in rows {
                bus.publish(Event::SmsReceived(crate::bus::IncomingSms {
                    id: row.id,
                    from: row.from,
                    text: row.text,
                    time: row.sent_at,
                    incomplete: row.incomplete,
                }));
            }
        }
        Err(e) => tracing::error!(error = %e, "could not read undelivered messages"),
    }

    Ok(Gateway {
        handles,
        scripts_stop,
        scripts_task,
        stop,
        tasks,
        store_thread,
    })
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

/// Carries out one command on the task that owns its resource. Failures are logged: the
/// caller (a script, an MQTT message) has moved on.
pub async fn execute(h: &Handles, cmd: Command) {
    match cmd {
        Command::SetOutput { name, action } => {
            if let Err(e) = h.gpio.set(&name, action).await {
                tracing::warn!(output = %name, error = %e, "output command failed");
            }
        }
        Command::SendSms {
            to,
            text,
            request_id,
        } => {
            if let Err(e) = h.modem.queue_sms(&to, &text, request_id.as_deref()).await {
                tracing::warn!(to = %to, error = %e, "SMS not queued");
            }
        }
        Command::RejectCall { call_id } => log_modem(h.modem.reject_call(call_id).await),
        Command::AnswerCall { call_id } => log_modem(h.modem.answer_call(call_id).await),
        Command::HangUp { call_id } => log_modem(h.modem.hang_up(call_id).await),
        Command::KvSet { scope, key, value } => {
            if let Err(e) = h.store.kv_set(&scope, &key, value.as_deref()).await {
                tracing::error!(scope = %scope, key = %key, error = %e, "could not save script data");
            }
        }
        Command::MqttPublish {
            topic,
            payload,
            retain,
        } => match &h.mqtt {
            Some(m) => {
                if let Err(e) = m.publish(&topic, payload, retain).await {
                    tracing::warn!(topic = %topic, error = %e, "MQTT publish failed");
                }
            }
            None => tracing::debug!(topic = %topic, "MQTT disabled; publish dropped"),
        },
        Command::MqttSubscribe { topic } => match &h.mqtt {
            Some(m) => {
                if let Err(e) = m.subscribe(&topic).await {
                    tracing::warn!(topic = %topic, error = %e, "MQTT subscribe failed");
                }
            }
            None => tracing::debug!(topic = %topic, "MQTT disabled; subscription ignored"),
        },
        Command::MqttConnect { id, seconds } => {
            // Answered later as an event: connecting may take seconds, and the caller (a
            // script) must not hold up the events behind it.
            let (mqtt, bus) = (h.mqtt.clone(), h.bus.clone());
            tokio::spawn(async move {
                let result = match mqtt {
                    Some(m) => m.connect_for(seconds).await.map_err(|e| e.to_string()),
                    None => Err("MQTT is disabled in the config".to_string()),
                };
                bus.publish(Event::MqttSession { id, result });
            });
        }
        Command::Alarm { action, by, code } => {
            if let Err(e) = h.alarm.command(action, by.as_deref(), code.as_ref()).await {
                tracing::warn!(?action, by = by.as_deref().unwrap_or("-"), error = %e, "alarm request refused");
            }
        }
        Command::Ussd { id, code } => {
            let (modem, bus) = (h.modem.clone(), h.bus.clone());
            tokio::spawn(async move {
                let result = modem.ussd(&code).await.map_err(|e| e.to_string());
                bus.publish(Event::UssdResult { id, result });
            });
        }
    }
}

fn log_modem(result: Result<(), driver::ModemError>) {
    if let Err(e) = result {
        tracing::warn!(error = %e, "call command failed");
    }
}

async fn route_commands(mut rx: mpsc::Receiver<Command>, handles: Handles) {
    while let Some(cmd) = rx.recv().await {
        execute(&handles, cmd).await;
    }
}

/// Creates the Lua host and loads the configured plugins in order.
async fn load_scripts(cfg: &Config, h: &Handles) -> anyhow::Result<LuaHost> {
    let snapshot = h.gpio.snapshot().await.context("reading GPIO state")?;
    let world = World {
        outputs: snapshot.outputs,
        inputs: snapshot.inputs,
        modem: h.modem.status(),
    };
    let mut host = LuaHost::new(
        HostOptions {
            memory_limit_kb: cfg.lua.memory_limit_kb,
            instruction_limit: cfg.lua.instruction_limit,
            country_code: cfg.country_code().map(str::to_string),
        },
        world,
    );
    let empty = serde_json::Value::Object(Default::default());
    for (name, path) in cfg.plugin_paths() {
        let data: BTreeMap<String, String> = h
            .store
            .kv_all(&format!("plugin:{name}"))
            .await
            .with_context(|| format!("reading the saved data of plugin {name}"))?;
        let section = cfg.plugins.get(&name).unwrap_or(&empty);
        let status = host.load_plugin(&name, &path, section, data, Instant::now().into_std());
        match &status.error {
            Some(e) => tracing::error!(plugin = %name, error = %e, "plugin not loaded"),
            None => tracing::info!(plugin = %name, "plugin loaded"),
        }
        h.bus.publish(Event::Script(status));
    }
    host.set_order(&cfg.lua.plugins);
    Ok(host)
}

/// The Lua host's task: events and timers are handled one at a time, in order, and each
/// handler's commands are carried out before the next event.
async fn run_scripts(
    mut host: LuaHost,
    mut events: mpsc::UnboundedReceiver<Event>,
    h: Handles,
    shutdown: impl Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    loop {
        let timer = host.poll_timeout().map(Instant::from_std);
        tokio::select! {
            biased;
            _ = &mut shutdown => break,
            ev = events.recv() => match ev {
                Some(ev) => handle_event(&mut host, ev, &h).await,
                None => break,
            },
            _ = sleep_until_some(timer) => {
                let d = host.handle_timeout(Instant::now().into_std());
                finish_dispatch(d, &h).await;
            }
        }
    }
    // Events already queued are handled before stopping; anything after is redelivered from
    // the store at the next start.
    while let Ok(ev) = events.try_recv() {
        handle_event(&mut host, ev, &h).await;
    }
}

async fn sleep_until_some(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

async fn handle_event(host: &mut LuaHost, ev: Event, h: &Handles) {
    let now = Instant::now().into_std();
    match ev {
        Event::SmsReceived(sms) => {
            let d = host.dispatch_sms(&sms, now);
            if d.handled_by.is_none() {
                tracing::info!(from = %sms.from, "no plugin handled the SMS");
            }
            finish_dispatch(d, h).await;
            // Marked only after its replies are queued, so a crash in between redelivers it
            // rather than losing it.
            if let Err(e) = h.store.inbox_mark_delivered(sms.id).await {
                tracing::error!(error = %e, "could not mark an SMS delivered");
            }
        }
        Event::CallRinging(call) => {
            let d = host.dispatch_call(&call, now);
            finish_dispatch(d, h).await;
        }
        other => {
            let d = host.dispatch_event(&other, now);
            finish_dispatch(d, h).await;
        }
    }
}

async fn finish_dispatch(d: crate::lua::Dispatch, h: &Handles) {
    for e in &d.errors {
        tracing::warn!(error = %e, "script error");
    }
    for cmd in d.commands {
        execute(h, cmd).await;
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
                "{}: lua.plugins: plugin {name:?} has no file {} (help: check lua.plugins_dir)",
                path.display(),
                script.display()
            ));
            continue;
        }
        match crate::lua::check_script(&script, &opts) {
            Ok(()) => report
                .lines
                .push(format!("plugin {name}: {} compiles", script.display())),
            Err(e) => report.problems.push(e),
        }
    }
    report
}
