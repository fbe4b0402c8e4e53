//! The `gsmgw` command: parses arguments, runs, and turns an error into an exit code.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use gsmgw::config::Config;

#[derive(Parser)]
#[command(
    name = "gsmgw",
    version,
    about = "SMS and dial-in GSM gateway with GPIO, Lua plugins and MQTT"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the gateway daemon.
    Run {
        #[arg(short, long, default_value = "/etc/gsmgw/gsmgw.toml")]
        config: PathBuf,
    },
    /// Everything simulated (modem, GPIO, MQTT broker) with a console to play with.
    Demo {
        /// The demo's config (default: config/demo.toml, or a built-in copy).
        #[arg(short, long)]
        config: Option<PathBuf>,
        /// The first port to try for the embedded MQTT broker.
        #[arg(long, default_value_t = 1883)]
        mqtt_port: u16,
        /// Use this broker (mqtt://host:port) instead of the embedded one, e.g. your Home
        /// Assistant's, to see the demo's entities appear there.
        #[arg(long, value_name = "URL")]
        mqtt_url: Option<String>,
    },
    /// Validate the config, compile every script, look for the modem port and resolve the
    /// GPIO lines on the real chip (nothing is opened or driven).
    Check {
        #[arg(short, long, default_value = "/etc/gsmgw/gsmgw.toml")]
        config: PathBuf,
    },
    /// Run a conversation (JSON steps on stdin) through the plugins and rules, everything
    /// simulated; prints one JSON result per step.
    ///
    /// Steps, one JSON object a line: {"sms":{"from":"+44…","text":"STATUS"}},
    /// {"call":{"from":"+44…"}}, {"hangup":true}, {"input":{"name":"door","on":true}},
    /// {"advance":"30s"}, {"reload":true}; after a step {"expect":{…}} checks its result; a
    /// first line {"config":{…}} patches the config. See docs/lua-api.md, "Trying scripts".
    /// Exit code 1 when an expectation fails or a script did not load.
    Try {
        /// The config (default: config/demo.toml here, or the demo's built-in copy).
        #[arg(short, long)]
        config: Option<PathBuf>,
        /// Keep the store here between runs.
        #[arg(long)]
        state: Option<PathBuf>,
    },
    /// Queue an SMS through a running gateway (over MQTT) and wait for the result.
    Send {
        #[arg(short, long, default_value = "/etc/gsmgw/gsmgw.toml")]
        config: PathBuf,
        /// Seconds to wait for sms/sent.
        #[arg(long, default_value_t = 60)]
        timeout: u64,
        to: String,
        text: String,
    },
    /// Lift the SMS lock-out of a sender (number, short code or alphanumeric ID): deletes it
    /// from the store (enough for a stopped gateway) and, when MQTT is enabled, asks a running
    /// gateway over `<p>/security/unlock`. Without MQTT, `systemctl reload gsmgw` (SIGHUP)
    /// makes a running gateway re-read the store.
    Unlock {
        #[arg(short, long, default_value = "/etc/gsmgw/gsmgw.toml")]
        config: PathBuf,
        /// Seconds to wait for a running gateway's answer over MQTT.
        #[arg(long, default_value_t = 10)]
        timeout: u64,
        sender: String,
    },
    /// Home Assistant discovery payloads.
    Discovery {
        #[arg(short, long, default_value = "/etc/gsmgw/gsmgw.toml")]
        config: PathBuf,
        /// Print every discovery topic and payload.
        #[arg(long)]
        print: bool,
    },
    /// The SMS PDU codec, for debugging.
    Pdu {
        #[command(subcommand)]
        command: PduCmd,
    },
}

