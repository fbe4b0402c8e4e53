//! `gsmgw demo`: the whole gateway with a simulated modem, simulated GPIO and an MQTT broker
//! inside the process, driven from a line console.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use std::io::{BufRead, IsTerminal, Write};

use anyhow::Context;
use tokio::sync::mpsc;

use crate::app::{self, RunOptions};
use crate::bus::{Event, ModemStatus, ScriptKind};
use crate::config::Config;
use crate::gpio::{self, SimGpio};
use crate::modem::sim::{SimConfig, SimEvent, SimHandle, SimModem};

/// The demo config, built in so that `gsmgw demo` works from any directory.
const BUILTIN_CONFIG: &str = include_str!("../config/demo.toml");

const HELP: &str = "\
commands:
  sms <from> <text>        an SMS arrives, e.g.  sms +447700900123 STATUS
  call <from|withheld>     a call rings (again every 3 s until rejected, answered or hung up)
  hangup                   the caller hangs up
  input <name> on|off      flip a simulated input, e.g.  input door on
  state                    outputs, inputs and modem
  help                     this text
  quit                     stop (Ctrl-D and Ctrl-C too)";

/// What `gsmgw demo` is asked on its command line.
#[derive(Debug, Clone, Default)]
pub struct DemoOptions {
    /// The demo's config (default: `config/demo.toml` here, or the built-in copy).
    pub config: Option<PathBuf>,
    /// The first port to try for the embedded broker.
    pub mqtt_port: u16,
    /// Use this broker instead of embedding one.
    pub mqtt_url: Option<String>,
}

/// Runs the demo until the user quits (or Ctrl-C, or the end of stdin).
pub async fn run(opts: DemoOptions) -> anyhow::Result<()> {
    // First, so that a Ctrl-C during start-up stops the demo instead of killing it half-way
    // (the temporary folder would stay behind).
    let mut interrupts = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
        .context("listening for Ctrl-C")?;
    let state_dir = std::env::temp_dir().join(format!("gsmgw-demo-{}", std::process::id()));
    std::fs::create_dir_all(&state_dir)
        .with_context(|| format!("creating {}", state_dir.display()))?;
    let config = match opts.config {
        Some(path) => path,
        None if std::path::Path::new("config/demo.toml").is_file() => "config/demo.toml".into(),
        None => {
            // Loaded from a file like any other, so GSMGW_* overrides apply to it too.
            let path = state_dir.join("demo.toml");
            std::fs::write(&path, BUILTIN_CONFIG)
                .with_context(|| format!("writing {}", path.display()))?;
            path
        }
    };
    let mut cfg = match Config::load(&config) {
        Ok(cfg) => cfg,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&state_dir);
            return Err(e.into());
        }
    };
    cfg.store.path = state_dir.join("gsmgw.db");
    find_stock_plugins(&mut cfg, &state_dir)?;

    let mut watch_hint = None;
    match opts.mqtt_url {
        Some(url) => {
            crate::mqtt::parse_url(&url).context("--mqtt-url")?;
            cfg.mqtt.url = url;
            cfg.mqtt.enabled = true;
        }
        None => start_broker(&mut cfg, opts.mqtt_port, &mut watch_hint)?,
    }

    let (sim, sim_events) =
        SimModem::start(SimConfig::default()).context("starting the simulated modem")?;
    cfg.modem.port = sim.path().to_path_buf();
    let (backend, sim_gpio) = gpio::sim_backend(&cfg);
    let prefix = cfg.mqtt.topic_prefix(&cfg.gateway.device_id);

    let out = Console::new();
    out.line(&format!(
        "gsmgw demo: simulated modem on {}, MQTT on {}",
        sim.path().display(),
        cfg.mqtt.url
    ));
    if let Some(port) = watch_hint {
        out.line(&format!(
            "  (mosquitto_sub -p {port} -t '{prefix}/#' -v  to watch from another terminal)"
        ));
    }

    let call_active = Arc::new(AtomicBool::new(false));
    let mqtt_cfg = cfg.clone();
    let bus = crate::bus::Bus::new();
    // Subscribed before the gateway starts, so the outcome of every script's first load is
    // here to report (the banner lists only the plugins that did load).
    let mut events = bus.subscribe();
    let start = app::start(
        cfg.clone(),
        RunOptions {
            gpio_backend: Some(backend),
            bus: Some(bus),
            // No re-read on SIGHUP: the demo replaces the modem port, store and broker.
            ..Default::default()
        },
    );
    let gateway = tokio::select! {
        gateway = start => gateway?,
        _ = interrupts.recv() => {
            let _ = std::fs::remove_dir_all(&state_dir);
            return Ok(());
        }
    };
    banner(&out, &cfg, &mut events);
    let printers = [
        tokio::spawn(print_sim(sim_events, call_active.clone(), out.clone())),
        tokio::spawn(print_bus(events, out.clone())),
        tokio::spawn(print_mqtt(mqtt_cfg, prefix, out.clone())),
    ];

    console(
        &gateway.handles,
        &sim,
        &sim_gpio,
        &call_active,
        &out,
        &mut interrupts,
    )
    .await;
    out.line("stopping…");
    for p in printers {
        p.abort();
    }
    gateway.stop().await;
    sim.stop();
    let _ = std::fs::remove_dir_all(&state_dir);
    Ok(())
}

