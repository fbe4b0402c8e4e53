//! Rules: what a rule file returns (`on` triggers, `mode`, `data`, `execute`), checked at load,
//! and the events they are matched against. `docs/lua-api.md` ("Rules") is the user's view.

use std::time::Duration;

use chrono::NaiveTime;
use mlua::{Function, Lua, MultiValue, Table, Value};

use super::clock::parse_time_of_day;
use crate::bus::{Call, IncomingSms, ModemStatus};
use crate::phone;

/// Triggers a rule may queue (mode `queued`) before further ones are dropped.
pub(crate) const MAX_QUEUED: usize = 16;

/// What a rule does with a trigger while an earlier run still has timers or callbacks pending.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// Run anyway (the default).
    Parallel,
    /// Ignore the trigger.
    Single,
    /// Run it when nothing is pending any more.
    Queued,
    /// Cancel the pending timers and callbacks, then run.
    Restart,
}

/// Which names (inputs, outputs, alarm states) a trigger accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Names {
    All,
    Only(Vec<String>),
}

impl Names {
    fn accepts(&self, name: &str) -> bool {
        match self {
            Names::All => true,
            Names::Only(names) => names.iter().any(|n| n == name),
        }
    }
}

/// `on.sms`: every field that is given must match.
#[derive(Debug, Clone, Default)]
pub(crate) struct SmsFilter {
    /// Any of these senders (compared as phone numbers); `None` = anyone, empty = nobody.
    pub from: Option<Vec<String>>,
    /// The whole text, trimmed, case-insensitive.
    pub text: Option<String>,
    /// A Lua pattern searched in the text.
    pub pattern: Option<String>,
    /// Only messages no plugin handled.
    pub unhandled: bool,
}

/// `on.call`.
#[derive(Debug, Clone, Default)]
pub(crate) struct CallFilter {
    pub from: Option<Vec<String>>,
    pub unhandled: bool,
}

/// A rule's `on.timer` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum TimerSpec {
    Every(Duration),
    At(NaiveTime),
}

/// Everything a rule reacts to.
#[derive(Debug, Clone, Default)]
pub(crate) struct Triggers {
    pub sms: Option<SmsFilter>,
    pub call: Option<CallFilter>,
    pub input: Option<Names>,
    pub output: Option<Names>,
    pub alarm: Option<Names>,
    pub modem: bool,
    pub lockout: bool,
    /// MQTT topics relative to the gateway prefix, matched exactly.
    pub mqtt: Vec<String>,
    /// The `on.timer` entries as written (shown to the rule as `ev.timer`) and parsed.
    pub timers: Vec<(String, TimerSpec)>,
}

/// A loaded rule's checked table.
pub(crate) struct Rule {
    pub on: Triggers,
    pub mode: Mode,
    pub execute: Function,
    /// `string.find` of the rule's own state, for `pattern` filters.
    pub find: Function,
}

/// One trigger of a rule, owned so that mode `queued` can keep it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum RuleEvent {
    Sms {
        sms: IncomingSms,
        handled_by: Option<String>,
        /// Found undelivered at start and too old for plugins (`sms.max_command_age_s`).
        stale: bool,
        /// Set when the SMS was quarantined: why its dispatch kept failing.
        failed: Option<String>,
    },
    Call {
        call: Call,
        handled_by: Option<String>,
    },
    Input {
        name: String,
        on: bool,
    },
    Output {
        name: String,
        on: bool,
    },
    Alarm {
        state: &'static str,
        by: Option<String>,
    },
    Modem(ModemStatus),
    Mqtt {
        topic: String,
        payload: Vec<u8>,
    },
    Lockout {
        number: String,
        until: String,
    },
    Timer(String),
}

