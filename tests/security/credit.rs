//! Credit protection (issue 11.6), from the attacker's side:
//! - one SMS from a sender nobody enrolled makes the gateway send at most `sms.reply_budget`
//!   parts, however many commands it packs (`STATUS,STATUS,…`); an enrolled master's long
//!   answer is limited by the caps only;
//! - the caps count message parts, not outbox rows;
//! - premium ranges (`sms.deny_prefixes`), short codes, alphanumeric addresses and numbers
//!   with fewer than 8 digits are refused on every path: plugins, rules, MQTT `sms/send` and
//!   the CLI (`gsmgw send`, which goes through MQTT) all end in the same outbox check;
//! - strangers draining the caps leave the priority reserve to alarm, notify and security
//!   alerts;
//! - USSD codes an SMS asks for must be in `sms.ussd_allow`.

use gsmgw::app;
use gsmgw::bus::{Command, Event, SendStatus};
use gsmgw::config::SmsConfig;
use gsmgw::lua::SmsPolicy;
use gsmgw::store::{NewOutboxSms, Store, StoreError};

use crate::host_rig::{self, Host};
use crate::wait::next_matching;

const STRANGER: &str = "+447700900666";
const MASTER: &str = "+447700900123";

/// Answers every comma-separated command with its own SMS, as the dialects' `STATUS` does; its
/// `init` enrols the master, as a dialect does for its master number.
const AMPLIFIER: &str = r#"
return {
  init = function() gw.auth.grant("+447700900123", "master") end,
  sms = function(msg)
    for word in msg.text:gmatch("[^,]+") do
      gw.sms.reply(word .. ": RELAY OFF INPUT LOW GSM 68%")
    end
    return true
  end,
}"#;

fn parts_sent(d: &gsmgw::lua::Dispatch) -> usize {
    d.commands
        .iter()
        .filter_map(|c| match c {
            Command::SendSms { text, .. } => Some(gsmgw::modem::pdu::part_count(text)),
            _ => None,
        })
        .sum()
}

#[test]
fn one_sms_from_a_stranger_gets_at_most_the_reply_budget() {
    let mut host = Host::new(&[("amp", AMPLIFIER)]);
    let budget = SmsConfig::default().reply_budget as usize;
    let packed = vec!["STATUS"; 200].join(",");
    let d = host.sms(1, STRANGER, &packed);
    assert_eq!(parts_sent(&d), budget, "{:?}", d.commands);
    // Long texts do not buy more: one reply of many parts is cut whole.
    let long = "X".repeat(2000);
    let d = host.sms(2, "+447700900667", &long);
    assert_eq!(parts_sent(&d), 0, "a 14-part reply exceeds a 3-part budget");
}

#[test]
fn a_stranger_is_limited_per_hour_across_many_sms() {
    let mut host = Host::new(&[("amp", AMPLIFIER)]);
    let per_hour = SmsConfig::default().stranger_replies_per_hour as usize;
    let total: usize = (0..100)
        .map(|i| parts_sent(&host.sms(i, STRANGER, "STATUS,STATUS,STATUS")))
        .sum();
    assert_eq!(total, per_hour);
}

#[test]
fn an_enrolled_masters_long_answer_is_not_cut_by_the_reply_budget() {
    let mut host = Host::new(&[("amp", AMPLIFIER)]);
    let d = host.sms(1, MASTER, &vec!["STATUS"; 40].join(","));
    assert_eq!(parts_sent(&d), 40);
}