#[derive(Subcommand)]
enum PduCmd {
    /// Decode a PDU given in hex.
    Decode {
        hex: String,
        /// The PDU has no SMSC prefix (a bare TPDU).
        #[arg(long)]
        no_smsc: bool,
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Encode an SMS-SUBMIT (several parts when the text is long).
    Encode {
        #[arg(long)]
        to: String,
        text: String,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing(matches!(cli.command, Cmd::Demo { .. } | Cmd::Try { .. }));
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_tracing(quiet: bool) {
    // The demo's console and try's results are the user interface: keep the log to warnings
    // unless asked.
    let default = if quiet { "gsmgw=warn" } else { "gsmgw=info" };
    let filter = tracing_subscriber::EnvFilter::try_from_env("GSMGW_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Cmd::Run { config } => {
            let cfg = Config::load(&config)?;
            let opts = gsmgw::app::RunOptions {
                config_path: Some(config),
                ..Default::default()
            };
            runtime()?.block_on(async {
                let shutdown = shutdown_signal();
                gsmgw::app::run(cfg, opts, shutdown).await
            })?;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Demo {
            config,
            mqtt_port,
            mqtt_url,
        } => {
            let opts = gsmgw::demo::DemoOptions {
                config,
                mqtt_port,
                mqtt_url,
            };
            runtime()?.block_on(gsmgw::demo::run(opts))?;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Check { config } => Ok(check(&config)),
        Cmd::Try { config, state } => gsmgw::tryrun::run_cli(config.as_deref(), state.as_deref()),
        Cmd::Send {
            config,
            timeout,
            to,
            text,
        } => {
            let cfg = Config::load(&config)?;
            runtime()?.block_on(gsmgw::mqtt::cli::send(&cfg, &to, &text, timeout))
        }
        Cmd::Unlock {
            config,
            timeout,
            sender,
        } => {
            let cfg = Config::load(&config)?;
            unlock(&cfg, &sender, timeout)
        }
        Cmd::Discovery { config, print } => {
            let cfg = Config::load(&config)?;
            gsmgw::mqtt::cli::discovery(&cfg, print)
        }
        Cmd::Pdu { command } => Ok(pdu(command)),
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

/// Resolves on SIGINT or SIGTERM. The handlers are installed when this is called, not when
/// it is first awaited: a signal during start-up must stop the gateway cleanly too, not kill
/// it with the default action. Call it inside the runtime.
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{signal, SignalKind};
    let term = signal(SignalKind::terminate());
    let int = signal(SignalKind::interrupt());
    async move {
        match (term, int) {
            (Ok(mut term), Ok(mut int)) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = int.recv() => {}
                }
            }
            (term, int) => {
                if let Some(e) = term.as_ref().err().or(int.as_ref().err()) {
                    tracing::warn!(error = %e, "cannot watch SIGTERM/SIGINT; falling back to Ctrl-C");
                }
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
}

/// `gsmgw unlock`: see [`Cmd::Unlock`].
fn unlock(cfg: &Config, sender: &str, timeout: u64) -> anyhow::Result<ExitCode> {
    let Some(key) = gsmgw::phone::sender_key(sender, cfg.country_code()) else {
        eprintln!("error: give the number or sender ID to unlock");
        return Ok(ExitCode::FAILURE);
    };
    let mut store = gsmgw::store::Store::open(&cfg.store.path, cfg.sms.clone())
        .with_context(|| format!("opening the store {}", cfg.store.path.display()))?;
    let was_saved = store
        .kv_get(gsmgw::lua::LOCKOUT_SCOPE, &key)
        .context("reading the lock-out")?
        .is_some();
    store
        .kv_set(gsmgw::lua::LOCKOUT_SCOPE, &key, None)
        .context("deleting the lock-out")?;
    drop(store);
    println!(
        "{key}: {} in the store",
        if was_saved {
            "lock-out deleted"
        } else {
            "no saved lock-out"
        }
    );
    if !cfg.mqtt.enabled {
        println!(
            "MQTT is off: if the gateway is running, `systemctl reload gsmgw` (SIGHUP) applies it"
        );
        return Ok(ExitCode::SUCCESS);
    }
    match runtime()?.block_on(gsmgw::mqtt::cli::unlock(cfg, &key, timeout)) {
        Ok(true) => println!("{key}: unlocked in the running gateway"),
        Ok(false) => println!(
            "{key}: no running gateway answered over MQTT within {timeout} s; a stopped one starts unlocked"
        ),
        Err(e) => println!(
            "{key}: could not reach the gateway over MQTT ({e:#}); a stopped one starts unlocked, a running one after `systemctl reload gsmgw`"
        ),
    }
    Ok(ExitCode::SUCCESS)
}

fn check(path: &std::path::Path) -> ExitCode {
    let report = gsmgw::app::check(path);
    for line in &report.lines {
        println!("{line}");
    }
    for line in &report.problems {
        eprintln!("{line}");
    }
    if report.problems.is_empty() {
        println!("{}: OK", path.display());
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// A decoded PDU as `field: value` lines: the fields it has, the text last since it may run
/// over several lines.
fn pdu_text(decoded: &serde_json::Value) -> String {
    use serde_json::Value;
    const ORDER: [&str; 11] = [
        "type",
        "sender",
        "recipient",
        "smsc",
        "timestamp",
        "encoding",
        "class",
        "concat",
        "message_ref",
        "status",
        "data_hex",
    ];
    let mut out = String::new();
    for key in ORDER.into_iter().chain(["text"]) {
        let shown = match (key, decoded.get(key)) {
            (_, None | Some(Value::Null)) => continue,
            ("concat", Some(c)) => format!(
                "part {} of {} (reference {})",
                c.get("seq").unwrap_or(&Value::Null),
                c.get("total").unwrap_or(&Value::Null),
                c.get("ref").unwrap_or(&Value::Null)
            ),
            (_, Some(Value::String(s))) => s.clone(),
            (_, Some(other)) => other.to_string(),
        };
        out.push_str(&format!("{}: {shown}\n", key.replace('_', " ")));
    }
    out
}

fn pdu(command: PduCmd) -> ExitCode {
    use gsmgw::modem::pdu;
    match command {
        PduCmd::Decode { hex, no_smsc, json } => {
            let result = pdu::decode(hex.trim(), !no_smsc);
            if json {
                println!("{}", pdu::to_json(&result));
            } else {
                match &result {
                    Ok(_) => print!("{}", pdu_text(&pdu::to_json(&result))),
                    Err(e) => eprintln!("error: {e}"),
                }
            }
            if result.is_ok() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        PduCmd::Encode { to, text } => match pdu::encode_submit(&to, &text, &Default::default()) {
            Ok(parts) => {
                for part in parts {
                    println!("AT+CMGS={}\t{}", part.tpdu_len, part.hex);
                }
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        },
    }
}
