//! David (`plugins/david.lua`) attacked: guessing the access code in every shape that carries
//! it, senders of every form, forwarding after dispatch, the credit check's USSD code, the
//! access code kept as a hash, and worst-case texts. The shapes are those
//! `docs/dialects/david.md` lists as carrying the access code.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use gsmgw::bus::{Call, Command, Event, IncomingSms, OutputAction, Security, SenderKind};
use gsmgw::config::LuaConfig;
use gsmgw::lua::{Dispatch, HostOptions, LuaHost, World};
use proptest::prelude::*;
use serde_json::{json, Value};

const CODE: &str = "K7";
const OWNER: &str = "+447700900001";
const SERVICE: &str = "+447700900002";
const SCOPE: &str = "plugin:david";
/// The dispatch order of `config/demo.toml`.
const ORDER: [&str; 4] = [
    "password_comma",
    "pword_installer",
    "david",
    "call_reject_conn",
];

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn plugin_path(name: &str) -> PathBuf {
    root().join("plugins").join(format!("{name}.lua"))
}

/// The instruction budget and caps the gateway ships with (`[lua]` defaults): a superlinear
/// parser runs out of them on a long text. The wall-clock deadline, a backstop that a test
/// machine shared by many builds can trip on its own, is set to its maximum.
fn host_options() -> HostOptions {
    let mut opts = HostOptions::from(&LuaConfig::default());
    opts.country_code = Some("44".into());
    opts.call_deadline_ms = 60_000;
    opts
}

fn david_config() -> Value {
    json!({"relay_x": "relay", "relay_y": "relay_y", "access_code": CODE, "status_text": "STATUS"})
}

/// What one SMS or call made the gateway do.
#[derive(Debug, Default, Clone, PartialEq)]
struct Seen {
    handled_by: Option<String>,
    credential_bearing: bool,
    /// `(to, text)` of every SMS sent.
    sms: Vec<(String, String)>,
    outputs: Vec<(String, bool)>,
    /// Changes of David's own data.
    store: Vec<(String, Option<String>)>,
    ussd: Vec<String>,
    /// Grants and revokes, as `granted <number> <role>` / `revoked <number> <role>`.
    audit: Vec<String>,
}

impl Seen {
    fn sent_to(&self, to: &str) -> Vec<&str> {
        self.sms
            .iter()
            .filter(|(t, _)| t == to)
            .map(|(_, text)| text.as_str())
            .collect()
    }
}

/// The Lua host with David (and optionally the other stock plugins in the demo order), a
/// fake clock and David's store as the gateway would keep it.
struct Rig {
    host: LuaHost,
    now: Instant,
    store: BTreeMap<String, String>,
    next_id: i64,
    /// What loading the plugins did.
    loaded: Seen,
}

impl Rig {
    fn david() -> Self {
        Self::with(&["david"], BTreeMap::new())
    }

    /// Every stock plugin, in the demo order, with the demo's factory passwords.
    fn all_dialects() -> Self {
        Self::with(&ORDER, BTreeMap::new())
    }

    fn with(plugins: &[&str], store: BTreeMap<String, String>) -> Self {
        let world = World {
            outputs: BTreeMap::from([("relay".into(), false), ("relay_y".into(), false)]),
            inputs: BTreeMap::from([("door".into(), false)]),
            ..World::default()
        };
        let mut host = LuaHost::new(host_options(), world);
        host.set_order(&plugins.iter().map(|p| p.to_string()).collect::<Vec<_>>());
        let now = Instant::now();
        let configs = BTreeMap::from([
            (
                "password_comma",
                json!({"relay1": "relay", "password": "1234"}),
            ),
            (
                "pword_installer",
                json!({"pword": "PROG", "installer_code": "7982"}),
            ),
            ("david", david_config()),
            (
                "call_reject_conn",
                json!({"relay": "relay", "master": "+447700900123"}),
            ),
        ]);
        let mut rig = Rig {
            host,
            now,
            store,
            next_id: 0,
            loaded: Seen::default(),
        };
        for name in plugins {
            let data = if *name == "david" {
                rig.store.clone()
            } else {
                BTreeMap::new()
            };
            let status =
                rig.host
                    .load_plugin(name, &plugin_path(name), &configs[name], data, rig.now);
            assert_eq!(status.error, None, "{name} must load");
        }
        let commands = rig.host.take_commands();
        let events = rig.host.take_events();
        rig.loaded = rig.apply(Dispatch {
            commands,
            events,
            ..Dispatch::default()
        });
        rig
    }

