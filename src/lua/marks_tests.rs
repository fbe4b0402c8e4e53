//! Contracts C and D at the host: `gw.sms.secret`, credential-bearing messages, `{priority}`,
//! and the alarm panel's answer reaching the script that asked.

use super::tests::{send, Fixture, MASTER};
use super::*;
use crate::bus::{AlarmAction, AlarmSource, Secret};

/// A password-comma style plugin: `<pwd>,pwd=<new>` changes the password.
const PASSWORD_CHANGE: &str = r#"
local password = "1234"
return { sms = function(m)
    local given, new = m.text:match("^(%w+),pwd=(%w+)$")
    if not given then return false end
    gw.sms.secret(given)
    gw.sms.secret(new)
    if given ~= password then gw.auth.fail(m.from) return true end
    password = new
    gw.sms.reply("PASSWORD CHANGED")
    return true
end }"#;

#[test]
fn secrets_marked_while_handling_an_sms_come_back_with_its_dispatch() {
    let mut f = Fixture::new();
    f.load("p", PASSWORD_CHANGE);
    let d = f.sms(MASTER, "1234,pwd=9876");
    assert_eq!(d.secrets, vec!["1234".to_string(), "9876".to_string()]);
    assert!(d.credential_bearing);
    assert_eq!(d.commands, vec![send(MASTER, "PASSWORD CHANGED")]);
    assert_eq!(mask("1234,pwd=9876", &d.secrets), "***,pwd=***");

    // The next SMS starts with nothing marked.
    let d = f.sms(MASTER, "hello");
    assert!(d.secrets.is_empty());
    assert!(!d.credential_bearing);
}

#[test]
fn a_counted_failure_makes_the_sms_credential_bearing() {
    let mut f = Fixture::new();
    f.load(
        "p",
        r#"return { sms = function(m) gw.auth.fail(m.from) return true end }"#,
    );
    let d = f.sms(MASTER, "guess");
    assert!(d.credential_bearing);
    assert!(d.secrets.is_empty());
}

#[test]
fn secret_outside_an_sms_marks_nothing() {
    let mut f = Fixture::new();
    f.load(
        "p",
        r#"return { input = function(ev) gw.mqtt.publish("marked", tostring(gw.sms.secret("x"))) end }"#,
    );
    let d = f.host.dispatch_event(
        &Event::InputChanged {
            name: "door".into(),
            on: false,
        },
        f.t0,
    );
    assert_eq!(
        d.commands,
        vec![Command::MqttPublish {
            topic: "marked".into(),
            payload: b"false".to_vec(),
            retain: false
        }]
    );
    assert!(d.secrets.is_empty());
}

#[test]
fn mask_hides_every_occurrence_and_overlapping_secrets_whole() {
    let secrets = vec!["12".to_string(), "1234".to_string(), String::new()];
    assert_eq!(mask("1234 12 x1234", &secrets), "*** *** x***");
    assert_eq!(mask("nothing here", &secrets), "nothing here");
}

#[test]
fn priority_option_reaches_the_send_command() {
    let mut f = Fixture::new();
    f.load(
        "p",
        r#"return { sms = function(m)
            gw.sms.reply("a", { priority = true })
            gw.sms.send("+447700900999", "b", { priority = true })
            gw.sms.reply("c", {})
            gw.sms.reply("d", { priority = "yes" })
            return true
        end }"#,
    );
    let d = f.sms(MASTER, "x");
    let sent: Vec<(String, bool)> = d
        .commands
        .iter()
        .filter_map(|c| match c {
            Command::SendSms { text, priority, .. } => Some((text.clone(), *priority)),
            _ => None,
        })
        .collect();
    assert_eq!(
        sent,
        vec![
            ("a".to_string(), true),
            ("b".to_string(), true),
            ("c".to_string(), false)
        ]
    );
    assert!(d.errors[0].contains("opts.priority"), "{:?}", d.errors);
}

/// Arms with a code and a callback that replies from the panel's answer.
const ARMING: &str = r#"return { sms = function(m)
    gw.alarm.arm("away", { code = "4321" }, function(ok, reason)
        gw.sms.reply(ok and "Armed" or ("Arming failed: " .. reason))
    end)
    gw.alarm.disarm(function(ok, reason) gw.sms.reply(tostring(ok) .. tostring(reason)) end)
    return true
end }"#;

#[test]
fn alarm_requests_name_the_calling_script_and_the_answer_reaches_the_callback() {
    let mut f = Fixture::new();
    f.load("p", ARMING);
    let d = f.sms(MASTER, "arm");
    assert_eq!(
        d.commands,
        vec![
            Command::Alarm {
                action: AlarmAction::ArmAway,
                source: AlarmSource::Script("plugin:p".into()),
                by: Some(MASTER.into()),
                code: Some(Secret("4321".into())),
                reply: Some(1),
            },
            Command::Alarm {
                action: AlarmAction::Disarm,
                source: AlarmSource::Script("plugin:p".into()),
                by: Some(MASTER.into()),
                code: None,
                reply: Some(2),
            },
        ]
    );
    let refused = f.host.dispatch_event(
        &Event::AlarmResult {
            id: 1,
            result: Err("zone_open:door".into()),
        },
        f.t0,
    );
    // The callback answers the sender of the SMS that asked.
    assert_eq!(
        refused.commands,
        vec![send(MASTER, "Arming failed: zone_open:door")]
    );
    let ok = f.host.dispatch_event(
        &Event::AlarmResult {
            id: 2,
            result: Ok(()),
        },
        f.t0,
    );
    assert_eq!(ok.commands, vec![send(MASTER, "truenil")]);
}

#[test]
fn a_label_in_by_is_kept_but_grants_nothing() {
    let mut f = Fixture::new();
    f.load(
        "p",
        r#"return { sms = function(m)
            gw.alarm.disarm({ by = "JOHN" })
            gw.alarm.arm("home", "legacy label", "1111")
            return true
        end }"#,
    );
    let d = f.sms(MASTER, "x");
    assert_eq!(
        d.commands,
        vec![
            Command::Alarm {
                action: AlarmAction::Disarm,
                source: AlarmSource::Script("plugin:p".into()),
                by: Some("JOHN".into()),
                code: None,
                reply: None,
            },
            Command::Alarm {
                action: AlarmAction::ArmHome,
                source: AlarmSource::Script("plugin:p".into()),
                by: Some("legacy label".into()),
                code: Some(Secret("1111".into())),
                reply: None,
            },
        ]
    );
}
