//! `gw.auth` at host level: lock-out for every sender form, the gateway-wide budget, grants,
//! the protection of enrolled numbers, unlock, and `msg.sender_kind` (docs/security.md).

use std::collections::BTreeMap;
use std::time::Instant;

use super::tests::{send, Fixture, MASTER};
use super::*;
use crate::bus::{Security, SenderKind};

const ALERT: &str = "+447700900555";

/// A plugin with a password; a wrong one counts a failure; `ENROL <n>` grants `n` "master"
/// when the password is right, `DROP <n>` revokes it.
const PLUGIN: &str = r#"return {
    sms = function(m)
        if gw.auth.locked(m.from) then return true end
        local word, rest = string.match(m.text, "^(%u+) ?(.*)$")
        if word == "OPEN" and gw.auth.check(rest, "secret") then
            gw.output.on("gate", 1) return true
        end
        if word == "ENROL" then gw.sms.reply(tostring(gw.auth.grant(rest, "master"))) return true end
        if word == "DROP" then gw.sms.reply(tostring(gw.auth.revoke(rest))) return true end
        if word == "KIND" then gw.sms.reply(m.sender_kind) return true end
        if word == "SAME" then gw.sms.reply(tostring(gw.phone.same_last_digits(m.from, rest, 8))
            .. tostring(gw.phone.in_list(m.from, {rest})) .. tostring(gw.auth.enrolled(m.from))) return true end
        gw.auth.fail(m.from)
        return true
    end,
    call = function(c)
        if gw.auth.enrolled(c.from) then gw.output.on("gate", 1) else gw.call.reject() end
        return true
    end,
}"#;

impl Fixture {
    fn sms_kind(&mut self, from: &str, kind: SenderKind, text: &str, now: Instant) -> Dispatch {
        let sms = IncomingSms {
            id: 3,
            from: from.into(),
            text: text.into(),
            time: None,
            incomplete: false,
            sender_kind: kind,
        };
        self.host.dispatch_sms(&sms, now)
    }

    fn guesses(&mut self, from: &str, n: u64, start: u64) -> Vec<Dispatch> {
        (0..n)
            .map(|i| {
                let now = self.at(start + i);
                self.sms_kind(from, SenderKind::of(from), "OPEN guess", now)
            })
            .collect()
    }

    fn call_from(&mut self, from: &str, now: Instant) -> Dispatch {
        let call = Call {
            id: 5,
            from: Some(from.into()),
        };
        self.host.dispatch_call(&call, now)
    }
}

fn opened(d: &Dispatch) -> bool {
    d.commands
        .iter()
        .any(|c| matches!(c, Command::SetOutput { name, .. } if name == "gate"))
}

#[test]
fn every_sender_form_is_locked_out_by_its_fifth_failure_and_names_are_case_folded() {
    for (spelling_a, spelling_b) in [
        ("+447700900999", "07700 900999"),
        ("12345", "12345"),
        ("BankAlert", "BANKALERT"),
    ] {
        let mut f = Fixture::new();
        f.load("p", PLUGIN);
        for i in 0..4 {
            let from = if i % 2 == 0 { spelling_a } else { spelling_b };
            let d = f.sms_kind(from, SenderKind::of(from), "OPEN guess", f.at(i));
            assert!(d.events.is_empty(), "{from}: failure {i}");
        }
        let d = f.sms_kind(
            spelling_b,
            SenderKind::of(spelling_b),
            "OPEN guess",
            f.at(4),
        );
        assert!(
            matches!(d.events.as_slice(), [Event::Lockout { .. }]),
            "{spelling_a}: {:?}",
            d.events
        );
        // Now even the right password is ignored, in either spelling.
        let right = f.sms_kind(
            spelling_a,
            SenderKind::of(spelling_a),
            "OPEN secret",
            f.at(5),
        );
        assert!(!opened(&right), "{spelling_a}");
        assert!(f.host.is_locked_out(spelling_b, f.at(5)));
    }
}

#[test]
fn an_empty_sender_reaches_no_plugin_and_is_not_tracked() {
    let mut f = Fixture::new();
    f.load("p", PLUGIN);
    let d = f.sms_kind("", SenderKind::Empty, "OPEN secret", f.t0);
    assert!(!opened(&d));
    assert_eq!(d.handled_by, None);
}

