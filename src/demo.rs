//! `gsmgw demo`: the whole gateway with a simulated modem, simulated GPIO and an MQTT broker
//! inside the process, driven from a line console.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::app::{self, RunOptions};
use crate::bus::Event;
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
  reboot                   the modem restarts with the port open (settings lost)
  input <name> on|off      flip a simulated input, e.g.  input door on
  state                    outputs, inputs and modem
  help                     this text
  quit                     stop (Ctrl-D and Ctrl-C too)";

/// Runs the demo until the user quits.
/// `modem` names the module profile the simulated modem follows (`sim800`, `ec25`, ...).
pub async fn run(config: Option<PathBuf>, mqtt_port: u16, modem: &str) -> anyhow::Result<()> {
    let Some(profile) = crate::modem::profiles::by_id(modem) else {
        anyhow::bail!(
            "no modem profile {modem:?} (help: one of {})",
            crate::modem::profiles::ids().join(", ")
        );
    };
    let mut cfg = match &config {
        Some(path) => Config::load(path)?,
        None if std::path::Path::new("config/demo.toml").is_file() => {
            Config::load(std::path::Path::new("config/demo.toml"))?
        }
        None => Config::from_toml(BUILTIN_CONFIG, "demo.toml (built in)")?,
    };

    let state_dir = std::env::temp_dir().join(format!("gsmgw-demo-{}", std::process::id()));
    std::fs::create_dir_all(&state_dir)
        .with_context(|| format!("creating {}", state_dir.display()))?;
    cfg.store.path = state_dir.join("gsmgw.db");

    #[cfg(feature = "embedded-broker")]
    let broker = {
        let broker = crate::mqtt::broker::start(mqtt_port).context("starting the MQTT broker")?;
        cfg.mqtt.url = format!("mqtt://127.0.0.1:{}", broker.port);
        cfg.mqtt.enabled = true;
        broker
    };
    #[cfg(not(feature = "embedded-broker"))]
    {
        let _ = mqtt_port;
        println!(
            "(built without the embedded broker: using {} from the config)",
            cfg.mqtt.url
        );
    }

    let (sim, sim_events) = SimModem::start(SimConfig {
        profile,
        ..SimConfig::default()
    })
    .context("starting the simulated modem")?;
    cfg.modem.port = sim.path().to_path_buf();
    let (backend, sim_gpio) = gpio::sim_backend(&cfg);
    let prefix = cfg.mqtt.topic_prefix(&cfg.gateway.device_id);

    println!(
        "gsmgw demo: simulated {} on {}, MQTT on {}",
        profile.name,
        sim.path().display(),
        cfg.mqtt.url
    );
    #[cfg(feature = "embedded-broker")]
    println!(
        "  (mosquitto_sub -p {} -t '{prefix}/#' -v  to watch from another terminal)",
        broker.port
    );
    println!("  plugins: {}", cfg.lua.plugins.join(", "));
    for (name, section) in &cfg.plugins {
        if let Some(master) = section.get("master").and_then(|m| m.as_str()) {
            println!("  {name}: master number {master}");
        }
    }
    println!(
        "  outputs: {}",
        cfg.outputs.keys().cloned().collect::<Vec<_>>().join(", ")
    );
    println!(
        "  inputs: {}",
        cfg.inputs.keys().cloned().collect::<Vec<_>>().join(", ")
    );
    println!("{HELP}");

    let call_active = Arc::new(AtomicBool::new(false));
    let mqtt_url = cfg.mqtt.url.clone();
    let gateway = app::start(
        cfg,
        RunOptions {
            gpio_backend: Some(backend),
        },
    )
    .await?;
    let printers = [
        tokio::spawn(print_sim(sim_events, call_active.clone())),
        tokio::spawn(print_bus(gateway.handles.bus.subscribe())),
        tokio::spawn(print_mqtt(mqtt_url, prefix)),
    ];

    console(&gateway.handles, &sim, &sim_gpio, &call_active).await;
    println!("stopping…");
    gateway.stop().await;
    for p in printers {
        p.abort();
    }
    sim.stop();
    let _ = std::fs::remove_dir_all(&state_dir);
    Ok(())
}