    fn sms(&mut self, from: &str, text: &str) -> Seen {
        self.next_id += 1;
        let sms = IncomingSms {
            id: self.next_id,
            from: from.to_string(),
            text: text.to_string(),
            time: None,
            incomplete: false,
            sender_kind: SenderKind::of(from),
        };
        let d = self.host.dispatch_sms(&sms, self.now);
        self.apply(d)
    }

    fn call(&mut self, from: &str) -> Seen {
        self.next_id += 1;
        let call = Call {
            id: self.next_id as u64,
            from: Some(from.to_string()),
        };
        let d = self.host.dispatch_call(&call, self.now);
        self.apply(d)
    }

    /// Moves the fake clock on and runs the timers that fall due.
    fn advance(&mut self, by: Duration) -> Seen {
        self.now += by;
        let d = self.host.handle_timeout(self.now);
        self.apply(d)
    }

    fn apply(&mut self, d: Dispatch) -> Seen {
        assert!(d.errors.is_empty(), "script errors: {:?}", d.errors);
        let mut seen = Seen {
            handled_by: d.handled_by.clone(),
            credential_bearing: d.credential_bearing,
            ..Seen::default()
        };
        for event in d.events {
            match event {
                Event::Security(Security::Granted { number, role, .. }) => {
                    seen.audit.push(format!("granted {number} {role}"))
                }
                Event::Security(Security::Revoked { number, role, .. }) => seen.audit.push(
                    format!("revoked {number} {}", role.as_deref().unwrap_or("*")),
                ),
                _ => {}
            }
        }
        for command in d.commands {
            match command {
                Command::SendSms { to, text, .. } => seen.sms.push((to, text)),
                Command::SetOutput { name, action } => {
                    let on = match action {
                        OutputAction::Set { on, .. } => on,
                        OutputAction::Toggle => true,
                    };
                    seen.outputs.push((name, on));
                }
                Command::KvSet { scope, key, value } if scope == SCOPE => {
                    match &value {
                        Some(v) => self.store.insert(key.clone(), v.clone()),
                        None => self.store.remove(&key),
                    };
                    seen.store.push((key, value));
                }
                Command::Ussd { code, .. } => seen.ussd.push(code),
                _ => {}
            }
        }
        seen
    }

    fn locked(&self, number: &str) -> bool {
        self.host.is_locked_out(number, self.now)
    }

    /// Programs David with the right code from the owner; the reply must be `PROGRAM OK`.
    fn program(&mut self, instructions: &str) {
        let seen = self.sms(OWNER, &format!("{CODE},{instructions}"));
        assert_eq!(seen.sent_to(OWNER), ["PROGRAM OK"], "{instructions}");
    }
}

// ---------------------------------------------------------------------------------------------
// Guessing the access code

/// A wrong access code: 2 to 8 characters, never the right one whatever the case.
fn wrong_code() -> impl Strategy<Value = String> {
    "[A-Za-z0-9#*+]{2,8}".prop_filter("not the access code", |c| !c.eq_ignore_ascii_case(CODE))
}

/// Everything that may follow the code: nothing, an instruction, junk.
fn after_code() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        Just("NPC,MINE".to_string()),
        Just("ARX,OPEN".to_string()),
        Just("ADX,+447700900666".to_string()),
        Just("STN,+447700900666".to_string()),
        Just("CRE,*100#,5".to_string()),
        Just("DIP,1111111".to_string()),
        "[ -~]{0,40}",
    ]
}

