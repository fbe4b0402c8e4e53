//! P-Word/installer (`<P-Word> <Code> <CMD>:<params>`) against an attacker who knows neither
//! (docs/dialects/pword-installer.md, "Which messages carry a credential"):
//! - every message of the shape with a wrong P-Word or code counts one failure whatever the
//!   command; the fifth locks the sender out, whatever kind of sender it is;
//! - before that, a wrong credential with a real command and one with an unknown command word
//!   look the same, and nothing changes;
//! - out-of-shape messages tell nothing, even with the right P-Word and code;
//! - authority changes are grants (RPEX numbers); codes set by SMS are stored hashed and never
//!   left in the database files, the trace log or an MQTT payload;
//! - 39 000-character worst cases run within the default budget without an error.

use std::time::Instant;

use gsmgw::bus::Command;
use proptest::prelude::*;
use serde_json::{json, Value};

use crate::plugin_host::{changes, host, observable, sent, sms, worst_case_texts};

const PLUGIN: &str = "pword_installer";
const PWORD: &str = "SECRETPW";
const CODE: &str = "864209";

fn section() -> Value {
    json!({"pword": PWORD, "installer_code": CODE})
}

fn plugin() -> gsmgw::lua::LuaHost {
    host(&[(PLUGIN, section())])
}

fn senders() -> impl Strategy<Value = String> {
    prop_oneof![
        "\\+4477009[0-9]{5}",
        "077009[0-9]{5}",
        "[0-9]{4,5}",
        "[A-Z][A-Za-z]{2,9}",
    ]
}

/// (P-Word, code) with at least one of them wrong.
fn wrong_credentials() -> impl Strategy<Value = (String, String)> {
    let pword = "[A-Za-z0-9!?.]{1,10}".prop_filter("wrong", |p| p.to_uppercase() != PWORD);
    let code = "[0-9]{1,8}".prop_filter("wrong", |c| c != CODE);
    prop_oneof![
        (pword.clone(), Just(CODE.to_string())),
        (Just(PWORD.to_string()), code.clone()),
        (Just(PWORD.to_lowercase()), code.clone()),
        (pword, code),
    ]
}

fn commands() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("MODE:A".to_string()),
        Just("mode:d".to_string()),
        Just("MOD?:".to_string()),
        Just("ECHO:".to_string()),
        Just("USRS:1,1111,MALLORY,1".to_string()),
        Just("USRD:2".to_string()),
        Just("PIN?:".to_string()),
        Just("RPEX:1,0,+447700900666".to_string()),
        Just("INST:1357".to_string()),
        Just("PWRD:MINE".to_string()),
        "[A-Z?]{1,5}:[A-Za-z0-9, ]{0,12}",
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn five_wrong_pwords_or_codes_in_any_command_lock_out_and_look_like_unknown_words(
        sender in senders(),
        tries in proptest::collection::vec((wrong_credentials(), commands()), 5),
    ) {
        let now = Instant::now();
        let (mut attacked, mut unknown, mut four) = (plugin(), plugin(), plugin());
        for (i, ((pword, code), command)) in tries.iter().enumerate() {
            let text = format!("{pword} {code} {command}");
            let d = attacked.dispatch_sms(&sms(&sender, &text), now);
            let u = unknown.dispatch_sms(&sms(&sender, &format!("{pword} {code} QZ{i}:")), now);
            prop_assert_eq!(observable(&d), observable(&u), "try {}: {}", i + 1, text);
            prop_assert_eq!(d.handled_by.as_deref(), Some(PLUGIN));
            prop_assert!(sent(&d).is_empty(), "a stranger gets no answer: {:?}", sent(&d));
            prop_assert!(changes(&d).is_empty(), "nothing changes: {:?}", changes(&d));
            if i < 4 {
                four.dispatch_sms(&sms(&sender, &text), now);
            }
        }
        let right = format!("{PWORD} {CODE} ECHO:");
        let d = four.dispatch_sms(&sms(&sender, &right), now);
        prop_assert_eq!(sent(&d).len(), 1, "after four failures: {:?}", d);
        let d = attacked.dispatch_sms(&sms(&sender, &right), now);
        prop_assert!(sent(&d).is_empty(), "locked out after five: {:?}", sent(&d));
    }

    #[test]
    fn out_of_shape_messages_tell_nothing_even_with_the_right_pword_and_code(
        sender in senders(),
        (pword, code) in wrong_credentials(),
        tail in "[A-Za-z0-9 ]{0,10}",
    ) {
        let now = Instant::now();
        for shape in ["{p} {c} ECHO", "{p} {c} {t}", "{p}  {c} ECHO:", "{p} {c}x MODE:A", "{p} {c} :{t}", "{p} {c} MO DE:A"] {
            let with = |p: &str, c: &str| shape.replace("{p}", p).replace("{c}", c).replace("{t}", &tail);
            let (mut a, mut b) = (plugin(), plugin());
            let right = a.dispatch_sms(&sms(&sender, &with(PWORD, CODE)), now);
            let wrong = b.dispatch_sms(&sms(&sender, &with(&pword, &code)), now);
            prop_assert_eq!(observable(&right), observable(&wrong), "{}", with(PWORD, CODE));
            prop_assert!(sent(&right).is_empty());
        }
    }
}

