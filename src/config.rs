//! The configuration: one TOML file plus `GSMGW_<SECTION>__<KEY>` environment overrides,
//! parsed and validated before anything live is built.

use std::collections::{BTreeMap, BTreeSet};
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
    /// The alarm panel, `[alarm]`.
    pub alarm: AlarmConfig,
    /// Who is told about attacks, `[security]`.
    pub security: SecurityConfig,
}

/// `[security]`: see docs/security.md.
#[derive(Debug, Clone, Deserialize, Default, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct SecurityConfig {
    /// Numbers that get an SMS when failures claiming an enrolled number reach the lock-out
    /// limit, or when the gateway-wide failure budget is spent. Empty: MQTT only.
    pub alert_to: Vec<String>,
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
        Self {
            device_id: "gsmgw".into(),
            country_code: String::new(),
        }
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
    /// A second device that only carries URCs (some USB modems have one); never written to.
    pub urc_port: Option<PathBuf>,
    /// The output wired to the modem's power key, pulsed when the modem does not answer and
    /// a soft reset (`AT+CFUN=1,1`) fails.
    pub power_key: Option<String>,
    /// How long the power key is held, in milliseconds.
    pub power_key_pulse_ms: u64,
    /// `AT+CNMI` values (`"2,1,0,1,0"`) tried before the probed ones; `None` probes.
    pub cnmi: Option<String>,
    /// The SMS storage (`"SM"`, `"ME"`, `"MT"`) used if the modem lists it; `None` probes.
    pub storage: Option<String>,
    /// Extra commands sent after the built-in init sequence, every time it runs.
    pub init: Vec<String>,
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
            .field("urc_port", &self.urc_port)
            .field("power_key", &self.power_key)
            .field("power_key_pulse_ms", &self.power_key_pulse_ms)
            .field("cnmi", &self.cnmi)
            .field("storage", &self.storage)
            .field("init", &self.init)
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
            urc_port: None,
            power_key: None,
            power_key_pulse_ms: 1500,
            cnmi: None,
            storage: None,
            init: Vec::new(),
        }
    }
}

/// Why `cmd` cannot be sent as an extra init command, if it cannot.
fn init_command_problem(cmd: &str) -> Option<&'static str> {
    if !cmd.get(..2).is_some_and(|p| p.eq_ignore_ascii_case("AT")) {
        return Some("must start with AT");
    }
    if cmd.contains(['\r', '\n']) {
        return Some("must be one line (no CR or LF)");
    }
    if !cmd.chars().all(|c| c.is_ascii_graphic() || c == ' ') {
        return Some("must be printable ASCII");
    }
    if cmd.len() > 256 {
        return Some("is too long (at most 256 characters)");
    }
    None
}

/// Outgoing SMS limits: they protect the owner's credit from anyone who can make the gateway
/// reply.
#[derive(Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SmsConfig {
    pub max_per_hour: u32,
    pub max_per_day: u32,
    pub max_per_recipient_per_hour: u32,
    pub max_per_recipient_per_day: u32,
    /// Attempts before an outgoing SMS is marked failed.
    pub send_attempts: u32,
    /// Ask the network for a delivery report on every outgoing SMS.
    pub delivery_reports: bool,
    /// Seconds to wait for the missing parts of a concatenated SMS before delivering what
    /// arrived, with markers.
    pub concat_timeout_s: u64,
    /// Parts of each cap that only priority SMS (alarm, notify, security alerts) may use.
    pub priority_reserve: u32,
    /// SMS parts the scripts may send while handling ONE incoming SMS from a sender nobody
    /// enrolled (replies and anything else they send then); priority SMS do not count.
    pub reply_budget: u32,
    /// SMS parts a sender nobody enrolled may receive per hour (not counting priority SMS).
    pub stranger_replies_per_hour: u32,
    /// When non-empty, every outgoing SMS must go to a number starting with one of these
    /// (normalised like recipients: `+44…`), or be listed in `allow_recipients`.
    pub allow_prefixes: Vec<String>,
    /// No SMS ever goes to a number starting with one of these (premium ranges).
    pub deny_prefixes: Vec<String>,
    /// Short codes, alphanumeric addresses and numbers with fewer than 8 digits that may be
    /// sent to (otherwise only enrolled numbers may be).
    pub allow_recipients: Vec<String>,
    /// USSD codes a script may send while handling an SMS (exactly these).
    pub ussd_allow: Vec<String>,
    /// SMS older than this (by their service-centre time stamp, else when they were stored)
    /// found undelivered at start reach only rules and MQTT, marked `stale`.
    pub max_command_age_s: u64,
    /// A national language (`"turkish"`, `"spanish"`, `"portuguese"`) whose GSM 7-bit tables
    /// outgoing text may use when that needs fewer parts than UCS-2.
    pub national_language: Option<String>,
    /// `gateway.country_code`, copied here at load so the outbox can normalise recipients.
    #[serde(skip)]
    pub country_code: Option<String>,
}

impl fmt::Debug for SmsConfig {
    // Every key of `[sms]`; `country_code` is `gateway.country_code`, not a key here.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SmsConfig")
            .field("max_per_hour", &self.max_per_hour)
            .field("max_per_day", &self.max_per_day)
            .field(
                "max_per_recipient_per_hour",
                &self.max_per_recipient_per_hour,
            )
            .field("max_per_recipient_per_day", &self.max_per_recipient_per_day)
            .field("send_attempts", &self.send_attempts)
            .field("delivery_reports", &self.delivery_reports)
            .field("concat_timeout_s", &self.concat_timeout_s)
            .field("priority_reserve", &self.priority_reserve)
            .field("reply_budget", &self.reply_budget)
            .field("stranger_replies_per_hour", &self.stranger_replies_per_hour)
            .field("allow_prefixes", &self.allow_prefixes)
            .field("deny_prefixes", &self.deny_prefixes)
            .field("allow_recipients", &self.allow_recipients)
            .field("ussd_allow", &self.ussd_allow)
            .field("max_command_age_s", &self.max_command_age_s)
            .field("national_language", &self.national_language)
            .finish()
    }
}

