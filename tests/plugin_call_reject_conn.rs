//! The CALL/REJECT/CONN dialect plugin (`plugins/call_reject_conn.lua`) driven through the
//! Lua host, with this test playing the gateway: it applies the plugin's commands to a map of
//! outputs, feeds the resulting events back, runs timers on a fake clock and collects SMS.
//!
//! The golden conversations live in `tests/conversations/call_reject_conn/*.jsonl` (format in
//! that folder's README.md) and are replayed here, so they are checked on every test run.

use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use gsmgw::bus::{Call, Command, Event, IncomingSms, ModemStatus, OutputAction};
use gsmgw::lua::{Dispatch, HostOptions, LuaHost, World};
use serde_json::{json, Value};

const PLUGIN: &str = "call_reject_conn";
const IMEI: &str = "356938035643809";
const MASTER: &str = "+447700900001";
const USER: &str = "+447700900123";

fn plugin_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("plugins/call_reject_conn.lua")
}

fn conversations_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/conversations/call_reject_conn")
}

fn default_config() -> Value {
    json!({"relay": "relay", "input": "door", "master": MASTER})
}

/// Where a call stands, as the gateway sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CallState {
    Ringing,
    Answered,
    /// Hung up without being answered.
    Rejected,
    /// Hung up after being answered, or the caller gave up.
    Ended,
}

impl CallState {
    fn word(self) -> &'static str {
        match self {
            CallState::Ringing => "ringing",
            CallState::Answered => "answered",
            CallState::Rejected => "rejected",
            CallState::Ended => "ended",
        }
    }
}

/// What one step did.
#[derive(Debug, Default)]
struct StepOutcome {
    /// Whether the plugin handled the SMS or call of this step (None for other steps).
    handled: Option<bool>,
    /// Every SMS sent during the step, `(to, text)`.
    sms_sent: Vec<(String, String)>,
}

/// The gateway around one plugin: real outputs, a fake clock, the store, calls and SMS.
struct Gateway {
    host: LuaHost,
    config: Value,
    now: Instant,
    outputs: BTreeMap<String, bool>,
    inputs: BTreeMap<String, bool>,
    /// Timed output reverts the gateway owes (`on` with a duration): (due, name, state).
    reverts: Vec<(Instant, String, bool)>,
    /// What `KvSet` persisted, as the store would keep it.
    store: BTreeMap<String, String>,
    calls: BTreeMap<u64, CallState>,
    last_call: Option<u64>,
    next_id: u64,
    outcome: StepOutcome,
}

fn world(outputs: &BTreeMap<String, bool>, inputs: &BTreeMap<String, bool>) -> World {
    World {
        outputs: outputs.clone(),
        inputs: inputs.clone(),
        modem: ModemStatus {
            imei: Some(IMEI.to_string()),
            ..ModemStatus::default()
        },
        ..World::default()
    }
}

impl Gateway {
    fn new(config: Value) -> Self {
        let outputs = BTreeMap::from([("relay".to_string(), false), ("siren".to_string(), false)]);
        let inputs = BTreeMap::from([("door".to_string(), false), ("window".to_string(), false)]);
        let mut gateway = Gateway {
            host: LuaHost::new(host_options(), world(&outputs, &inputs)),
            config,
            now: Instant::now(),
            outputs,
            inputs,
            reverts: Vec::new(),
            store: BTreeMap::new(),
            calls: BTreeMap::new(),
            last_call: None,
            next_id: 1,
            outcome: StepOutcome::default(),
        };
        gateway.load();
        gateway
    }

    /// Loads the plugin with what the store holds now, as the gateway does at start-up.
    fn load(&mut self) {
        let status = self.host.load_plugin(
            PLUGIN,
            &plugin_path(),
            &self.config,
            self.store.clone(),
            self.now,
        );
        assert_eq!(status.error, None, "the plugin must load");
    }

    /// A gateway restart: a fresh host, the same outputs, inputs and store.
    fn restart(&mut self) {
        self.host = LuaHost::new(host_options(), world(&self.outputs, &self.inputs));
        self.reverts.clear();
        self.load();
    }

    fn take_outcome(&mut self) -> StepOutcome {
        std::mem::take(&mut self.outcome)
    }

    fn sms(&mut self, from: &str, text: &str) -> StepOutcome {
        self.next_id += 1;
        let sms = IncomingSms {
            id: self.next_id as i64,
            from: from.to_string(),
            text: text.to_string(),
            time: None,
            incomplete: false,
        };
        let dispatch = self.host.dispatch_sms(&sms, self.now);
        self.outcome.handled = Some(handled_by_plugin(&dispatch));
        self.apply(dispatch);
        self.take_outcome()
    }

