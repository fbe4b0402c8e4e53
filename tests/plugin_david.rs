//! The David dialect plugin (`plugins/david.lua`) driven through the Lua host, with this test
//! playing the gateway: it applies the plugin's commands to a map of outputs, feeds the
//! resulting events back, runs timers on a fake clock, answers USSD and collects SMS.
//!
//! The golden conversations in `tests/conversations/david/*.jsonl` (format:
//! `tests/conversations/call_reject_conn/README.md`, plus `{"reload":true}`) are replayed here;
//! the tests below them cover what a conversation cannot say (USSD, restarts, lock-out).

use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use chrono::{DateTime, Local, TimeZone};
use gsmgw::bus::{Call, Command, Event, IncomingSms, ModemStatus, OutputAction};
use gsmgw::lua::{Dispatch, HostOptions, LuaHost, World};
use serde_json::{json, Value};

const PLUGIN: &str = "david";
const SERVICE: &str = "+447700900001";
const STRANGER: &str = "+447700900999";
const STORE_SCOPE: &str = "plugin:david";

fn plugin_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("plugins/david.lua")
}

fn conversations_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/conversations/david")
}

fn default_config() -> Value {
    json!({"relay_x": "relay", "relay_y": "relay_y", "input_a": "door", "input_b": "input2"})
}

/// Where a call stands, as the gateway sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CallState {
    Ringing,
    /// Hung up without being answered.
    Rejected,
    /// The caller gave up.
    Ended,
}