impl Default for SmsConfig {
    fn default() -> Self {
        Self {
            max_per_hour: 30,
            max_per_day: 100,
            max_per_recipient_per_hour: 10,
            max_per_recipient_per_day: 30,
            send_attempts: 3,
            delivery_reports: false,
            concat_timeout_s: 3600,
            priority_reserve: 3,
            reply_budget: 3,
            stranger_replies_per_hour: 20,
            allow_prefixes: Vec::new(),
            deny_prefixes: vec!["+979".into(), "+881".into(), "+882".into(), "+883".into()],
            allow_recipients: Vec::new(),
            ussd_allow: vec![
                "*100#".into(),
                "*101#".into(),
                "*102#".into(),
                "*#100#".into(),
                "*#101#".into(),
                "*#102#".into(),
            ],
            max_command_age_s: 900,
            country_code: None,
            national_language: None,
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
        Self {
            backend: GpioBackendKind::Cdev,
            chip: PathBuf::from("/dev/gpiochip0"),
        }
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
    /// Days that handled inbox rows, finished outbox rows and the call log are kept; older
    /// ones are pruned once an hour. 0 keeps everything.
    pub retain_days: u32,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            path: PathBuf::from("/var/lib/gsmgw/gsmgw.db"),
            retain_days: 90,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LuaConfig {
    pub plugins_dir: PathBuf,
    /// Folders searched for `<name>.lua`, first hit wins; when set it replaces `plugins_dir`.
    /// The Debian package uses `["/etc/gsmgw/plugins", "/usr/share/gsmgw/plugins"]`: stock
    /// plugins come with the package and a copy under /etc overrides one.
    pub plugin_path: Vec<PathBuf>,
    pub rules_dir: PathBuf,
    /// Dialect plugins in the order they see messages: the first that handles one wins.
    pub plugins: Vec<String>,
    /// Memory one script's state may use, in KiB.
    pub memory_limit_kb: usize,
    /// Lua VM instructions one call may run.
    pub instruction_limit: u64,
    /// Watch the script folders and reload changed files.
    pub hot_reload: bool,
    /// Rules to load from `rules_dir` (by name, without `.lua`); `["*"]` loads every file.
    pub rules: Vec<String>,
    /// Wrong passwords, codes or PINs within `lockout_seconds` that lock a sender out.
    pub lockout_failures: u32,
    /// The lock-out window and duration, in seconds.
    pub lockout_seconds: u64,
    /// Wrong passwords, codes or PINs from all senders together within `lockout_seconds`
    /// that suspend credential-bearing SMS commands from senders nobody enrolled.
    pub global_failures: u32,
    /// Characters of an SMS text dialect plugins see (trimmed, then cut); rules see all.
    pub plugin_text_limit: usize,
    /// Wall-clock time one call may run, in milliseconds: the backstop behind
    /// `instruction_limit` for work that is one instruction of large cost.
    pub call_deadline_ms: u64,
    /// Commands (sends, publishes, output changes, store writes…) one call may issue.
    pub max_commands_per_call: usize,
    /// Bytes of one `gw.mqtt.publish` payload.
    pub max_mqtt_payload_bytes: usize,
    /// Bytes of one `gw.store` value (as JSON).
    pub max_store_value_bytes: usize,
    /// Keys one script may keep in `gw.store`.
    pub max_store_keys: usize,
    /// Characters of one SMS that `gw.sms.send` / `reply` may send.
    pub max_sms_chars: usize,
    /// Timers one script may have pending.
    pub max_timers: usize,
    /// The longest duration a script may ask for (timers, output pulses, MQTT sessions), in
    /// seconds.
    pub max_duration_s: u64,
    /// Dispatches of one SMS that may fail or be cut off (a crash, a kill) before it is
    /// quarantined: handed to rules and MQTT as failed, never to the plugins again.
    pub max_dispatch_attempts: u32,
    /// Seconds after which a script disabled for failing is tried again.
    pub disabled_retry_s: u64,
}

impl Default for LuaConfig {
    fn default() -> Self {
        Self {
            plugins_dir: PathBuf::from("plugins"),
            plugin_path: Vec::new(),
            rules_dir: PathBuf::from("rules"),
            plugins: Vec::new(),
            memory_limit_kb: 16 * 1024,
            // About 100 ms of plain Lua on a Pi Zero 2 W (see docs/lua-api.md, "Sandbox").
            instruction_limit: 2_000_000,
            hot_reload: true,
            rules: Vec::new(),
            lockout_failures: 5,
            lockout_seconds: 3600,
            global_failures: 20,
            plugin_text_limit: crate::lua::PLUGIN_TEXT_LIMIT,
            // Above what the instruction budget allows on a Pi Zero 2 W (~100 ms of plain Lua,
            // a few times that for string work), so it only stops what the budget cannot see.
            call_deadline_ms: 1000,
            max_commands_per_call: 100,
            max_mqtt_payload_bytes: 64 * 1024,
            max_store_value_bytes: 64 * 1024,
            max_store_keys: 1000,
            max_sms_chars: 1600,
            max_timers: 1000,
            max_duration_s: 7 * 24 * 3600,
            max_dispatch_attempts: 3,
            disabled_retry_s: 600,
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
    /// A file holding the password (first line), instead of `password`. A secret: never logged.
    pub password_file: Option<PathBuf>,
    /// PEM CA certificate(s) to trust for `mqtts://` instead of the system roots.
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate for `mqtts://` (with `client_key`).
    pub client_cert: Option<PathBuf>,
    /// PEM private key of `client_cert`.
    pub client_key: Option<PathBuf>,
    /// Publish the modem's IMEI on `<p>/modem` (off: it identifies the device to anyone who
    /// can read the broker).
    pub publish_imei: bool,
    /// Home Assistant's alarm panel asks for a code, which the gateway's alarm panel checks.
    pub alarm_code_required: bool,
    /// Home Assistant `notify` entities, one per recipient: the message is sent by SMS.
    pub notify: Vec<NotifyTarget>,
    /// Also take SMS requests from `$share/<send_group>/<prefix>/fleet/sms/send`: each request
    /// is sent by exactly one gateway of the group.
    pub send_group: Option<String>,
    /// Messages on the scripts' subscriptions larger than this are dropped (with a warning).
    pub max_payload_bytes: usize,
    /// Messages on the scripts' subscriptions waiting for the scripts; in a flood the oldest
    /// is dropped (with a warning at most every 10 s).
    pub script_queue_len: usize,
}

/// A recipient Home Assistant can notify by SMS.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotifyTarget {
    /// Names the entity (`notify.<device>_sms_<name>`); letters, digits, `_` and `-`.
    pub name: String,
    /// The phone number the messages go to.
    pub number: String,
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
            .field("password_file", &self.password_file)
            .field("ca_file", &self.ca_file)
            .field("client_cert", &self.client_cert)
            .field("client_key", &self.client_key)
            .field("publish_imei", &self.publish_imei)
            .field("alarm_code_required", &self.alarm_code_required)
            .field("notify", &self.notify)
            .field("send_group", &self.send_group)
            .field("max_payload_bytes", &self.max_payload_bytes)
            .field("script_queue_len", &self.script_queue_len)
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
            password_file: None,
            ca_file: None,
            client_cert: None,
            client_key: None,
            publish_imei: false,
            alarm_code_required: false,
            notify: Vec::new(),
            send_group: None,
            max_payload_bytes: 64 * 1024,
            script_queue_len: 256,
        }
    }
}

/// A mode the panel can be armed in; a zone lists the modes it guards.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AlarmMode {
    /// Everybody is out: every zone that lists `away` is watched.
    Away,
    /// People are in: only zones that list `home` (doors, ground-floor windows) are watched.
    Home,
}

/// The alarm panel: its delays, its siren, its code and its zones (inputs).
#[derive(Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AlarmConfig {
    /// Seconds between an arm request and being armed (time to leave).
    pub exit_delay_s: u64,
    /// The entry delay of zones that do not set their own.
    pub entry_delay_s: u64,
    /// The output that sounds the siren when triggered; none when unset.
    pub siren: Option<String>,
    /// The longest the siren sounds, in seconds, however long the panel stays triggered.
    pub siren_s: u64,
    /// The code that arms and disarms over MQTT. A secret: never logged.
    pub code: Option<String>,
    /// Refuse to arm while a zone that guards the mode is open (else that zone is ignored
    /// until it closes).
    pub refuse_open_zones: bool,
    /// The inputs that are zones, `[alarm.zones.<input>]`.
    pub zones: BTreeMap<String, ZoneConfig>,
}

