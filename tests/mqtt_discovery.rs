//! Home Assistant discovery payloads checked against the keys and value types HA's MQTT
//! platforms accept (from the HA docs of `switch.mqtt`, `binary_sensor.mqtt`, `sensor.mqtt`,
//! `alarm_control_panel.mqtt`, `event.mqtt`, `notify.mqtt`, `text.mqtt` and the discovery page:
//! `device`, `origin`, availability). A key HA does not know makes the whole config invalid
//! there, so unknown keys fail here.

use std::collections::BTreeSet;

use gsmgw::config::Config;
use gsmgw::mqtt::{topics_for, Discovery};
use serde_json::Value;

#[derive(Clone, Copy, Debug)]
enum Kind {
    Str,
    Int,
    Bool,
    StrList,
    Object,
}

fn fits(kind: Kind, v: &Value) -> bool {
    match kind {
        Kind::Str => v.is_string(),
        Kind::Int => v.is_i64() || v.is_u64(),
        Kind::Bool => v.is_boolean(),
        Kind::StrList => v.as_array().is_some_and(|a| a.iter().all(Value::is_string)),
        Kind::Object => v.is_object(),
    }
}

/// Keys every MQTT entity accepts.
const COMMON: &[(&str, Kind)] = &[
    ("name", Kind::Str),
    ("unique_id", Kind::Str),
    ("availability_topic", Kind::Str),
    ("payload_available", Kind::Str),
    ("payload_not_available", Kind::Str),
    ("device", Kind::Object),
    ("origin", Kind::Object),
    ("icon", Kind::Str),
    ("entity_category", Kind::Str),
    ("qos", Kind::Int),
];

/// The platform's own keys (those we may use) and the ones it requires.
fn platform(component: &str) -> (Vec<(&'static str, Kind)>, Vec<&'static str>) {
    use Kind::*;
    match component {
        "switch" => (
            vec![
                ("command_topic", Str),
                ("state_topic", Str),
                ("payload_on", Str),
                ("payload_off", Str),
                ("state_on", Str),
                ("state_off", Str),
                ("retain", Bool),
                ("optimistic", Bool),
            ],
            vec!["command_topic"],
        ),
        "binary_sensor" => (
            vec![
                ("state_topic", Str),
                ("payload_on", Str),
                ("payload_off", Str),
                ("device_class", Str),
                ("value_template", Str),
            ],
            vec!["state_topic"],
        ),
        "sensor" => (
            vec![
                ("state_topic", Str),
                ("value_template", Str),
                ("unit_of_measurement", Str),
                ("device_class", Str),
                ("state_class", Str),
            ],
            vec!["state_topic"],
        ),
        "alarm_control_panel" => (
            vec![
                ("state_topic", Str),
                ("command_topic", Str),
                ("command_template", Str),
                ("code", Str),
                ("code_arm_required", Bool),
                ("code_disarm_required", Bool),
                ("code_trigger_required", Bool),
                ("payload_arm_away", Str),
                ("payload_arm_home", Str),
                ("payload_disarm", Str),
                ("payload_trigger", Str),
                ("supported_features", StrList),
            ],
            vec!["state_topic", "command_topic"],
        ),
        "event" => (
            vec![
                ("state_topic", Str),
                ("event_types", StrList),
                ("device_class", Str),
                ("value_template", Str),
            ],
            vec!["state_topic", "event_types"],
        ),
        "notify" => (
            vec![
                ("command_topic", Str),
                ("command_template", Str),
                ("retain", Bool),
            ],
            vec!["command_topic"],
        ),
        "text" => (
            vec![
                ("command_topic", Str),
                ("command_template", Str),
                ("state_topic", Str),
                ("mode", Str),
                ("min", Int),
                ("max", Int),
                ("pattern", Str),
            ],
            vec!["command_topic"],
        ),
        other => panic!("no schema for component {other}"),
    }
}

const DEVICE: &[(&str, Kind)] = &[
    ("identifiers", Kind::StrList),
    ("name", Kind::Str),
    ("manufacturer", Kind::Str),
    ("model", Kind::Str),
    ("sw_version", Kind::Str),
];
const ORIGIN: &[(&str, Kind)] = &[
    ("name", Kind::Str),
    ("sw_version", Kind::Str),
    ("support_url", Kind::Str),
];

fn check_object(what: &str, obj: &Value, allowed: &[(&str, Kind)]) {
    let map = obj
        .as_object()
        .unwrap_or_else(|| panic!("{what}: not an object"));
    for (key, value) in map {
        let kind = allowed
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, kind)| *kind)
            .unwrap_or_else(|| panic!("{what}: key {key:?} is not accepted by Home Assistant"));
        assert!(
            fits(kind, value),
            "{what}: {key} should be {kind:?}, is {value}"
        );
    }
}