impl RuleEvent {
    /// The `ev` table `execute` gets.
    pub fn to_lua(&self, lua: &Lua) -> mlua::Result<Table> {
        let t = lua.create_table()?;
        let kind = match self {
            RuleEvent::Sms {
                sms,
                handled_by,
                stale,
                failed,
            } => {
                super::sms_fields(&t, sms)?;
                t.set("handled_by", handled_by.as_deref())?;
                t.set("stale", *stale)?;
                t.set("failed", failed.as_deref())?;
                "sms"
            }
            RuleEvent::Call { call, handled_by } => {
                t.set("from", call.from.as_deref())?;
                t.set("id", call.id)?;
                t.set("handled_by", handled_by.as_deref())?;
                "call"
            }
            RuleEvent::Input { name, on } | RuleEvent::Output { name, on } => {
                t.set("name", name.as_str())?;
                t.set("on", *on)?;
                if matches!(self, RuleEvent::Input { .. }) {
                    "input"
                } else {
                    "output"
                }
            }
            RuleEvent::Alarm { state, by } => {
                t.set("state", *state)?;
                t.set("by", by.as_deref())?;
                "alarm"
            }
            RuleEvent::Modem(m) => {
                t.set("ready", m.ready)?;
                t.set("registered", m.registered)?;
                t.set("roaming", m.roaming)?;
                t.set("operator", m.operator.as_deref())?;
                t.set("signal", m.signal_dbm)?;
                t.set("imei", m.imei.as_deref())?;
                "modem"
            }
            RuleEvent::Mqtt { topic, payload } => {
                t.set("topic", topic.as_str())?;
                t.set("payload", lua.create_string(payload)?)?;
                "mqtt"
            }
            RuleEvent::Lockout { number, until } => {
                t.set("number", number.as_str())?;
                t.set("until", until.as_str())?;
                "lockout"
            }
            RuleEvent::Timer(spec) => {
                t.set("timer", spec.as_str())?;
                "timer"
            }
        };
        t.set("type", kind)?;
        Ok(t)
    }
}

impl Rule {
    /// Checks `table` (what the rule file returned) and builds the rule; errors name the field.
    pub fn parse(lua: &Lua, table: &Table) -> Result<Rule, String> {
        for pair in table.pairs::<Value, Value>() {
            let (key, _) = pair.map_err(|e| e.to_string())?;
            let key = key_name(&key);
            if !["on", "mode", "data", "execute"].contains(&key.as_str()) {
                return Err(format!(
                    "unknown field '{key}' (a rule has on, mode, data, execute)"
                ));
            }
        }
        let execute = match table.raw_get::<Value>("execute") {
            Ok(Value::Function(f)) => f,
            Ok(other) => {
                return Err(format!(
                    "'execute' must be a function(gw, ev), not {}",
                    other.type_name()
                ))
            }
            Err(e) => return Err(e.to_string()),
        };
        let mode = match table.raw_get::<Value>("mode") {
            Ok(Value::Nil) => Mode::Parallel,
            Ok(Value::String(s)) => match s.to_string_lossy().as_str() {
                "parallel" => Mode::Parallel,
                "single" => Mode::Single,
                "queued" => Mode::Queued,
                "restart" => Mode::Restart,
                other => {
                    return Err(format!(
                    "mode '{other}' is not one of \"parallel\", \"single\", \"queued\", \"restart\""
                ))
                }
            },
            Ok(other) => {
                return Err(format!(
                    "'mode' must be a string, not {}",
                    other.type_name()
                ))
            }
            Err(e) => return Err(e.to_string()),
        };
        match table.raw_get::<Value>("data") {
            Ok(Value::Nil | Value::Table(_)) => {}
            Ok(other) => {
                return Err(format!(
                    "'data' must be a table of initial values, not {}",
                    other.type_name()
                ))
            }
            Err(e) => return Err(e.to_string()),
        }
        let on = match table.raw_get::<Value>("on") {
            Ok(Value::Table(on)) => parse_triggers(&on)?,
            Ok(other) => {
                return Err(format!(
                    "'on' must be a table of triggers ({{ sms = {{…}}, input = {{\"door\"}}, … }}), not {}",
                    other.type_name()
                ))
            }
            Err(e) => return Err(e.to_string()),
        };
        let find = lua
            .globals()
            .get::<Table>("string")
            .and_then(|s| s.get::<Function>("find"))
            .map_err(|e| format!("string.find is missing: {e}"))?;
        if let Some(pattern) = on.sms.as_ref().and_then(|f| f.pattern.as_deref()) {
            // A malformed pattern is an error at load, not at the first SMS.
            find.call::<MultiValue>(("", pattern))
                .map_err(|e| format!("on.sms.pattern {pattern:?}: {e}"))?;
        }
        Ok(Rule {
            on,
            mode,
            execute,
            find,
        })
    }