/// The shapes that carry the access code (docs/dialects/david.md): `<code>,`,
/// `<code>,<anything>`, either inside the `%…%%` wrapper, with spaces in the code.
fn code_shape(code: String, rest: String, variant: u8) -> String {
    match variant % 5 {
        0 => format!("{code},"),
        1 => format!("{code},{rest}"),
        2 => format!("1/1 www: %{code},{rest}%%"),
        3 => {
            let (a, b) = code.split_at(1);
            format!(" {a} {b} , {rest}")
        }
        _ => format!("{},{rest}", code.to_lowercase()),
    }
}

fn guess() -> impl Strategy<Value = String> {
    (wrong_code(), after_code(), any::<u8>()).prop_map(|(c, r, v)| code_shape(c, r, v))
}

/// What a sender can observe of a message it sent: answers to it, and any state change.
fn observable(seen: &Seen, sender: &str) -> (Vec<String>, Vec<(String, bool)>, usize) {
    let answers = seen.sent_to(sender).iter().map(|s| s.to_string()).collect();
    (answers, seen.outputs.clone(), seen.store.len())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// Five wrong guesses in any of the credential-bearing shapes lock the sender out; before
    /// that, each one looks exactly like a message David does not know, and is never forwarded.
    #[test]
    fn guesses_in_every_code_shape_lock_out_by_the_fifth_with_no_oracle_before(
        guesses in proptest::collection::vec(guess(), 5),
        sender in "\\+4479[0-9]{8}",
    ) {
        let mut rig = Rig::david();
        rig.program(&format!("STN,{SERVICE},DIP,1000000,ARX,HEATING ON"));
        let unknown = rig.sms("+447700900555", "no such command here");
        for (n, text) in guesses.iter().enumerate() {
            prop_assert!(!rig.locked(&sender), "locked before guess {} ({text:?})", n + 1);
            let seen = rig.sms(&sender, text);
            prop_assert_eq!(
                observable(&seen, &sender),
                observable(&unknown, "+447700900555"),
                "guess {} {:?} differs from an unknown message", n + 1, text
            );
            prop_assert!(seen.sms.is_empty(), "{text:?} sent {:?}", seen.sms);
            prop_assert!(seen.credential_bearing, "{text:?} not marked credential-bearing");
        }
        prop_assert!(rig.locked(&sender), "not locked after five guesses: {guesses:?}");
        let right = rig.sms(&sender, &format!("{CODE},ARX,MINE"));
        prop_assert!(right.sms.is_empty() && right.store.is_empty(), "locked sender served: {right:?}");
    }
}

#[test]
fn unknown_messages_are_forwarded_but_never_count_as_guesses() {
    let mut rig = Rig::david();
    rig.program(&format!("STN,{SERVICE},DIP,1000000,ARX,HEATING ON,DRX,OFF"));
    let stranger = "+447700900555";
    for text in [
        "no such command here",
        "HEATING ON, HEATING OFF",
        "heating on, off",
        "Hello there, how are you today",
        "a,b",
        ",connect#",
    ] {
        rig.sms(stranger, text);
    }
    assert!(!rig.locked(stranger));
    assert_eq!(
        rig.sms(stranger, "no such command here").sent_to(SERVICE),
        [format!("{stranger}: no such command here")]
    );
}

#[test]
fn the_right_code_is_accepted_in_every_shape_that_counts_a_wrong_one() {
    let mut rig = Rig::david();
    for text in [
        format!("{CODE},"),
        format!("{CODE},ARX,OPEN"),
        format!("1/1 www: %{CODE},ARX,OPEN%%"),
        " k 7 , arx , open".to_string(),
    ] {
        assert_eq!(
            rig.sms(OWNER, &text).sent_to(OWNER),
            ["PROGRAM OK"],
            "{text}"
        );
    }
    let error = rig.sms(OWNER, &format!("{CODE},hello"));
    assert_eq!(error.sent_to(OWNER), ["PROGRAM ERROR hello"]);
    assert!(error.credential_bearing, "the code is marked secret");
}

#[test]
fn alphanumeric_and_short_code_senders_are_locked_out_too() {
    let mut rig = Rig::david();
    for sender in ["BANK", "12345"] {
        for n in 0..5 {
            let name = if n % 2 == 0 {
                sender.to_string()
            } else {
                sender.to_lowercase()
            };
            rig.sms(&name, "XY,NPC,MINE");
        }
        assert!(rig.locked(sender), "{sender} not locked");
        assert!(rig.locked(&sender.to_lowercase()), "{sender} case-folded");
    }
}