fn kv_values(d: &gsmgw::lua::Dispatch, wanted: &str) -> Vec<String> {
    d.commands
        .iter()
        .filter_map(|c| match c {
            Command::KvSet {
                key,
                value: Some(v),
                ..
            } if key == wanted => Some(v.clone()),
            _ => None,
        })
        .collect()
}

#[test]
fn codes_pins_and_pwords_set_by_sms_are_stored_hashed_and_work() {
    let now = Instant::now();
    let mut gw = plugin();
    let from = "+447700900999";
    let d = gw.dispatch_sms(
        &sms(from, &format!("{PWORD} {CODE} USRS:1,2468,ANN,1")),
        now,
    );
    assert_eq!(sent(&d)[0].1, "USRS:OK");
    let users = kv_values(&d, "users").join("");
    assert!(
        users.contains("$argon2id$") && !users.contains("2468"),
        "{users}"
    );
    assert!(d.secrets.iter().any(|s| s == "2468"), "{:?}", d.secrets);
    let d = gw.dispatch_sms(&sms(from, &format!("{PWORD} {CODE} INST:97531")), now);
    assert_eq!(sent(&d)[0].1, "INST:OK");
    let inst = kv_values(&d, "installer_code").join("");
    assert!(
        inst.contains("$argon2id$") && !inst.contains("97531"),
        "{inst}"
    );
    let d = gw.dispatch_sms(&sms(from, &format!("{PWORD} 97531 PWRD:Tiger")), now);
    assert_eq!(
        sent(&d).first().map(|s| s.1.as_str()),
        Some("PWRD:OK"),
        "{d:?}"
    );
    let pword = kv_values(&d, "pword").join("");
    assert!(
        pword.contains("$argon2id$") && !pword.contains("TIGER"),
        "{pword}"
    );
    // The P-Word stays case-insensitive through its hash; the user PIN works for MOD?.
    let d = gw.dispatch_sms(&sms(from, "tIGER 2468 MOD?:"), now);
    assert_eq!(sent(&d)[0].1, "MODE?D");
    let d = gw.dispatch_sms(&sms(from, &format!("{PWORD} 97531 ECHO:")), now);
    assert!(sent(&d).is_empty(), "the old P-Word no longer works");
}

#[test]
fn a_report_number_is_granted_and_revoked_and_only_a_real_number_is() {
    let now = Instant::now();
    let mut gw = plugin();
    let from = "+447700900999";
    let d = gw.dispatch_sms(
        &sms(from, &format!("{PWORD} {CODE} RPEX:1,0,+447700900555")),
        now,
    );
    assert_eq!(sent(&d)[0].1, "RPEX:OK");
    let granted = format!("{:?}", d.events);
    assert!(
        granted.contains("Granted") && granted.contains("+447700900555"),
        "{granted}"
    );
    let d = gw.dispatch_sms(&sms(from, &format!("{PWORD} {CODE} RPEX:1,,")), now);
    assert_eq!(sent(&d)[0].1, "RPEX:OK");
    let revoked = format!("{:?}", d.events);
    assert!(
        revoked.contains("Revoked") && revoked.contains("+447700900555"),
        "{revoked}"
    );
    for number in ["12345", "BANK", "+44 abc"] {
        let d = gw.dispatch_sms(
            &sms(from, &format!("{PWORD} {CODE} RPEX:2,0,{number}")),
            now,
        );
        assert_eq!(sent(&d)[0].1, "RPEX:ERROR", "{number}");
    }
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
            "PROG 7982 ",
            "PROG 7982 USRS:",
            &format!("{PWORD} {CODE} USRS:"),
            &format!("{PWORD} {CODE} RPEX:1,0,"),
            &format!("{PWORD} {CODE} MODE:A "),
            "MODE:A ",
            " 7982",
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
        let params = format!("{PWORD} {CODE} USRS:{}", ",".repeat(39_000));
        let d = gw.dispatch_sms(&sms("+447700900998", &params), now);
        assert_eq!(
            sent(&d).len(),
            1,
            "a command with 39 000 parameters is an error: {:?}",
            d.errors
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_and_new_codes_are_nowhere_after_they_change() {
    let section = "pword = \"OLDPWORD\"\ninstaller_code = \"314159\"";
    let Some(mut gw) = crate::process::Gateway::start(PLUGIN, section).await else {
        return;
    };
    let from = "+447700900555";
    let replies = gw.sms(from, "OLDPWORD 314159 INST:271828", 1).await;
    assert_eq!(replies, ["INST:OK"]);
    let replies = gw.sms(from, "OLDPWORD 271828 PWRD:NEWPWORD", 1).await;
    assert_eq!(replies, ["PWRD:OK"]);
    let replies = gw.sms(from, "NEWPWORD 271828 USRS:1,161803,ANN,1", 1).await;
    assert_eq!(replies, ["USRS:OK"]);
    let replies = gw.sms(from, "newpword 161803 ECHO:", 1).await;
    assert_eq!(replies, ["ECHO:OK"]);
    let left = gw.finish().await;
    assert!(
        !left.places_of("ECHO:").is_empty(),
        "the conversation is recorded somewhere"
    );
    for secret in ["OLDPWORD", "314159", "271828", "NEWPWORD", "161803"] {
        assert_eq!(
            left.places_of(secret),
            Vec::<String>::new(),
            "{secret} leaked"
        );
    }
}