    /// A call rings in; a call still in progress ends first (one line, one call).
    fn call(&mut self, from: Option<&str>) -> StepOutcome {
        if let Some(id) = self.last_call {
            if matches!(
                self.calls.get(&id),
                Some(CallState::Ringing | CallState::Answered)
            ) {
                self.end_call(id, CallState::Ended);
            }
        }
        self.next_id += 1;
        let id = self.next_id;
        self.calls.insert(id, CallState::Ringing);
        self.last_call = Some(id);
        let dispatch = self.host.dispatch_call(
            &Call {
                id,
                from: from.map(str::to_string),
            },
            self.now,
        );
        let handled = handled_by_plugin(&dispatch);
        self.apply(dispatch);
        self.outcome.handled = Some(handled);
        self.take_outcome()
    }

    /// The caller of the current call hangs up.
    fn hang_up_caller(&mut self) -> StepOutcome {
        if let Some(id) = self.last_call {
            if matches!(
                self.calls.get(&id),
                Some(CallState::Ringing | CallState::Answered)
            ) {
                self.end_call(id, CallState::Ended);
            }
        }
        self.take_outcome()
    }

    fn input(&mut self, name: &str, on: bool) -> StepOutcome {
        self.inputs.insert(name.to_string(), on);
        self.event(Event::InputChanged {
            name: name.to_string(),
            on,
        });
        self.take_outcome()
    }

    /// Moves the clock on, running every timer and timed output revert that falls due, in order.
    fn advance(&mut self, by: Duration) -> StepOutcome {
        let target = self.now + by;
        loop {
            let next_revert = self.reverts.iter().map(|(due, _, _)| *due).min();
            let next = [next_revert, self.host.poll_timeout()]
                .into_iter()
                .flatten()
                .min();
            match next {
                Some(due) if due <= target => {
                    self.now = self.now.max(due);
                    let now = self.now;
                    let (ready, waiting): (Vec<_>, Vec<_>) =
                        self.reverts.drain(..).partition(|(due, _, _)| *due <= now);
                    self.reverts = waiting;
                    for (_, name, on) in ready {
                        self.set_output(&name, on);
                    }
                    if self.host.poll_timeout().is_some_and(|due| due <= now) {
                        let dispatch = self.host.handle_timeout(now);
                        self.apply(dispatch);
                    }
                }
                _ => break,
            }
        }
        self.now = target;
        self.take_outcome()
    }

    fn end_call(&mut self, id: u64, state: CallState) {
        self.calls.insert(id, state);
        self.event(Event::CallEnded(Call { id, from: None }));
    }

    fn event(&mut self, event: Event) {
        let dispatch = self.host.dispatch_event(&event, self.now);
        self.apply(dispatch);
    }

    fn set_output(&mut self, name: &str, on: bool) {
        let previous = self.outputs.insert(name.to_string(), on);
        if previous != Some(on) {
            self.event(Event::OutputChanged {
                name: name.to_string(),
                on,
            });
        }
    }

    /// Does what the gateway's owning tasks would do with the plugin's commands.
    fn apply(&mut self, dispatch: Dispatch) {
        assert!(
            dispatch.errors.is_empty(),
            "the plugin raised errors: {:?}",
            dispatch.errors
        );
        let mut queue: VecDeque<Command> = dispatch.commands.into();
        while let Some(command) = queue.pop_front() {
            match command {
                Command::SetOutput { name, action } => {
                    assert!(self.outputs.contains_key(&name), "unknown output {name}");
                    // A new command replaces a pending timed revert, as the gpio task does.
                    self.reverts.retain(|(_, n, _)| *n != name);
                    let on = match action {
                        OutputAction::Set { on, duration } => {
                            if let Some(duration) = duration {
                                self.reverts.push((self.now + duration, name.clone(), !on));
                            }
                            on
                        }
                        OutputAction::Toggle => !self.outputs.get(&name).copied().unwrap_or(false),
                    };
                    self.set_output(&name, on);
                }
                Command::SendSms { to, text, .. } => self.outcome.sms_sent.push((to, text)),
                Command::RejectCall { call_id } | Command::HangUp { call_id } => {
                    match self.calls.get(&call_id) {
                        Some(CallState::Ringing) => self.end_call(call_id, CallState::Rejected),
                        Some(CallState::Answered) => self.end_call(call_id, CallState::Ended),
                        other => panic!("hang-up of call {call_id} that is {other:?}"),
                    }
                }
                Command::AnswerCall { call_id } => {
                    let state = self.calls.get(&call_id).copied();
                    assert_eq!(
                        state,
                        Some(CallState::Ringing),
                        "answer of a call that is not ringing"
                    );
                    self.calls.insert(call_id, CallState::Answered);
                }
                Command::KvSet { key, value, .. } => match value {
                    Some(value) => {
                        self.store.insert(key, value);
                    }
                    None => {
                        self.store.remove(&key);
                    }
                },
                other => panic!("this dialect never asks for {other:?}"),
            }
        }
    }