#[test]
fn an_empty_sender_gets_nothing_even_with_the_right_code() {
    let mut rig = Rig::david();
    let seen = rig.sms("", &format!("{CODE},ARX,OPEN"));
    assert_eq!(seen.sms, vec![]);
    assert_eq!(seen.store, vec![]);
}

#[test]
fn number_lists_take_only_real_numbers() {
    let mut rig = Rig::david();
    for text in [
        "ADX,BANK",
        "ADY,12345",
        "STN,BANK",
        "LDX,12345,2",
        "STN,VODAFONE",
    ] {
        let seen = rig.sms(OWNER, &format!("{CODE},{text}"));
        assert_eq!(
            seen.sent_to(OWNER),
            [format!("PROGRAM ERROR {text}")],
            "{text}"
        );
        assert!(
            !seen
                .store
                .iter()
                .any(|(k, _)| k == "adx" || k == "ady" || k == "stn"),
            "{text} changed a list: {:?}",
            seen.store
        );
    }
}

#[test]
fn every_change_of_a_number_list_is_an_audited_grant_or_revoke() {
    let mut rig = Rig::david();
    let steps: [(&str, &[&str]); 7] = [
        ("ADX,+447700900111", &["granted +447700900111 dial_x"]),
        ("ADY,07700900111", &["granted +447700900111 dial_y"]),
        ("LDX,+447700900222,1", &["granted +447700900222 dial_x"]),
        ("EDX,+447700900111", &["revoked +447700900111 dial_x"]),
        ("STN,+447700900333", &["granted +447700900333 service"]),
        (
            "STN,+447700900444",
            &[
                "granted +447700900444 service",
                "revoked +447700900333 service",
            ],
        ),
        ("STN,", &["revoked +447700900444 service"]),
    ];
    for (instructions, audit) in steps {
        let seen = rig.sms(OWNER, &format!("{CODE},{instructions}"));
        assert_eq!(seen.sent_to(OWNER), ["PROGRAM OK"], "{instructions}");
        assert_eq!(seen.audit, audit, "{instructions}");
    }
    assert!(!rig.store.contains_key("stn"), "STN, erases the list");
    let used_up = rig.call("+447700900222");
    assert_eq!(used_up.audit, ["revoked +447700900222 dial_x"]);
}

#[test]
fn a_refused_number_takes_back_what_its_instruction_granted() {
    let mut rig = Rig::david();
    let seen = rig.sms(OWNER, &format!("{CODE},ADX,+447700900555,12345"));
    assert_eq!(
        seen.sent_to(OWNER),
        ["PROGRAM ERROR ADX,+447700900555,12345"]
    );
    assert_eq!(
        seen.audit,
        [
            "granted +447700900555 dial_x",
            "revoked +447700900555 dial_x"
        ]
    );
    assert_eq!(rig.call("+447700900555").handled_by, None);
}

#[test]
fn numbers_listed_by_an_older_version_are_granted_once_at_start() {
    let store = BTreeMap::from([
        (
            "adx".to_string(),
            json!([{"n": "+447700900111"}]).to_string(),
        ),
        ("stn".to_string(), json!(["+447700900333"]).to_string()),
    ]);
    let rig = Rig::with(&["david"], store);
    assert_eq!(
        rig.loaded.audit,
        [
            "granted +447700900111 dial_x",
            "granted +447700900333 service"
        ]
    );
    let again = Rig::with(&["david"], rig.store.clone());
    assert_eq!(again.loaded.audit, Vec::<String>::new());
}

#[test]
fn withheld_and_alphanumeric_callers_never_match_a_list() {
    let mut rig = Rig::david();
    rig.program("ADX,+447700900123");
    for from in ["", "anonymous", "BANK447700900123"] {
        let seen = rig.call(from);
        assert_eq!(seen.handled_by, None, "{from:?}");
        assert!(seen.outputs.is_empty(), "{from:?}");
    }
    assert_eq!(
        rig.call("+447700900123").handled_by.as_deref(),
        Some("david")
    );
}

