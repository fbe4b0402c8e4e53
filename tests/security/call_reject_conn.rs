//! CALL/REJECT/CONN from the attacker's side (issue 11, docs/security.md "CALL/REJECT/CONN"),
//! on the real Lua host with the stock plugin:
//! - the only credential is the IMEI code of `MASTER n,code`; every shape of it with a wrong
//!   value counts one failure, the fifth locks the sender out, and nothing a stranger can see
//!   tells a right code from a wrong one while a master exists;
//! - the IMEI enrolment works only while no master exists, and is published as a grant;
//! - alphanumeric sender IDs (whatever their characters) and short codes are never a master or
//!   a user, and are locked out like numbers;
//! - a campaign of wrong codes "from" an enrolled master raises an alert and never takes its
//!   caller-ID authority (SMS commands, dial-in) away;
//! - the gateway-wide budget stops the IMEI path for strangers once spent.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use gsmgw::bus::{Call, Command, Event, IncomingSms, ModemStatus, Security, SenderKind};
use gsmgw::lua::{Dispatch, HostOptions, LockoutPolicy, LuaHost, World};
use proptest::prelude::*;
use serde_json::json;

const IMEI: &str = "356938035643809";
const CODE: &str = "43809";
const MASTER: &str = "+447700900001";
const ALERT: &str = "+447700900555";

struct Crc {
    host: LuaHost,
    t0: Instant,
    next_id: i64,
}

impl Crc {
    /// The plugin with `master` in its config (or none), relay `relay`, input `door`.
    fn new(master: Option<&str>) -> Crc {
        let opts = HostOptions {
            memory_limit_kb: 16 * 1024,
            instruction_limit: 10_000_000,
            country_code: Some("44".into()),
            ..HostOptions::default()
        };
        let world = World {
            outputs: BTreeMap::from([("relay".to_string(), false)]),
            inputs: BTreeMap::from([("door".to_string(), false)]),
            modem: ModemStatus {
                imei: Some(IMEI.into()),
                ready: true,
                ..ModemStatus::default()
            },
            ..World::default()
        };
        let mut host = LuaHost::new(opts, world);
        host.set_lockout_policy(LockoutPolicy::default());
        host.set_security_alerts(vec![ALERT.into()]);
        let mut config = json!({"relay": "relay", "input": "door"});
        if let Some(m) = master {
            config["master"] = json!(m);
        }
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("plugins/call_reject_conn.lua");
        let t0 = Instant::now();
        let status = host.load_plugin("call_reject_conn", &path, &config, BTreeMap::new(), t0);
        assert_eq!(status.error, None);
        host.take_commands();
        host.take_events();
        Crc {
            host,
            t0,
            next_id: 0,
        }
    }

    fn at(&self, secs: u64) -> Instant {
        self.t0 + Duration::from_secs(secs)
    }

    fn sms(&mut self, from: &str, kind: SenderKind, text: &str, secs: u64) -> Dispatch {
        self.next_id += 1;
        let sms = IncomingSms {
            id: self.next_id,
            from: from.into(),
            text: text.into(),
            time: None,
            incomplete: false,
            sender_kind: kind,
        };
        let now = self.at(secs);
        self.host.dispatch_sms(&sms, now)
    }

    fn call(&mut self, from: &str, secs: u64) -> Dispatch {
        let call = Call {
            id: 1000 + secs,
            from: Some(from.into()),
        };
        let now = self.at(secs);
        self.host.dispatch_call(&call, now)
    }

    fn is_master(&mut self, number: &str, secs: u64) -> bool {
        let d = self.sms(number, SenderKind::International, "STATUS", secs);
        !replies(&d).is_empty()
    }
}

fn replies(d: &Dispatch) -> Vec<(String, String)> {
    d.commands
        .iter()
        .filter_map(|c| match c {
            Command::SendSms { to, text, .. } => Some((to.clone(), text.clone())),
            _ => None,
        })
        .collect()
}

fn relay_switched(d: &Dispatch) -> bool {
    d.commands
        .iter()
        .any(|c| matches!(c, Command::SetOutput { name, .. } if name == "relay"))
}

/// What a stranger could observe, or what would change for the gateway: replies, outputs,
/// settings (plugin data), grants. The host's own lock-out record is left out: it is what
/// counting a failure means.
fn visible(d: &Dispatch) -> Vec<String> {
    let commands = d.commands.iter().filter_map(|c| match c {
        Command::KvSet { scope, .. } if scope == gsmgw::lua::LOCKOUT_SCOPE => None,
        other => Some(format!("{other:?}")),
    });
    let events = d.events.iter().filter_map(|e| match e {
        Event::Lockout { .. } => None,
        other => Some(format!("{other:?}")),
    });
    commands.chain(events).collect()
}

fn locked_out(d: &Dispatch) -> bool {
    d.events.iter().any(|e| matches!(e, Event::Lockout { .. }))
}

