//! The `[alarm]` section: what is accepted, and every mistake named by its key.

use std::path::PathBuf;

use gsmgw::config::{AlarmMode, Config};

const BASE: &str = r#"
[outputs.siren]
line = 22
[outputs.relay]
line = 17
restore = true
initial = true
[inputs.door]
line = 27
[inputs.window]
line = 5
"#;

fn problems(alarm: &str) -> Vec<String> {
    match Config::from_toml(&format!("{BASE}{alarm}"), "a.toml") {
        Ok(_) => Vec::new(),
        Err(e) => e.lines(),
    }
}

#[test]
fn zones_take_the_panels_defaults() {
    let cfg = Config::from_toml(
        &format!("{BASE}[alarm]\nsiren = \"siren\"\n[alarm.zones.door]\n"),
        "a.toml",
    )
    .expect("valid");
    let door = &cfg.alarm.zones["door"];
    assert_eq!(door.modes, vec![AlarmMode::Away, AlarmMode::Home]);
    assert_eq!(door.entry_delay_s, None);
    assert!(!door.instant);
    assert!(cfg.alarm.refuse_open_zones);
    assert_eq!(cfg.alarm.siren_s, 180);
}

#[test]
fn every_alarm_mistake_is_reported_with_its_key() {
    let lines = problems(
        r#"
[alarm]
siren = "horn"
code = ""
[alarm.zones.garage]
[alarm.zones.door]
modes = []
[alarm.zones.window]
instant = true
entry_delay_s = 5
"#,
    );
    let has = |s: &str| lines.iter().any(|l| l.starts_with(s));
    assert!(
        has("a.toml: alarm.zones.garage: no input is named"),
        "{lines:?}"
    );
    assert!(has("a.toml: alarm.zones.door.modes:"), "{lines:?}");
    assert!(
        has("a.toml: alarm.zones.window.entry_delay_s:"),
        "{lines:?}"
    );
    assert!(
        has("a.toml: alarm.siren: no output is named \"horn\""),
        "{lines:?}"
    );
    assert!(has("a.toml: alarm.code: must not be empty"), "{lines:?}");
}

#[test]
fn a_siren_that_can_be_on_at_start_is_refused() {
    let lines = problems("[alarm]\nsiren = \"relay\"\n");
    for key in ["outputs.relay.restore:", "outputs.relay.initial:"] {
        assert!(
            lines
                .iter()
                .any(|l| l.starts_with(&format!("a.toml: {key}"))),
            "{key} {lines:?}"
        );
    }
}

#[test]
fn an_unknown_mode_is_a_parse_error() {
    let lines = problems("[alarm.zones.door]\nmodes = [\"night\"]\n");
    assert!(lines.iter().any(|l| l.contains("night")), "{lines:?}");
}

#[test]
fn the_code_is_hidden_from_debug_output() {
    let cfg =
        Config::from_toml(&format!("{BASE}[alarm]\ncode = \"98765\"\n"), "a.toml").expect("valid");
    assert!(!format!("{cfg:?}").contains("98765"));
}

#[test]
fn the_shipped_configs_are_valid_and_the_demo_has_its_alarm() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("config");
    for name in ["gsmgw.toml", "demo.toml"] {
        let text = std::fs::read_to_string(root.join(name)).expect("config file");
        let cfg = Config::from_toml(&text, name);
        assert!(cfg.is_ok(), "{name}: {:?}", cfg.err().map(|e| e.lines()));
    }
    let demo = std::fs::read_to_string(root.join("demo.toml")).expect("demo config");
    let cfg = Config::from_toml(&demo, "demo.toml").expect("valid");
    assert_eq!(cfg.alarm.siren.as_deref(), Some("siren"));
    assert_eq!(cfg.alarm.siren_s, 60);
    assert_eq!(cfg.alarm.exit_delay_s, 10);
    assert_eq!(cfg.alarm.zones["door"].entry_delay_s, Some(10));
}
