//! The modem and SMS settings of the config file.

use std::time::Duration;

use gsmgw::config::{Config, ConfigError};
use gsmgw::modem::driver::DriverOptions;

#[test]
fn modem_and_sms_settings_reach_the_driver_with_their_defaults() {
    let cfg = Config::from_toml("", "empty.toml").expect("defaults are valid");
    let opts = DriverOptions::from_config(&cfg);
    assert!(!opts.delivery_reports);
    assert_eq!(opts.concat_timeout, Duration::from_secs(3600));
    assert_eq!(opts.modem.urc_port, None);
    assert_eq!(opts.modem.power_key_pulse_ms, 1500);
    assert!(opts.power_key.is_none());

    let cfg = Config::from_toml(
        r#"
[modem]
urc_port = "/dev/ttyUSB1"
power_key = "modem_power"
power_key_pulse_ms = 800
[outputs.modem_power]
line = 5
[sms]
delivery_reports = true
concat_timeout_s = 600
"#,
        "set.toml",
    )
    .expect("valid");
    let opts = DriverOptions::from_config(&cfg);
    assert!(opts.delivery_reports);
    assert_eq!(opts.concat_timeout, Duration::from_secs(600));
    assert_eq!(
        opts.modem.urc_port.as_deref(),
        Some(std::path::Path::new("/dev/ttyUSB1"))
    );
    assert_eq!(opts.modem.power_key.as_deref(), Some("modem_power"));
}

#[test]
fn a_power_key_that_is_not_an_output_is_refused() {
    let err = Config::from_toml("[modem]\npower_key = \"nope\"\n", "bad.toml")
        .expect_err("unknown output");
    let ConfigError::Invalid { problems, .. } = err else {
        panic!("not a validation error: {err}");
    };
    assert!(
        problems
            .iter()
            .any(|p| p.key == "modem.power_key" && p.message.contains("nope")),
        "{problems:?}"
    );
}

#[test]
fn the_log_filter_variable_is_not_taken_for_a_config_key() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("gsmgw.toml");
    std::fs::write(&path, "[gateway]\ndevice_id = \"x\"\n").expect("write config");
    // Only this test in this binary touches GSMGW_ variables.
    std::env::set_var("GSMGW_LOG", "gsmgw=debug");
    let loaded = Config::load(&path);
    std::env::remove_var("GSMGW_LOG");
    assert!(loaded.is_ok(), "{:?}", loaded.err().map(|e| e.to_string()));
}
