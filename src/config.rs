//! The configuration: one TOML file plus `GSMGW_<SECTION>__<KEY>` environment overrides,
//! parsed and validated before anything live is built.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// The whole configuration file.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub gateway: GatewayConfig,
    pub modem: ModemConfig,
    pub sms: SmsConfig,
    pub gpio: GpioConfig,
    /// Named outputs (relays), `[outputs.<name>]`.
    pub outputs: BTreeMap<String, OutputConfig>,
    /// Named inputs, `[inputs.<name>]`.
    pub inputs: BTreeMap<String, InputConfig>,
    pub store: StoreConfig,
    pub lua: LuaConfig,
    /// Each plugin's own section, `[plugins.<name>]`, handed to it as `gw.config`.
    pub plugins: BTreeMap<String, serde_json::Value>,
    /// Each rule's own section, `[rules.<name>]`, handed to it as `gw.config`.
    pub rules: BTreeMap<String, serde_json::Value>,
    pub mqtt: MqttConfig,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GatewayConfig {
    /// Names this gateway on MQTT (`gsmgw/<device_id>`); letters, digits, `-` and `_`.
    pub device_id: String,
    /// The country calling code (digits, e.g. `"44"`) used to turn national numbers into
    /// E.164. Empty: numbers are compared as digits.
    pub country_code: String,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        Self { device_id: "gsmgw".into(), country_code: String::new() }
    }
}

#[derive(Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ModemConfig {
    /// The serial device; prefer a stable `/dev/serial/by-id/…` path.
    pub port: PathBuf,
    pub baud: u32,
    /// The SIM PIN, if the SIM asks for one. A secret: never logged.
    pub pin: Option<String>,
    /// Seconds an AT command may take before it counts as unanswered.
    pub command_timeout_s: u64,
    /// Seconds between `AT+CMGL` sweeps for messages whose `+CMTI` was lost.
    pub sweep_interval_s: u64,
    /// Seconds between signal and registration polls.
    pub poll_interval_s: u64,
    /// Seconds after the last ring before a call that never said `NO CARRIER` counts as ended.
    pub ring_timeout_s: u64,
}

impl fmt::Debug for ModemConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ModemConfig")
            .field("port", &self.port)
            .field("baud", &self.baud)
            .field("pin", &self.pin.as_ref().map(|_| "***"))
            .field("command_timeout_s", &self.command_timeout_s)
            .field("sweep_interval_s", &self.sweep_interval_s)
            .field("poll_interval_s", &self.poll_interval_s)
            .field("ring_timeout_s", &self.ring_timeout_s)
            .finish()
    }
}

impl Default for ModemConfig {
    fn default() -> Self {
        Self {
            port: PathBuf::from("/dev/ttyUSB0"),
            baud: 115_200,
            pin: None,
            command_timeout_s: 10,
            sweep_interval_s: 300,
            poll_interval_s: 60,
            ring_timeout_s: 8,
        }
    }
}

/// Outgoing SMS limits: they protect the owner's credit from anyone who can make the gateway
/// reply.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SmsConfig {
    pub max_per_hour: u32,
    pub max_per_day: u32,
    pub max_per_recipient_per_hour: u32,
    pub max_per_recipient_per_day: u32,
    /// Attempts before an outgoing SMS is marked failed.
    pub send_attempts: u32,
}

impl Default for SmsConfig {
    fn default() -> Self {
        Self {
            max_per_hour: 30,
            max_per_day: 100,
            max_per_recipient_per_hour: 10,
            max_per_recipient_per_day: 30,
            send_attempts: 3,
        }
    }
}

/// Which GPIO backend drives the lines.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GpioBackendKind {
    /// The Linux GPIO character device (any board).
    #[default]
    Cdev,
    /// The Raspberry Pi's own register interface.
    Rppal,
    /// Simulated lines, for the demo and tests.
    Sim,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GpioConfig {
    pub backend: GpioBackendKind,
    /// The chip for `cdev` when lines are given by offset.
    pub chip: PathBuf,
}

impl Default for GpioConfig {
    fn default() -> Self {
        Self { backend: GpioBackendKind::Cdev, chip: PathBuf::from("/dev/gpiochip0") }
    }
}

