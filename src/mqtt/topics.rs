//! The topic tree under `<prefix>/<device_id>`: building the topics we publish and recognising
//! the ones we are subscribed to.

use crate::bus::ScriptKind;

/// The topics of one gateway, all under `<prefix>/<device_id>` (`p`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topics {
    prefix: String,
    /// `<prefix>/fleet/sms/send` when this gateway is in a send group.
    fleet_sms_send: Option<String>,
}

/// What a message that arrived on one of our subscriptions asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommandTopic<'a> {
    /// `<p>/output/<name>/set`.
    OutputSet(&'a str),
    /// `<p>/sms/send`, or the fleet's shared `sms/send`.
    SmsSend,
    /// `<p>/sms/send_text`: `number: text`, from Home Assistant's text entity.
    SmsSendText,
    /// `<p>/alarm/set`.
    AlarmSet,
    /// `<p>/security/unlock`: lift a sender's lock-out.
    SecurityUnlock,
}

impl Topics {
    /// The topics under `prefix` (already `<prefix>/<device_id>`, no trailing `/`).
    pub fn new(prefix: impl Into<String>) -> Self {
        Self {
            prefix: prefix.into(),
            fleet_sms_send: None,
        }
    }

    /// These topics, also taking SMS requests on the fleet topic `fleet_sms_send` (full topic,
    /// without the `$share/<group>/` of the subscription).
    pub fn with_fleet(mut self, fleet_sms_send: String) -> Self {
        self.fleet_sms_send = Some(fleet_sms_send);
        self
    }

    /// The fleet's `sms/send` topic, when in a send group.
    pub fn fleet_sms_send(&self) -> Option<&str> {
        self.fleet_sms_send.as_deref()
    }

    /// `<p>`.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// `<p>/<suffix>`.
    pub fn under(&self, suffix: &str) -> String {
        format!("{}/{}", self.prefix, suffix)
    }

    /// `<p>/status`: `online` | `offline`, retained, the last will.
    pub fn status(&self) -> String {
        self.under("status")
    }

    /// `<p>/output/<name>`.
    pub fn output(&self, name: &str) -> String {
        format!("{}/output/{name}", self.prefix)
    }

    /// `<p>/output/+/set`, the subscription for output commands.
    pub fn output_set_filter(&self) -> String {
        self.under("output/+/set")
    }

    /// `<p>/input/<name>`.
    pub fn input(&self, name: &str) -> String {
        format!("{}/input/{name}", self.prefix)
    }

    /// `<p>/modem`.
    pub fn modem(&self) -> String {
        self.under("modem")
    }

    /// `<p>/sms/received`.
    pub fn sms_received(&self) -> String {
        self.under("sms/received")
    }

    /// `<p>/sms/send`, where requests to send an SMS arrive.
    pub fn sms_send(&self) -> String {
        self.under("sms/send")
    }

    /// `<p>/sms/sent`, where the outcome of each request is reported.
    pub fn sms_sent(&self) -> String {
        self.under("sms/sent")
    }

    /// `<p>/sms/send_text`, where `number: text` requests arrive (Home Assistant's text entity).
    pub fn sms_send_text(&self) -> String {
        self.under("sms/send_text")
    }

    /// `<p>/alarm`: the alarm panel's state, retained.
    pub fn alarm(&self) -> String {
        self.under("alarm")
    }

    /// `<p>/security`: grants, lock-outs, attacks, unlocks (events).
    pub fn security(&self) -> String {
        self.under("security")
    }

    /// `<p>/security/unlock`, where requests to lift a lock-out arrive.
    pub fn security_unlock(&self) -> String {
        self.under("security/unlock")
    }

    /// `<p>/alarm/set`, where alarm commands arrive.
    pub fn alarm_set(&self) -> String {
        self.under("alarm/set")
    }

    /// `<p>/discovery`: the retained list of the Home Assistant discovery topics we published,
    /// so that entities that left the config can be removed at the next start.
    pub fn discovery_manifest(&self) -> String {
        self.under("discovery")
    }

    /// `<p>/call`.
    pub fn call(&self) -> String {
        self.under("call")
    }

    /// `<p>/plugins/<name>` or `<p>/rules/<name>`.
    pub fn script(&self, kind: ScriptKind, name: &str) -> String {
        format!("{}/{}/{name}", self.prefix, kind.topic())
    }

    /// Which command `topic` carries, if it is one of ours.
    pub fn classify<'t>(&self, topic: &'t str) -> Option<CommandTopic<'t>> {
        if self.fleet_sms_send.as_deref() == Some(topic) {
            return Some(CommandTopic::SmsSend);
        }
        let rest = topic
            .strip_prefix(self.prefix.as_str())?
            .strip_prefix('/')?;
        match rest {
            "sms/send" => return Some(CommandTopic::SmsSend),
            "sms/send_text" => return Some(CommandTopic::SmsSendText),
            "alarm/set" => return Some(CommandTopic::AlarmSet),
            "security/unlock" => return Some(CommandTopic::SecurityUnlock),
            _ => {}
        }
        let name = rest.strip_prefix("output/")?.strip_suffix("/set")?;
        (!name.is_empty() && !name.contains('/')).then_some(CommandTopic::OutputSet(name))
    }
}