impl fmt::Debug for AlarmConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AlarmConfig")
            .field("exit_delay_s", &self.exit_delay_s)
            .field("entry_delay_s", &self.entry_delay_s)
            .field("siren", &self.siren)
            .field("siren_s", &self.siren_s)
            .field("code", &self.code.as_ref().map(|_| "***"))
            .field("refuse_open_zones", &self.refuse_open_zones)
            .field("zones", &self.zones)
            .finish()
    }
}

impl Default for AlarmConfig {
    fn default() -> Self {
        Self {
            exit_delay_s: 30,
            entry_delay_s: 30,
            siren: None,
            siren_s: 180,
            code: None,
            refuse_open_zones: true,
            zones: BTreeMap::new(),
        }
    }
}

/// One zone: an input that the armed panel watches.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ZoneConfig {
    /// The modes in which the zone opening counts.
    #[serde(default = "all_alarm_modes")]
    pub modes: Vec<AlarmMode>,
    /// Seconds between the zone opening and the siren; `[alarm] entry_delay_s` when unset.
    #[serde(default)]
    pub entry_delay_s: Option<u64>,
    /// Trigger at once, with no entry delay (windows, motion in rooms nobody enters through).
    #[serde(default)]
    pub instant: bool,
}

fn all_alarm_modes() -> Vec<AlarmMode> {
    vec![AlarmMode::Away, AlarmMode::Home]
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

/// One thing wrong with the configuration, reported as `FILE: key: problem`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub key: String,
    pub message: String,
}

/// Why a configuration could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read or parsed, or a value has the wrong type.
    #[error("{file}: {key}: {message}")]
    Parse {
        file: String,
        key: String,
        message: String,
    },
    /// The file parsed but some values are not acceptable; every one is listed.
    #[error("{}", format_problems(.file, .problems))]
    Invalid {
        file: String,
        problems: Vec<Problem>,
    },
}

fn format_problems(file: &str, problems: &[Problem]) -> String {
    problems
        .iter()
        .map(|p| format!("{file}: {}: {}", p.key, p.message))
        .collect::<Vec<_>>()
        .join("\n")
}

impl ConfigError {
    /// Every problem as its own `FILE: key: problem` line.
    pub fn lines(&self) -> Vec<String> {
        self.to_string().lines().map(str::to_string).collect()
    }
}