#[test]
fn the_global_budget_suspends_unenrolled_senders_alerts_once_and_spares_enrolled_ones() {
    let mut f = Fixture::new();
    f.host.set_security_alerts(vec![ALERT.into()]);
    f.load("p", PLUGIN);
    f.sms(MASTER, "ENROL +447700900123");
    let mut spent = Vec::new();
    // Twenty senders, one failure each: nobody is locked, but the budget is spent.
    for i in 0..20u64 {
        let from = format!("+4477009010{i:02}");
        let d = f.sms_kind(&from, SenderKind::International, "OPEN guess", f.at(i));
        spent.extend(
            d.events
                .into_iter()
                .filter(|e| matches!(e, Event::Security(Security::BudgetSpent { .. }))),
        );
        if i == 19 {
            assert!(d.commands.iter().any(|c| matches!(c,
                Command::SendSms { to, text, .. } if to == ALERT && text.contains("20 wrong codes"))));
        }
    }
    assert_eq!(spent.len(), 1);
    // A fresh stranger with the right password is refused while it lasts …
    let stranger = f.sms_kind(
        "+447700902000",
        SenderKind::International,
        "OPEN secret",
        f.at(30),
    );
    assert!(!opened(&stranger));
    // … an enrolled number is not.
    let owner = f.sms_kind(MASTER, SenderKind::International, "OPEN secret", f.at(31));
    assert!(opened(&owner));
    // More failures in the same spell raise no second alert.
    let d = f.sms_kind(
        "+447700902001",
        SenderKind::International,
        "OPEN guess",
        f.at(32),
    );
    assert!(d.events.is_empty(), "{:?}", d.events);
    // After the window, strangers get their chance again.
    let later = f.sms_kind(
        "+447700902000",
        SenderKind::International,
        "OPEN secret",
        f.at(3600),
    );
    assert!(opened(&later));
}

#[test]
fn failures_claiming_an_enrolled_number_alert_and_never_close_its_dial_in() {
    let mut f = Fixture::new();
    f.host.set_security_alerts(vec![ALERT.into()]);
    f.load("p", PLUGIN);
    assert!(f
        .sms(MASTER, "ENROL +447700900123")
        .commands
        .contains(&send(MASTER, "true")));
    let campaign = f.guesses(MASTER, 5, 10);
    let last = &campaign[4];
    assert!(
        matches!(last.events.as_slice(), [Event::Security(Security::EnrolledTargeted { number, failures: 5, .. })] if number == MASTER),
        "{:?}",
        last.events
    );
    assert!(last.commands.iter().any(|c| matches!(c,
        Command::SendSms { to, text, .. } if to == ALERT && text.contains(MASTER))));
    // Not locked out: its SMS still reach the plugins (which see gw.auth.locked) …
    assert!(!f.host.is_locked_out(MASTER, f.at(20)));
    // … its coded SMS commands are suspended …
    assert!(!opened(&f.sms_kind(
        MASTER,
        SenderKind::International,
        "OPEN secret",
        f.at(20)
    )));
    // … and its caller ID still opens the gate.
    assert!(opened(&f.call_from(MASTER, f.at(21))));
    // Unlock lifts the suspension.
    let d = f.host.dispatch_event(
        &Event::UnlockRequest {
            number: "07700 900123".into(),
            by: "mqtt".into(),
        },
        f.at(22),
    );
    assert_eq!(
        d.events,
        vec![Event::Security(Security::Unlocked {
            number: MASTER.into(),
            by: "mqtt".into()
        })]
    );
    assert!(d.commands.contains(&Command::KvSet {
        scope: LOCKOUT_SCOPE.into(),
        key: MASTER.into(),
        value: None
    }));
    assert!(opened(&f.sms_kind(
        MASTER,
        SenderKind::International,
        "OPEN secret",
        f.at(23)
    )));
}

#[test]
fn a_locked_out_stranger_is_unlocked_by_request_and_by_a_store_resync() {
    let mut f = Fixture::new();
    f.load("p", PLUGIN);
    f.guesses("BANK", 5, 0);
    assert!(f.host.is_locked_out("bank", f.at(10)));
    f.host.dispatch_event(
        &Event::UnlockRequest {
            number: "Bank".into(),
            by: "cli".into(),
        },
        f.at(10),
    );
    assert!(!f.host.is_locked_out("BANK", f.at(10)));

    f.guesses("+447700900999", 5, 20);
    assert!(f.host.is_locked_out("+447700900999", f.at(30)));
    f.host.sync_lockouts(&BTreeMap::new(), f.at(30));
    assert!(!f.host.is_locked_out("+447700900999", f.at(30)));
}

