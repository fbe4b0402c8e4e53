//! All the dialect plugins in `plugins/` loaded together, as the demo config loads them, and
//! fed hostile SMS: random bytes, huge concatenations, punctuation runs, Unicode look-alikes
//! of command words, and each dialect's real commands with mutations — 10 000 texts from a
//! seeded RNG, so a failure reproduces. Nothing may raise a Lua error, answer a stranger, or
//! change a setting for a stranger.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use gsmgw::bus::{Command, IncomingSms};
use gsmgw::lua::{Dispatch, HostOptions, LuaHost, World};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

const SEED: u64 = 0x5eed_d1a1;
const TEXTS: usize = 10_000;

/// Dispatch order, as in `config/demo.toml`.
const ORDER: [&str; 4] = [
    "password_comma",
    "pword_installer",
    "david",
    "call_reject_conn",
];

/// Secrets the generator never produces, so every credential it sends is wrong.
fn secret_overrides() -> BTreeMap<&'static str, Value> {
    BTreeMap::from([
        (
            "password_comma",
            json!({"password": "Sx91-pc", "installer_password": "Qz77-in"}),
        ),
        (
            "pword_installer",
            json!({"pword": "SECRETPW", "installer_code": "864209"}),
        ),
        ("david", json!({"access_code": "ZQ"})),
    ])
}

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The `[plugins.*]` sections of the demo config.
fn demo_plugin_configs() -> BTreeMap<String, Value> {
    let text = std::fs::read_to_string(root().join("config/demo.toml")).unwrap();
    let doc: toml::Value = toml::from_str(&text).unwrap();
    let json = serde_json::to_value(doc).unwrap();
    json.get("plugins")
        .and_then(Value::as_object)
        .map(|o| o.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
        .unwrap_or_default()
}

fn host_options() -> HostOptions {
    HostOptions {
        memory_limit_kb: 16 * 1024,
        instruction_limit: 10_000_000,
        country_code: Some("44".into()),
        ..HostOptions::default()
    }
}

fn demo_world() -> World {
    World {
        outputs: BTreeMap::from([("relay".to_string(), false)]),
        inputs: BTreeMap::from([("door".to_string(), false)]),
        ..World::default()
    }
}

/// The plugins that exist, in dispatch order, each with its config (copies in `dir`).
fn load_all(configs: &BTreeMap<String, Value>) -> LuaHost {
    let mut host = LuaHost::new(host_options(), demo_world());
    host.set_order(&ORDER.map(String::from));
    let now = Instant::now();
    for name in ORDER {
        let path = plugin_path(name);
        let config = configs.get(name).cloned().unwrap_or(Value::Null);
        let status = host.load_plugin(name, &path, &config, BTreeMap::new(), now);
        assert_eq!(status.error, None, "{name} must load");
    }
    host.take_commands();
    host
}

fn plugin_path(name: &str) -> PathBuf {
    root().join("plugins").join(format!("{name}.lua"))
}

/// Real commands of every dialect, with the factory credentials (which the hostile configs
/// have changed) and without any.
const REAL_COMMANDS: &[&str] = &[
    "1234,connect#",
    "1234,status#",
    "1234,arm#",
    "1234,disarm#",
    "1234,r1=on#",
    "1234,r1=on30#",
    "1234,r1=off#",
    "1234,pwd=abcd#",
    ",connect#",
    "connect#",
    "PROG 7982 USRS:1,1234,JOHN,1",
    "PROG 7982 USRS:1,1234,,1",
    "PROG 1234 MODE:A",
    "PROG 7982 MOD?:",
    "PROG 7982 USRD:2",
    "PROG 7982 PIN?:",
    "PROG 7982 RPEX:1,0,+447700900555",
    "PROG 7982 GAPN:internet,user,pass",
    "PROG 7982 PWRD:NEWPW",
    "PROG 7982 INST:1111",
    "PROG 7982 ECHO:",
    "PC,ARX,HEATING ON,DRX,HEATING OFF,TMX,0",
    "PC,NPC,AB",
    "PC,ADX,+420777123456",
    "PC,STN,+447700900555",
    "PC,DIP,1111111",
    "1/1 www: %heating on%%",
    "MASTER +447700900999,12345",
    "ADD +447700900999",
    "CALL ANY",
    "MUSER ENABLE",
    "TEXTRES ENABLE",
    "CLEAR ALL",
    "OPEN",
    "ON 10s",
    "LIST",
];

/// Look-alikes that a careless `upper()` or pattern might take for the real letters.
const LOOKALIKES: &[(char, char)] = &[
    ('O', 'О'), // Cyrillic
    ('P', 'Р'),
    ('C', 'С'),
    ('A', 'А'),
    ('E', 'Е'),
    ('o', 'ο'), // Greek
    (',', '，'),
    ('#', '＃'),
    (':', '：'),
    ('1', '１'),
    (' ', '\u{00a0}'),
    ('S', 'Ｓ'),
];

const NOISE: &[&str] = &[
    ",", "#", ":", " ", "%", "%%", "=", "?", "\0", "\n", "\r\n", "\u{1b}", "+", "0", "9", "é", "ß",
    "İ", "🙂", "\u{200b}", "\u{feff}", "\u{fffd}", "(", ")", "[", "%d", "%s", ".*",
];

fn random_noise(rng: &mut StdRng) -> String {
    let len = rng.gen_range(0..200);
    (0..len)
        .map(|_| match rng.gen_range(0..4) {
            0 => char::from(rng.gen_range(0u8..=127)),
            1 => char::from_u32(rng.gen_range(0x80..0x3000)).unwrap_or('?'),
            2 => char::from_u32(rng.gen_range(0x1_0000..0x1_fbff)).unwrap_or('?'),
            _ => char::from(*b",#:% ".choose(rng).unwrap_or(&b'#')),
        })
        .collect()
}

fn mutate(rng: &mut StdRng, text: &str) -> String {
    let mut chars: Vec<char> = text.chars().collect();
    for _ in 0..rng.gen_range(1..4) {
        let at = rng.gen_range(0..=chars.len());
        match rng.gen_range(0..7) {
            0 if at < chars.len() => {
                chars.remove(at);
            }
            1 => {
                let noise = NOISE.choose(rng).copied().unwrap_or(",");
                for (i, c) in noise.chars().enumerate() {
                    chars.insert(at + i, c);
                }
            }
            2 if at < chars.len() => {
                let c = chars[at];
                chars.insert(at, c);
            }
            3 => {
                for c in chars.iter_mut() {
                    if let Some(&(_, look)) = LOOKALIKES.iter().find(|(real, _)| real == c) {
                        if rng.gen_bool(0.5) {
                            *c = look;
                        }
                    }
                }
            }
            4 if at < chars.len() => {
                let c = chars[at];
                chars[at] = if c.is_ascii_digit() {
                    char::from(b'A' + rng.gen_range(0..26))
                } else if c.is_ascii_lowercase() {
                    c.to_ascii_uppercase()
                } else {
                    c.to_ascii_lowercase()
                };
            }
            5 => chars.truncate(at),
            _ => {
                let digits: String = (0..rng.gen_range(1..30))
                    .map(|_| char::from(b'0' + rng.gen_range(0..10)))
                    .collect();
                for (i, c) in digits.chars().enumerate() {
                    chars.insert(at + i, c);
                }
            }
        }
    }
    chars.into_iter().collect()
}

fn hostile_text(rng: &mut StdRng) -> String {
    let pick = |rng: &mut StdRng| REAL_COMMANDS.choose(rng).copied().unwrap_or("");
    match rng.gen_range(0..10) {
        0 => random_noise(rng),
        1 => {
            let mut text = String::new();
            while text.chars().count() < 1600 {
                text.push_str(pick(rng));
                text.push_str([" ", ",", "", "\n", "#"].choose(rng).copied().unwrap_or(""));
            }
            text.chars().take(1600).collect()
        }
        2 => ",".repeat(rng.gen_range(1..200)),
        3 => {
            "%".repeat(rng.gen_range(1..50))
                + ["", "1234,connect#", "PC,NPC,AB"]
                    .choose(rng)
                    .copied()
                    .unwrap_or("")
        }
        4 => {
            let mut text = pick(rng).to_string();
            for &(real, look) in LOOKALIKES {
                text = text.replace(real, &look.to_string());
            }
            text
        }
        5 => format!(
            "{}{}",
            rng.gen_range(0..100_000),
            ["a,status#", "b 7982 MODE:A", "x,r1=on#", "O", " 7982 ECHO:"]
                .choose(rng)
                .copied()
                .unwrap_or("")
        ),
        6 => pick(rng).to_string(),
        _ => {
            let text = pick(rng).to_string();
            mutate(rng, &text)
        }
    }
}

fn stranger(rng: &mut StdRng) -> String {
    match rng.gen_range(0..20) {
        0 => "BANK".to_string(),
        1 => "".to_string(),
        // The demo's CALL/REJECT/CONN master is +447700900123; strangers stay far from it.
        _ => format!("+4479{:08}", rng.gen_range(0..100_000_000u32)),
    }
}

/// A reply that a stranger may legitimately get: David answers its status text from any phone.
fn stranger_may_get_reply(dispatch: &Dispatch, text: &str) -> bool {
    dispatch.handled_by.as_deref() == Some("david") && text.to_uppercase().contains("STATUS")
}

#[test]
fn hostile_sms_from_strangers_never_error_reply_or_change_settings() {
    let mut configs = demo_plugin_configs();
    for (name, secret) in secret_overrides() {
        let entry = configs.entry(name.to_string()).or_insert_with(|| json!({}));
        if let (Some(target), Some(source)) = (entry.as_object_mut(), secret.as_object()) {
            target.extend(source.clone());
        }
    }
    let mut host = load_all(&configs);
    assert!(
        host.plugin_names().iter().any(|n| n == "password_comma")
            && host.plugin_names().iter().any(|n| n == "pword_installer"),
        "both plugins of this slice must be loaded"
    );
    let mut rng = StdRng::seed_from_u64(SEED);
    let now = Instant::now();
    for i in 0..TEXTS {
        let text = hostile_text(&mut rng);
        let from = stranger(&mut rng);
        let sms = IncomingSms {
            id: i as i64,
            from: from.clone(),
            text: text.clone(),
            time: None,
            incomplete: false,
            sender_kind: gsmgw::bus::SenderKind::of(&from),
        };
        let dispatch = host.dispatch_sms(&sms, now);
        let context = format!("text #{i} {text:?} from {from:?} (seed {SEED:#x})");
        assert!(
            dispatch.errors.is_empty(),
            "{context}: {:?}",
            dispatch.errors
        );
        assert!(
            dispatch.statuses.is_empty(),
            "{context}: {:?}",
            dispatch.statuses
        );
        for command in &dispatch.commands {
            match command {
                Command::SendSms { .. } if stranger_may_get_reply(&dispatch, &text) => {}
                // The host recording a stranger's lock-out (every sender form, alphanumeric
                // IDs included, is locked out since issue 11) is not a setting it changed.
                Command::KvSet { scope, .. } if scope == gsmgw::lua::LOCKOUT_SCOPE => {}
                Command::SendSms { .. }
                | Command::KvSet { .. }
                | Command::SetOutput { .. }
                | Command::Alarm { .. }
                | Command::MqttConnect { .. }
                | Command::Ussd { .. } => panic!(
                    "{context}: a stranger made {:?} do {command:?}",
                    dispatch.handled_by
                ),
                _ => {}
            }
        }
    }
    for name in host.plugin_names() {
        assert_eq!(
            host.status(&name).and_then(|s| s.error),
            None,
            "{name} was disabled"
        );
    }
}