// ---------------------------------------------------------------------------------------------
// Forwarding after dispatch

#[test]
fn other_dialects_commands_are_never_forwarded_right_or_wrong() {
    let mut rig = Rig::all_dialects();
    rig.program(&format!("STN,{SERVICE},DIP,1010000"));
    let stranger = "+447700900555";
    for text in [
        "1234,status#",
        "9999,status#",
        "9999,whatever#",
        "1234,pwd=5678#",
        "PROG 7982 MODE:A",
        "prog 1111 MODE:A",
    ] {
        let seen = rig.sms(stranger, text);
        assert!(
            seen.sent_to(SERVICE).is_empty(),
            "{text:?} was forwarded: {:?}",
            seen.sms
        );
    }
}

#[test]
fn an_unhandled_plain_message_is_forwarded_after_every_dialect_passed() {
    let mut rig = Rig::all_dialects();
    rig.program(&format!("STN,{SERVICE},DIP,1000000"));
    let seen = rig.sms("+447700900555", "The parcel is at the door");
    assert_eq!(seen.handled_by, None);
    assert_eq!(
        seen.sent_to(SERVICE),
        ["+447700900555: The parcel is at the door"]
    );
}

#[test]
fn a_handled_operational_text_is_not_forwarded_even_with_dip_c() {
    let mut rig = Rig::david();
    rig.program(&format!("STN,{SERVICE},DIP,0010000,ARX,HEATING ON"));
    let seen = rig.sms("+447700900555", "heating on");
    assert_eq!(seen.handled_by.as_deref(), Some("david"));
    assert_eq!(seen.sent_to(SERVICE), Vec::<&str>::new());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    /// Whatever password another dialect's command carries, it never reaches the service
    /// numbers.
    #[test]
    fn no_password_of_another_dialect_is_ever_forwarded(
        password in "[0-9]{4}",
        command in prop_oneof![
            Just("status#"), Just("r1=on#"), Just("connect#"), Just("arm#"), Just("foo#"), Just(""),
        ],
    ) {
        let mut rig = Rig::all_dialects();
        rig.program(&format!("STN,{SERVICE},DIP,1010000"));
        let seen = rig.sms("+447700900555", &format!("{password},{command}"));
        prop_assert!(seen.sent_to(SERVICE).is_empty(), "forwarded: {:?}", seen.sms);
    }
}

// ---------------------------------------------------------------------------------------------
// The credit check

#[test]
fn cre_with_a_non_balance_ussd_code_is_refused_and_never_sent() {
    let mut rig = Rig::david();
    rig.program(&format!("STN,{SERVICE}"));
    for code in [
        "*123*07700900999*10#",
        "*100*1#",
        "**21*07700900999#",
        "*#06#1",
        "100",
        // Balance-shaped, but not on the gateway's `sms.ussd_allow` list.
        "*123#",
    ] {
        let seen = rig.sms(OWNER, &format!("{CODE},CRE,{code},50"));
        assert_eq!(
            seen.sent_to(OWNER),
            [format!("PROGRAM ERROR CRE,{code},50")],
            "{code}"
        );
        assert!(!rig.store.contains_key("cre"), "{code} stored");
    }
    assert_eq!(
        rig.advance(Duration::from_secs(2 * 24 * 3600)).ussd,
        Vec::<String>::new()
    );
    rig.program("CRE,*100#,50");
    assert_eq!(rig.advance(Duration::from_secs(24 * 3600)).ussd, ["*100#"]);
}

#[test]
fn a_stored_code_no_longer_on_the_allow_list_is_never_sent() {
    let store = BTreeMap::from([(
        "cre".to_string(),
        json!({"code": "*555#", "limit": 5}).to_string(),
    )]);
    let mut rig = Rig::with(&["david"], store);
    assert_eq!(
        rig.advance(Duration::from_secs(3 * 24 * 3600)).ussd,
        Vec::<String>::new()
    );
}