impl Config {
    /// Reads `path` (TOML) with `GSMGW_<SECTION>__<KEY>` environment overrides, then validates.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let file = path.display().to_string();
        if !path.is_file() {
            return Err(ConfigError::Parse {
                file,
                key: "-".into(),
                message: "no such file (help: pass the config with --config FILE)".into(),
            });
        }
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Parse {
            file: file.clone(),
            key: "-".into(),
            message: format!("cannot read it: {e}"),
        })?;
        // Parsed here first: the config crate's errors quote the offending line, which may
        // hold a secret. Ours say file:line:column and the key only.
        if let Err(e) = toml::from_str::<toml::Table>(&text) {
            return Err(syntax_error(&file, &text, &e));
        }
        let built = ::config::Config::builder()
            .add_source(::config::File::from(path).format(::config::FileFormat::Toml))
            .add_source(
                ENV_LIST_KEYS.iter().fold(
                    ::config::Environment::with_prefix("GSMGW")
                        .prefix_separator("_")
                        .separator("__")
                        .try_parsing(true)
                        .list_separator(",")
                        .source(Some(config_env_vars())),
                    |env, key| env.with_list_parse_key(key),
                ),
            )
            .build()
            .map_err(|e| parse_error(&file, &text, e))?;
        let mut cfg: Config = built
            .try_deserialize()
            .map_err(|e| name_the_variable(parse_error(&file, &text, e)))?;
        cfg.sms.country_code = cfg.country_code().map(str::to_string);
        let problems = cfg.validate();
        if !problems.is_empty() {
            return Err(ConfigError::Invalid { file, problems });
        }
        warn_if_secrets_are_world_readable(path, &cfg);
        Ok(cfg)
    }

    /// Parses a TOML string without environment overrides (for tests and the demo).
    pub fn from_toml(text: &str, name: &str) -> Result<Config, ConfigError> {
        let mut cfg: Config = toml::from_str(text).map_err(|e| syntax_error(name, text, &e))?;
        cfg.sms.country_code = cfg.country_code().map(str::to_string);
        let problems = cfg.validate();
        if problems.is_empty() {
            Ok(cfg)
        } else {
            Err(ConfigError::Invalid {
                file: name.to_string(),
                problems,
            })
        }
    }

    /// Every semantic problem, not just the first.
    pub fn validate(&self) -> Vec<Problem> {
        let mut out = Vec::new();
        let mut bad = |key: &str, message: String| {
            out.push(Problem {
                key: key.to_string(),
                message,
            })
        };
        let id = &self.gateway.device_id;
        if id.is_empty()
            || !id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            bad(
                "gateway.device_id",
                format!("{id:?} must be non-empty letters, digits, '-' or '_' (it is an MQTT topic level)"),
            );
        }
        let cc = &self.gateway.country_code;
        if !cc.chars().all(|c| c.is_ascii_digit()) || cc.len() > 3 {
            bad(
                "gateway.country_code",
                format!("{cc:?} must be 1-3 digits like \"44\", or empty"),
            );
        }
        if self.modem.port.as_os_str().is_empty() {
            bad(
                "modem.port",
                "must name the serial device, e.g. /dev/ttyUSB0".into(),
            );
        }
        if self.modem.baud == 0 {
            bad("modem.baud", "must be a baud rate like 115200".into());
        }
        if let Some(pin) = &self.modem.pin {
            if !(4..=8).contains(&pin.len()) || !pin.chars().all(|c| c.is_ascii_digit()) {
                // The PIN itself is a secret: say what is wrong, never what it is.
                bad("modem.pin", "must be 4 to 8 digits".into());
            }
        }
        for (key, value, range) in self.ranged() {
            if !range.contains(&value) {
                bad(
                    &key,
                    format!(
                        "{value} is out of range: must be between {} and {}",
                        range.start(),
                        range.end()
                    ),
                );
            }
        }
        for (key, list) in [
            ("sms.allow_prefixes", &self.sms.allow_prefixes),
            ("sms.deny_prefixes", &self.sms.deny_prefixes),
        ] {
            for p in list {
                let digits = p.strip_prefix('+').unwrap_or(p);
                if digits.is_empty() || !digits.chars().all(|c| c.is_ascii_digit()) {
                    bad(
                        key,
                        format!("{p:?} must be digits, optionally after +, like \"+449\""),
                    );
                }
            }
        }
        for code in &self.sms.ussd_allow {
            if code.is_empty()
                || !code
                    .chars()
                    .all(|c| c.is_ascii_digit() || "*#+".contains(c))
            {
                bad(
                    "sms.ussd_allow",
                    format!("{code:?} is not a USSD code like \"*100#\""),
                );
            }
        }
        if let Some(cnmi) = &self.modem.cnmi {
            if crate::modem::profiles::Cnmi::parse(cnmi).is_none() {
                bad(
                    "modem.cnmi",
                    format!("{cnmi:?} must be up to 5 numbers like \"2,1,0,1,0\""),
                );
            }
        }
        if let Some(storage) = &self.modem.storage {
            if !(2..=5).contains(&storage.len())
                || !storage.chars().all(|c| c.is_ascii_alphabetic() || c == '_')
            {
                bad(
                    "modem.storage",
                    format!("{storage:?} must be a storage name like \"SM\", \"ME\" or \"MT\""),
                );
            }
        }
        for (i, cmd) in self.modem.init.iter().enumerate() {
            if let Some(why) = init_command_problem(cmd) {
                bad(&format!("modem.init[{i}]"), format!("{cmd:?} {why}"));
            }
        }
        if let Some(lang) = &self.sms.national_language {
            if crate::modem::pdu::Language::from_name(lang).is_none() {
                bad(
                    "sms.national_language",
                    format!("{lang:?} must be \"turkish\", \"spanish\" or \"portuguese\""),
                );
            }
        }
        if let Some(key) = &self.modem.power_key {
            if !self.outputs.contains_key(key) {
                bad(
                    "modem.power_key",
                    format!("no output named {key:?} (help: add [outputs.{key}])"),
                );
            }
        }
        let mut lines: BTreeMap<String, String> = BTreeMap::new();
        let named = self
            .outputs
            .iter()
            .map(|(n, o)| ("outputs", n, &o.line))
            .chain(self.inputs.iter().map(|(n, i)| ("inputs", n, &i.line)));
        for (section, name, line) in named {
            let key = format!("{section}.{name}");
            if name.is_empty()
                || !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
            {
                bad(
                    &key,
                    "names are letters, digits, '_' or '-' (they become MQTT topics)".into(),
                );
            }
            if let LineId::Name(s) = line {
                if s.trim().is_empty() {
                    bad(
                        &format!("{key}.line"),
                        "must be a line offset or a line name".into(),
                    );
                }
            }
            if let Some(other) = lines.insert(line.to_string(), key.clone()) {
                bad(
                    &format!("{key}.line"),
                    format!("line {line} is already used by {other}"),
                );
            }
        }
        if self.outputs.keys().any(|n| self.inputs.contains_key(n)) {
            for n in self.outputs.keys().filter(|n| self.inputs.contains_key(*n)) {
                bad(
                    &format!("inputs.{n}"),
                    "an output has the same name; names must be unique".into(),
                );
            }
        }
        if self.lua.memory_limit_kb < 256 {
            bad("lua.memory_limit_kb", "must be at least 256".into());
        }
        if self.lua.instruction_limit < 10_000 {
            bad("lua.instruction_limit", "must be at least 10000".into());
        }
        if !(160..=100_000).contains(&self.lua.plugin_text_limit) {
            bad(
                "lua.plugin_text_limit",
                "must be between 160 (one SMS) and 100000 characters".into(),
            );
        }
        let lua = &self.lua;
        if !(10..=60_000).contains(&lua.call_deadline_ms) {
            bad(
                "lua.call_deadline_ms",
                "must be between 10 and 60000".into(),
            );
        }
        for (key, value, range) in [
            (
                "lua.max_commands_per_call",
                lua.max_commands_per_call,
                1..=100_000,
            ),
            (
                "lua.max_mqtt_payload_bytes",
                lua.max_mqtt_payload_bytes,
                1..=16 << 20,
            ),
            (
                "lua.max_store_value_bytes",
                lua.max_store_value_bytes,
                1..=16 << 20,
            ),
            ("lua.max_store_keys", lua.max_store_keys, 1..=1_000_000),
            ("lua.max_sms_chars", lua.max_sms_chars, 1..=100_000),
            ("lua.max_timers", lua.max_timers, 1..=1_000_000),
        ] {
            if !range.contains(&value) {
                bad(
                    key,
                    format!("must be between {} and {}", range.start(), range.end()),
                );
            }
        }
        // Ten years: far beyond any timer anyone needs, far below what overflows an instant.
        if !(1..=315_360_000).contains(&lua.max_duration_s) {
            bad(
                "lua.max_duration_s",
                "must be between 1 and 315360000".into(),
            );
        }
        if !(1..=100).contains(&lua.max_dispatch_attempts) {
            bad(
                "lua.max_dispatch_attempts",
                "must be between 1 and 100".into(),
            );
        }
        if !(1..=315_360_000).contains(&lua.disabled_retry_s) {
            bad(
                "lua.disabled_retry_s",
                "must be between 1 and 315360000".into(),
            );
        }
        if self.lua.global_failures == 0 {
            bad("lua.global_failures", "must be at least 1".into());
        }
        for (i, n) in self.security.alert_to.iter().enumerate() {
            let kind = crate::bus::SenderKind::of(n);
            if !kind.is_real_number() {
                bad(
                    "security.alert_to",
                    format!(
                        "entry {} is not a phone number with at least 8 digits",
                        i + 1
                    ),
                );
            }
        }
        let mut seen_rules = std::collections::BTreeSet::new();
        for r in self.lua.rules.iter().filter(|r| r.as_str() != "*") {
            if !seen_rules.insert(r) || r.is_empty() || r.contains(['/', '\\']) || r.contains("..")
            {
                bad(
                    "lua.rules",
                    format!("{r:?} must be a rule name (listed once), not a path"),
                );
            }
        }
        if self
            .lua
            .plugin_path
            .iter()
            .any(|d| d.as_os_str().is_empty())
        {
            bad(
                "lua.plugin_path",
                "must list folders; an empty entry names none".into(),
            );
        }
        let mut seen = std::collections::BTreeSet::new();
        for p in &self.lua.plugins {
            if !seen.insert(p) {
                bad("lua.plugins", format!("{p:?} is listed twice"));
            }
            if p.is_empty() || p.contains('/') || p.contains('\\') || p.contains("..") {
                bad(
                    "lua.plugins",
                    format!("{p:?} must be a plugin name, not a path"),
                );
            }
        }
        if self.mqtt.enabled {
            if let Err(e) = crate::mqtt::parse_url(&self.mqtt.url) {
                bad("mqtt.url", e.to_string());
            }
            if self.mqtt.prefix.is_empty() || self.mqtt.prefix.contains(['#', '+']) {
                bad(
                    "mqtt.prefix",
                    "must be non-empty and contain no MQTT wildcards".into(),
                );
            }
        }
        let alarm = &self.alarm;
        for (zone, z) in &alarm.zones {
            let key = format!("alarm.zones.{zone}");
            if !self.inputs.contains_key(zone) {
                bad(
                    &key,
                    format!("no input is named {zone:?} (help: a zone is an [inputs.{zone}])"),
                );
            }
            if z.modes.is_empty() {
                bad(
                    &format!("{key}.modes"),
                    "must list \"away\", \"home\" or both".into(),
                );
            }
            if z.instant && z.entry_delay_s.is_some() {
                bad(
                    &format!("{key}.entry_delay_s"),
                    "an instant zone has no entry delay; set one or the other".into(),
                );
            }
        }
        if let Some(siren) = &alarm.siren {
            match self.outputs.get(siren) {
                None => bad(
                    "alarm.siren",
                    format!("no output is named {siren:?} (help: add [outputs.{siren}])"),
                ),
                // A siren on at start would sound after every restart, with no limit.
                Some(out) => {
                    if out.restore {
                        bad(
                            &format!("outputs.{siren}.restore"),
                            "the alarm siren must not restore its state at start".into(),
                        );
                    }
                    if out.initial {
                        bad(
                            &format!("outputs.{siren}.initial"),
                            "the alarm siren must start off".into(),
                        );
                    }
                }
            }
        }
        if alarm.code.as_deref().is_some_and(str::is_empty) {
            bad(
                "alarm.code",
                "must not be empty (help: remove the key for no code)".into(),
            );
        }
        out
    }

    /// Every number with a documented range (`config/gsmgw.toml`): the key, its value and the
    /// values allowed. Durations are bounded so that no instant computed from them can
    /// overflow, and so that a typo (an extra zero or three) is caught by `gsmgw check`
    /// rather than found months later.
    fn ranged(&self) -> Vec<(String, u64, std::ops::RangeInclusive<u64>)> {
        const HOUR: u64 = 3600;
        const DAY: u64 = 24 * HOUR;
        let m = &self.modem;
        let wide = |n: usize| u64::try_from(n).unwrap_or(u64::MAX);
        let mut out = vec![
            ("modem.command_timeout_s", m.command_timeout_s, 1..=600),
            ("modem.sweep_interval_s", m.sweep_interval_s, 1..=DAY),
            ("modem.poll_interval_s", m.poll_interval_s, 1..=DAY),
            ("modem.ring_timeout_s", m.ring_timeout_s, 1..=600),
            ("modem.power_key_pulse_ms", m.power_key_pulse_ms, 1..=60_000),
            (
                "sms.send_attempts",
                u64::from(self.sms.send_attempts),
                1..=100,
            ),
            (
                "sms.concat_timeout_s",
                self.sms.concat_timeout_s,
                1..=7 * DAY,
            ),
            (
                "store.retain_days",
                u64::from(self.store.retain_days),
                0..=36_500,
            ),
            (
                "lua.lockout_failures",
                u64::from(self.lua.lockout_failures),
                1..=1000,
            ),
            (
                "lua.lockout_seconds",
                self.lua.lockout_seconds,
                1..=30 * DAY,
            ),
            (
                "mqtt.keep_alive_s",
                self.mqtt.keep_alive_s,
                1..=u64::from(u16::MAX),
            ),
            (
                "mqtt.idle_disconnect_s",
                self.mqtt.idle_disconnect_s,
                1..=7 * DAY,
            ),
            (
                "mqtt.max_payload_bytes",
                wide(self.mqtt.max_payload_bytes),
                1..=wide(crate::mqtt::MAX_PACKET_BYTES),
            ),
            (
                "mqtt.script_queue_len",
                wide(self.mqtt.script_queue_len),
                1..=100_000,
            ),
            ("alarm.exit_delay_s", self.alarm.exit_delay_s, 0..=HOUR),
            ("alarm.entry_delay_s", self.alarm.entry_delay_s, 0..=HOUR),
            ("alarm.siren_s", self.alarm.siren_s, 1..=HOUR),
        ]
        .into_iter()
        .map(|(k, v, r)| (k.to_string(), v, r))
        .collect::<Vec<_>>();
        for (name, input) in &self.inputs {
            out.push((
                format!("inputs.{name}.debounce_ms"),
                input.debounce_ms,
                0..=60_000,
            ));
        }
        for (zone, z) in &self.alarm.zones {
            if let Some(delay) = z.entry_delay_s {
                out.push((format!("alarm.zones.{zone}.entry_delay_s"), delay, 0..=HOUR));
            }
        }
        out
    }

    /// The folders plugins are looked up in, in order: `lua.plugin_path`, or else
    /// `lua.plugins_dir` alone.
    pub fn plugin_dirs(&self) -> Vec<&Path> {
        if self.lua.plugin_path.is_empty() {
            vec![self.lua.plugins_dir.as_path()]
        } else {
            self.lua.plugin_path.iter().map(PathBuf::as_path).collect()
        }
    }

    /// The plugin files, in the configured order: each from the first of [`plugin_dirs`]
    /// that has it, or (when none has) where the first one would have it, so the error
    /// names a path.
    ///
    /// [`plugin_dirs`]: Config::plugin_dirs
    pub fn plugin_paths(&self) -> Vec<(String, PathBuf)> {
        let dirs = self.plugin_dirs();
        self.lua
            .plugins
            .iter()
            .map(|n| {
                let file = format!("{n}.lua");
                let found = dirs.iter().map(|d| d.join(&file)).find(|p| p.is_file());
                let path = found.unwrap_or_else(|| dirs[0].join(&file));
                (n.clone(), path)
            })
            .collect()
    }

    /// The rule files to load, by name: the listed ones, or every `*.lua` in `rules_dir` for
    /// `["*"]` (a missing folder is no rules).
    pub fn rule_paths(&self) -> Vec<(String, PathBuf)> {
        let dir = &self.lua.rules_dir;
        if self.lua.rules.iter().any(|r| r == "*") {
            let mut found: Vec<(String, PathBuf)> = std::fs::read_dir(dir)
                .into_iter()
                .flatten()
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "lua"))
                .filter_map(|p| Some((p.file_stem()?.to_str()?.to_string(), p.clone())))
                .collect();
            found.sort();
            return found;
        }
        self.lua
            .rules
            .iter()
            .map(|n| (n.clone(), dir.join(format!("{n}.lua"))))
            .collect()
    }

    /// The country code, if set.
    pub fn country_code(&self) -> Option<&str> {
        Some(self.gateway.country_code.as_str()).filter(|c| !c.is_empty())
    }
}

