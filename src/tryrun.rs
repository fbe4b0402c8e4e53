//! `gsmgw try`: runs a conversation through the plugins and rules with everything simulated.
//! (Being built.)

use std::path::Path;
use std::process::ExitCode;

/// The `gsmgw try` command.
pub fn run_cli(config: Option<&Path>, state: Option<&Path>) -> anyhow::Result<ExitCode> {
    let _ = (config, state);
    anyhow::bail!("gsmgw try is not built yet")
}
