//! `config/gsmgw.toml` is the configuration reference: it must list every key the loader
//! knows (set, or commented out for keys without a default) and show each set key with the
//! loader's own default. Generic on purpose: a key added to `Config` without a line here
//! fails the first test; a default changed in one place only fails the second.
//!
//! The loader's keys are read from the pretty `Debug` output of the config structs (every
//! struct in `config.rs` derives or writes a `Debug` that names each field), the defaults
//! compared through the same output: a key set to its default changes nothing in it.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

use gsmgw::config::Config;

const REFERENCE: &str = include_str!("../config/gsmgw.toml");

/// Map sections whose entries the user names: `[outputs.relay]` is `outputs.*`.
const NAMED: &[&str] = &["outputs", "inputs", "alarm.zones"];
/// Free-form sections handed to scripts as `gw.config`: their keys are the scripts' own.
const FREE: &[&str] = &["plugins", "rules"];

/// A config with one entry in every named map, so that their fields show up.
const WITH_ENTRIES: &str = "[outputs.o]\nline = 1\n[inputs.i]\nline = 2\n\
                            [alarm.zones.i]\nmodes = [\"away\"]\n";

/// `section.key` paths of the leaves in a pretty `Debug` dump (map entries become `*`), each
/// with the start of its value.
fn debug_paths(dump: &str) -> BTreeMap<String, String> {
    let mut paths = BTreeMap::new();
    // One entry per open bracket: the field name it belongs to, if any.
    let mut stack: Vec<Option<String>> = Vec::new();
    for line in dump.lines() {
        let line = line.trim();
        if matches!(line, "}," | "}" | "]," | "]" | ")," | ")") {
            stack.pop();
            continue;
        }
        let (name, value) = match line.split_once(": ") {
            Some((k, v)) if !k.contains(' ') || k.starts_with('"') => {
                let k = if k.starts_with('"') { "*" } else { k };
                (Some(k.to_string()), v)
            }
            _ => (None, line),
        };
        let opens = value.ends_with('{') || value.ends_with('[') || value.ends_with('(');
        let prefix: Vec<&str> = stack.iter().flatten().map(String::as_str).collect();
        match (&name, opens) {
            (Some(n), true) => {
                // A struct or map opens; a list or `Some(` of one value is still a leaf.
                if value.ends_with('{') {
                    stack.push(Some(n.clone()));
                } else {
                    let mut path = prefix.clone();
                    path.push(n);
                    paths.insert(path.join("."), value.to_string());
                    stack.push(None);
                }
            }
            (Some(n), false) => {
                let mut path = prefix.clone();
                path.push(n);
                paths.insert(path.join("."), value.to_string());
            }
            (None, true) => stack.push(None),
            (None, false) => {}
        }
    }
    paths
}

/// The reference's keys: `(path, Some(value))` for set keys, `(path, None)` for commented-out
/// ones; with the line number.
fn reference_keys() -> Vec<(usize, String, Option<String>)> {
    let mut keys = Vec::new();
    let mut section = String::new();
    for (at, raw) in REFERENCE.lines().enumerate() {
        let line = raw.trim();
        let commented = line.starts_with('#');
        let body = line.trim_start_matches('#').trim();
        if let Some(header) = body.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
            if !commented {
                section = normalise(header);
            }
            continue;
        }
        let Some((key, value)) = body.split_once(" = ") else {
            continue;
        };
        if key.is_empty() || !key.chars().all(|c| c.is_ascii_lowercase() || c == '_') {
            continue;
        }
        let path = if section.is_empty() {
            key.to_string()
        } else {
            format!("{section}.{key}")
        };
        keys.push((at + 1, path, (!commented).then(|| value.to_string())));
    }
    keys
}

/// `outputs.relay` → `outputs.*`.
fn normalise(section: &str) -> String {
    for named in NAMED {
        if let Some(rest) = section.strip_prefix(named) {
            if rest.starts_with('.') {
                return format!("{named}.*");
            }
        }
    }
    section.to_string()
}

fn is_free(path: &str) -> bool {
    FREE.iter()
        .any(|f| path == *f || path.starts_with(&format!("{f}.")))
}

#[test]
fn the_reference_lists_every_key_the_loader_knows() {
    let cfg = Config::from_toml(WITH_ENTRIES, "entries.toml").expect("valid");
    let known = debug_paths(&format!("{cfg:#?}"));
    assert!(
        known.contains_key("modem.port") && known.contains_key("outputs.*.active_low"),
        "the Debug dump was not understood: {known:?}"
    );
    let listed: BTreeSet<String> = reference_keys().into_iter().map(|(_, p, _)| p).collect();
    let missing: Vec<&String> = known
        .keys()
        .filter(|k| !is_free(k) && !listed.contains(*k))
        .collect();
    assert!(
        missing.is_empty(),
        "config/gsmgw.toml does not list {missing:?}"
    );
    let unknown: Vec<&String> = listed
        .iter()
        .filter(|k| !is_free(k) && !known.contains_key(*k))
        .collect();
    assert!(
        unknown.is_empty(),
        "config/gsmgw.toml lists keys the loader does not know: {unknown:?}"
    );
}