impl CallState {
    fn word(self) -> &'static str {
        match self {
            CallState::Ringing => "ringing",
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

/// The gateway around the plugin: outputs, a fake clock, the store, calls, SMS and USSD.
struct Gateway {
    host: LuaHost,
    config: Value,
    now: Instant,
    /// The instant the wall clock was set at, and the time it showed then.
    wall_anchor: (Instant, DateTime<Local>),
    modem: ModemStatus,
    outputs: BTreeMap<String, bool>,
    inputs: BTreeMap<String, bool>,
    /// Timed output reverts the gateway owes: (due, name, state).
    reverts: Vec<(Instant, String, bool)>,
    /// What `KvSet` persisted, as the store would keep it.
    store: BTreeMap<String, String>,
    calls: BTreeMap<u64, CallState>,
    last_call: Option<u64>,
    next_id: u64,
    /// USSD codes asked for and not answered yet: (request id, code).
    ussd_pending: Vec<(u64, String)>,
    outcome: StepOutcome,
}

impl Gateway {
    fn new(config: Value) -> Self {
        let outputs = BTreeMap::from([("relay".into(), false), ("relay_y".into(), false)]);
        let inputs = BTreeMap::from([("door".into(), false), ("input2".into(), false)]);
        // The signal `gsmgw try` reports, so that status texts read the same in both.
        let modem = ModemStatus {
            signal_dbm: Some(-71),
            ..ModemStatus::default()
        };
        let now = Instant::now();
        let mut gateway = Gateway {
            host: LuaHost::new(host_options(), world(&outputs, &inputs, &modem)),
            config,
            now,
            wall_anchor: (now, morning()),
            modem,
            outputs,
            inputs,
            reverts: Vec::new(),
            store: BTreeMap::new(),
            calls: BTreeMap::new(),
            last_call: None,
            next_id: 1,
            ussd_pending: Vec::new(),
            outcome: StepOutcome::default(),
        };
        gateway.set_wall_clock();
        gateway.load();
        gateway
    }

    /// Tells the host the wall-clock time that goes with the fake clock.
    fn set_wall_clock(&mut self) {
        let (at, wall) = self.wall_anchor;
        let elapsed = chrono::TimeDelta::from_std(self.now - at).unwrap_or_default();
        self.host.set_wall_clock(self.now, wall + elapsed);
    }

    /// Loads the plugin (a reload when it runs already: its store carries over).
    fn load(&mut self) -> StepOutcome {
        let status = self.host.load_plugin(
            PLUGIN,
            &plugin_path(),
            &self.config,
            self.store.clone(),
            self.now,
        );
        assert_eq!(status.error, None, "the plugin must load");
        let commands = self.host.take_commands();
        self.apply(Dispatch {
            commands,
            ..Dispatch::default()
        });
        self.take_outcome()
    }

    /// A gateway restart: a fresh host, the same outputs, inputs and store.
    fn restart(&mut self) {
        self.host = LuaHost::new(
            host_options(),
            world(&self.outputs, &self.inputs, &self.modem),
        );
        self.reverts.clear();
        self.set_wall_clock();
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
            sender_kind: gsmgw::bus::SenderKind::of(from),
        };
        let dispatch = self.host.dispatch_sms(&sms, self.now);
        self.outcome.handled = Some(dispatch.handled_by.as_deref() == Some(PLUGIN));
        self.apply(dispatch);
        self.take_outcome()
    }

    /// A call rings in; a call still ringing ends first (one line, one call).
    fn call(&mut self, from: Option<&str>) -> StepOutcome {
        self.hang_up_caller();
        self.next_id += 1;
        let id = self.next_id;
        self.calls.insert(id, CallState::Ringing);
        self.last_call = Some(id);
        let call = Call {
            id,
            from: from.map(str::to_string),
        };
        let dispatch = self.host.dispatch_call(&call, self.now);
        self.outcome.handled = Some(dispatch.handled_by.as_deref() == Some(PLUGIN));
        self.apply(dispatch);
        self.take_outcome()
    }

    /// The caller of the current call hangs up.
    fn hang_up_caller(&mut self) -> StepOutcome {
        if let Some(id) = self.last_call {
            if self.calls.get(&id) == Some(&CallState::Ringing) {
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

    /// The modem answers the oldest pending USSD request.
    fn answer_ussd(&mut self, result: Result<&str, &str>) -> StepOutcome {
        assert!(!self.ussd_pending.is_empty(), "no USSD request to answer");
        let (id, _) = self.ussd_pending.remove(0);
        self.event(Event::UssdResult {
            id,
            result: result.map(str::to_string).map_err(str::to_string),
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
                        OutputAction::Toggle => !self.output(&name),
                    };
                    self.set_output(&name, on);
                }
                Command::SendSms { to, text, .. } => self.outcome.sms_sent.push((to, text)),
                Command::RejectCall { call_id } => {
                    assert_eq!(
                        self.calls.get(&call_id),
                        Some(&CallState::Ringing),
                        "reject of a call that is not ringing"
                    );
                    self.end_call(call_id, CallState::Rejected);
                }
                // The host's own data (lock-outs) is not the plugin's store.
                Command::KvSet { scope, .. } if scope != STORE_SCOPE => {}
                Command::KvSet { key, value, .. } => match value {
                    Some(value) => {
                        self.store.insert(key, value);
                    }
                    None => {
                        self.store.remove(&key);
                    }
                },
                Command::Ussd { id, code } => self.ussd_pending.push((id, code)),
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

/// 09:00 local time on an ordinary day (no daylight-saving change near it).
fn morning() -> DateTime<Local> {
    Local
        .with_ymd_and_hms(2026, 3, 10, 9, 0, 0)
        .earliest()
        .unwrap_or_else(Local::now)
}

fn world(
    outputs: &BTreeMap<String, bool>,
    inputs: &BTreeMap<String, bool>,
    modem: &ModemStatus,
) -> World {
    World {
        outputs: outputs.clone(),
        inputs: inputs.clone(),
        modem: modem.clone(),
        ..World::default()
    }
}

fn host_options() -> HostOptions {
    HostOptions {
        memory_limit_kb: 16 * 1024,
        instruction_limit: 10_000_000,
        country_code: Some("44".into()),
        // A debug build is slow; the deadline is tested in src/lua/hostile_tests.rs.
        call_deadline_ms: 20_000,
        ..HostOptions::default()
    }
}

fn sent(to: &str, text: &str) -> (String, String) {
    (to.to_string(), text.to_string())
}

// ---------------------------------------------------------------------------------------------
// Conversation replayer

/// `3s`, `2m`, `500ms`.
fn parse_duration(text: &str) -> Result<Duration, String> {
    let at = text
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| format!("duration '{text}' has no unit (s, m or ms)"))?;
    let (number, unit) = text.split_at(at);
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
    if step.get("reload").is_some() {
        return Ok(gateway.load());
    }
    Err(format!("unknown step {step}"))
}

fn check_expect(gateway: &Gateway, outcome: &StepOutcome, expect: &Value) -> Result<(), String> {
    if let Some(handled_by) = expect.get("handled_by") {
        // Only this plugin runs here, so any handler named must be it.
        let want = match handled_by {
            Value::Null => false,
            Value::String(name) if name == PLUGIN => true,
            other => return Err(format!("handled_by: {other} cannot handle anything here")),
        };
        if outcome.handled != Some(want) {
            return Err(format!(
                "handled_by: want {handled_by}, got {:?}",
                outcome.handled
            ));
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
        if let Some(patch) = first.get("config") {
            // A patch over the gateway config, as `gsmgw try` takes it: this plugin's section.
            if let Some(section) = patch.pointer("/plugins/david") {
                config = section.clone();
            }
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

#[test]
fn every_golden_conversation_holds() {
    let mut files: Vec<PathBuf> = std::fs::read_dir(conversations_dir())
        .map(|dir| {
            dir.filter_map(Result::ok)
                .map(|entry| entry.path())
                .filter(|path| path.extension().is_some_and(|ext| ext == "jsonl"))
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    assert!(files.len() >= 9, "the spec has nine golden cases");
    let failures: Vec<String> = files
        .iter()
        .filter_map(|path| {
            let name = path.file_name()?.to_string_lossy().into_owned();
            let text = std::fs::read_to_string(path).map_err(|e| format!("{name}: {e}"));
            text.and_then(|text| replay(&name, &text)).err()
        })
        .collect();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn replayer_reports_an_expectation_that_does_not_hold() {
    let wrong = format!(
        "{}\n{}\n",
        json!({"sms": {"from": SERVICE, "text": "PC,TMX,5"}}),
        json!({"expect": {"sms_sent": [{"to": SERVICE, "text": "PROGRAM ERROR"}]}}),
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
fn settings_survive_a_restart() {
    let mut gateway = Gateway::new(default_config());
    gateway.sms(
        SERVICE,
        "PC,NPC,KEY9,ARX,OPEN,TMX,90s,LDX,+420777000111,1,STN,+447700900001,DIP,0000010",
    );
    gateway.restart();
    assert_eq!(
        gateway.sms(STRANGER, "open").sms_sent,
        vec![sent(STRANGER, "open OK")]
    );
    assert!(gateway.output("relay"));
    gateway.advance(Duration::from_secs(90));
    assert!(!gateway.output("relay"), "TMX 90s survived");
    let call = gateway.call(Some("+420777000111"));
    assert_eq!(call.handled, Some(true));
    assert_eq!(
        call.sms_sent,
        vec![sent(SERVICE, "+420777000111 call limit reached")]
    );
    gateway.restart();
    assert_eq!(gateway.call(Some("+420777000111")).handled, Some(false));
    assert_eq!(
        gateway.sms(SERVICE, "key9,TMY,1").sms_sent,
        vec![sent(SERVICE, "PROGRAM OK")]
    );
}

#[test]
fn dial_list_holds_at_most_fifty_numbers_per_relay() {
    let mut gateway = Gateway::new(default_config());
    let first: Vec<String> = (0..49).map(|n| format!("+4207770{n:05}")).collect();
    assert_eq!(
        gateway
            .sms(SERVICE, &format!("PC,ADX,{}", first.join(",")))
            .sms_sent,
        vec![sent(SERVICE, "PROGRAM OK")]
    );
    assert_eq!(
        gateway
            .sms(SERVICE, "PC,ADX,+420777000000,+420777999998")
            .sms_sent,
        vec![sent(SERVICE, "PROGRAM OK")],
        "a number already listed does not count twice"
    );
    assert_eq!(
        gateway.sms(SERVICE, "PC,ADX,+420777999999").sms_sent,
        vec![sent(SERVICE, "PROGRAM ERROR ADX,+420777999999")]
    );
    assert_eq!(
        gateway.sms(SERVICE, "PC,ADY,+420777999999").sms_sent,
        vec![sent(SERVICE, "PROGRAM OK")],
        "relay Y has its own list"
    );
    assert_eq!(gateway.call(Some("+420777999999")).handled, Some(true));
    assert!(!gateway.output("relay") && gateway.output("relay_y"));
}

#[test]
fn status_reports_signal_as_percent_of_the_best() {
    let mut gateway = Gateway::new(default_config());
    gateway.modem.signal_dbm = Some(-51);
    gateway.restart();
    assert_eq!(
        gateway.sms(STRANGER, "status").sms_sent,
        vec![sent(STRANGER, "A0 B0 C0 D0 X0 Y0 GSM 100%")]
    );
    gateway.modem.signal_dbm = Some(-82);
    gateway.restart();
    assert_eq!(
        gateway.sms(STRANGER, "STATUS").sms_sent,
        vec![sent(STRANGER, "A0 B0 C0 D0 X0 Y0 GSM 50%")]
    );
}

#[test]
fn status_text_comes_from_the_config_until_programmed() {
    let mut config = default_config();
    config["status_text"] = json!("DAVID STATUS");
    config["access_code"] = json!("1234");
    let mut gateway = Gateway::new(config);
    assert_eq!(gateway.sms(STRANGER, "STATUS").handled, Some(false));
    assert_eq!(
        gateway.sms(STRANGER, "david status").sms_sent,
        vec![sent(STRANGER, "A0 B0 C0 D0 X0 Y0 GSM 68%")]
    );
    assert_eq!(gateway.sms(SERVICE, "PC,STS,S").handled, Some(false));
    assert_eq!(
        gateway.sms(SERVICE, "1234,STS,S").sms_sent,
        vec![sent(SERVICE, "PROGRAM OK")]
    );
    assert_eq!(gateway.sms(STRANGER, "s").handled, Some(true));
}

#[test]
fn messages_of_other_dialects_are_not_handled() {
    let mut gateway = Gateway::new(default_config());
    gateway.sms(SERVICE, "PC,ARX,ON,DRX,OFF,ARY,1234");
    for text in [
        "1234,status#",
        "1234,r1=on#",
        "1234,connect#",
        ",connect#",
        "PROG 7982 MODE:A",
        "PROG 7982 USRS:1,1234,JOHN,1",
        "prog 7982 mode:d",
        "RLYTIME 9",
        "ON 10s",
        "OPEN THE GATE",
        "STATUS please",
        "ADD 07700900123",
        "CLEAR ALL",
    ] {
        let outcome = gateway.sms(SERVICE, text);
        assert_eq!(outcome.handled, Some(false), "{text}");
        assert_eq!(outcome.sms_sent, vec![], "{text}");
    }
    assert!(!gateway.output("relay") && !gateway.output("relay_y"));
}

#[test]
fn credit_check_runs_daily_and_tells_service_numbers_when_low() {
    let mut gateway = Gateway::new(default_config());
    gateway.sms(SERVICE, "PC,STN,+447700900001,+447700900002,CRE,*100#,50");
    gateway.advance(Duration::from_secs(59 * 60));
    assert!(gateway.ussd_pending.is_empty(), "not before 10:00");
    gateway.advance(Duration::from_secs(60));
    let codes: Vec<&str> = gateway
        .ussd_pending
        .iter()
        .map(|(_, c)| c.as_str())
        .collect();
    assert_eq!(codes, ["*100#"]);
    let low = "Vas kredit je 23,50 Kc. Dekujeme";
    assert_eq!(
        gateway.answer_ussd(Ok(low)).sms_sent,
        vec![sent(SERVICE, low), sent("+447700900002", low)]
    );
    gateway.advance(Duration::from_secs(24 * 3600));
    assert_eq!(gateway.ussd_pending.len(), 1, "again a day later");
    assert_eq!(
        gateway
            .answer_ussd(Ok("Balance 120.00 EUR, valid to 2026-12-31"))
            .sms_sent,
        vec![]
    );
}

#[test]
fn credit_check_failure_or_answer_without_number_sends_nothing() {
    let mut gateway = Gateway::new(default_config());
    gateway.sms(SERVICE, "PC,STN,+447700900001,CRE,*101#,10");
    gateway.advance(Duration::from_secs(3600));
    assert_eq!(gateway.answer_ussd(Err("network timeout")).sms_sent, vec![]);
    gateway.advance(Duration::from_secs(24 * 3600));
    assert_eq!(
        gateway.answer_ussd(Ok("Service unavailable")).sms_sent,
        vec![]
    );
}

#[test]
fn credit_check_survives_a_restart_and_cre_without_code_stops_it() {
    let mut gateway = Gateway::new(default_config());
    gateway.sms(SERVICE, "PC,STN,+447700900001,CRE,*100#,50");
    gateway.restart();
    gateway.advance(Duration::from_secs(3600));
    assert_eq!(gateway.ussd_pending.len(), 1);
    assert_eq!(
        gateway.answer_ussd(Ok("Credit 5")).sms_sent,
        vec![sent(SERVICE, "Credit 5")]
    );
    assert_eq!(
        gateway.sms(SERVICE, "PC,CRE,").sms_sent,
        vec![sent(SERVICE, "PROGRAM OK")]
    );
    gateway.advance(Duration::from_secs(48 * 3600));
    assert!(gateway.ussd_pending.is_empty());
}

#[test]
fn credit_check_time_comes_from_the_config() {
    let mut config = default_config();
    config["credit_check_at"] = json!("09:30");
    let mut gateway = Gateway::new(config);
    gateway.sms(SERVICE, "PC,CRE,*100#,50");
    gateway.advance(Duration::from_secs(30 * 60));
    assert_eq!(gateway.ussd_pending.len(), 1);
}

#[test]
fn five_wrong_access_codes_lock_the_sender_out_of_every_dialect() {
    let mut gateway = Gateway::new(default_config());
    for attempt in 1..=5 {
        let outcome = gateway.sms(STRANGER, &format!("P{attempt},NPC,MINE"));
        assert_eq!(outcome.handled, Some(false), "attempt {attempt}");
        assert_eq!(outcome.sms_sent, vec![], "attempt {attempt}");
    }
    assert!(gateway.host.is_locked_out(STRANGER, gateway.now));
    assert_eq!(
        gateway.sms(STRANGER, "PC,ARX,MINE").sms_sent,
        vec![],
        "even the right code is ignored now"
    );
    assert_eq!(
        gateway.sms(SERVICE, "PC,ARX,OURS").sms_sent,
        vec![sent(SERVICE, "PROGRAM OK")],
        "other senders are not locked out"
    );
}

#[test]
fn programmed_texts_with_commas_never_count_as_wrong_codes() {
    let mut gateway = Gateway::new(default_config());
    gateway.sms(SERVICE, "PC,ARX,HEATING ON,DRX,OFF");
    for _ in 0..6 {
        gateway.sms(STRANGER, "HEATING ON, OFF");
        gateway.sms(STRANGER, "off, heating on");
        gateway.sms(STRANGER, "Hello there, world");
    }
    assert!(!gateway.host.is_locked_out(STRANGER, gateway.now));
}

#[test]
fn any_short_first_field_before_a_comma_is_an_access_code_guess() {
    let mut gateway = Gateway::new(default_config());
    gateway.sms(SERVICE, "PC,ARX,HEATING ON");
    for text in [
        "hello, world",
        "XY,",
        "1234,status#",
        "ab,cd",
        "%QQ,ARX,X%%",
    ] {
        let outcome = gateway.sms(STRANGER, text);
        assert_eq!(outcome.handled, Some(false), "{text}");
        assert_eq!(outcome.sms_sent, vec![], "{text}");
    }
    assert!(gateway.host.is_locked_out(STRANGER, gateway.now));
}