async fn console(
    h: &app::Handles,
    sim: &SimHandle,
    sim_gpio: &SimGpio,
    call_active: &Arc<AtomicBool>,
) {
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    loop {
        let line = tokio::select! {
            line = lines.next_line() => match line {
                Ok(Some(line)) => line,
                Ok(None) | Err(_) => return,
            },
            _ = tokio::signal::ctrl_c() => return,
        };
        let line = line.trim();
        let (word, rest) = line.split_once(' ').unwrap_or((line, ""));
        let rest = rest.trim();
        match word.to_ascii_lowercase().as_str() {
            "" => {}
            "help" | "?" => println!("{HELP}"),
            "quit" | "exit" => return,
            "sms" => match rest.split_once(' ') {
                Some((from, text)) => {
                    println!("→ SMS from {from}: {text}");
                    sim.inject_sms(from, text.trim());
                }
                None => println!("usage: sms <from> <text>"),
            },
            "call" => {
                let from = match rest {
                    "" => {
                        println!("usage: call <from|withheld>");
                        continue;
                    }
                    "withheld" | "-" => None,
                    n => Some(n.to_string()),
                };
                println!(
                    "→ call from {}",
                    from.as_deref().unwrap_or("a withheld number")
                );
                call_active.store(true, Ordering::SeqCst);
                tokio::spawn(keep_ringing(sim.clone(), from, call_active.clone()));
            }
            "reboot" => {
                sim.reboot();
                println!("→ the modem restarted; the gateway should set it up again");
            }
            "hangup" => {
                call_active.store(false, Ordering::SeqCst);
                sim.remote_hang_up();
                println!("→ caller hung up");
            }
            "input" => {
                let mut words = rest.split_whitespace();
                match (words.next(), words.next().map(|w| w.to_ascii_lowercase())) {
                    (Some(name), Some(state)) if state == "on" || state == "off" => {
                        sim_gpio.set_input(name, state == "on");
                        println!("→ input {name} {state}");
                    }
                    _ => println!("usage: input <name> on|off"),
                }
            }
            "state" | "status" => match h.gpio.snapshot().await {
                Ok(s) => {
                    let show = |m: &std::collections::BTreeMap<String, bool>| {
                        m.iter()
                            .map(|(k, v)| format!("{k}={}", if *v { "ON" } else { "OFF" }))
                            .collect::<Vec<_>>()
                            .join(" ")
                    };
                    println!("outputs: {}", show(&s.outputs));
                    println!("inputs: {}", show(&s.inputs));
                    println!("modem: {:?}", h.modem.status());
                }
                Err(e) => println!("GPIO not available: {e}"),
            },
            other => println!("unknown command {other:?}; type help"),
        }
    }
}

/// Rings like a real caller: every 3 s until the gateway rejects or answers, or 30 s pass.
async fn keep_ringing(sim: SimHandle, from: Option<String>, active: Arc<AtomicBool>) {
    for _ in 0..10 {
        if !active.load(Ordering::SeqCst) {
            return;
        }
        sim.ring(from.as_deref());
        tokio::time::sleep(Duration::from_secs(3)).await;
    }
    if active.swap(false, Ordering::SeqCst) {
        sim.remote_hang_up();
        println!("→ caller gave up");
    }
}

async fn print_sim(
    mut events: tokio::sync::mpsc::UnboundedReceiver<SimEvent>,
    call_active: Arc<AtomicBool>,
) {
    while let Some(ev) = events.recv().await {
        match ev {
            SimEvent::SmsSent { to, text, .. } => println!("← SMS to {to}: {text}"),
            SimEvent::CallRejected => {
                call_active.store(false, Ordering::SeqCst);
                println!("← call rejected by the gateway");
            }
            SimEvent::CallAnswered => {
                call_active.store(false, Ordering::SeqCst);
                println!("← call answered by the gateway");
            }
            SimEvent::CallEnded => println!("← call ended by the gateway"),
            SimEvent::UssdSent(code) => println!("← USSD {code}"),
            SimEvent::Command(_) => {}
        }
    }
}

async fn print_bus(mut events: tokio::sync::mpsc::UnboundedReceiver<Event>) {
    while let Some(ev) = events.recv().await {
        match ev {
            Event::OutputChanged { name, on } => {
                println!("  output {name} {}", if on { "ON" } else { "OFF" })
            }
            Event::InputChanged { name, on } => {
                println!("  input {name} {}", if on { "ON" } else { "OFF" })
            }
            Event::Script(s) => match s.error {
                Some(e) => println!("  {} {} failed: {e}", s.kind.topic(), s.name),
                None => println!(
                    "  {} {} loaded (generation {})",
                    s.kind.topic(),
                    s.name,
                    s.generation
                ),
            },
            _ => {}
        }
    }
}

/// Shows what reaches the broker, as a Home Assistant would see it.
async fn print_mqtt(url: String, prefix: String) {
    let Some((host, port)) = url
        .strip_prefix("mqtt://")
        .and_then(|hp| hp.rsplit_once(':'))
        .and_then(|(h, p)| Some((h.to_string(), p.parse::<u16>().ok()?)))
    else {
        return;
    };
    let mut opts = rumqttc::MqttOptions::new(
        format!("gsmgw-demo-console-{}", std::process::id()),
        host,
        port,
    );
    opts.set_keep_alive(Duration::from_secs(30));
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
                println!("  mqtt {} {shown}", p.topic);
            }
            Ok(_) => {}
            Err(_) => tokio::time::sleep(Duration::from_secs(1)).await,
        }
    }
}