    /// True when `ev` triggers this rule. `country_code` is for comparing numbers.
    pub fn matches(&self, ev: &RuleEvent, country_code: Option<&str>) -> mlua::Result<bool> {
        let on = &self.on;
        Ok(match ev {
            RuleEvent::Sms {
                sms, handled_by, ..
            } => {
                let Some(f) = &on.sms else { return Ok(false) };
                if f.unhandled && handled_by.is_some() {
                    return Ok(false);
                }
                if !from_matches(f.from.as_deref(), Some(&sms.from), country_code) {
                    return Ok(false);
                }
                if let Some(text) = &f.text {
                    if !sms.text.trim().eq_ignore_ascii_case(text.trim()) {
                        return Ok(false);
                    }
                }
                match &f.pattern {
                    Some(p) => {
                        let found: Value = self.find.call((sms.text.as_str(), p.as_str()))?;
                        !matches!(found, Value::Nil)
                    }
                    None => true,
                }
            }
            RuleEvent::Call { call, handled_by } => {
                let Some(f) = &on.call else { return Ok(false) };
                !(f.unhandled && handled_by.is_some())
                    && from_matches(f.from.as_deref(), call.from.as_deref(), country_code)
            }
            RuleEvent::Input { name, .. } => on.input.as_ref().is_some_and(|n| n.accepts(name)),
            RuleEvent::Output { name, .. } => on.output.as_ref().is_some_and(|n| n.accepts(name)),
            RuleEvent::Alarm { state, .. } => on.alarm.as_ref().is_some_and(|n| n.accepts(state)),
            RuleEvent::Modem(_) => on.modem,
            RuleEvent::Lockout { .. } => on.lockout,
            RuleEvent::Mqtt { topic, .. } => on.mqtt.iter().any(|t| t == topic),
            // Timers are delivered to their own rule, never matched.
            RuleEvent::Timer(_) => false,
        })
    }
}

/// No list accepts anyone; otherwise the number must be one of the list (a withheld number
/// never is, and an empty list — a config with no numbers yet — lets nobody through).
fn from_matches(list: Option<&[String]>, from: Option<&str>, country_code: Option<&str>) -> bool {
    let Some(list) = list else {
        return true;
    };
    let Some(from) = from.filter(|f| !f.trim().is_empty()) else {
        return false;
    };
    list.iter()
        .any(|n| phone::same(n, from, country_code, None))
}

fn key_name(key: &Value) -> String {
    match key {
        Value::String(s) => s.to_string_lossy(),
        other => format!("<{}>", other.type_name()),
    }
}

/// `"x"` or `{"x", "y"}`.
fn strings(v: &Value, what: &str) -> Result<Vec<String>, String> {
    match v {
        Value::String(s) => Ok(vec![s.to_string_lossy()]),
        Value::Table(t) => t
            .clone()
            .sequence_values::<Value>()
            .map(|v| match v {
                Ok(Value::String(s)) => Ok(s.to_string_lossy()),
                Ok(other) => Err(format!(
                    "{what}: entries must be strings, not {}",
                    other.type_name()
                )),
                Err(e) => Err(format!("{what}: {e}")),
            })
            .collect(),
        other => Err(format!(
            "{what} must be a string or a list of strings, not {}",
            other.type_name()
        )),
    }
}

/// `true` (all), `false`/absent (none), `"name"` or `{"a", "b"}`.
fn names(v: &Value, what: &str) -> Result<Option<Names>, String> {
    match v {
        Value::Nil | Value::Boolean(false) => Ok(None),
        Value::Boolean(true) => Ok(Some(Names::All)),
        other => Ok(Some(Names::Only(strings(other, what)?))),
    }
}

fn flag(v: &Value, what: &str) -> Result<bool, String> {
    match v {
        Value::Nil => Ok(false),
        Value::Boolean(b) => Ok(*b),
        other => Err(format!(
            "{what} must be true or false, not {}",
            other.type_name()
        )),
    }
}

/// Reads the fields of a filter table, refusing unknown ones (a typo must not widen a filter).
fn fields(t: &Table, what: &str, known: &[&str]) -> Result<Vec<(String, Value)>, String> {
    let mut out = Vec::new();
    for pair in t.clone().pairs::<Value, Value>() {
        let (k, v) = pair.map_err(|e| format!("{what}: {e}"))?;
        let k = key_name(&k);
        if !known.contains(&k.as_str()) {
            return Err(format!(
                "{what}: unknown field '{k}' (known: {})",
                known.join(", ")
            ));
        }
        out.push((k, v));
    }
    Ok(out)
}

fn parse_triggers(on: &Table) -> Result<Triggers, String> {
    let mut t = Triggers::default();
    let known = [
        "sms", "call", "input", "output", "alarm", "modem", "lockout", "mqtt", "timer",
    ];
    for (key, v) in fields(on, "on", &known)? {
        let what = format!("on.{key}");
        match key.as_str() {
            "sms" => t.sms = parse_sms(&v, &what)?,
            "call" => t.call = parse_call(&v, &what)?,
            "input" => t.input = names(&v, &what)?,
            "output" => t.output = names(&v, &what)?,
            "alarm" => t.alarm = names(&v, &what)?,
            "modem" => t.modem = flag(&v, &what)?,
            "lockout" => t.lockout = flag(&v, &what)?,
            "mqtt" => {
                t.mqtt = strings(&v, &what)?;
                for topic in &t.mqtt {
                    crate::mqtt::check_suffix(topic).map_err(|e| format!("{what}: {e}"))?;
                }
            }
            "timer" => {
                for spec in strings(&v, &what)? {
                    let parsed = parse_timer(&spec).ok_or_else(|| {
                        format!("{what}: {spec:?} is not \"every 5m\" or \"at 22:00\"")
                    })?;
                    t.timers.push((spec, parsed));
                }
            }
            _ => {}
        }
    }
    Ok(t)
}