/// A wrong IMEI code: five digits other than the right ones, or anything else.
fn wrong_code() -> impl Strategy<Value = String> {
    prop_oneof![
        "[0-9]{5}".prop_filter("not the code", |c| c != CODE),
        "[0-9]{1,4}",
        "[0-9]{6,9}",
        "[A-Za-z0-9 #*]{0,8}".prop_filter("not the code", |c| c.trim() != CODE),
    ]
}

/// Every shape of `MASTER n,code`: case, spacing, a full stop, with or without a valid number.
fn credential_shape(code: String) -> impl Strategy<Value = String> {
    (
        prop_oneof![Just("MASTER"), Just("master"), Just("Master")],
        prop_oneof![
            Just("+447700900999".to_string()),
            Just("07700900999".to_string()),
            Just("".to_string()),
            "[0-9]{3,12}",
            "[A-Z]{1,5}",
        ],
        prop_oneof![Just(""), Just(".")],
        prop_oneof![Just(" "), Just("  ")],
    )
        .prop_map(move |(word, number, dot, space)| format!("{word}{space}{number},{code}{dot}"))
}

fn guess() -> impl Strategy<Value = String> {
    wrong_code().prop_flat_map(credential_shape)
}

fn stranger() -> impl Strategy<Value = (String, SenderKind)> {
    prop_oneof![
        "\\+4477009[0-9]{5}".prop_map(|n| (n, SenderKind::International)),
        "07[0-9]{9}".prop_map(|n| (n, SenderKind::National)),
        "[0-9]{3,6}".prop_map(|n| (n, SenderKind::Short)),
        "[A-Za-z][A-Za-z0-9]{2,10}".prop_map(|n| (n, SenderKind::Alphanumeric)),
        // A name made of a master's last digits, sent as an alphanumeric ID.
        Just(("00900001".to_string(), SenderKind::Alphanumeric)),
    ]
    .prop_filter("not the master", |(n, _)| n != MASTER && n != "07700900001")
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn wrong_codes_in_every_shape_lock_a_stranger_out_by_the_fifth_with_no_oracle(
        guesses in proptest::collection::vec(guess(), 5),
        (from, kind) in stranger(),
        with_master in any::<bool>(),
    ) {
        let mut crc = Crc::new(with_master.then_some(MASTER));
        for (i, text) in guesses.iter().enumerate() {
            let d = crc.sms(&from, kind, text, i as u64);
            prop_assert_eq!(d.handled_by.as_deref(), Some("call_reject_conn"), "{}", text);
            prop_assert!(visible(&d).is_empty(), "{:?} gave {:?}", text, visible(&d));
            prop_assert_eq!(locked_out(&d), i == 4, "failure {} of {:?}", i + 1, text);
        }
        // Locked out: even the right code from it is ignored now.
        let right = format!("MASTER {from},{CODE}");
        let d = crc.sms(&from, kind, &right, 10);
        prop_assert_eq!(d.handled_by, None);
        prop_assert!(!crc.is_master("+447700900999", 11));
    }

    #[test]
    fn while_a_master_exists_a_right_code_looks_exactly_like_a_wrong_one(
        text in guess(),
        (from, kind) in stranger(),
    ) {
        let mut right_host = Crc::new(Some(MASTER));
        let mut wrong_host = Crc::new(Some(MASTER));
        let right = format!("MASTER {from},{CODE}");
        let r = right_host.sms(&from, kind, &right, 0);
        let w = wrong_host.sms(&from, kind, &text, 0);
        prop_assert_eq!(visible(&r), visible(&w));
        prop_assert!(visible(&r).is_empty());
        prop_assert_eq!(r.handled_by, w.handled_by);
        // Both counted: five of either lock out.
        for i in 1..5 {
            let r = right_host.sms(&from, kind, &right, i);
            let w = wrong_host.sms(&from, kind, &text, i);
            prop_assert_eq!(locked_out(&r), i == 4);
            prop_assert_eq!(locked_out(&w), i == 4);
        }
    }

    #[test]
    fn alphanumeric_and_short_senders_are_never_masters_or_users(
        (from, kind) in stranger().prop_filter("not a number", |(_, k)| !k.is_real_number()),
        command in prop_oneof![Just("STATUS"), Just("LIST"), Just("OPEN"), Just("CALL ANY"),
            Just("ADD +447700900777"), Just("MASTER +447700900777")],
    ) {
        let mut crc = Crc::new(Some(MASTER));
        // Its characters may be the master's, even the whole number.
        for text in [command, "STATUS"] {
            let d = crc.sms(&from, kind, text, 0);
            prop_assert!(visible(&d).is_empty(), "{:?} from {:?}: {:?}", text, from, visible(&d));
            prop_assert!(!relay_switched(&d));
        }
        let d = crc.sms("00900001", SenderKind::Alphanumeric, "OPEN", 1);
        prop_assert!(!relay_switched(&d));
    }
}

