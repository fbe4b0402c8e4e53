//! Home Assistant MQTT discovery: one retained config message per entity, under
//! `<discovery_prefix>/<component>/gsmgw_<device_id>/<object>/config`.
//!
//! Entities: a `switch` per output, a `binary_sensor` per input, `sensor`s for signal and
//! operator, an `alarm_control_panel`, `event`s for received SMS and calls, a `notify` per
//! configured recipient and a `text` to send to any number (`NUMBER: TEXT`). All share one
//! device and are available while `<p>/status` is `online`.
//!
//! Removal: the topics published are listed, retained, in the manifest `<p>/discovery`. At
//! connect the bridge reads the previous manifest back and publishes an empty retained config
//! for every topic no longer in the list, which makes Home Assistant delete that entity.

use serde_json::{json, Map, Value};

use super::messages::{check_number, Outgoing};
use super::topics::Topics;
use super::MqttError;
use crate::config::Config;

/// What the discovery configs are built from.
#[derive(Debug, Clone)]
pub struct Discovery {
    topics: Topics,
    device_id: String,
    prefix: String,
}

impl Discovery {
    /// `topics` are the gateway's; `discovery_prefix` is Home Assistant's (`homeassistant`).
    pub fn new(topics: Topics, device_id: &str, discovery_prefix: &str) -> Self {
        Self {
            topics,
            device_id: device_id.to_string(),
            prefix: discovery_prefix.trim_end_matches('/').to_string(),
        }
    }

    /// `gsmgw_<device_id>`: the node of every topic and the start of every unique id.
    fn node(&self) -> String {
        format!("gsmgw_{}", self.device_id)
    }

