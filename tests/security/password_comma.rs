//! password-comma (`<password>,<command>#`) against an attacker who does not know the
//! password (docs/dialects/password-comma.md, "Which messages carry a credential"):
//! - every `<guess>,<command>#` counts one failure whatever the command; the fifth locks the
//!   sender out, whatever kind of sender it is;
//! - before that, nothing an attacker sees or causes differs between a wrong password with one
//!   of our commands and one with a word we do not know;
//! - out-of-shape messages tell nothing either, even with the right password in them;
//! - a password changed by SMS is stored hashed, and neither it nor the old one is left in the
//!   database files, the trace log or any MQTT payload;
//! - 39 000-character worst cases run within the default budget without an error.

use std::time::Instant;

use proptest::prelude::*;
use serde_json::{json, Value};

use crate::plugin_host::{changes, host, observable, sent, sms, worst_case_texts};

const PLUGIN: &str = "password_comma";
const PASSWORD: &str = "Sx91-pc";
const INSTALLER: &str = "Qz77-in";
const KNOWN: &str = "+447700900123";

fn section() -> Value {
    json!({"relay1": "relay", "input1": "door", "password": PASSWORD,
           "installer_password": INSTALLER, "known": [KNOWN]})
}

fn plugin() -> gsmgw::lua::LuaHost {
    host(&[(PLUGIN, section())])
}

/// Every form of sender the lock-out must cover.
fn senders() -> impl Strategy<Value = String> {
    prop_oneof![
        "\\+4477009[0-9]{5}",
        "077009[0-9]{5}",
        "[0-9]{4,5}",
        "[A-Z][A-Za-z]{2,9}",
    ]
    .prop_filter("not the known number", |s| s != KNOWN && s != "07700900123")
}

/// A wrong password: anything without a comma (`#` and spaces included), even empty.
fn guesses() -> impl Strategy<Value = String> {
    "[^,]{0,12}".prop_filter("wrong", |g| g != PASSWORD && g != INSTALLER)
}

/// Our command words, well- and ill-formed, and anything else without a comma.
fn commands() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("status".to_string()),
        Just("connect".to_string()),
        Just("ARM".to_string()),
        Just("disarm".to_string()),
        Just("r1=on".to_string()),
        Just("r1=on30".to_string()),
        Just("r1=off".to_string()),
        Just("pwd=Taken123".to_string()),
        "[a-zA-Z0-9= #]{0,12}",
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn five_wrong_passwords_in_any_command_lock_out_and_look_like_unknown_words(
        sender in senders(),
        tries in proptest::collection::vec((guesses(), commands()), 5),
    ) {
        let now = Instant::now();
        let (mut attacked, mut unknown, mut four) = (plugin(), plugin(), plugin());
        for (i, (guess, command)) in tries.iter().enumerate() {
            let d = attacked.dispatch_sms(&sms(&sender, &format!("{guess},{command}#")), now);
            let u = unknown.dispatch_sms(&sms(&sender, &format!("{guess},qq{i}zz#")), now);
            prop_assert_eq!(observable(&d), observable(&u), "try {}", i + 1);
            prop_assert_eq!(d.handled_by.as_deref(), Some(PLUGIN));
            prop_assert!(sent(&d).is_empty(), "a stranger gets no answer: {:?}", sent(&d));
            prop_assert!(changes(&d).is_empty(), "nothing changes: {:?}", changes(&d));
            if i < 4 {
                four.dispatch_sms(&sms(&sender, &format!("{guess},{command}#")), now);
            }
        }
        // Four are not enough: the right password still works...
        let right = format!("{PASSWORD},status#");
        let d = four.dispatch_sms(&sms(&sender, &right), now);
        prop_assert_eq!(sent(&d).len(), 1, "after four failures: {:?}", d);
        // ...the fifth locks the sender out, whatever kind of sender it is.
        let d = attacked.dispatch_sms(&sms(&sender, &right), now);
        prop_assert!(sent(&d).is_empty(), "locked out after five: {:?}", sent(&d));
        prop_assert!(changes(&d).is_empty());
    }

    #[test]
    fn out_of_shape_messages_tell_nothing_even_with_the_right_password(
        sender in senders(),
        guess in guesses(),
        tail in "[a-z0-9= ]{0,10}",
    ) {
        let now = Instant::now();
        for shape in ["{p},status,{t}#", "{p},{t},connect#", "{p},status{t}", ",{p},r1=on#"] {
            let with = |p: &str| shape.replace("{p}", p).replace("{t}", &tail);
            let (mut a, mut b) = (plugin(), plugin());
            let right = a.dispatch_sms(&sms(&sender, &with(PASSWORD)), now);
            let wrong = b.dispatch_sms(&sms(&sender, &with(&guess)), now);
            prop_assert_eq!(observable(&right), observable(&wrong), "{}", with(PASSWORD));
            prop_assert!(sent(&right).is_empty());
        }
    }
}

#[test]
fn a_known_number_hears_wrong_password_alike_for_every_wrong_guess() {
    let now = Instant::now();
    let mut gw = plugin();
    for text in ["9999,status#", "9999,fly#", ",connect#", "status#"] {
        let d = gw.dispatch_sms(&sms(KNOWN, text), now);
        assert_eq!(
            sent(&d),
            [(KNOWN.to_string(), "Wrong password".to_string())],
            "{text}"
        );
    }
}