fn config() -> Config {
    let text = r#"
[gateway]
device_id = "gate"
[outputs.relay]
line = 17
[outputs.siren]
line = 18
[inputs.door]
line = 27
device_class = "door"
[inputs.pir]
line = 22
[mqtt]
alarm_code_required = true
notify = [{ name = "owner", number = "+447700900123" }, { name = "neighbour", number = "07700 900456" }]
"#;
    Config::from_toml(text, "t.toml").expect("valid config")
}

#[test]
fn every_discovery_payload_uses_only_keys_and_types_home_assistant_accepts() {
    let cfg = config();
    let discovery = Discovery::new(topics_for(&cfg), "gate", "homeassistant");
    let messages = discovery.messages(&cfg).expect("discovery builds");
    let mut components = BTreeSet::new();
    let mut unique_ids = BTreeSet::new();
    for m in &messages {
        assert!(m.retain, "{} must be retained", m.topic);
        let levels: Vec<&str> = m.topic.split('/').collect();
        let [prefix, component, node, object, "config"] = levels[..] else {
            panic!(
                "{} is not <prefix>/<component>/<node>/<object>/config",
                m.topic
            );
        };
        assert_eq!(prefix, "homeassistant");
        assert_eq!(node, "gsmgw_gate");
        assert!(object
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-'));
        components.insert(component.to_string());
        let payload: Value = serde_json::from_slice(&m.payload).expect("payload is JSON");
        let (own, required) = platform(component);
        let allowed: Vec<(&str, Kind)> = COMMON.iter().copied().chain(own).collect();
        check_object(&m.topic, &payload, &allowed);
        for key in required {
            assert!(payload.get(key).is_some(), "{}: {key} is required", m.topic);
        }
        check_object(&format!("{} device", m.topic), &payload["device"], DEVICE);
        check_object(&format!("{} origin", m.topic), &payload["origin"], ORIGIN);
        assert_eq!(payload["availability_topic"], "gsmgw/gate/status");
        assert_eq!(payload["device"]["sw_version"], env!("CARGO_PKG_VERSION"));
        let unique_id = payload["unique_id"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        assert!(
            unique_ids.insert(unique_id),
            "{}: unique_id repeated",
            m.topic
        );
    }
    let expected: BTreeSet<String> = [
        "alarm_control_panel",
        "binary_sensor",
        "event",
        "notify",
        "sensor",
        "switch",
        "text",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    assert_eq!(components, expected);
    // 2 switches, 2 binary sensors, 2 sensors, 1 alarm, 3 events (SMS, call, security),
    // 2 notify, 1 text.
    assert_eq!(messages.len(), 13);
    assert!(messages
        .iter()
        .any(|m| m.topic.ends_with("/security/config")));
}

#[test]
fn entities_carry_the_classes_and_units_home_assistant_shows() {
    let cfg = config();
    let discovery = Discovery::new(topics_for(&cfg), "gate", "homeassistant");
    let messages = discovery.messages(&cfg).expect("discovery builds");
    let get = |topic: &str| -> Value {
        let m = messages
            .iter()
            .find(|m| m.topic == topic)
            .unwrap_or_else(|| panic!("no {topic}"));
        serde_json::from_slice(&m.payload).unwrap_or(Value::Null)
    };
    let door = get("homeassistant/binary_sensor/gsmgw_gate/input_door/config");
    assert_eq!(door["device_class"], "door");
    let pir = get("homeassistant/binary_sensor/gsmgw_gate/input_pir/config");
    assert_eq!(
        pir.get("device_class"),
        None,
        "no class when none is configured"
    );
    let signal = get("homeassistant/sensor/gsmgw_gate/signal/config");
    assert_eq!(signal["unit_of_measurement"], "dBm");
    assert_eq!(signal["device_class"], "signal_strength");
    assert_eq!(signal["entity_category"], "diagnostic");
    let calls = get("homeassistant/event/gsmgw_gate/call/config");
    assert_eq!(
        calls["event_types"],
        serde_json::json!(["ringing", "ended"])
    );
    let alarm = get("homeassistant/alarm_control_panel/gsmgw_gate/alarm/config");
    assert_eq!(alarm["code"], "REMOTE_CODE");
    let relay = get("homeassistant/switch/gsmgw_gate/output_relay/config");
    assert_eq!(relay["state_topic"], "gsmgw/gate/output/relay");
}