/// Keys whose environment value is a comma-separated list (`GSMGW_LUA__PLUGINS=david,alpha`);
/// every list of plain values in the config (a test in `tests/config_reference.rs` keeps
/// this complete).
pub const ENV_LIST_KEYS: &[&str] = &[
    "lua.plugins",
    "lua.plugin_path",
    "lua.rules",
    "security.alert_to",
    "sms.allow_prefixes",
    "sms.deny_prefixes",
    "sms.allow_recipients",
    "sms.ussd_allow",
];

/// A problem with a key set from the environment names the variable, which is what the user
/// has to fix (the file may not mention the key at all).
fn name_the_variable(e: ConfigError) -> ConfigError {
    let ConfigError::Parse { file, key, message } = e else {
        return e;
    };
    let from_env = config_env_vars().into_keys().find(|var| {
        let path = var["GSMGW_".len()..].to_lowercase().replace("__", ".");
        let field = path.rsplit('.').next().unwrap_or("");
        path == key || (!field.is_empty() && message.contains(&format!("`{field}`")))
    });
    match from_env {
        Some(var) => ConfigError::Parse {
            file,
            key: format!("{key} (set by {var})"),
            message,
        },
        None => ConfigError::Parse { file, key, message },
    }
}

/// The `GSMGW_<SECTION>__<KEY>` variables only: other `GSMGW_` variables (`GSMGW_LOG`, the
/// log filter) are not config keys and must not be taken for unknown ones.
fn config_env_vars() -> ::config::Map<String, String> {
    std::env::vars()
        .filter(|(k, _)| {
            k.strip_prefix("GSMGW_")
                .is_some_and(|rest| rest.contains("__"))
        })
        .collect()
}

