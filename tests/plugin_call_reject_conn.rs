//! The CALL/REJECT/CONN dialect plugin (`plugins/call_reject_conn.lua`) on `gsmgw try`'s
//! simulated gateway: real Lua host, GPIO task on the simulated backend, store, paused clock.
//!
//! The golden conversations in `tests/conversations/call_reject_conn/*.jsonl` are run by
//! `tests/conversations.rs`; these are the behaviours easier to state in Rust.

use std::path::Path;

use gsmgw::tryrun::{self, Runner, SentSms, Step, StepResult};
use serde_json::{json, Value};

const MASTER: &str = "+447700900001";
const USER: &str = "+447700900123";

fn default_config() -> Value {
    json!({"relay": "relay", "input": "door", "master": MASTER})
}

/// The simulated gateway with the demo config and `section` as the plugin's own, its store in
/// a folder that outlives restarts.
struct Gateway {
    runner: Option<Runner>,
    section: Value,
    state: tempfile::TempDir,
}

impl Gateway {
    fn new(section: Value) -> Self {
        let state = tempfile::tempdir().expect("state dir");
        let mut gateway = Gateway {
            runner: None,
            section,
            state,
        };
        gateway.restart();
        gateway
    }

    /// A gateway restart: a fresh process over the same store.
    fn restart(&mut self) {
        // The old one closes its store first.
        self.runner = None;
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let patch = json!({
            "lua": {"plugins_dir": root.join("plugins"), "plugins": ["call_reject_conn"]},
            "plugins": {"call_reject_conn": null},
        });
        let mut cfg = tryrun::load_config(Some(&root.join("config/demo.toml")), Some(&patch))
            .expect("config");
        cfg.plugins
            .insert("call_reject_conn".into(), self.section.clone());
        self.runner = Some(Runner::new(cfg, Some(self.state.path())).expect("runner"));
    }

    fn step(&mut self, step: Step) -> StepResult {
        let result = self.runner.as_mut().expect("running").step(&step);
        assert_eq!(result.errors, Vec::<String>::new(), "after {step:?}");
        result
    }

    fn sms(&mut self, from: &str, text: &str) -> StepResult {
        self.step(Step::Sms {
            from: from.into(),
            text: text.into(),
        })
    }

    fn call(&mut self, from: Option<&str>) -> StepResult {
        self.step(Step::Call {
            from: from.map(str::to_string),
        })
    }

    fn hang_up_caller(&mut self) -> StepResult {
        self.step(Step::Hangup(true))
    }

    fn input(&mut self, name: &str, on: bool) -> StepResult {
        self.step(Step::Input {
            name: name.into(),
            on,
        })
    }

    fn reload(&mut self) -> StepResult {
        self.step(Step::Reload(true))
    }
}

fn relay(result: &StepResult) -> bool {
    result.outputs.get("relay").map(String::as_str) == Some("ON")
}

fn sent(to: &str, text: &str) -> SentSms {
    SentSms {
        to: to.into(),
        text: text.into(),
    }
}

fn handled(result: &StepResult) -> bool {
    result.handled_by.as_deref() == Some("call_reject_conn")
}

// ---------------------------------------------------------------------------------------------
// Behaviours easier to state in Rust than as a conversation

#[test]
fn long_list_is_split_into_messages_of_at_most_160_characters() {
    let mut gateway = Gateway::new(default_config());
    for n in 0..30 {
        let outcome = gateway.sms(MASTER, &format!("ADD +4477009{n:05}"));
        assert!(handled(&outcome));
    }
    let replies = gateway.sms(MASTER, "LIST").sms_sent;
    assert!(replies.len() >= 2, "{replies:?}");
    assert!(
        replies
            .iter()
            .all(|s| s.to == MASTER && s.text.len() <= 160),
        "{replies:?}"
    );
    let tokens: Vec<String> = replies
        .iter()
        .flat_map(|s| s.text.split(' ').map(str::to_string).collect::<Vec<_>>())
        .collect();
    let mut want = vec!["M00900001".to_string()];
    want.extend((0..30).map(|n| format!("U009{n:05}")));
    assert_eq!(tokens, want);
}

