//! Security tests written from the attacker's side (issue 11), one test binary with one module
//! per dialect or host defence. Each module states the invariants it checks at its top.

#[path = "../support/mosquitto.rs"]
mod mosquitto;
#[path = "../support/wait.rs"]
mod wait;

mod host_rig;
mod plugin_host;
mod process;

mod call_reject_conn;
mod credit;
mod david;
mod password_comma;
mod pword_installer;
mod secrets;
mod stale;