#[test]
fn bare_commands_carry_no_password_and_are_not_counted() {
    let now = Instant::now();
    let mut gw = plugin();
    let stranger = "+447700900999";
    for _ in 0..10 {
        let d = gw.dispatch_sms(&sms(stranger, "r1=on#"), now);
        assert_eq!(d.handled_by.as_deref(), Some(PLUGIN));
        assert!(sent(&d).is_empty() && changes(&d).is_empty());
    }
    let d = gw.dispatch_sms(&sms(stranger, &format!("{PASSWORD},r1=on#")), now);
    assert_eq!(
        sent(&d),
        [(
            stranger.to_string(),
            "Relay1 activated: Permanent.".to_string()
        )]
    );
}

#[test]
fn every_password_in_a_handled_message_is_marked_secret() {
    let now = Instant::now();
    let mut gw = plugin();
    let d = gw.dispatch_sms(&sms("+447700900999", "n0tIt,status#"), now);
    assert!(d.secrets.iter().any(|s| s == "n0tIt"), "{:?}", d.secrets);
    assert!(d.credential_bearing);
    let d = gw.dispatch_sms(
        &sms("+447700900999", &format!("{PASSWORD},pwd=Neu9Secret#")),
        now,
    );
    assert!(d.secrets.iter().any(|s| s == PASSWORD), "{:?}", d.secrets);
    assert!(
        d.secrets.iter().any(|s| s == "Neu9Secret"),
        "{:?}",
        d.secrets
    );
}

#[test]
fn a_changed_password_is_stored_as_a_salted_hash() {
    let now = Instant::now();
    let mut gw = plugin();
    let d = gw.dispatch_sms(
        &sms("+447700900999", &format!("{PASSWORD},pwd=Neu9Secret#")),
        now,
    );
    assert_eq!(sent(&d)[0].1, "Password changed");
    let stored: Vec<String> = d
        .commands
        .iter()
        .filter_map(|c| match c {
            gsmgw::bus::Command::KvSet {
                key,
                value: Some(v),
                ..
            } if key == "superadmin_password" => Some(v.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(stored.len(), 1, "{:?}", d.commands);
    assert!(stored[0].contains("$argon2id$"), "{}", stored[0]);
    assert!(!stored[0].contains("Neu9Secret"));
    let d = gw.dispatch_sms(&sms("+447700900999", "Neu9Secret,status#"), now);
    assert_eq!(sent(&d).len(), 1, "the new password works");
    let d = gw.dispatch_sms(&sms("+447700900999", &format!("{PASSWORD},status#")), now);
    assert!(sent(&d).is_empty(), "the old one does not");
}

#[test]
fn worst_case_texts_of_39000_characters_run_within_the_default_budget() {
    let now = Instant::now();
    for limit in [
        gsmgw::config::LuaConfig::default().plugin_text_limit,
        100_000,
    ] {
        let mut gw = plugin();
        gw.set_plugin_text_limit(limit);
        let words = [
            "status#",
            "1234,",
            ",status#",
            &format!("{PASSWORD},"),
            &format!("{PASSWORD},status "),
            "r1=on",
            "pwd=",
        ];
        for (i, text) in worst_case_texts(&words).iter().enumerate() {
            let from = format!("+4477009{i:05}");
            let d = gw.dispatch_sms(&sms(&from, text), now);
            assert!(
                d.errors.is_empty(),
                "text {i} (limit {limit}): {:?}",
                d.errors
            );
        }
        let padded = format!("{PASSWORD},status#{}", " ".repeat(39_000));
        let d = gw.dispatch_sms(&sms("+447700900998", &padded), now);
        assert_eq!(
            sent(&d).len(),
            1,
            "outer white space is not part of the command"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_and_new_password_are_nowhere_after_a_password_change() {
    let old = "Old5ecret-x";
    let new = "Neu9Secret";
    let section = format!("relay1 = \"relay\"\ninput1 = \"door\"\npassword = \"{old}\"");
    let Some(mut gw) = crate::process::Gateway::start(PLUGIN, &section).await else {
        return;
    };
    let from = "+447700900555";
    let replies = gw.sms(from, &format!("{old},pwd={new}#"), 1).await;
    assert_eq!(replies, ["Password changed"]);
    let replies = gw.sms(from, &format!("{new},r1=on#"), 1).await;
    assert_eq!(replies, ["Relay1 activated: Permanent."]);
    // A wrong guess close to both, and the old one, now wrong.
    gw.sms(from, &format!("{old},status#"), 0).await;
    let replies = gw.sms(from, &format!("{new},status#"), 1).await;
    assert_eq!(replies.len(), 1);
    let left = gw.finish().await;
    assert!(!left.log.is_empty() && !left.database.is_empty() && !left.mqtt.is_empty());
    assert!(
        !left.places_of("pwd=").is_empty(),
        "the conversation itself is recorded somewhere"
    );
    for secret in [old, new] {
        assert_eq!(
            left.places_of(secret),
            Vec::<String>::new(),
            "{secret} leaked"
        );
    }
}
