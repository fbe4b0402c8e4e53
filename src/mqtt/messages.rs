//! Payloads: bus events turned into MQTT messages, and MQTT command payloads parsed into bus
//! commands. No I/O here, so every format is unit-tested.

use std::time::Duration;

use serde_json::{json, Value};

use super::topics::Topics;
use crate::bus::{AlarmAction, Event, HandledSms, OutputAction, Secret, Security, SendStatus};

/// Longer than any real output command; refusing early keeps a 1 MB payload out of the parser.
const MAX_OUTPUT_COMMAND_BYTES: usize = 1024;
/// 1600 characters of 4-byte UTF-8, JSON-escaped, fit with room to spare.
const MAX_SMS_REQUEST_BYTES: usize = 64 * 1024;
/// The longest SMS text accepted on `sms/send` (about ten concatenated parts).
pub const MAX_SMS_TEXT_CHARS: usize = 1600;
/// A pulse longer than a week is a typo, not a pulse.
const MAX_OUTPUT_SECONDS: f64 = 7.0 * 24.0 * 3600.0;

/// A message to publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outgoing {
    /// The full topic, prefix included.
    pub topic: String,
    pub payload: Vec<u8>,
    /// Retained messages are state (the latest wins); the others are events (each counts).
    pub retain: bool,
}

impl Outgoing {
    fn state(topic: String, payload: impl Into<Vec<u8>>) -> Self {
        Self {
            topic,
            payload: payload.into(),
            retain: true,
        }
    }

    fn event(topic: String, payload: &Value) -> Self {
        Self {
            topic,
            payload: payload.to_string().into_bytes(),
            retain: false,
        }
    }
}

fn on_off(on: bool) -> &'static str {
    if on {
        "ON"
    } else {
        "OFF"
    }
}

/// The message a bus event is published as, if it is published at all. The modem's IMEI is
/// included only with `publish_imei`.
pub fn for_event(topics: &Topics, event: &Event, publish_imei: bool) -> Option<Outgoing> {
    let out = match event {
        Event::OutputChanged { name, on } => Outgoing::state(topics.output(name), on_off(*on)),
        Event::InputChanged { name, on } => Outgoing::state(topics.input(name), on_off(*on)),
        // Published once handled, with the secrets scripts marked already masked.
        Event::SmsReceived(_) => return None,
        Event::SmsHandled(HandledSms { sms, stale, .. }) => Outgoing::event(
            topics.sms_received(),
            &json!({
                "event_type": "received",
                "from": sms.from,
                "text": sms.text,
                "time": sms.time.map(|t| t.to_rfc3339()),
                "id": sms.id,
                "stale": stale,
            }),
        ),
        Event::SmsFailed { sms, error } => Outgoing::event(
            topics.sms_received(),
            &json!({
                "event_type": "failed",
                "from": sms.from,
                "text": sms.text,
                "time": sms.time.map(|t| t.to_rfc3339()),
                "id": sms.id,
                "error": error,
            }),
        ),
        Event::CallRinging(call) => Outgoing::event(
            topics.call(),
            &json!({ "event_type": "ringing", "from": call.from }),
        ),
        Event::CallEnded(call) => Outgoing::event(
            topics.call(),
            &json!({ "event_type": "ended", "from": call.from }),
        ),
        Event::SmsStatus(status) => {
            let (state, error) = match &status.status {
                SendStatus::Queued => ("queued", None),
                SendStatus::Sent => ("sent", None),
                SendStatus::Failed(e) => ("failed", Some(e.as_str())),
            };
            Outgoing::event(
                topics.sms_sent(),
                &json!({
                    "id": status.request_id,
                    "status": state,
                    "error": error,
                    "to": status.to,
                }),
            )
        }
        Event::Modem(m) => {
            let mut state = json!({
                "registered": m.registered,
                "roaming": m.roaming,
                "operator": m.operator,
                "signal_dbm": m.signal_dbm,
            });
            // The IMEI identifies the device to anyone who can read the broker: only on request.
            if publish_imei {
                state["imei"] = json!(m.imei);
            }
            Outgoing::state(topics.modem(), state.to_string())
        }
        Event::Script(s) => Outgoing::state(
            topics.script(s.kind, &s.name),
            json!({
                "state": if s.error.is_some() { "error" } else { "loaded" },
                "error": s.error,
                "generation": s.generation,
            })
            .to_string(),
        ),
        Event::Alarm { state, .. } => Outgoing::state(topics.alarm(), state.as_str()),
        // Incoming direction: the bridge produces these, it does not publish them.
        Event::Mqtt { .. } => return None,
        // Answers to one script's request, not news for the broker.
        Event::UssdResult { .. } | Event::MqttSession { .. } | Event::AlarmResult { .. } => {
            return None
        }
        Event::Lockout { number, until } => Outgoing::event(
            topics.security(),
            &json!({ "event_type": "lockout", "number": number, "until": until.to_rfc3339() }),
        ),
        Event::Security(s) => Outgoing::event(topics.security(), &security_payload(s)),
        // A request for the script task; its outcome is published as `unlocked`.
        Event::UnlockRequest { .. } => return None,
    };
    Some(out)
}