#[test]
fn a_transfer_code_stored_by_an_older_version_is_never_sent() {
    let store = BTreeMap::from([(
        "cre".to_string(),
        json!({"code": "*123*07700900999*10#", "limit": 5}).to_string(),
    )]);
    let mut rig = Rig::with(&["david"], store);
    assert_eq!(
        rig.advance(Duration::from_secs(3 * 24 * 3600)).ussd,
        Vec::<String>::new()
    );
}

// ---------------------------------------------------------------------------------------------
// The access code at rest

#[test]
fn a_new_access_code_is_stored_hashed_and_marked_secret() {
    let mut rig = Rig::david();
    let seen = rig.sms(OWNER, &format!("{CODE},NPC,Nu8q"));
    assert_eq!(seen.sent_to(OWNER), ["PROGRAM OK"]);
    assert!(seen.credential_bearing);
    let stored = format!("{:?}", rig.store);
    for secret in ["Nu8q", "NU8Q", "nu8q"] {
        assert!(!stored.contains(secret), "{secret} in the store: {stored}");
    }
    assert!(rig.sms(OWNER, &format!("{CODE},TMX,1")).sms.is_empty());
    assert_eq!(rig.sms(OWNER, "nu8q,TMX,1").sent_to(OWNER), ["PROGRAM OK"]);
}

#[test]
fn a_clear_code_stored_by_an_older_version_becomes_a_hash() {
    let store = BTreeMap::from([("code".to_string(), json!("OLD1").to_string())]);
    let mut rig = Rig::with(&["david"], store);
    assert!(!rig.store.contains_key("code"));
    assert!(!format!("{:?}", rig.store).contains("OLD1"));
    assert_eq!(rig.sms(OWNER, "old1,TMX,1").sent_to(OWNER), ["PROGRAM OK"]);
}

// ---------------------------------------------------------------------------------------------
// Worst-case texts and amplification

/// 39 000 characters, the longest concatenated SMS, in the shapes that would make a careless
/// parser quadratic or a careless answerer loud.
fn worst_cases() -> Vec<(&'static str, String)> {
    const N: usize = 39_000;
    let fill = |unit: &str, prefix: &str| {
        let mut s = prefix.to_string();
        while s.len() < N {
            s.push_str(unit);
        }
        s.truncate(N);
        s
    };
    vec![
        ("spaces", fill(" ", "")),
        ("spaces after the code", fill(" ", &format!("{CODE},ARX,"))),
        ("commas after the code", fill(",", &format!("{CODE},"))),
        ("numbers", fill(",+447700900123", &format!("{CODE},ADX"))),
        ("percent signs", fill("%", "")),
        ("status repeated", fill("STATUS,", "")),
        ("guess", fill("a", "ZZ,")),
        ("commas", fill(",", "")),
    ]
}

#[test]
fn worst_case_texts_run_within_the_budget_and_answer_at_most_once() {
    for (name, text) in worst_cases() {
        let mut rig = Rig::david();
        // The whole text, not the host's 1 600-character cut: the plugin itself must be linear.
        rig.host.set_plugin_text_limit(text.len());
        // `apply` fails the test on any script error, an exhausted budget included.
        let seen = rig.sms(OWNER, &text);
        assert!(seen.sms.len() <= 1, "{name}: {} answers", seen.sms.len());
        if let Some((_, answer)) = seen.sms.first() {
            assert!(
                answer.chars().count() <= 160,
                "{name}: a {} character answer",
                answer.len()
            );
        }
    }
}

#[test]
fn a_long_programming_sms_writes_each_setting_once() {
    let mut rig = Rig::david();
    let mut text = CODE.to_string();
    for n in 0..150 {
        text.push_str(&format!(",ARX,T{n}"));
    }
    text.push_str(",ADX,+447700900111,ADY,+447700900111");
    let seen = rig.sms(OWNER, &text);
    assert_eq!(seen.sent_to(OWNER), ["PROGRAM OK"]);
    let keys: Vec<&str> = seen.store.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(keys, ["adx", "ady", "arx"]);
    assert_eq!(
        rig.sms("+447700900555", "t149").handled_by.as_deref(),
        Some("david")
    );
}