fn parse_error(file: &str, text: &str, e: ::config::ConfigError) -> ConfigError {
    let (key, message) = match &e {
        ::config::ConfigError::Type {
            key: Some(k),
            unexpected,
            expected,
            ..
        } => (
            k.clone(),
            // The kind of value only: the value itself may be a secret.
            format!("invalid type: {}, expected {expected}", kind_of(unexpected)),
        ),
        ::config::ConfigError::At {
            error,
            key: Some(k),
            ..
        } => (k.clone(), without_values(&error.to_string())),
        ::config::ConfigError::At {
            error, key: None, ..
        } => ("-".into(), without_values(&error.to_string())),
        other => ("-".into(), without_values(&other.to_string())),
    };
    let file = match find_key(text, &key) {
        Some((line, column)) => format!("{file}:{line}:{column}"),
        None => file.to_string(),
    };
    ConfigError::Parse { file, key, message }
}

/// A TOML syntax or type error as `file:line:column`, the key being defined there, and what is
/// wrong, never the text of the line (it may hold a secret).
fn syntax_error(file: &str, text: &str, e: &toml::de::Error) -> ConfigError {
    let (file, key) = match e.span() {
        Some(span) => {
            let start = span.start.min(text.len());
            let before = text.get(..start).unwrap_or_default();
            let line = before.matches('\n').count() + 1;
            let line_start = before.rfind('\n').map_or(0, |i| i + 1);
            let column = before
                .get(line_start..)
                .map_or(1, |l| l.chars().count() + 1);
            (
                format!("{file}:{line}:{column}"),
                key_at(text, line).unwrap_or_else(|| "-".into()),
            )
        }
        None => (file.to_string(), "-".into()),
    };
    ConfigError::Parse {
        file,
        key,
        message: without_values(e.message()),
    }
}

/// The kind of an unexpected value (`string`, `integer`, …) without the value, for type
/// errors.
fn kind_of(unexpected: &impl fmt::Display) -> String {
    let shown = unexpected.to_string();
    shown
        .split([' ', '`', '"'])
        .next()
        .unwrap_or_default()
        .to_string()
}

/// `message` with every double-quoted value replaced by `"…"`: parsers quote the values they
/// did not expect, and a value may be a secret. Keys are quoted with backticks and stay.
fn without_values(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut inside = false;
    for c in message.chars() {
        if c == '"' {
            if inside {
                out.push_str("…\"");
            } else {
                out.push('"');
            }
            inside = !inside;
        } else if !inside {
            out.push(c);
        }
    }
    if inside {
        out.push('…');
    }
    out
}

/// The dotted key defined on 1-based `line`: the last `[table]` header above it and the bare
/// key before `=` on the line (or the header itself).
fn key_at(text: &str, line: usize) -> Option<String> {
    let mut table = String::new();
    for (n, l) in text.lines().enumerate() {
        let l = l.trim();
        if let Some(header) = l.strip_prefix('[') {
            let header = header.trim_start_matches('[');
            let name = header.split(']').next().unwrap_or_default().trim();
            table = name.to_string();
            if n + 1 == line {
                return Some(table);
            }
            continue;
        }
        if n + 1 == line {
            let key = l.split('=').next().unwrap_or_default().trim();
            let bare = !key.is_empty()
                && key
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
            return match (bare, table.is_empty()) {
                (false, true) => None,
                (false, false) => Some(table),
                (true, true) => Some(key.to_string()),
                (true, false) => Some(format!("{table}.{key}")),
            };
        }
    }
    None
}

/// Where dotted `key` (`modem.baud`, `plugins.x.password`) is set in `text`: its 1-based line
/// and column, when it is written as `[table]` + `key = …`.
fn find_key(text: &str, key: &str) -> Option<(usize, usize)> {
    let (table, name) = key.rsplit_once('.').unwrap_or(("", key));
    let mut current = String::new();
    for (n, l) in text.lines().enumerate() {
        let trimmed = l.trim_start();
        if let Some(header) = trimmed.strip_prefix('[') {
            current = header
                .trim_start_matches('[')
                .split(']')
                .next()
                .unwrap_or_default()
                .trim()
                .to_string();
            continue;
        }
        let Some((k, _)) = trimmed.split_once('=') else {
            continue;
        };
        if current == table && k.trim() == name {
            return Some((n + 1, l.len() - trimmed.len() + 1));
        }
    }
    None
}