/// The `<p>/security` message of a security event.
fn security_payload(s: &Security) -> Value {
    let mut v = match s {
        Security::Granted {
            script,
            number,
            role,
        } => json!({ "script": script, "number": number, "role": role }),
        Security::Revoked {
            script,
            number,
            role,
        } => json!({ "script": script, "number": number, "role": role }),
        Security::EnrolledTargeted {
            number,
            failures,
            until,
        } => json!({ "number": number, "failures": failures, "until": until.to_rfc3339() }),
        Security::BudgetSpent { failures, until } => {
            json!({ "failures": failures, "until": until.to_rfc3339() })
        }
        Security::Unlocked { number, by } => json!({ "number": number, "by": by }),
    };
    v["event_type"] = json!(s.event_type());
    v
}

/// The number in an `<p>/security/unlock` payload: the number as plain text, or JSON
/// `{"number": "…"}`.
pub fn parse_unlock_command(payload: &[u8]) -> Result<String, String> {
    if payload.len() > 256 {
        return Err("payload too long for a number".into());
    }
    let text = std::str::from_utf8(payload)
        .map_err(|_| "payload is not UTF-8".to_string())?
        .trim();
    let number = match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(o)) => o
            .get("number")
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| "JSON payload without a \"number\" string".to_string())?,
        _ => text.to_string(),
    };
    let number = number.trim().to_string();
    if number.is_empty() {
        return Err("no number given".into());
    }
    Ok(number)
}

/// The failure reply on `sms/sent` to a request that could not be accepted.
pub fn sms_request_failed(topics: &Topics, rejection: &SmsRejection) -> Outgoing {
    Outgoing::event(
        topics.sms_sent(),
        &json!({
            "id": rejection.id,
            "status": "failed",
            "error": rejection.error,
            "to": rejection.to,
        }),
    )
}

/// Parses an output command: `ON`, `OFF`, `TOGGLE` (any case, surrounding white space ignored)
/// or JSON `{"state":"ON","seconds":5}` (`seconds` optional: switch back after it).
pub fn parse_output_command(payload: &[u8]) -> Result<OutputAction, String> {
    if payload.len() > MAX_OUTPUT_COMMAND_BYTES {
        return Err(format!(
            "the payload is {} bytes, too long for a command",
            payload.len()
        ));
    }
    let text = std::str::from_utf8(payload).map_err(|_| "the payload is not UTF-8".to_string())?;
    let text = text.trim();
    if text.starts_with('{') {
        return parse_output_json(text);
    }
    parse_state(text, None)
}

/// The alarm code in an output command `{"state":"OFF","code":"1234"}` (a string or a
/// number), needed for the siren and the modem's power key.
pub fn output_code(payload: &[u8]) -> Option<Secret> {
    if payload.len() > MAX_OUTPUT_COMMAND_BYTES {
        return None;
    }
    let value: Value = serde_json::from_slice(payload).ok()?;
    match value.get("code")? {
        Value::String(s) => Some(Secret(s.clone())),
        Value::Number(n) => Some(Secret(n.to_string())),
        _ => None,
    }
}