    /// Every entity's config, in a stable order; empty when `mqtt.discovery` is off.
    pub fn messages(&self, cfg: &Config) -> Result<Vec<Outgoing>, MqttError> {
        if !cfg.mqtt.discovery {
            return Ok(Vec::new());
        }
        let t = &self.topics;
        let mut out = Vec::new();
        // The siren and the modem's power key are no plain switches: they need the alarm code.
        let protected = cfg.protected_outputs();
        for name in cfg.outputs.keys().filter(|n| !protected.contains(*n)) {
            out.push(self.entity(
                "switch",
                &format!("output_{name}"),
                name,
                json!({
                    "command_topic": t.under(&format!("output/{name}/set")),
                    "state_topic": t.output(name),
                    "payload_on": "ON",
                    "payload_off": "OFF",
                    "qos": 1,
                }),
            ));
        }
        for (name, input) in &cfg.inputs {
            let mut config = json!({
                "state_topic": t.input(name),
                "payload_on": "ON",
                "payload_off": "OFF",
            });
            if let Some(class) = input.device_class.as_deref().filter(|c| !c.is_empty()) {
                config["device_class"] = json!(class);
            }
            out.push(self.entity("binary_sensor", &format!("input_{name}"), name, config));
        }
        out.push(self.entity(
            "sensor",
            "signal",
            "Signal",
            json!({
                "state_topic": t.modem(),
                "value_template": "{{ value_json.signal_dbm }}",
                "unit_of_measurement": "dBm",
                "device_class": "signal_strength",
                "state_class": "measurement",
                "entity_category": "diagnostic",
            }),
        ));
        out.push(self.entity(
            "sensor",
            "operator",
            "Operator",
            json!({
                "state_topic": t.modem(),
                "value_template": "{{ value_json.operator }}",
                "entity_category": "diagnostic",
                "icon": "mdi:sim",
            }),
        ));
        let mut alarm = json!({
            "state_topic": t.alarm(),
            "command_topic": t.alarm_set(),
            "supported_features": ["arm_home", "arm_away", "trigger"],
            "qos": 1,
        });
        if cfg.mqtt.alarm_code_required || cfg.alarm.code.is_some() {
            // The code is typed in Home Assistant and checked by the gateway's panel.
            alarm["code"] = json!("REMOTE_CODE");
            alarm["command_template"] =
                json!(r#"{"action":"{{ action }}","code":{{ code | tojson }}}"#);
        }
        out.push(self.entity("alarm_control_panel", "alarm", "Alarm", alarm));
        out.push(self.entity(
            "event",
            "sms_received",
            "SMS received",
            json!({
                "state_topic": t.sms_received(),
                "event_types": ["received"],
                "icon": "mdi:message-text",
            }),
        ));
        out.push(self.entity(
            "event",
            "call",
            "Call",
            json!({
                "state_topic": t.call(),
                "event_types": ["ringing", "ended"],
                "icon": "mdi:phone-incoming",
            }),
        ));
        out.push(self.entity(
            "event",
            "security",
            "Security",
            json!({
                "state_topic": t.security(),
                "event_types": crate::bus::Security::EVENT_TYPES,
                "icon": "mdi:shield-alert",
            }),
        ));
        for target in &cfg.mqtt.notify {
            check_target_name(&target.name)?;
            check_number(target.number.trim()).map_err(|reason| MqttError::InvalidConfig {
                key: "notify",
                reason,
            })?;
            // serde_json quotes the number; Home Assistant renders only `value` (the message).
            let to = Value::String(target.number.trim().to_string()).to_string();
            out.push(self.entity(
                "notify",
                &format!("sms_{}", target.name),
                &format!("SMS {}", target.name),
                json!({
                    "command_topic": t.sms_send(),
                    "command_template": format!(r#"{{"to":{to},"text":{{{{ value | tojson }}}}}}"#),
                    "qos": 1,
                }),
            ));
        }
        out.push(self.entity(
            "text",
            "sms_send",
            "Send SMS (number: text)",
            json!({
                "command_topic": t.sms_send_text(),
                "mode": "text",
                "min": 0,
                "max": 255,
                "pattern": r"^\s*\+?[0-9 ().-]+:.+",
                "icon": "mdi:message-arrow-right",
            }),
        ));
        let mut seen = std::collections::BTreeSet::new();
        if let Some(dup) = out.iter().find(|o| !seen.insert(o.topic.as_str())) {
            return Err(MqttError::InvalidConfig {
                key: "notify",
                reason: format!("two entities share the discovery topic {}", dup.topic),
            });
        }
        Ok(out)
    }

    /// One entity's config message, with the shared keys added.
    fn entity(&self, component: &str, object: &str, name: &str, specific: Value) -> Outgoing {
        let node = self.node();
        let version = env!("CARGO_PKG_VERSION");
        let mut config = Map::new();
        config.insert("name".into(), json!(name));
        config.insert("unique_id".into(), json!(format!("{node}_{object}")));
        config.insert("availability_topic".into(), json!(self.topics.status()));
        config.insert("payload_available".into(), json!("online"));
        config.insert("payload_not_available".into(), json!("offline"));
        config.insert(
            "device".into(),
            json!({
                "identifiers": [node],
                "name": format!("GSM gateway {}", self.device_id),
                "manufacturer": "gsmgw",
                "model": "SMS and dial-in GSM gateway",
                "sw_version": version,
            }),
        );
        config.insert(
            "origin".into(),
            json!({ "name": "gsmgw", "sw_version": version }),
        );
        if let Value::Object(specific) = specific {
            config.extend(specific);
        }
        Outgoing {
            topic: format!("{}/{component}/{node}/{object}/config", self.prefix),
            payload: Value::Object(config).to_string().into_bytes(),
            retain: true,
        }
    }

    /// The manifest listing `messages`' topics (empty payload, which clears the retained
    /// manifest, when there are none).
    pub fn manifest(&self, messages: &[Outgoing]) -> Outgoing {
        let topics: Vec<&str> = messages.iter().map(|m| m.topic.as_str()).collect();
        Outgoing {
            topic: self.topics.discovery_manifest(),
            payload: if topics.is_empty() {
                Vec::new()
            } else {
                json!(topics).to_string().into_bytes()
            },
            retain: true,
        }
    }

    /// The removals for entities in the `previous` manifest that are not in `current`: an
    /// empty retained config each. Topics outside our own node are never touched, whatever the
    /// manifest says.
    pub fn removals(&self, previous: &[u8], current: &[Outgoing]) -> Vec<Outgoing> {
        let Ok(old) = serde_json::from_slice::<Vec<String>>(previous) else {
            if !previous.is_empty() {
                tracing::warn!(
                    "MQTT: the retained discovery manifest is not a list of topics; ignored"
                );
            }
            return Vec::new();
        };
        let ours = format!("/{}/", self.node());
        old.into_iter()
            .filter(|topic| topic.starts_with(&self.prefix) && topic.contains(&ours))
            .filter(|topic| topic.ends_with("/config") && !topic.contains(['+', '#']))
            .filter(|topic| current.iter().all(|c| &c.topic != topic))
            .map(|topic| Outgoing {
                topic,
                payload: Vec::new(),
                retain: true,
            })
            .collect()
    }
}

fn check_target_name(name: &str) -> Result<(), MqttError> {
    let valid = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if valid {
        Ok(())
    } else {
        Err(MqttError::InvalidConfig {
            key: "notify",
            reason: format!("the name {name:?} must be letters, digits, '_' or '-'"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn discovery() -> Discovery {
        Discovery::new(Topics::new("gsmgw/gate"), "gate", "homeassistant")
    }

    fn config(text: &str) -> Config {
        Config::from_toml(text, "t.toml").unwrap_or_default()
    }

    #[test]
    fn the_alarm_panel_asks_for_a_remote_code_only_when_configured() {
        let d = discovery();
        let alarm = |cfg: &Config| {
            let messages = d.messages(cfg).unwrap_or_default();
            messages
                .iter()
                .find(|m| m.topic.contains("/alarm_control_panel/"))
                .map(|m| serde_json::from_slice::<Value>(&m.payload).unwrap_or(Value::Null))
                .unwrap_or(Value::Null)
        };
        let plain = alarm(&config(""));
        assert_eq!(plain["command_topic"], "gsmgw/gate/alarm/set");
        assert_eq!(plain.get("code"), None);
        let coded = alarm(&config("[mqtt]\nalarm_code_required = true\n"));
        assert_eq!(coded["code"], "REMOTE_CODE");
        // A panel code in [alarm] means Home Assistant must ask for it too.
        let panel_coded = alarm(&config("[alarm]\ncode = \"4321\"\n"));
        assert_eq!(panel_coded["code"], "REMOTE_CODE");
        assert!(coded["command_template"]
            .as_str()
            .is_some_and(|t| t.contains("{{ code | tojson }}")));
    }

    #[test]
    fn the_siren_and_the_power_key_are_not_offered_as_switches() {
        let cfg = config(
            "[outputs.relay]\nline = 17\n[outputs.siren]\nline = 18\n[outputs.pwr]\nline = 19\n\
             [alarm]\nsiren = \"siren\"\n[modem]\npower_key = \"pwr\"\n",
        );
        let switches: Vec<String> = discovery()
            .messages(&cfg)
            .unwrap_or_default()
            .into_iter()
            .filter(|m| m.topic.contains("/switch/"))
            .map(|m| m.topic)
            .collect();
        assert_eq!(
            switches,
            vec!["homeassistant/switch/gsmgw_gate/output_relay/config"]
        );
    }

    #[test]
    fn a_notify_entity_sends_the_message_to_its_number() {
        let cfg = config("[mqtt]\nnotify = [{ name = \"owner\", number = \"+447700900123\" }]\n");
        let messages = discovery().messages(&cfg).unwrap_or_default();
        let notify = messages
            .iter()
            .find(|m| m.topic == "homeassistant/notify/gsmgw_gate/sms_owner/config")
            .map(|m| serde_json::from_slice::<Value>(&m.payload).unwrap_or(Value::Null))
            .unwrap_or(Value::Null);
        assert_eq!(notify["command_topic"], "gsmgw/gate/sms/send");
        assert_eq!(
            notify["command_template"],
            r#"{"to":"+447700900123","text":{{ value | tojson }}}"#
        );
    }

    #[test]
    fn bad_notify_targets_are_config_errors() {
        for bad in [
            "notify = [{ name = \"a b\", number = \"+447700900123\" }]",
            "notify = [{ name = \"x\", number = \"call me\" }]",
            "notify = [{ name = \"x\", number = \"123\" }, { name = \"x\", number = \"456\" }]",
        ] {
            let cfg = config(&format!("[mqtt]\n{bad}\n"));
            assert!(discovery().messages(&cfg).is_err(), "{bad}");
        }
    }

    #[test]
    fn discovery_off_publishes_nothing_and_clears_the_manifest() {
        let d = discovery();
        let messages = d.messages(&config("[mqtt]\ndiscovery = false\n"));
        assert_eq!(messages.as_ref().map(Vec::len).ok(), Some(0));
        assert_eq!(d.manifest(&[]).payload, Vec::<u8>::new());
    }

    #[test]
    fn entities_missing_from_the_config_are_removed_and_foreign_topics_kept() {
        let d = discovery();
        let current = d
            .messages(&config("[outputs.relay]\nline = 17\n"))
            .unwrap_or_default();
        let previous = json!([
            "homeassistant/switch/gsmgw_gate/output_relay/config",
            "homeassistant/switch/gsmgw_gate/output_old/config",
            "homeassistant/switch/someone_else/x/config",
            "homeassistant/switch/gsmgw_gate/#",
        ])
        .to_string();
        let removed: Vec<(String, usize, bool)> = d
            .removals(previous.as_bytes(), &current)
            .into_iter()
            .map(|o| (o.topic, o.payload.len(), o.retain))
            .collect();
        assert_eq!(
            removed,
            vec![(
                "homeassistant/switch/gsmgw_gate/output_old/config".to_string(),
                0,
                true
            )]
        );
        assert!(d.removals(b"not json", &current).is_empty());
        let manifest: Vec<String> =
            serde_json::from_slice(&d.manifest(&current).payload).unwrap_or_default();
        assert_eq!(manifest.len(), current.len());
    }
}