#[test]
fn grants_need_a_real_number_and_are_audited_on_the_bus_and_in_the_store() {
    let mut f = Fixture::new();
    f.load("p", PLUGIN);
    let d = f.sms(MASTER, "ENROL 07700 900124");
    assert!(d.commands.contains(&send(MASTER, "true")));
    assert_eq!(
        d.events,
        vec![Event::Security(Security::Granted {
            script: "plugin:p".into(),
            number: "+447700900124".into(),
            role: "master".into()
        })]
    );
    assert!(d.commands.iter().any(|c| matches!(c,
        Command::KvSet { scope, key, value: Some(_) } if scope == ENROLMENT_SCOPE && key == "+447700900124")));
    // Granting again changes nothing and is not audited again.
    assert!(f.sms(MASTER, "ENROL +447700900124").events.is_empty());
    for bad in ["ENROL 12345", "ENROL VODAFONE", "ENROL "] {
        let d = f.sms(MASTER, bad);
        assert_eq!(d.commands, vec![send(MASTER, "false")], "{bad}");
        assert!(d.events.is_empty());
    }
    assert!(f.host.is_enrolled("07700900124"));
    let d = f.sms(MASTER, "DROP +447700900124");
    assert!(d.commands.contains(&send(MASTER, "true")));
    assert!(matches!(
        d.events.as_slice(),
        [Event::Security(Security::Revoked { role: None, .. })]
    ));
    assert!(!f.host.is_enrolled("+447700900124"));
}

#[test]
fn an_alphanumeric_sender_made_of_a_masters_digits_matches_nothing_and_gets_no_grant() {
    let mut f = Fixture::new();
    f.load("p", PLUGIN);
    f.sms(MASTER, "ENROL +447700900123");
    let spoof = "00900123";
    let d = f.sms_kind(spoof, SenderKind::Alphanumeric, "SAME +447700900123", f.t0);
    assert_eq!(d.commands, vec![send(spoof, "falsefalsefalse")]);
    let d = f.sms_kind(spoof, SenderKind::Alphanumeric, "ENROL 00900123", f.t0);
    assert_eq!(d.commands, vec![send(spoof, "false")]);
    // The same digits from a real (national) number do match on the last 8.
    let d = f.sms_kind(
        "07700900123",
        SenderKind::National,
        "SAME +447700900123",
        f.t0,
    );
    assert_eq!(d.commands, vec![send("07700900123", "truetruetrue")]);
}

#[test]
fn scripts_see_the_sender_kind() {
    let mut f = Fixture::new();
    f.load("p", PLUGIN);
    for (from, kind) in [
        (MASTER, SenderKind::International),
        ("07700900123", SenderKind::National),
        ("80080", SenderKind::Short),
        ("Bank", SenderKind::Alphanumeric),
    ] {
        let d = f.sms_kind(from, kind, "KIND", f.t0);
        assert_eq!(d.commands, vec![send(from, kind.as_str())]);
    }
}

#[test]
fn restored_grants_make_a_number_enrolled_before_any_plugin_runs() {
    let mut f = Fixture::new();
    let saved = BTreeMap::from([(MASTER.to_string(), r#"{"plugin:p":["master"]}"#.to_string())]);
    f.host.restore_enrolment(&saved);
    assert!(f.host.is_enrolled("07700 900123"));
}

#[test]
fn a_name_made_of_digits_is_locked_out_as_a_name_not_as_the_number_it_spells() {
    let mut f = Fixture::new();
    f.load("p", PLUGIN);
    for i in 0..5 {
        f.sms_kind(
            "0090012345",
            SenderKind::Alphanumeric,
            "OPEN guess",
            f.at(i),
        );
    }
    let d = f.sms_kind("0090012345", SenderKind::Alphanumeric, "KIND", f.at(6));
    assert_eq!(d.handled_by, None, "the name is locked out");
    // The number those digits would normalise to is someone else.
    let d = f.sms_kind("+90012345", SenderKind::International, "KIND", f.at(7));
    assert_eq!(d.commands, vec![send("+90012345", "international")]);
}