fn parse_state(state: &str, duration: Option<Duration>) -> Result<OutputAction, String> {
    match state.to_ascii_uppercase().as_str() {
        "ON" => Ok(OutputAction::Set { on: true, duration }),
        "OFF" => Ok(OutputAction::Set {
            on: false,
            duration,
        }),
        "TOGGLE" if duration.is_none() => Ok(OutputAction::Toggle),
        "TOGGLE" => Err("TOGGLE takes no seconds".into()),
        _ => Err(format!("{state:?} is not ON, OFF or TOGGLE")),
    }
}

fn parse_output_json(text: &str) -> Result<OutputAction, String> {
    let value: Value = serde_json::from_str(text).map_err(|e| format!("bad JSON: {e}"))?;
    let state = value
        .get("state")
        .and_then(Value::as_str)
        .ok_or_else(|| "the JSON has no \"state\" string".to_string())?;
    let duration = match value.get("seconds") {
        None | Some(Value::Null) => None,
        Some(v) => {
            let seconds = v
                .as_f64()
                .filter(|s| s.is_finite() && *s > 0.0 && *s <= MAX_OUTPUT_SECONDS)
                .ok_or_else(|| {
                    format!("\"seconds\" must be a number above 0 and at most {MAX_OUTPUT_SECONDS}")
                })?;
            Some(Duration::from_secs_f64(seconds))
        }
    };
    parse_state(state, duration)
}

/// Longer than any alarm command with a code.
const MAX_ALARM_COMMAND_BYTES: usize = 1024;

/// An alarm command from `alarm/set`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlarmRequest {
    pub action: AlarmAction,
    /// The code given, checked by the alarm panel.
    pub code: Option<Secret>,
}

fn parse_alarm_action(action: &str) -> Result<AlarmAction, String> {
    match action.trim().to_ascii_uppercase().as_str() {
        "ARM_AWAY" => Ok(AlarmAction::ArmAway),
        "ARM_HOME" => Ok(AlarmAction::ArmHome),
        "DISARM" => Ok(AlarmAction::Disarm),
        "TRIGGER" => Ok(AlarmAction::Trigger),
        // The action is not a secret, but a typo might be a code: not echoed.
        _ => Err("the action is not ARM_AWAY, ARM_HOME, DISARM or TRIGGER".into()),
    }
}

/// Parses an alarm command: `ARM_AWAY`, `ARM_HOME`, `DISARM`, `TRIGGER` (any case) or JSON
/// `{"action":"DISARM","code":"1234"}` (Home Assistant's `command_template` with a remote
/// code; `code` may be a string, a number or null).
pub fn parse_alarm_command(payload: &[u8]) -> Result<AlarmRequest, String> {
    if payload.len() > MAX_ALARM_COMMAND_BYTES {
        return Err(format!(
            "the payload is {} bytes, too long for an alarm command",
            payload.len()
        ));
    }
    let text = std::str::from_utf8(payload).map_err(|_| "the payload is not UTF-8".to_string())?;
    let text = text.trim();
    if !text.starts_with('{') {
        return Ok(AlarmRequest {
            action: parse_alarm_action(text)?,
            code: None,
        });
    }
    // serde_json's error may quote the payload, and so the code: not passed on.
    let value: Value =
        serde_json::from_str(text).map_err(|_| "the JSON cannot be parsed".to_string())?;
    let action = value
        .get("action")
        .and_then(Value::as_str)
        .ok_or_else(|| "the JSON has no \"action\" string".to_string())?;
    let code = match value.get("code") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if s.is_empty() => None,
        Some(Value::String(s)) => Some(Secret(s.clone())),
        Some(Value::Number(n)) => Some(Secret(n.to_string())),
        Some(_) => return Err("\"code\" must be a string or a number".into()),
    };
    Ok(AlarmRequest {
        action: parse_alarm_action(action)?,
        code,
    })
}