/// Checks a subscription filter suffix given by a script: like [`check_suffix`], but `+` may
/// stand for a whole level and `#` for the rest, as MQTT allows.
pub fn check_filter_suffix(suffix: &str) -> Result<(), String> {
    if suffix.is_empty() || suffix.contains('\0') {
        return Err("the topic filter is empty or contains NUL".into());
    }
    let levels: Vec<&str> = suffix.split('/').collect();
    for (i, level) in levels.iter().enumerate() {
        let wildcard_ok = match *level {
            "+" => true,
            "#" => i + 1 == levels.len(),
            l => !l.is_empty() && !l.contains(['+', '#']),
        };
        if !wildcard_ok {
            return Err(format!(
                "the topic filter {suffix:?} has an empty level or a misplaced wildcard"
            ));
        }
    }
    Ok(())
}

/// Checks a topic suffix given by a script or the app: one or more non-empty levels, no
/// wildcards (a publish to a wildcard topic is a protocol error that would drop the connection).
pub fn check_suffix(suffix: &str) -> Result<(), String> {
    if suffix.is_empty() {
        return Err("the topic is empty".into());
    }
    if suffix.contains(['+', '#', '\0']) {
        return Err(format!("the topic {suffix:?} contains a wildcard or NUL"));
    }
    if suffix.split('/').any(str::is_empty) {
        return Err(format!("the topic {suffix:?} has an empty level"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_are_built_under_the_prefix() {
        let t = Topics::new("gsmgw/gate");
        assert_eq!(t.status(), "gsmgw/gate/status");
        assert_eq!(t.output("relay1"), "gsmgw/gate/output/relay1");
        assert_eq!(t.output_set_filter(), "gsmgw/gate/output/+/set");
        assert_eq!(t.input("door"), "gsmgw/gate/input/door");
        assert_eq!(t.modem(), "gsmgw/gate/modem");
        assert_eq!(t.sms_received(), "gsmgw/gate/sms/received");
        assert_eq!(t.sms_sent(), "gsmgw/gate/sms/sent");
        assert_eq!(t.call(), "gsmgw/gate/call");
        assert_eq!(
            t.script(ScriptKind::Plugin, "rtu5024"),
            "gsmgw/gate/plugins/rtu5024"
        );
        assert_eq!(
            t.script(ScriptKind::Rule, "night"),
            "gsmgw/gate/rules/night"
        );
    }

    #[test]
    fn command_topics_are_recognised_only_under_our_prefix() {
        let t = Topics::new("gsmgw/gate");
        assert_eq!(
            t.classify("gsmgw/gate/output/relay1/set"),
            Some(CommandTopic::OutputSet("relay1"))
        );
        assert_eq!(
            t.classify("gsmgw/gate/sms/send"),
            Some(CommandTopic::SmsSend)
        );
        assert_eq!(t.classify("gsmgw/gateway/sms/send"), None);
        assert_eq!(t.classify("gsmgw/other/output/relay1/set"), None);
        assert_eq!(t.classify("gsmgw/gate/output//set"), None);
        assert_eq!(t.classify("gsmgw/gate/output/a/b/set"), None);
        assert_eq!(t.classify("gsmgw/gate/output/relay1"), None);
        assert_eq!(
            t.classify("gsmgw/gate/alarm/set"),
            Some(CommandTopic::AlarmSet)
        );
        assert_eq!(
            t.classify("gsmgw/gate/security/unlock"),
            Some(CommandTopic::SecurityUnlock)
        );
        assert_eq!(t.classify("gsmgw/gate/security"), None);
        assert_eq!(
            t.classify("gsmgw/gate/sms/send_text"),
            Some(CommandTopic::SmsSendText)
        );
        assert_eq!(t.classify("gsmgw/fleet/sms/send"), None);
        let fleet = t.with_fleet("gsmgw/fleet/sms/send".into());
        assert_eq!(
            fleet.classify("gsmgw/fleet/sms/send"),
            Some(CommandTopic::SmsSend)
        );
    }

    #[test]
    fn script_filters_may_use_wildcards_in_whole_levels() {
        for good in ["a", "a/+/b", "a/#", "+", "#"] {
            assert!(check_filter_suffix(good).is_ok(), "{good:?}");
        }
        for bad in ["", "a/#/b", "a+/b", "a//b", "/a", "a#"] {
            assert!(check_filter_suffix(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn suffixes_with_wildcards_or_empty_levels_are_refused() {
        assert!(check_suffix("alarm").is_ok());
        assert!(check_suffix("rules/night/state").is_ok());
        for bad in ["", "a/+", "#", "a//b", "/a", "a/", "a\0b"] {
            assert!(check_suffix(bad).is_err(), "{bad:?}");
        }
    }
}