/// The TOML that sets `path` to `value`, with what a named entry needs around it.
fn setting(path: &str, value: &str) -> String {
    let (section, key) = path.rsplit_once('.').unwrap_or(("", path));
    let header = section.replace('*', "i");
    let base = match section {
        "outputs.*" => "[outputs.i]\nline = 1\n",
        "inputs.*" => "[inputs.i]\nline = 2\n",
        "alarm.zones.*" => "[inputs.i]\nline = 2\n[alarm.zones.i]\nmodes = [\"away\"]\n",
        _ => "",
    };
    if base.is_empty() {
        format!("[{header}]\n{key} = {value}\n")
    } else {
        // The base ends in the entry's own table.
        format!("{base}{key} = {value}\n")
    }
}

#[test]
fn every_key_the_reference_sets_shows_the_loaders_default() {
    let mut wrong = Vec::new();
    for (at, path, value) in reference_keys() {
        let Some(value) = value else { continue };
        if is_free(&path) || path.ends_with(".line") || path == "alarm.zones.*.modes" {
            continue;
        }
        let with = setting(&path, &value);
        let base = setting(&path, "REMOVE").replace(
            &format!("{} = REMOVE\n", path.rsplit('.').next().unwrap_or("")),
            "",
        );
        let cfg = match Config::from_toml(&with, "one key") {
            Ok(cfg) => cfg,
            Err(e) => {
                wrong.push(format!("line {at}: {path} = {value}: {e}"));
                continue;
            }
        };
        let default = Config::from_toml(&base, "defaults").expect("the defaults are valid");
        if format!("{cfg:?}") != format!("{default:?}") {
            wrong.push(format!(
                "line {at}: {path} = {value} is not the loader's default"
            ));
        }
    }
    assert!(
        wrong.is_empty(),
        "config/gsmgw.toml:\n{}\n(help: show the default, or comment the line out as an example)",
        wrong.join("\n")
    );
}

#[test]
fn every_list_of_plain_values_can_be_set_from_the_environment() {
    let cfg = Config::from_toml(WITH_ENTRIES, "entries.toml").expect("valid");
    let lists: Vec<String> = debug_paths(&format!("{cfg:#?}"))
        .into_iter()
        .filter(|(_, value)| value.starts_with('['))
        .map(|(path, _)| path)
        // Lists of tables, and keys under a name the user chooses: not expressible as one
        // variable. `modem.init` holds AT commands, whose commas would split them.
        .filter(|path| path != "mqtt.notify" && path != "modem.init" && !path.contains('*'))
        .collect();
    assert!(lists.contains(&"lua.plugins".to_string()), "{lists:?}");
    for key in &lists {
        assert!(
            gsmgw::config::ENV_LIST_KEYS.contains(&key.as_str()),
            "{key} is a list but not in ENV_LIST_KEYS"
        );
    }
}

fn check_with_env(dir: &std::path::Path, vars: &[(&str, String)]) -> std::process::Output {
    let config = dir.join("c.toml");
    std::fs::write(
        &config,
        "[gpio]\nbackend = \"sim\"\n[modem]\nport = \"/dev/null\"\n",
    )
    .expect("write");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_gsmgw"));
    cmd.arg("check").arg("-c").arg(&config).current_dir(dir);
    for (k, v) in vars {
        cmd.env(k, v);
    }
    cmd.output().expect("run gsmgw check")
}

#[test]
fn lists_come_from_the_environment_comma_separated() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (first, second) = (dir.path().join("etc"), dir.path().join("share"));
    std::fs::create_dir_all(&first).expect("mkdir");
    std::fs::create_dir_all(&second).expect("mkdir");
    std::fs::write(first.join("a.lua"), "return {}").expect("write");
    std::fs::write(second.join("b.lua"), "return {}").expect("write");
    let out = check_with_env(
        dir.path(),
        &[
            (
                "GSMGW_LUA__PLUGIN_PATH",
                format!("{},{}", first.display(), second.display()),
            ),
            ("GSMGW_LUA__PLUGINS", "a,b".to_string()),
        ],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains(&format!("plugin a: {}", first.join("a.lua").display())),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!("plugin b: {}", second.join("b.lua").display())),
        "{stdout}"
    );
}

#[test]
fn a_bad_value_from_the_environment_names_the_variable() {
    let dir = tempfile::tempdir().expect("temp dir");
    let out = check_with_env(dir.path(), &[("GSMGW_MODEM__BAUD", "fast".to_string())]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("modem.baud (set by GSMGW_MODEM__BAUD)"),
        "{stderr}"
    );
    let out = check_with_env(dir.path(), &[("GSMGW_MODEM__BAUDRATE", "9600".to_string())]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("set by GSMGW_MODEM__BAUDRATE"), "{stderr}");
}
