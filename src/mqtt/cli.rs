//! The MQTT side of the command line: `gsmgw send` and `gsmgw discovery`. (Being built.)

use std::process::ExitCode;

use crate::config::Config;

/// `gsmgw send N TEXT`: publishes to a running gateway's `sms/send` and waits for `sms/sent`.
pub async fn send(cfg: &Config, to: &str, text: &str, timeout_s: u64) -> anyhow::Result<ExitCode> {
    let _ = (cfg, to, text, timeout_s);
    anyhow::bail!("gsmgw send is not built yet")
}

/// `gsmgw discovery --print`: the Home Assistant discovery topics and payloads.
pub fn discovery(cfg: &Config, print: bool) -> anyhow::Result<ExitCode> {
    let _ = (cfg, print);
    anyhow::bail!("gsmgw discovery is not built yet")
}