/// Parses `number: text` (Home Assistant's text entity on `sms/send_text`): the number, a
/// colon, the message. Validated like `sms/send`.
pub fn parse_text_request(payload: &[u8]) -> Result<SmsRequest, SmsRejection> {
    let reject = |to: Option<String>, error: String| SmsRejection {
        id: None,
        to,
        error,
    };
    if payload.len() > MAX_SMS_REQUEST_BYTES {
        let error = format!(
            "the payload is {} bytes, too long for an SMS request",
            payload.len()
        );
        return Err(reject(None, error));
    }
    let text = std::str::from_utf8(payload)
        .map_err(|_| reject(None, "the payload is not UTF-8".into()))?;
    let (to, message) = text
        .split_once(':')
        .ok_or_else(|| reject(None, "write it as NUMBER: TEXT".into()))?;
    let request = json!({ "to": to, "text": message.trim_start() });
    parse_sms_request(request.to_string().as_bytes())
}

/// A request from `sms/send` that passed validation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SmsRequest {
    /// The number as given, trimmed (normalised later, by whoever sends).
    pub to: String,
    pub text: String,
    /// Echoed on `sms/sent` so that the requester can match the outcome.
    pub id: Option<String>,
}

/// Why a `sms/send` request was refused, with what could be read of it for the reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SmsRejection {
    /// The request's `id`, when it could be read.
    pub id: Option<String>,
    /// The request's `to`, when it could be read.
    pub to: Option<String>,
    /// What is wrong, for the requester.
    pub error: String,
}

/// Parses and validates `{"to":"…","text":"…","id":"…"}` (`id` optional, string or number).
pub fn parse_sms_request(payload: &[u8]) -> Result<SmsRequest, SmsRejection> {
    let reject =
        |id: Option<String>, to: Option<String>, error: String| SmsRejection { id, to, error };
    if payload.len() > MAX_SMS_REQUEST_BYTES {
        let error = format!(
            "the payload is {} bytes, too long for an SMS request",
            payload.len()
        );
        return Err(reject(None, None, error));
    }
    let value: Value = serde_json::from_slice(payload)
        .map_err(|e| reject(None, None, format!("bad JSON: {e}")))?;
    let id = match value.get("id") {
        Some(Value::String(s)) => Some(s.clone()),
        Some(Value::Number(n)) => Some(n.to_string()),
        _ => None,
    };
    let to = value
        .get("to")
        .and_then(Value::as_str)
        .map(|s| s.trim().to_string());
    let Some(to) = to else {
        return Err(reject(id, None, "\"to\" is missing or not a string".into()));
    };
    if let Err(error) = check_number(&to) {
        return Err(reject(id, Some(to), error));
    }
    let Some(text) = value.get("text").and_then(Value::as_str) else {
        return Err(reject(
            id,
            Some(to),
            "\"text\" is missing or not a string".into(),
        ));
    };
    let chars = text.chars().count();
    if chars == 0 {
        return Err(reject(id, Some(to), "\"text\" is empty".into()));
    }
    if chars > MAX_SMS_TEXT_CHARS {
        let error =
            format!("\"text\" has {chars} characters, at most {MAX_SMS_TEXT_CHARS} may be sent");
        return Err(reject(id, Some(to), error));
    }
    Ok(SmsRequest {
        to,
        text: text.to_string(),
        id,
    })
}