/// `url` with any `user:password@` part replaced by `***@`, for errors and logs.
pub fn redact_url(url: &str) -> String {
    let (scheme, rest) = match url.split_once("://") {
        Some((scheme, rest)) => (Some(scheme), rest),
        None => (None, url),
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let redacted = match rest[..authority_end].rfind('@') {
        Some(at) => format!("***{}", &rest[at..]),
        None => rest.to_string(),
    };
    match scheme {
        Some(scheme) => format!("{scheme}://{redacted}"),
        None => redacted,
    }
}

/// Key names that hold secrets wherever they appear (plugin and rule sections included).
const SECRET_WORDS: [&str; 7] = [
    "password", "passwd", "pwd", "pin", "code", "secret", "token",
];

/// True when the key name says it holds a secret (`password`, `installer_code`, `pin`, …).
fn is_secret_key(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    key.split(['_', '-', '.'])
        .any(|word| SECRET_WORDS.contains(&word))
        || SECRET_WORDS.iter().any(|w| key.ends_with(w))
}

/// The dotted keys of `value` (a script section) that hold a secret, with a value set.
fn secret_keys(prefix: &str, value: &serde_json::Value, out: &mut Vec<String>) {
    match value {
        serde_json::Value::Object(map) => {
            for (k, v) in map {
                let key = format!("{prefix}.{k}");
                let set = !matches!(v, serde_json::Value::Null)
                    && v.as_str().map_or(true, |s| !s.is_empty());
                if is_secret_key(k) && set && !v.is_object() {
                    out.push(key);
                } else {
                    secret_keys(&key, v, out);
                }
            }
        }
        serde_json::Value::Array(items) => {
            for v in items {
                secret_keys(prefix, v, out);
            }
        }
        _ => {}
    }
}

impl Config {
    /// Outputs that must not be switched from MQTT or Home Assistant without the alarm code
    /// (and are not offered there as switches): the alarm's siren and the modem's power key.
    pub fn protected_outputs(&self) -> BTreeSet<String> {
        self.alarm
            .siren
            .iter()
            .chain(self.modem.power_key.iter())
            .cloned()
            .collect()
    }

    /// Every key of this config that holds a secret: the modem PIN, MQTT password, alarm
    /// code, and any plugin or rule setting named like a password, PIN or code.
    pub fn secret_keys(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.modem.pin.is_some() {
            out.push("modem.pin".to_string());
        }
        if self.mqtt.password.is_some() {
            out.push("mqtt.password".to_string());
        }
        if self.alarm.code.is_some() {
            out.push("alarm.code".to_string());
        }
        for (name, section) in &self.plugins {
            secret_keys(&format!("plugins.{name}"), section, &mut out);
        }
        for (name, section) in &self.rules {
            secret_keys(&format!("rules.{name}"), section, &mut out);
        }
        out
    }
}

#[cfg(unix)]
fn warn_if_secrets_are_world_readable(path: &Path, cfg: &Config) {
    use std::os::unix::fs::PermissionsExt;
    let secrets = cfg.secret_keys();
    let world_readable = std::fs::metadata(path).map(|m| m.permissions().mode() & 0o004 != 0);
    if !secrets.is_empty() && matches!(world_readable, Ok(true)) {
        tracing::warn!(
            file = %path.display(),
            keys = %secrets.join(", "),
            "the config holds secrets and is world-readable (help: chmod 640 it, or pass secrets in the environment, e.g. GSMGW_MODEM__PIN, GSMGW_PLUGINS__<NAME>__PASSWORD)"
        );
    }
}

#[cfg(not(unix))]
fn warn_if_secrets_are_world_readable(_path: &Path, _cfg: &Config) {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_file_gives_the_defaults() {
        let cfg = Config::from_toml("", "t.toml").unwrap();
        assert_eq!(cfg.gateway.device_id, "gsmgw");
        assert_eq!(cfg.modem.baud, 115_200);
        assert_eq!(cfg.sms.max_per_hour, 30);
    }

    #[test]
    fn modem_init_overrides_are_checked_before_they_reach_the_modem() {
        let text = r#"
[modem]
cnmi = "2,x"
storage = "S M"
init = ["AT+CSCS=\"GSM\"", "ATE0\rAT+CFUN=0", "+CSQ", "AT\u00e9"]
"#;
        let err = Config::from_toml(text, "g.toml").unwrap_err();
        let lines = err.lines();
        let has = |s: &str| lines.iter().any(|l| l.starts_with(s));
        assert!(has("g.toml: modem.cnmi:"), "{lines:?}");
        assert!(has("g.toml: modem.storage:"), "{lines:?}");
        assert!(!has("g.toml: modem.init[0]"), "{lines:?}");
        assert!(has("g.toml: modem.init[1]:"), "{lines:?}");
        assert!(has("g.toml: modem.init[2]:"), "{lines:?}");
        assert!(has("g.toml: modem.init[3]:"), "{lines:?}");
        let ok = Config::from_toml(
            "[modem]\ncnmi = \"2,1,0,1,0\"\nstorage = \"ME\"\ninit = [\"AT+CLTS=1\"]\n",
            "g.toml",
        )
        .expect("valid");
        assert_eq!(ok.modem.init, ["AT+CLTS=1"]);
    }

    #[test]
    fn security_alerts_go_to_real_numbers_and_the_global_budget_is_at_least_one() {
        let cfg = Config::from_toml("", "t.toml").unwrap();
        assert_eq!(cfg.lua.global_failures, 20);
        assert!(cfg.security.alert_to.is_empty());
        let ok = "[security]\nalert_to = [\"+447700900123\", \"07700 900124\"]\n";
        assert!(Config::from_toml(ok, "a.toml").is_ok());
        let bad = "[lua]\nglobal_failures = 0\n[security]\nalert_to = [\"+4477009\", \"Bank\"]\n";
        let err = Config::from_toml(bad, "b.toml").unwrap_err();
        let lines = err.lines();
        let count = |s: &str| lines.iter().filter(|l| l.starts_with(s)).count();
        assert_eq!(count("b.toml: security.alert_to: entry"), 2, "{lines:?}");
        assert_eq!(count("b.toml: lua.global_failures:"), 1, "{lines:?}");
    }

    #[test]
    fn every_problem_is_reported_with_its_key() {
        let text = r#"
[gateway]
device_id = "bad id"
[modem]
baud = 0
pin = "12"
[outputs.relay]
line = 17
[inputs.door]
line = 17
debounce_ms = 99999999
[mqtt]
url = "http://x"
[lua]
lockout_seconds = 10000000000000
[alarm]
exit_delay_s = 9223372036854775807
"#;
        let err = Config::from_toml(text, "g.toml").unwrap_err();
        let lines = err.lines();
        let has = |s: &str| lines.iter().any(|l| l.starts_with(s));
        assert!(has("g.toml: gateway.device_id:"), "{lines:?}");
        assert!(
            has("g.toml: alarm.exit_delay_s: 9223372036854775807 is out of range: must be between 0 and 3600"),
            "{lines:?}"
        );
        assert!(
            has("g.toml: lua.lockout_seconds: 10000000000000 is out of range"),
            "{lines:?}"
        );
        assert!(
            has("g.toml: inputs.door.debounce_ms: 99999999 is out of range"),
            "{lines:?}"
        );
        assert!(has("g.toml: modem.baud:"), "{lines:?}");
        assert!(has("g.toml: modem.pin: must be 4 to 8 digits"), "{lines:?}");
        assert!(
            has("g.toml: inputs.door.line: line 17 is already used by outputs.relay"),
            "{lines:?}"
        );
        assert!(has("g.toml: mqtt.url:"), "{lines:?}");
        assert!(
            !err.to_string().contains("\"12\""),
            "the PIN must not be echoed"
        );
    }

    #[test]
    fn a_syntax_error_names_the_line() {
        let err = Config::from_toml("[modem]\nbaud = = 3\n", "s.toml").unwrap_err();
        assert!(
            err.to_string().starts_with("s.toml:2:8: modem.baud: "),
            "{err}"
        );
    }

    #[test]
    fn config_errors_give_file_line_column_and_key_but_never_the_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gsmgw.toml");
        let cases = [
            // An unterminated string: the TOML parser would quote the whole line.
            (
                "[modem]\nport = \"/dev/x\"\npin = \"hunter2\n",
                "modem.pin",
                ":3:",
            ),
            (
                "[plugins.door]\npassword = \"hunter2\" x\n",
                "plugins.door.password",
                ":2:",
            ),
            // A wrong type: the config crate would quote the value.
            ("[modem]\nbaud = \"hunter2\"\n", "modem.baud", ":2:1"),
        ];
        for (text, key, place) in cases {
            std::fs::write(&path, text).unwrap();
            let err = Config::load(&path).unwrap_err().to_string();
            assert!(!err.contains("hunter2"), "{err}");
            assert!(err.contains(key), "{key}: {err}");
            assert!(
                err.contains(&format!("gsmgw.toml{place}")),
                "{place}: {err}"
            );
            let toml_err = Config::from_toml(text, "t.toml").unwrap_err().to_string();
            assert!(!toml_err.contains("hunter2"), "{toml_err}");
        }
    }

    #[test]
    fn url_userinfo_is_redacted_everywhere_and_check_rejects_it() {
        assert_eq!(
            redact_url("mqtt://user:hunter2@broker:1883"),
            "mqtt://***@broker:1883"
        );
        assert_eq!(redact_url("mqtt://broker:1883"), "mqtt://broker:1883");
        assert_eq!(redact_url("u:hunter2@host"), "***@host");
        let text = "[mqtt]\nenabled = true\nurl = \"mqtt://user:hunter2@broker:1883\"\n";
        let err = Config::from_toml(text, "m.toml").unwrap_err().to_string();
        assert!(err.contains("mqtt.url"), "{err}");
        assert!(!err.contains("hunter2"), "{err}");
        let cfg = MqttConfig {
            url: "mqtt://user:hunter2@broker".into(),
            ..MqttConfig::default()
        };
        let err = crate::mqtt::parse_url(&cfg.url).unwrap_err().to_string();
        assert!(!err.contains("hunter2"), "{err}");
        let bad = "[mqtt]\nenabled = true\nurl = \"mqtt://broker:99999\"\n";
        assert!(
            Config::from_toml(bad, "m.toml").is_err(),
            "check validates the port"
        );
    }

    #[test]
    fn secret_keys_cover_plugin_and_rule_sections() {
        let text = r#"
[modem]
pin = "1234"
[plugins.password_comma]
password = "1234"
installer_code = "7982"
relay = "relay"
[plugins.david]
access_code = ""
[rules.night]
owner_pin = "11"
"#;
        let cfg = Config::from_toml(text, "s.toml").unwrap();
        assert_eq!(
            cfg.secret_keys(),
            vec![
                "modem.pin",
                "plugins.password_comma.installer_code",
                "plugins.password_comma.password",
                "rules.night.owner_pin"
            ]
        );
    }

    #[test]
    fn unknown_keys_are_rejected() {
        let err = Config::from_toml("[modem]\nbaudrate = 9600\n", "u.toml").unwrap_err();
        assert!(err.to_string().contains("baudrate"), "{err}");
    }

    #[test]
    fn the_environment_overrides_the_file_and_secrets_stay_hidden() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gsmgw.toml");
        std::fs::write(&path, "[modem]\nport = \"/dev/ttyS0\"\n").unwrap();
        // Only this test sets GSMGW_ variables, so the process-wide change cannot race.
        std::env::set_var("GSMGW_MODEM__PIN", "4321");
        // The log filter shares the prefix but is no config key.
        std::env::set_var("GSMGW_LOG", "gsmgw=debug");
        let cfg = Config::load(&path);
        std::env::remove_var("GSMGW_MODEM__PIN");
        std::env::remove_var("GSMGW_LOG");
        let cfg = cfg.unwrap();
        assert_eq!(cfg.modem.pin.as_deref(), Some("4321"));
        assert_eq!(cfg.modem.port, PathBuf::from("/dev/ttyS0"));
        assert!(!format!("{:?}", cfg.modem).contains("4321"));
    }

    #[test]
    fn a_plugin_in_the_first_folder_of_the_path_overrides_the_stock_one() {
        let dir = tempfile::tempdir().unwrap();
        let (local, stock) = (dir.path().join("etc"), dir.path().join("share"));
        std::fs::create_dir_all(&local).unwrap();
        std::fs::create_dir_all(&stock).unwrap();
        for f in ["a.lua", "b.lua"] {
            std::fs::write(stock.join(f), "").unwrap();
        }
        std::fs::write(local.join("b.lua"), "").unwrap();
        let text = format!(
            "[lua]\nplugins = [\"a\", \"b\", \"c\"]\nplugin_path = [{:?}, {:?}]\n",
            local.display().to_string(),
            stock.display().to_string()
        );
        let cfg = Config::from_toml(&text, "p.toml").unwrap();
        let paths: BTreeMap<String, PathBuf> = cfg.plugin_paths().into_iter().collect();
        assert_eq!(
            paths["a"],
            stock.join("a.lua"),
            "only the stock copy exists"
        );
        assert_eq!(paths["b"], local.join("b.lua"), "the local copy wins");
        assert_eq!(
            paths["c"],
            local.join("c.lua"),
            "missing: named in the first folder"
        );
    }

    #[test]
    fn without_a_plugin_path_plugins_come_from_plugins_dir() {
        let cfg = Config::from_toml("[lua]\nplugins_dir = \"/p\"\nplugins = [\"x\"]\n", "d.toml")
            .unwrap();
        assert_eq!(
            cfg.plugin_paths(),
            vec![("x".to_string(), PathBuf::from("/p/x.lua"))]
        );
    }

    #[test]
    fn a_missing_file_says_what_to_do() {
        let err = Config::load(Path::new("/nonexistent/gsmgw.toml")).unwrap_err();
        assert!(err.to_string().contains("help:"), "{err}");
    }
}