/// A line: an offset on the chip (`17`) or a line name (`"GPIO17"`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum LineId {
    Offset(u32),
    Name(String),
}

impl fmt::Display for LineId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LineId::Offset(n) => write!(f, "{n}"),
            LineId::Name(s) => f.write_str(s),
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Bias {
    #[default]
    Disabled,
    PullUp,
    PullDown,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutputConfig {
    pub line: LineId,
    /// The relay is on when the line is low (most relay boards).
    #[serde(default)]
    pub active_low: bool,
    /// The state at start when nothing is restored.
    #[serde(default)]
    pub initial: bool,
    /// Restore the last state from the store at start.
    #[serde(default)]
    pub restore: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InputConfig {
    pub line: LineId,
    #[serde(default)]
    pub active_low: bool,
    #[serde(default)]
    pub bias: Bias,
    #[serde(default = "default_debounce_ms")]
    pub debounce_ms: u64,
    /// Home Assistant's `device_class` for the binary sensor (`door`, `motion`, …).
    #[serde(default)]
    pub device_class: Option<String>,
}

fn default_debounce_ms() -> u64 {
    50
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoreConfig {
    /// The SQLite file.
    pub path: PathBuf,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self { path: PathBuf::from("/var/lib/gsmgw/gsmgw.db") }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LuaConfig {
    pub plugins_dir: PathBuf,
    pub rules_dir: PathBuf,
    /// Dialect plugins in the order they see messages: the first that handles one wins.
    pub plugins: Vec<String>,
    /// Memory one script's state may use, in KiB.
    pub memory_limit_kb: usize,
    /// Lua VM instructions one call may run.
    pub instruction_limit: u64,
    /// Watch the script folders and reload changed files.
    pub hot_reload: bool,
}

impl Default for LuaConfig {
    fn default() -> Self {
        Self {
            plugins_dir: PathBuf::from("plugins"),
            rules_dir: PathBuf::from("rules"),
            plugins: Vec::new(),
            memory_limit_kb: 16 * 1024,
            instruction_limit: 10_000_000,
            hot_reload: true,
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MqttMode {
    /// Connect at start and reconnect forever.
    #[default]
    Always,
    /// Connect only when asked, drop after an idle period.
    OnDemand,
}

#[derive(Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MqttConfig {
    pub enabled: bool,
    /// `mqtt://host:port` or `mqtts://host:port`.
    pub url: String,
    /// Empty: `gsmgw-<device_id>`.
    pub client_id: String,
    pub username: Option<String>,
    /// A secret: never logged.
    pub password: Option<String>,
    pub keep_alive_s: u64,
    /// Topics are `<prefix>/<device_id>/…`.
    pub prefix: String,
    pub mode: MqttMode,
    /// Seconds without use before an on-demand connection is dropped.
    pub idle_disconnect_s: u64,
    pub discovery: bool,
    pub discovery_prefix: String,
}

impl fmt::Debug for MqttConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MqttConfig")
            .field("enabled", &self.enabled)
            .field("url", &self.url)
            .field("client_id", &self.client_id)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .field("keep_alive_s", &self.keep_alive_s)
            .field("prefix", &self.prefix)
            .field("mode", &self.mode)
            .field("idle_disconnect_s", &self.idle_disconnect_s)
            .field("discovery", &self.discovery)
            .field("discovery_prefix", &self.discovery_prefix)
            .finish()
    }
}

impl Default for MqttConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            url: "mqtt://127.0.0.1:1883".into(),
            client_id: String::new(),
            username: None,
            password: None,
            keep_alive_s: 30,
            prefix: "gsmgw".into(),
            mode: MqttMode::Always,
            idle_disconnect_s: 600,
            discovery: true,
            discovery_prefix: "homeassistant".into(),
        }
    }
}

impl MqttConfig {
    /// The topic prefix `<prefix>/<device_id>`.
    pub fn topic_prefix(&self, device_id: &str) -> String {
        format!("{}/{}", self.prefix.trim_end_matches('/'), device_id)
    }
}

impl ModemConfig {
    pub fn command_timeout(&self) -> Duration {
        Duration::from_secs(self.command_timeout_s)
    }
}