    fn output(&self, name: &str) -> bool {
        self.outputs.get(name).copied().unwrap_or(false)
    }

    fn last_call_state(&self) -> Option<CallState> {
        self.last_call.and_then(|id| self.calls.get(&id).copied())
    }
}

fn host_options() -> HostOptions {
    HostOptions {
        memory_limit_kb: 16 * 1024,
        instruction_limit: 10_000_000,
        country_code: Some("44".into()),
    }
}

fn handled_by_plugin(dispatch: &Dispatch) -> bool {
    dispatch.handled_by.as_deref() == Some(PLUGIN)
}

fn sent(to: &str, text: &str) -> (String, String) {
    (to.to_string(), text.to_string())
}

// ---------------------------------------------------------------------------------------------
// Conversation replayer

/// `3s`, `2m`, `500ms`.
fn parse_duration(text: &str) -> Result<Duration, String> {
    let (number, unit) = text
        .find(|c: char| !c.is_ascii_digit())
        .map(|at| text.split_at(at))
        .ok_or_else(|| format!("duration '{text}' has no unit (s, m or ms)"))?;
    let n: u64 = number
        .parse()
        .map_err(|e| format!("duration '{text}': {e}"))?;
    match unit {
        "ms" => Ok(Duration::from_millis(n)),
        "s" => Ok(Duration::from_secs(n)),
        "m" => Ok(Duration::from_secs(n * 60)),
        _ => Err(format!("duration '{text}': unknown unit '{unit}'")),
    }
}

fn string_field<'a>(value: &'a Value, key: &str) -> Result<&'a str, String> {
    value
        .get(key)
        .and_then(Value::as_str)
        .ok_or_else(|| format!("missing string '{key}'"))
}

fn run_step(gateway: &mut Gateway, step: &Value) -> Result<StepOutcome, String> {
    if let Some(sms) = step.get("sms") {
        return Ok(gateway.sms(string_field(sms, "from")?, string_field(sms, "text")?));
    }
    if let Some(call) = step.get("call") {
        let from = match call.get("from") {
            Some(Value::Null) | None => None,
            Some(Value::String(from)) => Some(from.as_str()),
            Some(other) => return Err(format!("call.from must be a string or null, not {other}")),
        };
        return Ok(gateway.call(from));
    }
    if let Some(input) = step.get("input") {
        let on = input
            .get("on")
            .and_then(Value::as_bool)
            .ok_or("input.on must be a boolean")?;
        return Ok(gateway.input(string_field(input, "name")?, on));
    }
    if let Some(advance) = step.get("advance").and_then(Value::as_str) {
        return Ok(gateway.advance(parse_duration(advance)?));
    }
    if step.get("hangup").is_some() {
        return Ok(gateway.hang_up_caller());
    }
    Err(format!("unknown step {step}"))
}

fn check_expect(gateway: &Gateway, outcome: &StepOutcome, expect: &Value) -> Result<(), String> {
    if let Some(handled) = expect.get("handled") {
        let want = handled
            .as_bool()
            .ok_or("expect.handled must be a boolean")?;
        if outcome.handled != Some(want) {
            return Err(format!("handled: want {want}, got {:?}", outcome.handled));
        }
    }
    if let Some(list) = expect.get("sms_sent") {
        let want = list
            .as_array()
            .ok_or("expect.sms_sent must be a list")?
            .iter()
            .map(|sms| Ok(sent(string_field(sms, "to")?, string_field(sms, "text")?)))
            .collect::<Result<Vec<_>, String>>()?;
        if outcome.sms_sent != want {
            return Err(format!(
                "sms_sent: want {want:?}, got {:?}",
                outcome.sms_sent
            ));
        }
    }
    if let Some(call) = expect.get("call") {
        let want = call.as_str();
        let got = gateway.last_call_state().map(CallState::word);
        if got != want {
            return Err(format!("call: want {want:?}, got {got:?}"));
        }
    }
    if let Some(outputs) = expect.get("outputs") {
        let outputs = outputs
            .as_object()
            .ok_or("expect.outputs must be an object")?;
        for (name, state) in outputs {
            let want = match state.as_str() {
                Some("ON") => true,
                Some("OFF") => false,
                _ => return Err(format!("outputs.{name} must be \"ON\" or \"OFF\"")),
            };
            if !gateway.outputs.contains_key(name) {
                return Err(format!("outputs.{name}: no such output"));
            }
            if gateway.output(name) != want {
                return Err(format!(
                    "outputs.{name}: want {state}, got {}",
                    gateway.output(name)
                ));
            }
        }
    }
    Ok(())
}