/// A number may be written with spaces, dashes, dots, brackets and a leading `+`; anything else
/// (letters above all) means it is not a number we can send to.
pub(super) fn check_number(to: &str) -> Result<(), String> {
    let body = to.strip_prefix('+').unwrap_or(to);
    let well_formed = body
        .chars()
        .all(|c| c.is_ascii_digit() || matches!(c, ' ' | '-' | '.' | '(' | ')'));
    let digits = crate::phone::digits(body).len();
    if !well_formed || !(3..=20).contains(&digits) {
        return Err(format!("{to:?} is not a phone number"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bus::{Call, IncomingSms, ModemStatus, ScriptKind, ScriptStatus, SmsStatus};

    fn set(on: bool, seconds: Option<u64>) -> OutputAction {
        OutputAction::Set {
            on,
            duration: seconds.map(Duration::from_secs),
        }
    }

    #[test]
    fn plain_output_commands_ignore_case_and_white_space() {
        assert_eq!(parse_output_command(b"ON"), Ok(set(true, None)));
        assert_eq!(parse_output_command(b" off\n"), Ok(set(false, None)));
        assert_eq!(parse_output_command(b"Toggle"), Ok(OutputAction::Toggle));
    }

    #[test]
    fn json_output_commands_may_carry_a_duration() {
        assert_eq!(
            parse_output_command(br#"{"state":"ON","seconds":5}"#),
            Ok(set(true, Some(5)))
        );
        assert_eq!(
            parse_output_command(br#" {"state":"on","seconds":0.5} "#),
            Ok(OutputAction::Set {
                on: true,
                duration: Some(Duration::from_millis(500))
            })
        );
        assert_eq!(
            parse_output_command(br#"{"state":"OFF"}"#),
            Ok(set(false, None))
        );
        assert_eq!(
            parse_output_command(br#"{"state":"TOGGLE","seconds":null}"#),
            Ok(OutputAction::Toggle)
        );
    }

    #[test]
    fn bad_output_commands_are_errors() {
        for bad in [
            &b""[..],
            b"1",
            b"ONN",
            b"\xff\xfe",
            b"{",
            br#"{"seconds":5}"#,
            br#"{"state":"ON","seconds":-1}"#,
            br#"{"state":"ON","seconds":0}"#,
            br#"{"state":"ON","seconds":"5"}"#,
            br#"{"state":"ON","seconds":1e300}"#,
            br#"{"state":"TOGGLE","seconds":5}"#,
        ] {
            assert!(
                parse_output_command(bad).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        assert!(parse_output_command(&vec![b'O'; 1 << 20]).is_err());
    }

    #[test]
    fn sms_requests_are_validated() {
        assert_eq!(
            parse_sms_request(br#"{"to":" +44 7700-900123 ","text":"hi","id":"r1"}"#),
            Ok(SmsRequest {
                to: "+44 7700-900123".into(),
                text: "hi".into(),
                id: Some("r1".into())
            })
        );
        assert_eq!(
            parse_sms_request(br#"{"to":"112","text":"x","id":7}"#).map(|r| r.id),
            Ok(Some("7".into()))
        );
        let long = "é".repeat(MAX_SMS_TEXT_CHARS);
        assert!(parse_sms_request(json!({"to":"123","text":long}).to_string().as_bytes()).is_ok());
    }

    #[test]
    fn bad_sms_requests_are_rejected_with_the_id_and_a_reason() {
        let rejected = |payload: &str| {
            parse_sms_request(payload.as_bytes())
                .err()
                .map(|r| (r.id, r.error))
        };
        let too_long =
            json!({"to":"123","text":"x".repeat(MAX_SMS_TEXT_CHARS + 1),"id":"a"}).to_string();
        for payload in [
            r#"{"to":"12ab34","text":"x","id":"a"}"#,
            r#"{"text":"x","id":"a"}"#,
            r#"{"to":"123","id":"a"}"#,
            r#"{"to":"123","text":"","id":"a"}"#,
            r#"{"to":"+","text":"x","id":"a"}"#,
            too_long.as_str(),
        ] {
            let (id, error) = rejected(payload).unwrap_or_default();
            assert_eq!(id.as_deref(), Some("a"), "{payload}");
            assert!(!error.is_empty());
        }
        assert!(rejected("not json").is_some());
        assert!(rejected(&"x".repeat(1 << 20)).is_some());
    }

    fn json_of(out: &Outgoing) -> Value {
        serde_json::from_slice(&out.payload).unwrap_or(Value::Null)
    }

    #[test]
    fn state_events_are_retained_and_plain() {
        let t = Topics::new("g/d");
        let out = for_event(
            &t,
            &Event::OutputChanged {
                name: "relay".into(),
                on: true,
            },
            false,
        );
        assert_eq!(
            out,
            Some(Outgoing {
                topic: "g/d/output/relay".into(),
                payload: b"ON".to_vec(),
                retain: true
            })
        );
        let out = for_event(
            &t,
            &Event::InputChanged {
                name: "door".into(),
                on: false,
            },
            false,
        );
        assert_eq!(
            out,
            Some(Outgoing {
                topic: "g/d/input/door".into(),
                payload: b"OFF".to_vec(),
                retain: true
            })
        );
    }

    #[test]
    fn modem_status_is_published_without_the_imei() {
        let status = ModemStatus {
            registered: true,
            operator: Some("Op".into()),
            signal_dbm: Some(-71),
            imei: Some("350000000000001".into()),
            ..Default::default()
        };
        let out = for_event(&Topics::new("g/d"), &Event::Modem(status.clone()), false);
        let out = out.unwrap_or_else(|| Outgoing::state(String::new(), ""));
        assert!(out.retain);
        assert_eq!(
            json_of(&out),
            json!({"registered":true,"roaming":false,"operator":"Op","signal_dbm":-71})
        );
        assert!(!String::from_utf8_lossy(&out.payload).contains("350000000000001"));
        let with_imei = for_event(&Topics::new("g/d"), &Event::Modem(status), true);
        assert_eq!(
            with_imei.as_ref().map(|o| json_of(o)["imei"].clone()),
            Some(json!("350000000000001")),
            "published when asked for"
        );
    }

    #[test]
    fn alarm_commands_are_plain_or_json_with_a_code() {
        let plain = parse_alarm_command(b" arm_away ").map(|r| (r.action, r.code));
        assert_eq!(plain, Ok((AlarmAction::ArmAway, None)));
        assert_eq!(
            parse_alarm_command(b"DISARM").map(|r| r.action),
            Ok(AlarmAction::Disarm)
        );
        let with_code = parse_alarm_command(br#"{"action":"DISARM","code":"1234"}"#);
        assert_eq!(
            with_code,
            Ok(AlarmRequest {
                action: AlarmAction::Disarm,
                code: Some(Secret("1234".into()))
            })
        );
        let numeric = parse_alarm_command(br#"{"action":"ARM_HOME","code":1234}"#);
        assert_eq!(numeric.map(|r| r.code), Ok(Some(Secret("1234".into()))));
        let null = parse_alarm_command(br#"{"action":"ARM_HOME","code":null}"#);
        assert_eq!(null.map(|r| r.code), Ok(None));
    }

    #[test]
    fn bad_alarm_commands_are_errors_that_never_echo_a_code() {
        for bad in [
            &b""[..],
            b"\xff\xfe",
            b"OPEN",
            b"{",
            br#"{"code":"1234"}"#,
            br#"{"action":"OPEN","code":"1234"}"#,
            br#"{"action":"DISARM","code":[1234]}"#,
            br#"{"action":"DISARM","code":"1234""#,
        ] {
            let err = parse_alarm_command(bad).err().unwrap_or_default();
            assert!(!err.is_empty(), "{:?}", String::from_utf8_lossy(bad));
            assert!(!err.contains("1234"), "{err}");
        }
        assert!(parse_alarm_command(&vec![b'A'; 1 << 20]).is_err());
    }

    #[test]
    fn text_requests_are_number_colon_text() {
        assert_eq!(
            parse_text_request(b"+447700900123: hello: world"),
            Ok(SmsRequest {
                to: "+447700900123".into(),
                text: "hello: world".into(),
                id: None
            })
        );
        for bad in [&b"hello"[..], b"abc: hi", b"+4477: ", b"\xff: x"] {
            assert!(parse_text_request(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn sms_and_call_events_are_json_and_not_retained() {
        let t = Topics::new("g/d");
        let time = chrono::DateTime::parse_from_rfc3339("2024-05-01T10:00:00+02:00").ok();
        let sms = IncomingSms {
            id: 4,
            from: "+4470".into(),
            text: "hi".into(),
            time,
            incomplete: false,
            sender_kind: crate::bus::SenderKind::of("+4470"),
        };
        assert!(for_event(&t, &Event::SmsReceived(sms.clone()), false).is_none());
        let handled = HandledSms {
            sms,
            handled_by: None,
            stale: false,
        };
        let out = for_event(&t, &Event::SmsHandled(handled), false)
            .unwrap_or_else(|| Outgoing::state(String::new(), ""));
        assert_eq!(out.topic, "g/d/sms/received");
        assert!(!out.retain);
        assert_eq!(
            json_of(&out),
            json!({"event_type":"received","from":"+4470","text":"hi","time":"2024-05-01T10:00:00+02:00","id":4,"stale":false})
        );
        let out = for_event(&t, &Event::CallRinging(Call { id: 1, from: None }), false);
        assert_eq!(
            out.as_ref().map(json_of),
            Some(json!({"event_type":"ringing","from":null}))
        );
        let out = for_event(
            &t,
            &Event::CallEnded(Call {
                id: 1,
                from: Some("+1".into()),
            }),
            false,
        );
        assert_eq!(
            out.as_ref().map(json_of),
            Some(json!({"event_type":"ended","from":"+1"}))
        );
    }

    #[test]
    fn sms_status_and_script_status_have_their_documented_shape() {
        let t = Topics::new("g/d");
        let status = SmsStatus {
            outbox_id: 9,
            to: "+1".into(),
            request_id: Some("r".into()),
            status: SendStatus::Failed("no credit".into()),
        };
        let out = for_event(&t, &Event::SmsStatus(status), false);
        assert_eq!(
            out.as_ref().map(json_of),
            Some(json!({"id":"r","status":"failed","error":"no credit","to":"+1"}))
        );
        let script = ScriptStatus {
            kind: ScriptKind::Rule,
            name: "night".into(),
            generation: 3,
            error: None,
        };
        let out = for_event(&t, &Event::Script(script), false);
        assert_eq!(
            out.as_ref().map(|o| (o.topic.as_str(), o.retain)),
            Some(("g/d/rules/night", true))
        );
        assert_eq!(
            out.as_ref().map(json_of),
            Some(json!({"state":"loaded","error":null,"generation":3}))
        );
    }

    #[test]
    fn security_events_are_published_on_security_with_their_event_type() {
        let t = Topics::new("g/d");
        let granted = Security::Granted {
            script: "plugin:crc".into(),
            number: "+447700900123".into(),
            role: "master".into(),
        };
        let out = for_event(&t, &Event::Security(granted), false);
        assert_eq!(
            out.as_ref().map(|o| (o.topic.as_str(), o.retain)),
            Some(("g/d/security", false))
        );
        assert_eq!(
            out.as_ref().map(json_of),
            Some(
                json!({"event_type":"granted","script":"plugin:crc","number":"+447700900123","role":"master"})
            )
        );
        let unlocked = Security::Unlocked {
            number: "bank".into(),
            by: "mqtt".into(),
        };
        let out = for_event(&t, &Event::Security(unlocked), false);
        assert_eq!(
            out.as_ref().map(json_of),
            Some(json!({"event_type":"unlocked","number":"bank","by":"mqtt"}))
        );
        let request = Event::UnlockRequest {
            number: "x".into(),
            by: "mqtt".into(),
        };
        assert_eq!(for_event(&t, &request, false), None);
    }

    #[test]
    fn unlock_commands_take_a_plain_number_or_json_and_refuse_garbage() {
        assert_eq!(
            parse_unlock_command(b" +447700900123 ").as_deref(),
            Ok("+447700900123")
        );
        assert_eq!(
            parse_unlock_command(br#"{"number":"Bank"}"#).as_deref(),
            Ok("Bank")
        );
        assert!(parse_unlock_command(b"").is_err());
        assert!(parse_unlock_command(br#"{"nr":"1"}"#).is_err());
        assert!(parse_unlock_command(&[0xff, 0xfe]).is_err());
        assert!(parse_unlock_command(&[b'1'; 1000]).is_err());
    }
}