#[cfg(feature = "embedded-broker")]
fn start_broker(cfg: &mut Config, port: u16, hint: &mut Option<u16>) -> anyhow::Result<()> {
    let broker = crate::mqtt::broker::start(port).context("starting the MQTT broker")?;
    cfg.mqtt.url = broker.url();
    cfg.mqtt.enabled = true;
    *hint = Some(broker.port);
    Ok(())
}

#[cfg(not(feature = "embedded-broker"))]
fn start_broker(cfg: &mut Config, _port: u16, _hint: &mut Option<u16>) -> anyhow::Result<()> {
    println!(
        "(built without the embedded broker: using {} from the config; --mqtt-url sets another)",
        cfg.mqtt.url
    );
    Ok(())
}

/// The stock plugins, built in: `gsmgw demo` and `gsmgw try` work from any folder, even
/// without an installed package.
const STOCK_PLUGINS: &[(&str, &str)] = &[
    (
        "call_reject_conn",
        include_str!("../plugins/call_reject_conn.lua"),
    ),
    ("david", include_str!("../plugins/david.lua")),
    (
        "password_comma",
        include_str!("../plugins/password_comma.lua"),
    ),
    (
        "pword_installer",
        include_str!("../plugins/pword_installer.lua"),
    ),
];

/// Where the Debian package installs the stock plugins.
pub const PACKAGED_PLUGINS: &str = "/usr/share/gsmgw/plugins";

/// Makes every configured plugin findable when run outside the source tree: when one is in
/// none of the configured folders, the packaged folder is searched after them, and after it a
/// copy of the built-in stock plugins written to `scratch/plugins`. The configured folders
/// still come first, so an edited copy there wins.
pub fn find_stock_plugins(cfg: &mut Config, scratch: &std::path::Path) -> anyhow::Result<()> {
    let missing = |cfg: &Config| cfg.plugin_paths().iter().any(|(_, p)| !p.is_file());
    if !missing(cfg) {
        return Ok(());
    }
    if cfg.lua.plugin_path.is_empty() {
        let dir = cfg.lua.plugins_dir.clone();
        cfg.lua.plugin_path.push(dir);
    }
    cfg.lua.plugin_path.push(PathBuf::from(PACKAGED_PLUGINS));
    if !missing(cfg) {
        return Ok(());
    }
    let dir = scratch.join("plugins");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    for (name, text) in STOCK_PLUGINS {
        let path = dir.join(format!("{name}.lua"));
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    }
    cfg.lua.plugin_path.push(dir);
    Ok(())
}

/// What was loaded: only plugins that did load are listed as loaded, each failure with its
/// error.
fn banner(out: &Console, cfg: &Config, events: &mut mpsc::UnboundedReceiver<Event>) {
    let mut loaded = Vec::new();
    let mut failed = Vec::new();
    // Every first load happened inside `app::start`: its outcome is queued already.
    while let Ok(event) = events.try_recv() {
        if let Event::Script(s) = event {
            match s.error {
                None => loaded.push(format!("{} {}", kind_word(s.kind), s.name)),
                Some(e) => failed.push(format!("{} {}: {e}", kind_word(s.kind), s.name)),
            }
        }
    }
    out.line(&format!(
        "  loaded: {}",
        if loaded.is_empty() {
            "nothing".to_string()
        } else {
            loaded.join(", ")
        }
    ));
    for f in &failed {
        out.line(&format!("  NOT LOADED: {f}"));
    }
    for (name, section) in &cfg.plugins {
        if let Some(master) = section.get("master").and_then(|m| m.as_str()) {
            out.line(&format!("  {name}: master number {master}"));
        }
    }
    out.line(&format!(
        "  outputs: {}",
        cfg.outputs.keys().cloned().collect::<Vec<_>>().join(", ")
    ));
    out.line(&format!(
        "  inputs: {}",
        cfg.inputs.keys().cloned().collect::<Vec<_>>().join(", ")
    ));
    out.line(HELP);
}

