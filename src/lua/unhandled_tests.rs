//! The `unhandled` hook: called by the host after dispatch, only for an SMS that no plugin
//! handled and that no script found a credential in (contract E).

use super::tests::{send, Fixture, MASTER};
use super::*;

/// A plugin that forwards what nobody handled to a fixed number, as David's DIP a does.
const FORWARDER: &str = r#"return {
  sms = function(m) return false end,
  unhandled = function(m) gw.sms.send("+447700900001", m.from .. ": " .. m.text) end,
}"#;

fn forwarded(text: &str) -> Command {
    send("+447700900001", &format!("{MASTER}: {text}"))
}

#[test]
fn unhandled_runs_after_every_plugin_passed() {
    let mut f = Fixture::new();
    f.load("fwd", FORWARDER);
    f.load(
        "later",
        r#"return { sms = function(m) gw.sms.reply("later saw " .. m.text); return false end }"#,
    );
    f.host.set_order(&["fwd".into(), "later".into()]);

    let d = f.sms(MASTER, "hello");

    assert_eq!(d.handled_by, None);
    assert!(!d.credential_bearing);
    assert_eq!(
        d.commands,
        vec![send(MASTER, "later saw hello"), forwarded("hello")],
        "forwarded after the later plugin, not when the forwarding plugin was offered it"
    );
}

#[test]
fn unhandled_is_not_called_when_a_later_plugin_handles_the_sms() {
    let mut f = Fixture::new();
    f.load("fwd", FORWARDER);
    f.load("owner", "return { sms = function(m) return true end }");
    f.host.set_order(&["fwd".into(), "owner".into()]);

    let d = f.sms(MASTER, "1234,status#");

    assert_eq!(d.handled_by.as_deref(), Some("owner"));
    assert_eq!(d.commands, vec![]);
}

#[test]
fn a_wrong_credential_counted_by_any_plugin_is_never_forwarded() {
    let mut f = Fixture::new();
    f.load("fwd", FORWARDER);
    f.load(
        "strict",
        "return { sms = function(m) gw.auth.fail(m.from); return false end }",
    );
    f.host.set_order(&["fwd".into(), "strict".into()]);

    let d = f.sms(MASTER, "9999,open#");

    assert_eq!(d.handled_by, None);
    assert!(d.credential_bearing);
    assert!(
        !d.commands
            .iter()
            .any(|c| matches!(c, Command::SendSms { .. })),
        "{:?}",
        d.commands
    );
}

#[test]
fn a_message_marked_secret_is_never_forwarded() {
    let mut f = Fixture::new();
    f.load("fwd", FORWARDER);
    f.load(
        "marker",
        "return { sms = function(m) gw.sms.secret('s3cret'); return false end }",
    );
    f.host.set_order(&["marker".into(), "fwd".into()]);

    let d = f.sms(MASTER, "s3cret,hello");

    assert!(d.credential_bearing);
    assert_eq!(d.commands, vec![]);
}

#[test]
fn a_rule_marking_the_message_secret_also_stops_forwarding() {
    let mut f = Fixture::new();
    f.load("fwd", FORWARDER);
    let path = f.write(
        "r",
        r#"return { on = { sms = true }, execute = function(gw, ev) gw.sms.secret("pin") end }"#,
    );
    let status = f
        .host
        .load_rule("r", &path, &serde_json::json!({}), BTreeMap::new(), f.t0);
    assert_eq!(status.error, None);

    let d = f.sms(MASTER, "pin 1234");

    assert!(d.credential_bearing);
    assert_eq!(d.commands, vec![]);
}

#[test]
fn the_mark_is_per_message() {
    let mut f = Fixture::new();
    f.load("fwd", FORWARDER);
    f.load(
        "strict",
        "return { sms = function(m) if m.text == 'bad' then gw.auth.fail(m.from) end end }",
    );

    assert!(f.sms(MASTER, "bad").credential_bearing);
    let d = f.sms(MASTER, "good");
    assert!(!d.credential_bearing);
    assert_eq!(d.commands, vec![forwarded("good")]);
}

#[test]
fn every_plugin_with_the_hook_gets_the_unhandled_sms_in_order() {
    let mut f = Fixture::new();
    f.load(
        "a",
        r#"return { unhandled = function(m) gw.sms.send("+447700900001", "a " .. m.text) end }"#,
    );
    f.load(
        "b",
        r#"return { unhandled = function(m) gw.sms.send("+447700900002", "b " .. m.text) end }"#,
    );
    f.host.set_order(&["b".into(), "a".into()]);

    let d = f.sms(MASTER, "x");

    assert_eq!(
        d.commands,
        vec![send("+447700900002", "b x"), send("+447700900001", "a x")]
    );
}

#[test]
fn a_locked_out_sender_reaches_no_unhandled_hook() {
    let mut f = Fixture::new();
    f.load(
        "strict",
        r#"return {
          sms = function(m) if m.text == "bad" then gw.auth.fail(m.from) end end,
          unhandled = function(m) gw.sms.send("+447700900001", m.text) end,
        }"#,
    );
    for _ in 0..5 {
        f.sms(MASTER, "bad");
    }

    let d = f.sms(MASTER, "hello");

    assert_eq!(d.commands, vec![]);
}

#[test]
fn an_unhandled_hook_that_is_not_a_function_is_a_load_error() {
    let mut f = Fixture::new();
    let status = f.try_load("p", "return { unhandled = 5 }");
    assert!(
        status
            .error
            .as_deref()
            .is_some_and(|e| e.contains("'unhandled' must be a function")),
        "{status:?}"
    );
}

#[test]
fn calls_never_reach_the_unhandled_hook() {
    let mut f = Fixture::new();
    f.load("fwd", FORWARDER);
    let d = f.host.dispatch_call(
        &Call {
            id: 4,
            from: Some(MASTER.into()),
        },
        f.t0,
    );
    assert_eq!(d.commands, vec![]);
}

#[test]
fn two_plugins_counting_the_same_sms_count_one_failure() {
    let mut f = Fixture::new();
    let strict = "return { sms = function(m) gw.auth.fail(m.from); return false end }";
    f.load("a", strict);
    f.load("b", strict);
    for n in 1..=4 {
        f.sms(MASTER, "9999,open#");
        assert!(
            !f.host.is_locked_out(MASTER, f.t0),
            "locked after {n} messages: each counted twice"
        );
    }
    f.sms(MASTER, "9999,open#");
    assert!(f.host.is_locked_out(MASTER, f.t0), "the fifth locks");
}