#[test]
fn priority_sms_are_outside_the_reply_budget() {
    let mut host = Host::new(&[(
        "alarm",
        r#"return { sms = function(msg)
            for i = 1, 10 do gw.sms.reply("r" .. i) end
            gw.sms.send("+447700900123", "security alert", { priority = true })
            return true
        end }"#,
    )]);
    host.host.set_sms_policy(SmsPolicy {
        reply_budget: 2,
        ..SmsPolicy::default()
    });
    let d = host.sms(1, STRANGER, "x");
    let texts: Vec<&str> = d
        .commands
        .iter()
        .filter_map(|c| match c {
            Command::SendSms { text, .. } => Some(text.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(texts, vec!["r1", "r2", "security alert"]);
}

fn limits() -> SmsConfig {
    SmsConfig {
        max_per_hour: 10,
        max_per_day: 100,
        max_per_recipient_per_hour: 100,
        max_per_recipient_per_day: 100,
        priority_reserve: 3,
        country_code: Some("44".into()),
        ..SmsConfig::default()
    }
}

fn sms(to: &str, text: &str, priority: bool) -> NewOutboxSms {
    NewOutboxSms {
        to: to.into(),
        text: text.into(),
        request_id: None,
        priority,
    }
}

#[test]
fn caps_count_parts_not_rows() {
    let mut store = Store::open_in_memory(SmsConfig {
        priority_reserve: 0,
        ..limits()
    })
    .expect("store");
    let now = chrono::Utc::now();
    // 153 GSM characters per part once concatenated: 4 parts.
    let four = "A".repeat(153 * 4);
    assert_eq!(gsmgw::modem::pdu::part_count(&four), 4);
    store
        .outbox_queue(&sms(MASTER, &four, false), now)
        .expect("4 of 10");
    store
        .outbox_queue(&sms(MASTER, &four, false), now)
        .expect("8 of 10");
    // UCS-2: 67 characters per part, so 3 parts here, over the cap.
    let ucs2 = "Ж".repeat(67 * 3);
    let err = store
        .outbox_queue(&sms(MASTER, &ucs2, false), now)
        .unwrap_err();
    assert!(
        matches!(&err, StoreError::Capped { reason, .. } if reason.contains("max_per_hour")),
        "{err}"
    );
    store
        .outbox_queue(&sms(MASTER, "one", false), now)
        .expect("9 of 10");
}

#[test]
fn the_priority_reserve_holds_while_strangers_drain_the_caps() {
    let mut store = Store::open_in_memory(limits()).expect("store");
    let now = chrono::Utc::now();
    let mut queued = 0;
    for i in 0..50 {
        let to = format!("+4477009001{i:02}");
        if store.outbox_queue(&sms(&to, "reply", false), now).is_ok() {
            queued += 1;
        }
    }
    assert_eq!(queued, 7, "10 per hour less the reserve of 3");
    for text in ["ALARM door", "notify", "security alert"] {
        store
            .outbox_queue(&sms(MASTER, text, true), now)
            .expect("the reserve is there for priority SMS");
    }
    assert!(store
        .outbox_queue(&sms(MASTER, "alarm 4", true), now)
        .is_err());
}

#[test]
fn premium_short_and_alphanumeric_recipients_are_refused_at_the_outbox() {
    let mut store = Store::open_in_memory(SmsConfig {
        deny_prefixes: vec!["+449".into(), "+979".into()],
        allow_recipients: vec!["4040".into()],
        ..limits()
    })
    .expect("store");
    let now = chrono::Utc::now();
    for to in [
        "09098 790 000", // national premium, normalised to +449…
        "+44 909 879 0000",
        "+979123456789",
        "80888",    // a short code
        "1234567",  // fewer than 8 digits
        "VODAFONE", // alphanumeric
        "",
    ] {
        let err = store.outbox_queue(&sms(to, "hi", true), now).unwrap_err();
        assert!(
            matches!(&err, StoreError::Capped { reason, .. } if reason.contains("refused")),
            "{to:?}: {err}"
        );
    }
    store
        .outbox_queue(&sms("4040", "BALANCE", false), now)
        .expect("a short code listed in sms.allow_recipients");
    store
        .outbox_queue(&sms("07700 900123", "hi", false), now)
        .expect("a mobile number");
}

#[test]
fn allow_prefixes_restrict_every_recipient() {
    let mut store = Store::open_in_memory(SmsConfig {
        allow_prefixes: vec!["+447".into()],
        ..limits()
    })
    .expect("store");
    let now = chrono::Utc::now();
    assert!(store
        .outbox_queue(&sms("+33612345678", "hi", true), now)
        .is_err());
    store
        .outbox_queue(&sms("+447700900123", "hi", false), now)
        .expect("inside the allowed range");
}

#[test]
fn a_short_number_is_allowed_once_enrolled() {
    let dir = tempfile::tempdir().expect("dir");
    let mut store = Store::open(&dir.path().join("s.db"), limits()).expect("store");
    let now = chrono::Utc::now();
    assert!(store
        .outbox_queue(&sms("1234567", "hi", false), now)
        .is_err());
    store
        .kv_set(
            "gateway:enrolled",
            "1234567",
            Some("{\"plugin:x\":[\"master\"]}"),
        )
        .expect("enrol");
    store
        .outbox_queue(&sms("1234567", "hi", false), now)
        .expect("enrolled");
}

/// Sends to a short code, a premium number and an alphanumeric address from a plugin and a
/// rule, and as MQTT `sms/send` and `gsmgw send` do (a `SendSms` command executed by the
/// gateway): every one is refused and reported failed; a normal number goes out.
#[tokio::test]
async fn premium_and_short_code_refusal_holds_on_every_path() {
    let plugin = r#"return { sms = function(msg)
        gw.sms.send("80888", "plugin short")
        gw.sms.send("+979123456789", "plugin premium")
        return true
    end }"#;
    let rule = r#"return { on = { sms = true }, execute = function(gw, ev)
        gw.sms.send("VODAFONE", "rule alpha")
        gw.sms.send("+447700900555", "rule ok")
    end }"#;
    let rig = host_rig::start(
        &[("p", plugin)],
        &[("r", rule)],
        None,
        "reply_budget = 10",
        |_| {},
    )
    .await;
    let mut rig = rig;
    let mut events = rig.gateway.handles.bus.subscribe();
    rig.sim.inject_sms(MASTER, "go");
    for (to, text) in [("1234", "mqtt short"), ("+9791234567", "cli premium")] {
        app::execute(
            &rig.gateway.handles,
            Command::SendSms {
                to: to.into(),
                text: text.into(),
                request_id: Some(text.into()),
                priority: false,
            },
        )
        .await;
    }
    let mut failed = Vec::new();
    let mut queued = Vec::new();
    while failed.len() < 5 || queued.is_empty() {
        let status = next_matching(&mut events, 20, "SMS statuses", |ev| match ev {
            Event::SmsStatus(s) => Some(s),
            _ => None,
        })
        .await;
        match status.status {
            SendStatus::Failed(reason) => {
                assert!(reason.contains("refused"), "{reason}");
                failed.push(status.to);
            }
            SendStatus::Queued => queued.push(status.to),
            SendStatus::Sent => {}
        }
    }
    failed.sort();
    assert_eq!(
        failed,
        vec!["+9791234567", "+979123456789", "1234", "80888", "VODAFONE"]
    );
    assert_eq!(queued, vec!["+447700900555"]);
    let (to, _) = next_matching(&mut rig.sim_events, 20, "the allowed SMS", |ev| match ev {
        gsmgw::modem::sim::SimEvent::SmsSent { to, text, .. } => Some((to, text)),
        _ => None,
    })
    .await;
    assert_eq!(to, "+447700900555");
    rig.stop().await;
}