/// Replays one conversation; the error names the line that did not hold.
fn replay(name: &str, text: &str) -> Result<(), String> {
    let mut lines = text
        .lines()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty())
        .map(|(at, line)| {
            serde_json::from_str::<Value>(line)
                .map(|value| (at + 1, value))
                .map_err(|e| format!("{name}:{}: not JSON: {e}", at + 1))
        })
        .peekable();
    let mut config = default_config();
    if let Some(Ok((_, first))) = lines.peek() {
        if let Some(given) = first.get("config") {
            config = given.clone();
            lines.next();
        }
    }
    let mut gateway = Gateway::new(config);
    let mut last: Option<(usize, StepOutcome)> = None;
    let mut expectations = 0;
    for line in lines {
        let (at, value) = line?;
        if let Some(expect) = value.get("expect") {
            let (step_at, outcome) = last
                .take()
                .ok_or_else(|| format!("{name}:{at}: expect without a step before it"))?;
            check_expect(&gateway, &outcome, expect)
                .map_err(|e| format!("{name}:{at}: after the step on line {step_at}: {e}"))?;
            expectations += 1;
        } else {
            let outcome =
                run_step(&mut gateway, &value).map_err(|e| format!("{name}:{at}: {e}"))?;
            last = Some((at, outcome));
        }
    }
    if expectations == 0 {
        return Err(format!("{name}: no expectation, so it checks nothing"));
    }
    Ok(())
}

fn replay_file(file: &str) {
    let path = conversations_dir().join(file);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    if let Err(e) = replay(file, &text) {
        panic!("{e}");
    }
}

/// Each golden conversation, by the behaviour it shows.
const CONVERSATIONS: &[(&str, &str)] = &[
    (
        "status_from_master_reports_relay_open_input_low",
        "01_status_from_master.jsonl",
    ),
    (
        "stranger_gets_no_reply_and_changes_nothing",
        "02_stranger_gets_nothing.jsonl",
    ),
    (
        "user_call_pulses_relay_and_reject_decides_hang_up",
        "03_user_call_pulses_relay.jsonl",
    ),
    (
        "call_none_ignores_calls_but_sms_still_drives_relay",
        "04_call_none_keeps_sms_control.jsonl",
    ),
    (
        "toggle_with_reject_open_connects_on_and_rejects_off",
        "05_toggle_with_reject_open.jsonl",
    ),
    (
        "conn_answers_by_input_level_and_hangs_up_after_5s",
        "06_conn_cl_answers_when_input_high.jsonl",
    ),
    (
        "call_dialer_switches_input_alerts_off_and_on",
        "07_call_dialer_switches_input_alerts.jsonl",
    ),
    (
        "textres_confirms_configuration_success_and_failure",
        "08_textres_confirms_configuration.jsonl",
    ),
    (
        "first_master_needs_the_imei_code",
        "09_first_master_by_imei.jsonl",
    ),
    (
        "list_remove_and_clear_all_manage_numbers",
        "10_list_remove_and_clear.jsonl",
    ),
    (
        "ring_mode_holds_relay_while_the_call_rings",
        "11_ring_mode_holds_relay_while_ringing.jsonl",
    ),
    (
        "withheld_callers_operate_only_with_call_any",
        "12_withheld_callers_only_with_call_any.jsonl",
    ),
    (
        "relay_by_sms_with_acknowledge",
        "13_relay_by_sms_with_acknowledge.jsonl",
    ),
    (
        "muser_lets_users_configure_but_not_become_masters",
        "14_muser_lets_users_configure.jsonl",
    ),
    (
        "two_inputs_alert_by_level_and_mode",
        "15_two_inputs_alert_levels.jsonl",
    ),
    (
        "other_dialects_messages_are_not_handled",
        "16_other_dialects_are_not_handled.jsonl",
    ),
];