#[test]
fn the_imei_enrols_the_first_master_only_and_the_grant_is_published() {
    let mut crc = Crc::new(None);
    let d = crc.sms(
        "+447700900777",
        SenderKind::International,
        &format!("MASTER +447700900777,{CODE}"),
        0,
    );
    assert!(replies(&d).is_empty(), "no reply while TEXTRES is off");
    assert!(d.events.contains(&Event::Security(Security::Granted {
        script: "plugin:call_reject_conn".into(),
        number: "+447700900777".into(),
        role: "master".into(),
    })));
    assert!(crc.is_master("+447700900777", 1));
    assert!(crc.host.is_enrolled("+447700900777"));

    // Now the path is closed: a second stranger with the right code gets nothing, and it
    // counts as a failure.
    for i in 0..5 {
        let d = crc.sms(
            "+447700900888",
            SenderKind::International,
            &format!("MASTER +447700900888,{CODE}"),
            2 + i,
        );
        assert!(visible(&d).is_empty(), "{:?}", visible(&d));
        assert_eq!(locked_out(&d), i == 4);
    }
    assert!(!crc.is_master("+447700900888", 10));
}

#[test]
fn the_configured_master_is_recorded_as_enrolled_at_load() {
    let crc = Crc::new(Some("07700 900001"));
    assert!(crc.host.is_enrolled(MASTER));
}

#[test]
fn a_campaign_against_the_enrolled_master_alerts_and_leaves_its_caller_id_authority() {
    let mut crc = Crc::new(Some(MASTER));
    crc.sms(MASTER, SenderKind::International, "ADD +447700900123", 0);
    let mut targeted = Vec::new();
    for i in 0..5 {
        // Spoofed: the attacker's SMS carry the master's number.
        let d = crc.sms(
            MASTER,
            SenderKind::International,
            "MASTER +447700900999,11111",
            1 + i,
        );
        targeted.extend(d.events.iter().filter_map(|e| match e {
            Event::Security(Security::EnrolledTargeted { number, .. }) => Some(number.clone()),
            _ => None,
        }));
        if i == 4 {
            assert!(replies(&d)
                .iter()
                .any(|(to, text)| to == ALERT && text.contains(MASTER)));
        }
        assert!(!locked_out(&d));
    }
    assert_eq!(targeted, vec![MASTER.to_string()]);
    // Its SMS commands (authority by caller ID) still work …
    let d = crc.sms(MASTER, SenderKind::International, "STATUS", 10);
    assert_eq!(
        replies(&d),
        vec![(MASTER.to_string(), "RELAY OPEN INPUT LOW".to_string())]
    );
    assert!(relay_switched(&crc.sms(
        MASTER,
        SenderKind::International,
        "OPEN",
        11
    )));
    // … and so does dial-in, for the master and its users.
    assert!(relay_switched(&crc.call(MASTER, 20)));
    assert!(relay_switched(&crc.call("+447700900123", 30)));
}

#[test]
fn the_global_budget_closes_the_imei_path_to_strangers_until_the_window_has_passed() {
    let mut crc = Crc::new(None);
    let mut spent = 0;
    for i in 0..20u64 {
        let from = format!("+4477009011{i:02}");
        let d = crc.sms(
            &from,
            SenderKind::International,
            "MASTER +447700900999,00000",
            i,
        );
        spent += d
            .events
            .iter()
            .filter(|e| matches!(e, Event::Security(Security::BudgetSpent { .. })))
            .count();
        if i == 19 {
            assert!(replies(&d).iter().any(|(to, _)| to == ALERT));
        }
    }
    assert_eq!(spent, 1);
    // A fresh stranger with the right code is not even checked while the budget is spent.
    let right = format!("MASTER +447700900777,{CODE}");
    let d = crc.sms("+447700900777", SenderKind::International, &right, 30);
    assert!(visible(&d).is_empty());
    assert!(!crc.host.is_enrolled("+447700900777"));
    // After the window, the owner can enrol the first master.
    let d = crc.sms("+447700900777", SenderKind::International, &right, 3600);
    assert!(d
        .events
        .iter()
        .any(|e| matches!(e, Event::Security(Security::Granted { .. }))));
}

#[test]
fn a_masters_wrong_code_is_operation_failed_and_counts() {
    let mut crc = Crc::new(Some(MASTER));
    crc.sms(MASTER, SenderKind::International, "TEXTRES ENABLE", 0);
    let d = crc.sms(
        MASTER,
        SenderKind::International,
        "MASTER +447700900999,12345",
        1,
    );
    assert_eq!(
        replies(&d),
        vec![(MASTER.to_string(), "Operation Failed".to_string())]
    );
    let d = crc.sms(
        MASTER,
        SenderKind::International,
        &format!("MASTER +447700900999,{CODE}"),
        2,
    );
    assert_eq!(
        replies(&d),
        vec![(MASTER.to_string(), "Operation Successful".to_string())]
    );
}