#[test]
fn ussd_codes_from_an_sms_must_be_on_the_allow_list() {
    let mut host = Host::new(&[(
        "cre",
        r#"return { sms = function(msg)
            gw.modem.ussd(msg.text, function(ok, text) gw.sms.reply(tostring(ok) .. " " .. text) end)
            return true
        end }"#,
    )]);
    let d = host.sms(1, MASTER, "*100#");
    assert!(
        matches!(d.commands.as_slice(), [Command::Ussd { code, .. }] if code == "*100#"),
        "{:?}",
        d.commands
    );
    // An airtime transfer: refused, and the plugin's callback hears it like a network error.
    let d = host.sms(2, MASTER, "*131*447700900666*5#");
    assert!(d.commands.is_empty(), "{:?}", d.commands);
    let [Event::UssdResult { id, result }] = d.events.as_slice() else {
        panic!("a refusal for the callback: {:?}", d.events);
    };
    assert!(result.as_ref().is_err_and(|e| e.contains("sms.ussd_allow")));
    let answer = host.host.dispatch_event(
        &Event::UssdResult {
            id: *id,
            result: result.clone(),
        },
        host.now,
    );
    assert!(
        matches!(answer.commands.as_slice(), [Command::SendSms { text, .. }] if text.starts_with("false refused")),
        "{:?}",
        answer.commands
    );
}