macro_rules! conversation_tests {
    ($($test:ident => $index:expr;)*) => {
        $(
            #[test]
            fn $test() {
                let (name, file) = CONVERSATIONS[$index];
                assert_eq!(name, stringify!($test), "CONVERSATIONS and the tests are out of step");
                replay_file(file);
            }
        )*
    };
}

conversation_tests! {
    status_from_master_reports_relay_open_input_low => 0;
    stranger_gets_no_reply_and_changes_nothing => 1;
    user_call_pulses_relay_and_reject_decides_hang_up => 2;
    call_none_ignores_calls_but_sms_still_drives_relay => 3;
    toggle_with_reject_open_connects_on_and_rejects_off => 4;
    conn_answers_by_input_level_and_hangs_up_after_5s => 5;
    call_dialer_switches_input_alerts_off_and_on => 6;
    textres_confirms_configuration_success_and_failure => 7;
    first_master_needs_the_imei_code => 8;
    list_remove_and_clear_all_manage_numbers => 9;
    ring_mode_holds_relay_while_the_call_rings => 10;
    withheld_callers_operate_only_with_call_any => 11;
    relay_by_sms_with_acknowledge => 12;
    muser_lets_users_configure_but_not_become_masters => 13;
    two_inputs_alert_by_level_and_mode => 14;
    other_dialects_messages_are_not_handled => 15;
}

#[test]
fn every_conversation_file_is_replayed_by_a_test() {
    let mut on_disk: Vec<String> = std::fs::read_dir(conversations_dir())
        .map(|dir| {
            dir.filter_map(Result::ok)
                .map(|entry| entry.file_name().to_string_lossy().into_owned())
                .filter(|name| name.ends_with(".jsonl"))
                .collect()
        })
        .unwrap_or_default();
    on_disk.sort();
    let mut listed: Vec<String> = CONVERSATIONS
        .iter()
        .map(|(_, file)| file.to_string())
        .collect();
    listed.sort();
    assert_eq!(on_disk, listed);
}

#[test]
fn replayer_reports_an_expectation_that_does_not_hold() {
    let wrong = format!(
        "{}\n{}\n",
        json!({"sms": {"from": MASTER, "text": "STATUS"}}),
        json!({"expect": {"sms_sent": [{"to": MASTER, "text": "RELAY CLOSED INPUT LOW"}]}}),
    );
    let error = replay("wrong.jsonl", &wrong).err();
    assert!(
        error
            .as_deref()
            .is_some_and(|e| e.starts_with("wrong.jsonl:2:")),
        "{error:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// Behaviours easier to state in Rust than as a conversation

#[test]
fn long_list_is_split_into_messages_of_at_most_160_characters() {
    let mut gateway = Gateway::new(default_config());
    for n in 0..30 {
        let outcome = gateway.sms(MASTER, &format!("ADD +4477009{n:05}"));
        assert_eq!(outcome.handled, Some(true));
    }
    let replies = gateway.sms(MASTER, "LIST").sms_sent;
    assert!(replies.len() >= 2, "{replies:?}");
    assert!(
        replies
            .iter()
            .all(|(to, text)| to == MASTER && text.len() <= 160),
        "{replies:?}"
    );
    let tokens: Vec<String> = replies
        .iter()
        .flat_map(|(_, text)| text.split(' ').map(str::to_string))
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
    gateway.call(Some(USER));
    assert!(gateway.output("relay"), "a toggle switches the relay on");
    assert_eq!(gateway.last_call_state(), Some(CallState::Rejected));
    gateway.call(Some(USER));
    assert!(
        !gateway.output("relay"),
        "the second toggle switches it off"
    );
}

#[test]
fn call_dialer_state_survives_a_reload() {
    let mut gateway = Gateway::new(default_config());
    gateway.sms(MASTER, "TEXTNUM 07700900555");
    gateway.sms(MASTER, "CALL DIALER");
    gateway.call(Some(MASTER));
    assert_eq!(
        gateway.last_call_state(),
        Some(CallState::Rejected),
        "alerts switched off"
    );
    gateway.load();
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
    gateway.call(Some(MASTER));
    assert_eq!(gateway.last_call_state(), Some(CallState::Answered));
    gateway.hang_up_caller();
    // A hang-up of the ended call would panic in `apply`.
    gateway.advance(Duration::from_secs(10));
    assert_eq!(gateway.host.poll_timeout(), None);
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
    gateway.call(Some(MASTER));
    assert!(gateway.output("relay"));
    gateway.load();
    gateway.hang_up_caller();
    assert!(!gateway.output("relay"));
}
