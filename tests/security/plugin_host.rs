//! The stock plugins in the real Lua host (no modem, no store): the fastest way to send an
//! attacker's SMS and see everything the scripts asked for.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

use gsmgw::bus::{Command, IncomingSms, SenderKind};
use gsmgw::config::LuaConfig;
use gsmgw::lua::{Dispatch, HostOptions, LuaHost, World, LOCKOUT_SCOPE};
use serde_json::Value;

pub fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

pub fn world() -> World {
    World {
        outputs: BTreeMap::from([("relay".to_string(), false), ("relay_y".to_string(), false)]),
        inputs: BTreeMap::from([("door".to_string(), false), ("input2".to_string(), false)]),
        ..World::default()
    }
}

/// A host with the stock plugins `plugins` (in that order), each with its config section.
pub fn host(plugins: &[(&str, Value)]) -> LuaHost {
    let mut opts = HostOptions::from(&LuaConfig::default());
    opts.country_code = Some("44".into());
    let mut host = LuaHost::new(opts, world());
    let names: Vec<String> = plugins.iter().map(|(n, _)| n.to_string()).collect();
    host.set_order(&names);
    let now = Instant::now();
    for (name, section) in plugins {
        let path = root().join("plugins").join(format!("{name}.lua"));
        let status = host.load_plugin(name, &path, section, BTreeMap::new(), now);
        assert_eq!(status.error, None, "{name} loads");
    }
    host.take_commands();
    host
}

pub fn sms(from: &str, text: &str) -> IncomingSms {
    IncomingSms {
        id: 1,
        from: from.to_string(),
        text: text.to_string(),
        time: None,
        incomplete: false,
        sender_kind: SenderKind::of(from),
    }
}

/// The SMS the scripts asked to send, as (to, text).
pub fn sent(d: &Dispatch) -> Vec<(String, String)> {
    d.commands
        .iter()
        .filter_map(|c| match c {
            Command::SendSms { to, text, .. } => Some((to.clone(), text.clone())),
            _ => None,
        })
        .collect()
}

/// What an attacker could ever learn or cause from one SMS: whether a plugin took it, every
/// command (replies, outputs, alarm, stored data), and script errors. The persisted lock-out
/// itself is left out: its end time depends on when the host was made.
pub fn observable(d: &Dispatch) -> (Option<String>, Vec<String>, Vec<String>) {
    let commands = d
        .commands
        .iter()
        .filter(|c| !matches!(c, Command::KvSet { scope, .. } if scope == LOCKOUT_SCOPE))
        .map(|c| format!("{c:?}"))
        .collect();
    (d.handled_by.clone(), commands, d.errors.clone())
}

/// Commands that change something: outputs, the alarm, stored data, authority.
pub fn changes(d: &Dispatch) -> Vec<String> {
    d.commands
        .iter()
        .filter(|c| !matches!(c, Command::SendSms { .. }))
        .filter(|c| !matches!(c, Command::KvSet { scope, .. } if scope == LOCKOUT_SCOPE))
        .map(|c| format!("{c:?}"))
        .collect()
}

/// 39 000 characters (a concatenated SMS of ~250 parts) of each shape that made Lua patterns
/// quadratic or fed a parser a huge field.
pub fn worst_case_texts(words: &[&str]) -> Vec<String> {
    const LEN: usize = 39_000;
    let pad = |s: &str| -> String { s.chars().cycle().take(LEN).collect() };
    let mut texts = vec![
        " ".repeat(LEN),
        format!("{}x{}", " ".repeat(LEN / 2), " ".repeat(LEN / 2)),
        pad(","),
        pad("#"),
        pad(", #"),
        pad(",#"),
        pad("\t \n"),
        pad("%s.-( a"),
        pad(":"),
        pad("7"),
    ];
    for word in words {
        texts.push(pad(word));
        texts.push(format!("{word}{}", " ".repeat(LEN - word.len())));
        texts.push(format!("{}{word}", " ".repeat(LEN - word.len())));
    }
    texts
}