#[test]
fn settings_and_numbers_survive_a_restart() {
    let mut gateway = Gateway::new(default_config());
    for text in [
        "ADD 07700900123",
        "RLYMODE TOGGLE",
        "REJECT ALL",
        "TEXTRES ENABLE",
    ] {
        gateway.sms(MASTER, text);
    }
    gateway.restart();
    assert_eq!(
        gateway.sms(MASTER, "RLYTIME 9").sms_sent,
        vec![sent(MASTER, "Operation Successful")]
    );
    let first = gateway.call(Some(USER));
    assert!(relay(&first), "a toggle switches the relay on");
    assert_eq!(first.call.as_deref(), Some("rejected"));
    let second = gateway.call(Some(USER));
    assert!(!relay(&second), "the second toggle switches it off");
}

#[test]
fn call_dialer_state_survives_a_reload() {
    let mut gateway = Gateway::new(default_config());
    gateway.sms(MASTER, "TEXTNUM 07700900555");
    gateway.sms(MASTER, "CALL DIALER");
    let call = gateway.call(Some(MASTER));
    assert_eq!(
        call.call.as_deref(),
        Some("rejected"),
        "alerts switched off"
    );
    gateway.reload();
    assert_eq!(gateway.input("door", true).sms_sent, vec![]);
}

#[test]
fn number_list_holds_at_most_512_entries() {
    let mut gateway = Gateway::new(default_config());
    gateway.sms(MASTER, "TEXTRES ENABLE");
    for n in 0..512 {
        let reply = gateway.sms(MASTER, &format!("ADD +4477{n:08}")).sms_sent;
        assert_eq!(
            reply,
            vec![sent(MASTER, "Operation Successful")],
            "number {n}"
        );
    }
    let reply = gateway.sms(MASTER, "ADD +447799999999").sms_sent;
    assert_eq!(reply, vec![sent(MASTER, "Operation Failed")]);
}

#[test]
fn answered_call_that_ends_early_is_not_hung_up_later() {
    let mut gateway = Gateway::new(default_config());
    gateway.sms(MASTER, "CONN OP");
    let call = gateway.call(Some(MASTER));
    assert_eq!(call.call.as_deref(), Some("answered"));
    assert_eq!(gateway.hang_up_caller().call.as_deref(), Some("ended"));
    // A hang-up of the ended call would be a gateway error, which `step` rejects.
    let later = gateway.step(Step::Advance("10s".into()));
    assert_eq!(later.call.as_deref(), Some("ended"));
}

#[test]
fn master_from_config_is_matched_on_the_last_eight_digits() {
    let mut gateway = Gateway::new(default_config());
    let reply = gateway.sms("07700900001", "STATUS").sms_sent;
    assert_eq!(reply, vec![sent("07700900001", "RELAY OPEN INPUT LOW")]);
}

#[test]
fn master_from_config_may_be_written_with_spaces() {
    let mut gateway =
        Gateway::new(json!({"relay": "relay", "input": "door", "master": "07700 900001"}));
    let reply = gateway.sms(MASTER, "STATUS").sms_sent;
    assert_eq!(reply, vec![sent(MASTER, "RELAY OPEN INPUT LOW")]);
    assert_eq!(
        gateway.sms(MASTER, "LIST").sms_sent,
        vec![sent(MASTER, "M00900001")]
    );
}

#[test]
fn ring_mode_relay_goes_off_when_the_call_ends_after_a_reload() {
    let mut gateway = Gateway::new(default_config());
    gateway.sms(MASTER, "RLYMODE RING");
    assert!(relay(&gateway.call(Some(MASTER))));
    gateway.reload();
    assert!(!relay(&gateway.hang_up_caller()));
}
