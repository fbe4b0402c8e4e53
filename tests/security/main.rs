//! Security tests written from the attacker's side (issue 11), one test binary with one module
//! per dialect. Each module states the invariants it checks at its top.

#[path = "../support/mosquitto.rs"]
mod mosquitto;
mod plugin_host;
mod process;

mod call_reject_conn;
mod david;
mod password_comma;
mod pword_installer;