/// The console's output: plain lines when stdin is not a terminal (scripts, tests), and a
/// prompt kept below whatever the gateway prints when it is.
#[derive(Clone)]
struct Console {
    interactive: bool,
}

const PROMPT: &str = "gsmgw> ";

impl Console {
    fn new() -> Console {
        Console {
            interactive: std::io::stdin().is_terminal(),
        }
    }

    /// Prints `text` above the prompt.
    fn line(&self, text: &str) {
        let mut stdout = std::io::stdout().lock();
        let _ = if self.interactive {
            // Clear the prompt line, print, and draw the prompt again under the new text.
            write!(stdout, "\r\x1b[K{text}\n{PROMPT}")
        } else {
            writeln!(stdout, "{text}")
        };
        let _ = stdout.flush();
    }
}

/// Stdin lines, read on a plain thread: a read blocked in tokio's blocking pool would hold
/// the runtime (and so the process) open after Ctrl-C until the user pressed Enter.
fn stdin_lines() -> mpsc::UnboundedReceiver<String> {
    let (tx, rx) = mpsc::unbounded_channel();
    let _ = std::thread::Builder::new()
        .name("demo-stdin".into())
        .spawn(move || {
            for line in std::io::stdin().lock().lines() {
                let Ok(line) = line else { return };
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
    rx
}

async fn console(
    h: &app::Handles,
    sim: &SimHandle,
    sim_gpio: &SimGpio,
    call_active: &Arc<AtomicBool>,
    out: &Console,
    interrupts: &mut tokio::signal::unix::Signal,
) {
    let mut lines = stdin_lines();
    loop {
        let line = tokio::select! {
            line = lines.recv() => match line {
                Some(line) => line,
                None => return,
            },
            _ = interrupts.recv() => return,
        };
        let line = line.trim();
        let (word, rest) = line.split_once(' ').unwrap_or((line, ""));
        let rest = rest.trim();
        match word.to_ascii_lowercase().as_str() {
            "" => out.line(""),
            "help" | "?" => out.line(HELP),
            "quit" | "exit" => return,
            "sms" => match rest.split_once(' ') {
                Some((from, text)) => {
                    out.line(&format!("→ SMS from {from}: {text}"));
                    sim.inject_sms(from, text.trim());
                }
                None => out.line("usage: sms <from> <text>"),
            },
            "call" => {
                let from = match rest {
                    "" => {
                        out.line("usage: call <from|withheld>");
                        continue;
                    }
                    "withheld" | "-" => None,
                    n => Some(n.to_string()),
                };
                out.line(&format!(
                    "→ call from {}",
                    from.as_deref().unwrap_or("a withheld number")
                ));
                call_active.store(true, Ordering::SeqCst);
                tokio::spawn(keep_ringing(
                    sim.clone(),
                    from,
                    call_active.clone(),
                    out.clone(),
                ));
            }
            "hangup" => {
                call_active.store(false, Ordering::SeqCst);
                sim.remote_hang_up();
                out.line("→ caller hung up");
            }
            "input" => {
                let mut words = rest.split_whitespace();
                match (words.next(), words.next().map(|w| w.to_ascii_lowercase())) {
                    (Some(name), Some(state)) if state == "on" || state == "off" => {
                        sim_gpio.set_input(name, state == "on");
                        out.line(&format!("→ input {name} {state}"));
                    }
                    _ => out.line("usage: input <name> on|off"),
                }
            }
            "state" | "status" => match h.gpio.snapshot().await {
                Ok(s) => {
                    out.line(&format!("outputs: {}", on_off(&s.outputs)));
                    out.line(&format!("inputs: {}", on_off(&s.inputs)));
                    out.line(&format!("modem: {}", describe_modem(&h.modem.status())));
                }
                Err(e) => out.line(&format!("GPIO not available: {e}")),
            },
            other => out.line(&format!("unknown command {other:?}; type help")),
        }
    }
}

fn on_off(states: &std::collections::BTreeMap<String, bool>) -> String {
    states
        .iter()
        .map(|(k, v)| format!("{k} {}", if *v { "ON" } else { "OFF" }))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The modem's status in words, e.g. `ready, registered on Sim Mobile, signal -73 dBm`.
pub fn describe_modem(m: &ModemStatus) -> String {
    let mut parts = vec![if m.ready { "ready" } else { "not ready" }.to_string()];
    parts.push(match (m.registered, &m.operator) {
        (true, Some(op)) => format!("registered on {op}"),
        (true, None) => "registered".to_string(),
        (false, _) => "not registered".to_string(),
    });
    if m.roaming {
        parts.push("roaming".to_string());
    }
    parts.push(match m.signal_dbm {
        Some(dbm) => format!("signal {dbm} dBm"),
        None => "signal unknown".to_string(),
    });
    if let Some(imei) = &m.imei {
        parts.push(format!("IMEI {imei}"));
    }
    parts.join(", ")
}

/// Rings like a real caller: every 3 s until the gateway rejects or answers, or 30 s pass.
async fn keep_ringing(sim: SimHandle, from: Option<String>, active: Arc<AtomicBool>, out: Console) {
    for _ in 0..10 {
        if !active.load(Ordering::SeqCst) {
            return;
        }
        sim.ring(from.as_deref());
        tokio::time::sleep(Duration::from_secs(3)).await;
    }
    if active.swap(false, Ordering::SeqCst) {
        sim.remote_hang_up();
        out.line("→ caller gave up");
    }
}

async fn print_sim(
    mut events: mpsc::UnboundedReceiver<SimEvent>,
    call_active: Arc<AtomicBool>,
    out: Console,
) {
    while let Some(ev) = events.recv().await {
        match ev {
            SimEvent::SmsSent { to, text, .. } => out.line(&format!("← SMS to {to}: {text}")),
            SimEvent::CallRejected => {
                call_active.store(false, Ordering::SeqCst);
                out.line("← call rejected by the gateway");
            }
            SimEvent::CallAnswered => {
                call_active.store(false, Ordering::SeqCst);
                out.line("← call answered by the gateway");
            }
            SimEvent::CallEnded => out.line("← call ended by the gateway"),
            SimEvent::UssdSent(code) => out.line(&format!("← USSD {code}")),
            SimEvent::Command(_) => {}
        }
    }
}

fn kind_word(kind: ScriptKind) -> &'static str {
    match kind {
        ScriptKind::Plugin => "plugin",
        ScriptKind::Rule => "rule",
    }
}

async fn print_bus(mut events: mpsc::UnboundedReceiver<Event>, out: Console) {
    while let Some(ev) = events.recv().await {
        match ev {
            Event::OutputChanged { name, on } => out.line(&format!(
                "  output {name} {}",
                if on { "ON" } else { "OFF" }
            )),
            Event::InputChanged { name, on } => {
                out.line(&format!("  input {name} {}", if on { "ON" } else { "OFF" }))
            }
            Event::Script(s) => match s.error {
                Some(e) => out.line(&format!("  {} {} failed: {e}", kind_word(s.kind), s.name)),
                None => out.line(&format!(
                    "  {} {} loaded (generation {})",
                    kind_word(s.kind),
                    s.name,
                    s.generation
                )),
            },
            _ => {}
        }
    }
}

/// Shows what reaches the broker, as a Home Assistant would see it.
async fn print_mqtt(cfg: Config, prefix: String, out: Console) {
    let id = format!("gsmgw-demo-console-{}", std::process::id());
    let opts = match crate::mqtt::connection_options(&cfg.mqtt, &id) {
        Ok(opts) => opts,
        Err(e) => {
            out.line(&format!("  (not showing MQTT traffic: {e})"));
            return;
        }
    };
    let (client, mut eventloop) = rumqttc::AsyncClient::new(opts, 64);
    let topic = format!("{prefix}/#");
    loop {
        match eventloop.poll().await {
            Ok(rumqttc::Event::Incoming(rumqttc::Packet::ConnAck(_))) => {
                let _ = client.try_subscribe(topic.clone(), rumqttc::QoS::AtMostOnce);
            }
            Ok(rumqttc::Event::Incoming(rumqttc::Packet::Publish(p))) => {
                let payload = String::from_utf8_lossy(&p.payload);
                let shown: String = payload.chars().take(200).collect();
                out.line(&format!("  mqtt {} {shown}", p.topic));
            }
            Ok(_) => {}
            Err(_) => tokio::time::sleep(Duration::from_secs(1)).await,
        }
    }
}
