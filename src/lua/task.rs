//! The script task: the one owner of the Lua host. It feeds the host events, timers and
//! reloads one at a time, carries out the commands scripts emit, and commits every SMS's
//! delivery together with its effects (exactly-once).

use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;

use anyhow::Context;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::watch::Reload;
use super::{
    HostOptions, LockoutPolicy, LuaHost, SmsPolicy, World, ENROLMENT_SCOPE, LOCKOUT_SCOPE,
};
use crate::app::{execute_on, CommandSink};
use crate::bus::{Command, Event, ModemStatus, ScriptKind, ScriptStatus};
use crate::config::Config;
use crate::deadline::Later;
use crate::service;
use crate::store;

/// What the script task is asked besides events. Requests share the task with events, so each
/// one happens between two events: none is lost or handled twice.
enum ScriptRequest {
    Reload(Reload),
    /// SIGHUP with a re-read config: the script sections of `cfg` take over.
    Reconfigure(Box<Config>),
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

    /// Hands the task a re-read config: its plugin list and order, rule list, script folders
    /// and `[plugins.*]`/`[rules.*]` sections take effect, every script is reloaded, and
    /// scripts no longer listed are unloaded. False when the task has ended.
    pub fn reconfigure(&self, cfg: Config) -> bool {
        self.requests
            .send(ScriptRequest::Reconfigure(Box::new(cfg)))
            .is_ok()
    }

    /// Waits until the task has run its due timers and handled every event queued so far;
    /// `None` when the task has ended.
    pub async fn flush(&self) -> Option<FlushReport> {
        let (tx, rx) = oneshot::channel();
        self.requests.send(ScriptRequest::Flush(tx)).ok()?;
        rx.await.ok()
    }
}

/// The waits between attempts to commit an SMS's dispatch when the store has a problem that
/// may pass (a lock, a full disk): about 14 s in all, then the SMS is offered again later.
const COMMIT_RETRIES: [Duration; 4] = [
    Duration::from_millis(200),
    Duration::from_secs(1),
    Duration::from_secs(3),
    Duration::from_secs(10),
];

/// How long after its commit failed for good an SMS is offered to the scripts again.
const REOFFER_AFTER: Duration = Duration::from_secs(60);