fn parse_sms(v: &Value, what: &str) -> Result<Option<SmsFilter>, String> {
    let t = match v {
        Value::Nil | Value::Boolean(false) => return Ok(None),
        Value::Boolean(true) => return Ok(Some(SmsFilter::default())),
        Value::Table(t) => t,
        other => {
            return Err(format!(
                "{what} must be true or a filter table, not {}",
                other.type_name()
            ))
        }
    };
    let mut f = SmsFilter::default();
    for (k, v) in fields(t, what, &["from", "text", "pattern", "unhandled"])? {
        let what = format!("{what}.{k}");
        match k.as_str() {
            "from" => f.from = Some(strings(&v, &what)?),
            "text" => f.text = Some(single(&v, &what)?),
            "pattern" => f.pattern = Some(single(&v, &what)?),
            "unhandled" => f.unhandled = flag(&v, &what)?,
            _ => {}
        }
    }
    Ok(Some(f))
}

fn parse_call(v: &Value, what: &str) -> Result<Option<CallFilter>, String> {
    let t = match v {
        Value::Nil | Value::Boolean(false) => return Ok(None),
        Value::Boolean(true) => return Ok(Some(CallFilter::default())),
        Value::Table(t) => t,
        other => {
            return Err(format!(
                "{what} must be true or a filter table, not {}",
                other.type_name()
            ))
        }
    };
    let mut f = CallFilter::default();
    for (k, v) in fields(t, what, &["from", "unhandled"])? {
        let what = format!("{what}.{k}");
        match k.as_str() {
            "from" => f.from = Some(strings(&v, &what)?),
            "unhandled" => f.unhandled = flag(&v, &what)?,
            _ => {}
        }
    }
    Ok(Some(f))
}

fn single(v: &Value, what: &str) -> Result<String, String> {
    match v {
        Value::String(s) => Ok(s.to_string_lossy()),
        other => Err(format!(
            "{what} must be a string, not {}",
            other.type_name()
        )),
    }
}

/// `"every 5m"` (s, m, h; a bare number is seconds) or `"at 22:00"`.
pub(crate) fn parse_timer(spec: &str) -> Option<TimerSpec> {
    let spec = spec.trim();
    if let Some(time) = spec.strip_prefix("at ") {
        return parse_time_of_day(time).map(TimerSpec::At);
    }
    let every = spec.strip_prefix("every ")?.trim();
    let split = every
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(every.len());
    let (number, unit) = every.split_at(split);
    let n: u64 = number.parse().ok()?;
    let unit_secs = match unit.trim() {
        "" | "s" | "sec" | "seconds" => 1,
        "m" | "min" | "minutes" => 60,
        "h" | "hours" => 3600,
        _ => return None,
    };
    let secs = n.checked_mul(unit_secs).filter(|s| *s > 0)?;
    Some(TimerSpec::Every(Duration::from_secs(secs)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timer_specs_parse_every_and_at() {
        assert_eq!(
            parse_timer("every 5m"),
            Some(TimerSpec::Every(Duration::from_secs(300)))
        );
        assert_eq!(
            parse_timer("every 30"),
            Some(TimerSpec::Every(Duration::from_secs(30)))
        );
        assert_eq!(
            parse_timer("every 2 h"),
            Some(TimerSpec::Every(Duration::from_secs(7200)))
        );
        assert_eq!(
            parse_timer("at 22:00"),
            NaiveTime::from_hms_opt(22, 0, 0).map(TimerSpec::At)
        );
        for bad in [
            "every 0s",
            "every",
            "every 5 days",
            "at 25:00",
            "daily",
            "every -1m",
        ] {
            assert_eq!(parse_timer(bad), None, "{bad}");
        }
    }

    #[test]
    fn from_filter_never_matches_a_withheld_number() {
        let list = vec!["+447700900123".to_string()];
        assert!(from_matches(Some(&list), Some("07700900123"), Some("44")));
        assert!(!from_matches(Some(&list), None, Some("44")));
        assert!(!from_matches(Some(&list), Some(""), Some("44")));
        assert!(!from_matches(Some(&[]), Some("07700900123"), Some("44")));
        assert!(from_matches(None, None, Some("44")));
    }
}