/// The Lua host with what it needs to reload scripts and carry out their commands.
struct ScriptTask<S> {
    host: LuaHost,
    cfg: Config,
    sink: S,
    /// When this task started: SMS sent before it may be stale (`sms.max_command_age_s`).
    started: chrono::DateTime<chrono::Utc>,
    /// Inbox rows found undelivered at start.
    backlog: std::collections::HashSet<i64>,
    /// SMS whose dispatch could not be committed, offered again at `reoffer_at`.
    reoffer: Vec<crate::bus::IncomingSms>,
    reoffer_at: Option<Instant>,
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
        started: chrono::Utc::now(),
        backlog: backlog
            .iter()
            .filter_map(|ev| match ev {
                Event::SmsReceived(sms) => Some(sms.id),
                _ => None,
            })
            .collect(),
        reoffer: Vec::new(),
        reoffer_at: None,
    };
    // Before the plugins load: their grants at load time must find the saved ones.
    let enrolled = task
        .sink
        .store()
        .kv_all(ENROLMENT_SCOPE)
        .await
        .context("reading the saved grants")?;
    task.host.restore_enrolment(&enrolled);
    task.host.set_security_alerts(cfg.security.alert_to.clone());
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
    task.host.set_sms_policy(SmsPolicy::from(&cfg.sms));
    task.host.set_plugin_text_limit(cfg.lua.plugin_text_limit);
    task.host.set_lockout_policy(LockoutPolicy {
        failures: cfg.lua.lockout_failures,
        window: std::time::Duration::from_secs(cfg.lua.lockout_seconds),
        global_failures: cfg.lua.global_failures,
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
        country_code: cfg.country_code().map(str::to_string),
        ..HostOptions::from(&cfg.lua)
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
        // Set after an event: due timers run before the next event, so a long queue of
        // events cannot starve them (and, the select being biased towards events, timers
        // that are always due cannot starve events either).
        let mut timers_turn = false;
        // Messages on the scripts' MQTT subscriptions: bounded (an MQTT flood cannot grow
        // memory), served after the bus events, so it cannot hold up an SMS either.
        let mqtt_inbox = self.sink.mqtt().map(|m| m.script_inbox());
        loop {
            let timer = self.host.poll_timeout().map(Instant::from_std);
            if std::mem::take(&mut timers_turn) && timer.is_some_and(|t| t <= Instant::now()) {
                self.run_timers().await;
                continue;
            }
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
                    Some(ScriptRequest::Reconfigure(cfg)) => self.reconfigure(*cfg).await,
                    Some(ScriptRequest::Flush(reply)) => {
                        let report = self.flush(&mut events).await;
                        let _ = reply.send(report);
                    }
                    None => requests_open = false,
                },
                ev = events.recv() => match ev {
                    Some(ev) => {
                        self.handle_event(ev).await;
                        timers_turn = true;
                    }
                    None => break,
                },
                _ = sleep_until_some(timer) => self.run_timers().await,
                _ = sleep_until_some(self.reoffer_at) => {
                    self.reoffer_at = None;
                    for sms in std::mem::take(&mut self.reoffer) {
                        self.handle_sms(sms).await;
                    }
                }
                Some(m) = next_mqtt(mqtt_inbox.as_ref()) => {
                    self.handle_event(Event::Mqtt { topic: m.topic, payload: m.payload }).await;
                    timers_turn = true;
                }
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
                let masked = crate::lua::mask(&sms.text, &d.secrets);
                self.announce_handled(sms, masked, &d, false);
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
        // Counted before the dispatch and committed: a crash, a kill or a stall during it
        // leaves the count behind, so a message that keeps doing that is recognised.
        let attempt = match self.sink.store().inbox_begin_dispatch(sms.id).await {
            Ok(Some(attempt)) => attempt,
            Ok(None) => {
                tracing::debug!(inbox_id = sms.id, "SMS delivered meanwhile; not offered");
                return;
            }
            Err(e) => {
                tracing::error!(inbox_id = sms.id, error = %e, "could not count a dispatch of an SMS; not delivered");
                return;
            }
        };
        let max = self.cfg.lua.max_dispatch_attempts;
        if attempt.attempts > max {
            let error = attempt.last_error.unwrap_or_else(|| {
                format!(
                    "its dispatch was cut off {max} times (the gateway stopped while handling it)"
                )
            });
            self.quarantine(sms, error).await;
            return;
        }
        let stale = self.is_stale(&sms).await;
        let now = Instant::now().into_std();
        let mut d = if stale {
            self.host.dispatch_stale_sms(&sms, now)
        } else {
            self.host.dispatch_sms(&sms, now)
        };
        if d.handled_by.is_none() && !stale {
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
                    priority,
                } => replies.push(store::NewOutboxSms {
                    to,
                    text,
                    request_id,
                    priority,
                }),
                Command::KvSet { scope, key, value } => {
                    data.push(store::KvChange { scope, key, value })
                }
                other => rest.push(other),
            }
        }
        // What may be shown or kept of the text: with the marked secrets masked.
        let masked = crate::lua::mask(&sms.text, &d.secrets);
        let rewrite = (masked != sms.text).then(|| masked.clone());
        let scopes: std::collections::BTreeSet<String> =
            data.iter().map(|change| change.scope.clone()).collect();
        let mut retries = COMMIT_RETRIES.iter();
        let committed = loop {
            let result = self
                .sink
                .store()
                .commit_dispatch(sms.id, replies.clone(), data.clone(), rewrite.clone())
                .await;
            match (result, retries.next()) {
                (Err(e), Some(wait)) if e.is_transient() => {
                    tracing::warn!(inbox_id = sms.id, error = %e, retry_in_ms = wait.as_millis() as u64, "could not record an SMS as handled; retrying");
                    tokio::time::sleep(*wait).await;
                }
                (result, _) => break result,
            }
        };
        match committed {
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
                tracing::error!(inbox_id = sms.id, error = %e, retry_in_s = REOFFER_AFTER.as_secs(), "could not record an SMS as handled; none of its effects kept, it is offered again later");
                let error = format!("its dispatch could not be recorded: {e}");
                if let Err(e) = self.sink.store().inbox_dispatch_failed(sms.id, error).await {
                    tracing::error!(inbox_id = sms.id, error = %e, "could not record why");
                }
                // The scripts changed their data in memory; what the store holds is the truth.
                for scope in scopes {
                    match self.sink.store().kv_all(&scope).await {
                        Ok(saved) => self.host.restore_data(&scope, saved),
                        Err(e) => {
                            tracing::error!(%scope, error = %e, "cannot read the saved script data back")
                        }
                    }
                }
                self.reoffer.push(sms);
                self.reoffer_at = Some(Instant::now().later(REOFFER_AFTER));
                return;
            }
        }
        self.announce_handled(sms, masked, &d, stale);
        d.commands = rest;
        self.finish_dispatch(d).await;
    }

    /// Publishes a handled SMS (for MQTT `<p>/sms/received`) with its secrets masked, and
    /// logs its masked text at trace level (the only level that shows SMS text).
    fn announce_handled(
        &self,
        sms: crate::bus::IncomingSms,
        masked: String,
        d: &crate::lua::Dispatch,
        stale: bool,
    ) {
        tracing::trace!(inbox_id = sms.id, from = %sms.from, text = %masked, "SMS handled");
        let sms = crate::bus::IncomingSms {
            text: masked,
            ..sms
        };
        self.sink
            .bus()
            .publish(Event::SmsHandled(crate::bus::HandledSms {
                sms,
                handled_by: d.handled_by.clone(),
                stale,
            }));
    }

    /// True when `sms` is too old to be a command: found undelivered at start (in the inbox,
    /// or on the SIM, sent before this start) and older than `sms.max_command_age_s` by its
    /// service-centre time stamp or, for the inbox backlog, the time it was stored.
    async fn is_stale(&self, sms: &crate::bus::IncomingSms) -> bool {
        let max = chrono::TimeDelta::seconds(
            i64::try_from(self.cfg.sms.max_command_age_s).unwrap_or(i64::MAX),
        );
        let now = chrono::Utc::now();
        let sent = sms.time.map(|t| t.to_utc());
        let in_backlog = self.backlog.contains(&sms.id);
        let mut times: Vec<chrono::DateTime<chrono::Utc>> = Vec::new();
        if in_backlog {
            if let Ok(Some(row)) = self.sink.store().inbox_get(sms.id).await {
                times.push(row.received_at);
            }
            times.extend(sent);
        } else if let Some(sent) = sent.filter(|t| *t < self.started) {
            times.push(sent);
        }
        times.into_iter().any(|t| now - t > max)
    }

    /// Takes an SMS out of dispatch for good: marked delivered as quarantined first (so that
    /// a stall in what follows cannot bring it back), then published as failed and handed to
    /// the rules, never to the plugins.
    async fn quarantine(&mut self, sms: crate::bus::IncomingSms, error: String) {
        tracing::error!(inbox_id = sms.id, from = %sms.from, "SMS quarantined: {error}");
        if let Err(e) = self
            .sink
            .store()
            .inbox_quarantine(sms.id, error.clone())
            .await
        {
            tracing::error!(inbox_id = sms.id, error = %e, "could not quarantine an SMS; not delivered");
            return;
        }
        let d = self
            .host
            .dispatch_failed_sms(&sms, &error, Instant::now().into_std());
        self.sink.bus().publish(Event::SmsFailed { sms, error });
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
        self.loaded(status).await;
    }

    /// Publishes a load's outcome and carries out what the script did while loading (its top
    /// level, `init`).
    async fn loaded(&mut self, status: ScriptStatus) {
        if let Some(e) = &status.error {
            self.sink.script_errors(std::slice::from_ref(e));
        }
        self.sink.bus().publish(Event::Script(status));
        for event in self.host.take_events() {
            self.sink.bus().publish(event);
        }
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
        self.loaded(status).await;
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

    async fn reconfigure(&mut self, cfg: Config) {
        let old = std::mem::replace(&mut self.cfg, cfg);
        let rules: Vec<String> = self.cfg.rule_paths().into_iter().map(|(n, _)| n).collect();
        let dropped_plugins = old
            .lua
            .plugins
            .iter()
            .filter(|n| !self.cfg.lua.plugins.contains(n));
        let dropped_rules = old
            .rule_paths()
            .into_iter()
            .map(|(n, _)| n)
            .filter(|n| !rules.contains(n));
        let dropped: Vec<(ScriptKind, String)> = dropped_plugins
            .map(|n| (ScriptKind::Plugin, n.clone()))
            .chain(dropped_rules.map(|n| (ScriptKind::Rule, n)))
            .collect();
        for (kind, name) in dropped {
            match kind {
                ScriptKind::Plugin => self.host.unload(&name),
                ScriptKind::Rule => self.host.unload_rule(&name),
            }
            let status = ScriptStatus {
                kind,
                name: name.clone(),
                generation: 0,
                error: Some(format!(
                    "{name}.lua: no longer in the config (lua.{}); unloaded",
                    kind.topic()
                )),
            };
            self.sink.bus().publish(Event::Script(status));
        }
        self.host.set_order(&self.cfg.lua.plugins);
        self.reload(Reload::All).await;
    }

    async fn reload(&mut self, reload: Reload) {
        match reload {
            Reload::All => {
                tracing::info!("reloading every script");
                // `gsmgw unlock` on the store of a running gateway takes effect here.
                match self.sink.store().kv_all(LOCKOUT_SCOPE).await {
                    Ok(saved) => self.host.sync_lockouts(&saved, Instant::now().into_std()),
                    Err(e) => tracing::error!(error = %e, "cannot re-read the lock-outs"),
                }
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
            Reload::Library { path } => {
                for (kind, name) in self.host.dependents(&path) {
                    tracing::info!(script = %name, library = %path.display(), "library changed; reloading");
                    match kind {
                        ScriptKind::Plugin => self.reload_plugin(&name).await,
                        ScriptKind::Rule => self.reload_rule(&name).await,
                    }
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

/// The next message for the scripts; never when MQTT is off.
async fn next_mqtt(
    inbox: Option<&crate::mqtt::inbox::ScriptInbox>,
) -> Option<crate::mqtt::inbox::ScriptMessage> {
    match inbox {
        Some(inbox) => inbox.recv().await,
        None => std::future::pending().await,
    }
}

async fn sleep_until_some(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
