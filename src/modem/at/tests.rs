//! Tests of the AT engine: recorded transcripts (split at every byte boundary), URC ordering,
//! vendor noise, the SMS prompt, timeouts, queueing and garbage. The clock is fake: a base
//! `Instant` plus offsets.

use super::*;
use proptest::prelude::*;

const TIMEOUT: Duration = Duration::from_secs(5);

const WADER_E220: &str =
    include_str!("../../../tests/data/at/01_huawei-e220_vodafone-es__wader-log.txt");
const HUAWEI_STREAMS: &str =
    include_str!("../../../tests/data/at/05_huawei-dongle-raw-streams__at-messages-parser.txt");
const SESSIONS: &str = include_str!("../../../tests/data/at/sessions_real_framing.txt");

// ---------------------------------------------------------------------------------------------
// Transcript format: `>>` command, `>P` payload of the preceding command, `<<`/`..` bytes from
// the modem, `##` section title, `#` comment. `\r`, `\n`, `^Z` and `\"` are escapes.

#[derive(Debug, Clone)]
enum Step {
    Submit(AtCommand),
    Rx(Vec<u8>),
}

#[derive(Debug, Clone)]
struct Script {
    title: String,
    steps: Vec<Step>,
}

impl Script {
    fn with_commands_first(mut self, commands: Vec<AtCommand>) -> Self {
        let mut steps: Vec<Step> = commands.into_iter().map(Step::Submit).collect();
        steps.append(&mut self.steps);
        self.steps = steps;
        self
    }

    fn rx_len(&self) -> usize {
        self.steps
            .iter()
            .map(|s| match s {
                Step::Rx(b) => b.len(),
                Step::Submit(_) => 0,
            })
            .sum()
    }

    /// What the engine must write, in order, when every command gets its prompt.
    fn expected_transmit(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for step in &self.steps {
            if let Step::Submit(cmd) = step {
                out.extend_from_slice(cmd.text.as_bytes());
                out.push(b'\r');
                if let Some(p) = &cmd.payload {
                    out.extend_from_slice(p);
                    out.push(CTRL_Z);
                }
            }
        }
        out
    }
}

fn unescape(s: &str) -> Vec<u8> {
    s.replace("\\r", "\r")
        .replace("\\n", "\n")
        .replace("^Z", "\u{1a}")
        .replace("\\\"", "\"")
        .into_bytes()
}

fn parse_transcript(text: &str) -> Vec<Script> {
    let mut scripts: Vec<Script> = Vec::new();
    for line in text.lines() {
        if let Some(title) = line.strip_prefix("## ") {
            scripts.push(Script {
                title: title.to_string(),
                steps: Vec::new(),
            });
            continue;
        }
        if line.starts_with('#') || line.trim().is_empty() || line == "***" {
            continue;
        }
        let Some(script) = scripts.last_mut() else {
            continue;
        };
        if let Some(cmd) = line.strip_prefix(">> ") {
            let text = String::from_utf8_lossy(&unescape(cmd)).into_owned();
            let text = text.trim_end_matches(['\r', '\n']).to_string();
            script
                .steps
                .push(Step::Submit(AtCommand::new(text, TIMEOUT)));
        } else if let Some(payload) = line.strip_prefix(">P ") {
            if let Some(Step::Submit(cmd)) = script
                .steps
                .iter_mut()
                .rev()
                .find(|s| matches!(s, Step::Submit(_)))
            {
                cmd.payload = Some(unescape(payload));
            }
        } else if let Some(rx) = line
            .strip_prefix("<< ")
            .or_else(|| line.strip_prefix(".. "))
        {
            script.steps.push(Step::Rx(unescape(rx)));
        } else {
            // A read() continuation line (longInput2 after `***`).
            script.steps.push(Step::Rx(unescape(line)));
        }
    }
    scripts
}

fn section(text: &str, title_start: &str) -> Script {
    parse_transcript(text)
        .into_iter()
        .find(|s| s.title.starts_with(title_start))
        .unwrap_or_else(|| panic!("no section {title_start:?} in the transcript"))
}

struct Run {
    events: Vec<AtEvent>,
    transmitted: Vec<u8>,
    ids: Vec<CommandId>,
}

/// Runs a script; with `split_at`, the modem's byte stream is cut into two reads at that offset.
fn run(script: &Script, split_at: Option<usize>) -> Run {
    let now = Instant::now();
    let mut engine = AtEngine::new();
    let mut run = Run {
        events: Vec::new(),
        transmitted: Vec::new(),
        ids: Vec::new(),
    };
    let mut offset = 0;
    for step in &script.steps {
        match step {
            Step::Submit(cmd) => run.ids.push(engine.submit(cmd.clone(), now)),
            Step::Rx(bytes) => {
                match split_at.and_then(|k| k.checked_sub(offset)) {
                    Some(k) if k > 0 && k < bytes.len() => {
                        let (a, b) = bytes.split_at(k);
                        engine.handle_rx(a, now);
                        engine.handle_rx(b, now);
                    }
                    _ => engine.handle_rx(bytes, now),
                }
                offset += bytes.len();
            }
        }
        while let Some(t) = engine.poll_transmit() {
            run.transmitted.extend(t);
        }
    }
    while let Some(e) = engine.poll_event() {
        run.events.push(e);
    }
    run
}

fn assert_every_split_gives_same_events(script: &Script, stride: usize) {
    let whole = run(script, None);
    for k in (1..script.rx_len()).step_by(stride) {
        let split = run(script, Some(k));
        assert_eq!(
            split.events, whole.events,
            "{}: events differ when split at byte {k}",
            script.title
        );
        assert_eq!(
            split.transmitted, whole.transmitted,
            "{}: split {k}",
            script.title
        );
    }
}

fn completions(events: &[AtEvent]) -> Vec<(CommandId, Result<Response, AtError>)> {
    events
        .iter()
        .filter_map(|e| match e {
            AtEvent::Completed { id, result } => Some((*id, result.clone())),
            _ => None,
        })
        .collect()
}

fn urcs(events: &[AtEvent]) -> Vec<Urc> {
    events
        .iter()
        .filter_map(|e| match e {
            AtEvent::Urc(u) => Some(u.clone()),
            _ => None,
        })
        .collect()
}

fn ok_lines(result: &Result<Response, AtError>) -> Vec<String> {
    match result {
        Ok(r) => r.lines.clone(),
        Err(e) => panic!("expected OK, got {e:?}"),
    }
}

fn cmd(text: &str) -> AtCommand {
    AtCommand::new(text, TIMEOUT)
}

fn drain(engine: &mut AtEngine) -> Vec<AtEvent> {
    std::iter::from_fn(|| engine.poll_event()).collect()
}

fn vendor(s: &str) -> Urc {
    Urc::Vendor(s.to_string())
}

// ---------------------------------------------------------------------------------------------
// Recorded transcripts

#[test]
fn e220_capture_completes_every_command_with_its_lines() {
    let script = section(WADER_E220, "A.");
    let r = run(&script, None);
    let done = completions(&r.events);
    assert_eq!(done.len(), 13);
    assert!(urcs(&r.events).is_empty(), "{:?}", r.events);
    assert_eq!(done.iter().map(|d| d.0).collect::<Vec<_>>(), r.ids);
    assert_eq!(ok_lines(&done[0].1), vec!["+CPIN: READY"]);
    assert_eq!(ok_lines(&done[2].1), vec!["E220"]);
    assert_eq!(ok_lines(&done[3].1), vec!["11.110.01.03.00"]);
    assert_eq!(ok_lines(&done[7].1), vec![r#"+COPS: 0,2,"21401",0"#]);
    assert_eq!(ok_lines(&done[11].1), vec!["+CSQ: 25,99"]);
    assert_eq!(r.transmitted, script.expected_transmit());
}

#[test]
fn e220_error_replies_become_typed_errors() {
    let script = section(WADER_E220, "C.").with_commands_first(vec![
        cmd("AT+CPIN?"),
        cmd("AT+CPIN=1330"),
        cmd("AT+CPIN?"),
        cmd("AT+COPS?"),
        cmd("AT+CLCK=\"SC\",2"),
        cmd("AT+CSCA?"),
        cmd("AT+CMGS=1"),
        cmd("AT+CMGR=1"),
    ]);
    let r = run(&script, None);
    let errors: Vec<_> = completions(&r.events)
        .into_iter()
        .map(|(_, res)| res.err())
        .collect();
    assert_eq!(
        errors,
        vec![
            Some(AtError::CmeErrorText("SIM interface not started".into())),
            Some(AtError::CmeErrorText("operation not allowed".into())),
            Some(AtError::CmeErrorText("SIM busy".into())),
            Some(AtError::CmeError(30)),
            Some(AtError::CmeError(100)),
            Some(AtError::CmeError(14)),
            Some(AtError::CmsError(500)),
            Some(AtError::CmsError(301)),
        ]
    );
}

#[test]
fn transcripts_give_same_events_for_every_split() {
    let mut scripts: Vec<Script> = parse_transcript(SESSIONS);
    scripts.push(section(WADER_E220, "A."));
    scripts.push(section(HUAWEI_STREAMS, "test10").with_commands_first(vec![cmd("AT+CNUM"); 8]));
    scripts.push(section(HUAWEI_STREAMS, "test14").with_commands_first(vec![
        cmd("ATE0"),
        cmd("ATE0"),
        cmd("AT+CMGS=1").with_payload("00"),
    ]));
    scripts.push(section(HUAWEI_STREAMS, "test19").with_commands_first(vec![cmsg_echo_command()]));
    scripts.push(section(HUAWEI_STREAMS, "test1.ts"));
    scripts.push(section(HUAWEI_STREAMS, "test43"));
    scripts.push(
        section(HUAWEI_STREAMS, "res/longInput2.txt").with_commands_first(vec![cmd("AT+CMGL=4")]),
    );
    for script in &scripts {
        assert!(script.rx_len() > 0, "{} is empty", script.title);
        assert_every_split_gives_same_events(script, 1);
    }
    // The longest capture (~10 KB) is checked at every 7th byte to keep the test fast.
    let long =
        section(HUAWEI_STREAMS, "res/longInput.txt").with_commands_first(vec![cmd("AT+CMGL=4")]);
    assert_every_split_gives_same_events(&long, 7);
}

#[test]
fn session_receive_read_delete() {
    let script = section(SESSIONS, "receive-read-delete");
    let r = run(&script, None);
    assert_eq!(
        urcs(&r.events),
        vec![Urc::Cmti {
            mem: "SM".into(),
            index: 1
        }]
    );
    let done = completions(&r.events);
    assert_eq!(
        ok_lines(&done[0].1),
        vec![
            "+CMGR: 0,,29",
            "06917228195339040A9110325476980000313080512061800CC8329BFD06DDDF72363904"
        ]
    );
    assert_eq!(ok_lines(&done[1].1), Vec::<String>::new());
}

#[test]
fn session_sms_send_with_vendor_noise_sends_payload_after_prompt() {
    let script = section(SESSIONS, "send-with-zte-noise");
    let r = run(&script, None);
    assert_eq!(r.transmitted, script.expected_transmit());
    let done = completions(&r.events);
    assert_eq!(ok_lines(&done[0].1), vec!["+CMGS: 183"]);
    assert_eq!(
        ok_lines(&done[1].1),
        vec![
            "+CMGR: 0,,24",
            "07917248014000F506B70AA18092020000317071518590803170715185418000"
        ]
    );
    let u = urcs(&r.events);
    assert_eq!(u.len(), 5, "{u:?}");
    assert_eq!(u[1], vendor(r#"+ZPASR: "UMTS""#));
    assert_eq!(
        u[4],
        Urc::Cdsi {
            mem: "SM".into(),
            index: 3
        }
    );
}

#[test]
fn session_cusd_before_and_after_ok_and_multiline_text() {
    let r = run(&section(SESSIONS, "ussd-orderings"), None);
    assert!(completions(&r.events).iter().all(|(_, res)| res.is_ok()));
    let texts: Vec<_> = urcs(&r.events)
        .into_iter()
        .map(|u| match u {
            Urc::Cusd { status, text, dcs } => (status, text.unwrap_or_default(), dcs),
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    assert_eq!(texts.len(), 4);
    assert_eq!(
        texts[0],
        (0, "Available Balance: R 96.45 .".into(), Some(15))
    );
    assert_eq!(texts[1].1, "Initiating Release");
    assert_eq!(texts[2].1, "Wrong order test message");
    assert_eq!(
        texts[3],
        (
            1,
            "Bal:$100.00 *\nExp 01 Jan 2013\n1. Recharge\n2. Balance\n00. Home\n*charges can take 48hrs"
                .into(),
            Some(15)
        )
    );
}

#[test]
fn session_call_urcs_and_no_carrier_during_csq_is_urc() {
    let r = run(&section(SESSIONS, "incoming-call"), None);
    assert_eq!(
        urcs(&r.events),
        vec![
            Urc::Ring,
            Urc::Clip {
                number: Some("+27821231234".into()),
                validity: Some(0)
            },
            Urc::Cring {
                kind: "VOICE".into()
            },
            Urc::Clip {
                number: None,
                validity: Some(1)
            },
            Urc::NoCarrier,
        ]
    );
    let done = completions(&r.events);
    assert!(done[0].1.is_ok());
    assert_eq!(ok_lines(&done[1].1), vec!["+CSQ: 18,99"]);
    assert_eq!(done[2].1, Err(AtError::Busy));
}

#[test]
fn session_boot_noise_is_vendor_urcs_and_own_prefix_lines_are_responses() {
    let r = run(&section(SESSIONS, "boot-noise"), None);
    assert_eq!(
        urcs(&r.events),
        vec![
            vendor("RDY"),
            vendor("+CFUN: 1"),
            vendor("+CPIN: READY"),
            vendor("Call Ready"),
            vendor("SMS Ready"),
            vendor("OVER-VOLTAGE WARNNING"),
            vendor("^BOOT:37478870,0,0,0,77"),
            Urc::Cmti {
                mem: "SM".into(),
                index: 2
            },
        ]
    );
    let done = completions(&r.events);
    assert_eq!(ok_lines(&done[0].1), vec!["+CPIN: READY"]);
    assert_eq!(ok_lines(&done[1].1), vec!["+CREG: 0,1"]);
}

#[test]
fn cmgl_pdu_cut_by_injected_boot_urc_is_reassembled() {
    let script =
        section(HUAWEI_STREAMS, "res/longInput2.txt").with_commands_first(vec![cmd("AT+CMGL=4")]);
    let r = run(&script, None);
    let done = completions(&r.events);
    assert_eq!(done.len(), 1);
    let lines = ok_lines(&done[0].1);
    assert_eq!(lines.len(), 44, "22 headers + 22 PDUs");
    assert_eq!(lines[2], "+CMGL:1,1,,40");
    assert_eq!(
        lines[3],
        "07913306091040F0040B913336766883F500007120528150104017CFF7FB0D0A83C2207618E42697E5F772580E229701"
    );
    // The read() boundary inside entry 6 does not matter either.
    assert!(lines[13].ends_with("A42E83DA65"), "{}", lines[13]);
    assert_eq!(urcs(&r.events), vec![vendor("^BOOT:37478870,0,0,0,77")]);
}

#[test]
fn cmgl_pdu_cut_by_rssi_urc_is_reassembled_and_cmti_after_ok_are_urcs() {
    let script =
        section(HUAWEI_STREAMS, "res/longInput.txt").with_commands_first(vec![cmd("AT+CMGL=4")]);
    let r = run(&script, None);
    let lines = ok_lines(&completions(&r.events)[0].1);
    assert_eq!(lines.len(), 56, "28 headers + 28 PDUs");
    assert!(lines.iter().skip(1).step_by(2).all(|l| parse::is_hex(l)));
    assert!(
        lines[23].contains("006C006F006E00670020006D0065"),
        "{}",
        lines[23]
    );
    let u = urcs(&r.events);
    assert_eq!(u.iter().filter(|u| **u == vendor("^RSSI:19")).count(), 2);
    assert_eq!(
        u.iter().filter(|u| matches!(u, Urc::Cmti { .. })).count(),
        8
    );
}

#[test]
fn cme_error_glued_onto_next_reply_completes_command_and_rest_goes_to_next() {
    let script = section(HUAWEI_STREAMS, "test10").with_commands_first(vec![cmd("AT+CNUM"); 8]);
    let r = run(&script, None);
    let done = completions(&r.events);
    assert_eq!(done.len(), 8);
    assert_eq!(done[0].1, Err(AtError::CmeError(25)));
    assert_eq!(
        ok_lines(&done[1].1),
        vec![r#"+CNUM: "","+33671651906",145"#]
    );
    assert_eq!(
        done[2].1,
        Err(AtError::CmeErrorText(
            "invalid characters in text string".into()
        ))
    );
    assert_eq!(
        ok_lines(&done[3].1),
        vec![r#"+CNUM: "","+33671651906",145"#]
    );
    assert_eq!(done[4].1, Err(AtError::Error));
    assert_eq!(
        ok_lines(&done[5].1),
        vec![r#"+CNUM: "","+33671651907",145"#]
    );
    assert_eq!(done[6].1, Err(AtError::CmeError(25)));
    let last = ok_lines(&done[7].1);
    assert_eq!(last.len(), 3);
    assert_eq!(last[2], r#"+CNUM: "Fax","",0"#);
    assert_eq!(urcs(&r.events), vec![vendor("^MODE: 3,4")]);
}

#[test]
fn echoed_sms_payload_is_dropped() {
    let script = section(HUAWEI_STREAMS, "test19").with_commands_first(vec![cmsg_echo_command()]);
    let r = run(&script, None);
    assert_eq!(r.transmitted, script.expected_transmit());
    let done = completions(&r.events);
    assert_eq!(ok_lines(&done[0].1), vec!["+CMGS: 34"]);
}

/// The payload that test19's modem echoes back, line by line.
fn cmsg_echo_command() -> AtCommand {
    let payload = concat!(
        "0061000B9133365D9ECFC3E7B2220912D7D36C32280C6A97E7F3F0",
        "4882C4F5349B0C0A83DAE57E7F3F0",
        "B9AC4882C49220713DCD2683C22280C6A97E7F3F0",
        "B9AC4882C4F5349B0C0A83DAE5F93"
    );
    cmd("AT+CMGS=153").with_payload(payload)
}

#[test]
fn two_line_cmt_and_cds_urcs_carry_their_pdu() {
    let mut engine = AtEngine::new();
    let now = Instant::now();
    engine.handle_rx(
        b"\r\n+CMT: ,29\r\n06917228195339040A9110325476980000313080512061800CC8329BFD06DDDF72363904\r\n",
        now,
    );
    engine.handle_rx(
        b"\r\n+CDS: 24\r\n07917248014000F506B70AA18092020000317071518590803170715185418000\r\n",
        now,
    );
    assert_eq!(
        drain(&mut engine),
        vec![
            AtEvent::Urc(Urc::Cmt {
                header: ",29".into(),
                pdu: "06917228195339040A9110325476980000313080512061800CC8329BFD06DDDF72363904"
                    .into()
            }),
            AtEvent::Urc(Urc::Cds {
                header: "24".into(),
                pdu: "07917248014000F506B70AA18092020000317071518590803170715185418000".into()
            }),
        ]
    );
}

#[test]
fn cmgr_headers_of_every_shape_keep_their_pdu() {
    for header in [
        "+CMGR: 0,23",
        "+CMGR: 4,1,,151",
        "+CMGR: ,,92",
        "+CMGR: 0,\"a,b\",29",
    ] {
        let mut engine = AtEngine::new();
        let now = Instant::now();
        let id = engine.submit(cmd("AT+CMGR=3"), now);
        let rx = format!("\r\n{header}\r\n0791AABB\r\n\r\nOK\r\n");
        engine.handle_rx(rx.as_bytes(), now);
        assert_eq!(
            drain(&mut engine),
            vec![AtEvent::Completed {
                id,
                result: Ok(Response {
                    lines: vec![header.to_string(), "0791AABB".to_string()]
                })
            }],
            "{header}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Behaviour

#[test]
fn urc_between_command_and_ok_is_an_event() {
    let mut engine = AtEngine::new();
    let now = Instant::now();
    let id = engine.submit(cmd("AT+CSQ"), now);
    engine.handle_rx(b"\r\n+CSQ: 19,99\r\n\r\n+CMTI: \"ME\",7\r\n\r\nOK\r\n", now);
    assert_eq!(
        drain(&mut engine),
        vec![
            AtEvent::Urc(Urc::Cmti {
                mem: "ME".into(),
                index: 7
            }),
            AtEvent::Completed {
                id,
                result: Ok(Response {
                    lines: vec!["+CSQ: 19,99".into()]
                })
            },
        ]
    );
}

#[test]
fn own_urc_name_during_set_command_is_urc_but_during_query_is_response() {
    let mut engine = AtEngine::new();
    let now = Instant::now();
    let set = engine.submit(cmd("AT+CREG=2"), now);
    engine.handle_rx(b"\r\n+CREG: 1,\"00C3\",\"A1B2\"\r\n\r\nOK\r\n", now);
    let query = engine.submit(cmd("AT+CREG?"), now);
    engine.handle_rx(b"\r\n+CREG: 2,1,\"00C3\",\"A1B2\"\r\n\r\nOK\r\n", now);
    assert_eq!(
        drain(&mut engine),
        vec![
            AtEvent::Urc(Urc::Creg {
                stat: 1,
                lac: Some("00C3".into()),
                ci: Some("A1B2".into())
            }),
            AtEvent::Completed {
                id: set,
                result: Ok(Response::default())
            },
            AtEvent::Completed {
                id: query,
                result: Ok(Response {
                    lines: vec!["+CREG: 2,1,\"00C3\",\"A1B2\"".into()]
                })
            },
        ]
    );
}

#[test]
fn unknown_plus_line_is_response_during_command_and_vendor_urc_when_idle() {
    let mut engine = AtEngine::new();
    let now = Instant::now();
    engine.handle_rx(b"\r\n+QIND: SMS DONE\r\n\r\n+XYZ: 1\r\n", now);
    let id = engine.submit(cmd("AT+CPMS?"), now);
    engine.handle_rx(b"\r\n+XYZ: 2\r\n\r\nOK\r\n", now);
    assert_eq!(
        drain(&mut engine),
        vec![
            AtEvent::Urc(vendor("+QIND: SMS DONE")),
            AtEvent::Urc(vendor("+XYZ: 1")),
            AtEvent::Completed {
                id,
                result: Ok(Response {
                    lines: vec!["+XYZ: 2".into()]
                })
            },
        ]
    );
}

#[test]
fn echo_is_dropped_even_before_ate0() {
    let mut engine = AtEngine::new();
    let now = Instant::now();
    let id = engine.submit(cmd("AT+CGMM"), now);
    engine.handle_rx(b"AT+CGMM\r\r\nE220\r\n\r\nOK\r\n", now);
    assert_eq!(
        drain(&mut engine),
        vec![AtEvent::Completed {
            id,
            result: Ok(Response {
                lines: vec!["E220".into()]
            })
        }]
    );
}

#[test]
fn prompt_without_line_end_sends_payload_with_ctrl_z() {
    let mut engine = AtEngine::new();
    let t0 = Instant::now();
    let id = engine.submit(cmd("AT+CMGS=18").with_payload(b"0011AA".to_vec()), t0);
    assert_eq!(engine.poll_transmit(), Some(b"AT+CMGS=18\r".to_vec()));
    engine.handle_rx(b"\r\n>", t0);
    assert_eq!(
        engine.poll_transmit(),
        None,
        "'>' alone is not yet the prompt"
    );
    engine.handle_rx(b" ", t0);
    assert_eq!(engine.poll_transmit(), Some(b"0011AA\x1a".to_vec()));
    engine.handle_rx(b"\r\n+CMGS: 7\r\n\r\nOK\r\n", t0);
    assert_eq!(
        drain(&mut engine),
        vec![AtEvent::Completed {
            id,
            result: Ok(Response {
                lines: vec!["+CMGS: 7".into()]
            })
        }]
    );
}

#[test]
fn prompt_is_ignored_when_the_command_has_no_payload() {
    let mut engine = AtEngine::new();
    let now = Instant::now();
    engine.submit(cmd("AT+CSQ"), now);
    assert!(engine.poll_transmit().is_some());
    engine.handle_rx(b"\r\n> ", now);
    assert_eq!(engine.poll_transmit(), None);
}

#[test]
fn payload_deadline_restarts_when_payload_is_sent() {
    let mut engine = AtEngine::new();
    let t0 = Instant::now();
    engine.submit(cmd("AT+CMGS=18").with_payload(b"00".to_vec()), t0);
    assert_eq!(engine.poll_timeout(), Some(t0 + TIMEOUT));
    let t1 = t0 + Duration::from_secs(3);
    engine.handle_rx(b"\r\n> ", t1);
    assert_eq!(engine.poll_timeout(), Some(t1 + TIMEOUT));
}

#[test]
fn commands_are_queued_and_sent_one_at_a_time() {
    let mut engine = AtEngine::new();
    let now = Instant::now();
    let a = engine.submit(cmd("AT"), now);
    let b = engine.submit(cmd("ATE0"), now);
    assert_eq!(engine.in_flight(), Some(a));
    assert_eq!(engine.queued(), 1);
    assert_eq!(engine.poll_transmit(), Some(b"AT\r".to_vec()));
    assert_eq!(engine.poll_transmit(), None);
    engine.handle_rx(b"\r\nOK\r\n", now);
    assert_eq!(engine.in_flight(), Some(b));
    assert_eq!(engine.queued(), 0);
    assert_eq!(engine.poll_transmit(), Some(b"ATE0\r".to_vec()));
    engine.handle_rx(b"\r\nOK\r\n", now);
    assert_eq!(engine.in_flight(), None);
    assert_eq!(engine.poll_timeout(), None);
    assert_eq!(completions(&drain(&mut engine)).len(), 2);
}

#[test]
fn timeout_counts_from_transmission_and_next_command_goes_out() {
    let mut engine = AtEngine::new();
    let t0 = Instant::now();
    let a = engine.submit(cmd("AT+COPS=?"), t0);
    let t1 = t0 + Duration::from_secs(2);
    let b = engine.submit(cmd("AT"), t1);
    engine.handle_timeout(t0 + TIMEOUT - Duration::from_millis(1));
    assert_eq!(engine.in_flight(), Some(a), "not yet due");
    let t2 = t0 + TIMEOUT;
    engine.handle_timeout(t2);
    assert_eq!(engine.in_flight(), Some(b));
    assert_eq!(
        engine.poll_timeout(),
        Some(t2 + TIMEOUT),
        "b's clock starts at t2"
    );
    assert_eq!(
        drain(&mut engine),
        vec![AtEvent::Completed {
            id: a,
            result: Err(AtError::Timeout)
        }]
    );
}

#[test]
fn cpin_without_ok_times_out_and_next_command_works() {
    let mut engine = AtEngine::new();
    let t0 = Instant::now();
    let cpin = engine.submit(cmd("AT+CPIN?"), t0);
    engine.handle_rx(b"+CPIN: READY\r\n", t0);
    let t1 = t0 + TIMEOUT;
    engine.handle_timeout(t1);
    let next = engine.submit(cmd("AT+CSQ"), t1);
    engine.handle_rx(b"+CSQ: 18,99\r\nOK\r\n", t1);
    assert_eq!(
        drain(&mut engine),
        vec![
            AtEvent::Completed {
                id: cpin,
                result: Err(AtError::Timeout)
            },
            AtEvent::Completed {
                id: next,
                result: Ok(Response {
                    lines: vec!["+CSQ: 18,99".into()]
                })
            },
        ]
    );
}

#[test]
fn final_code_without_line_end_is_used_at_timeout() {
    let mut engine = AtEngine::new();
    let t0 = Instant::now();
    let a = engine.submit(cmd("AT+CNUM"), t0);
    engine.handle_rx(b"\r\n+CME ERROR: 25", t0);
    engine.handle_timeout(t0 + TIMEOUT);
    let b = engine.submit(cmd("AT+CNUM"), t0 + TIMEOUT);
    engine.handle_rx(
        b"+CNUM: \"\",\"+33671651906\",145\r\n\r\nOK\r\n",
        t0 + TIMEOUT,
    );
    let done = completions(&drain(&mut engine));
    assert_eq!(done[0], (a, Err(AtError::CmeError(25))));
    assert_eq!(done[1].0, b);
    assert_eq!(
        ok_lines(&done[1].1),
        vec!["+CNUM: \"\",\"+33671651906\",145"]
    );
}

#[test]
fn no_carrier_ends_dial_but_is_urc_otherwise() {
    let mut engine = AtEngine::new();
    let now = Instant::now();
    engine.handle_rx(b"\r\nNO CARRIER\r\n", now);
    let dial = engine.submit(cmd("ATD+4912345;"), now);
    engine.handle_rx(b"\r\nNO CARRIER\r\n", now);
    let answer = engine.submit(cmd("ATA"), now);
    engine.handle_rx(b"\r\nNO CARRIER\r\n", now);
    assert_eq!(
        drain(&mut engine),
        vec![
            AtEvent::Urc(Urc::NoCarrier),
            AtEvent::Completed {
                id: dial,
                result: Err(AtError::NoCarrier)
            },
            AtEvent::Completed {
                id: answer,
                result: Err(AtError::NoCarrier)
            },
        ]
    );
}

#[test]
fn error_forms_complete_the_command() {
    let cases = [
        ("ERROR", AtError::Error),
        ("COMMAND NOT SUPPORT", AtError::Error),
        ("+CME ERROR: 515", AtError::CmeError(515)),
        (
            "+CME ERROR: SIM not inserted",
            AtError::CmeErrorText("SIM not inserted".into()),
        ),
        ("+CMS ERROR: 330", AtError::CmsError(330)),
        (
            "+CMS ERROR: unknown error",
            AtError::CmsErrorText("unknown error".into()),
        ),
        ("NO DIALTONE", AtError::NoDialtone),
        ("NO ANSWER", AtError::NoAnswer),
    ];
    for (line, expected) in cases {
        let mut engine = AtEngine::new();
        let now = Instant::now();
        let id = engine.submit(cmd("ATD123;"), now);
        engine.handle_rx(format!("\r\n{line}\r\n").as_bytes(), now);
        assert_eq!(
            drain(&mut engine),
            vec![AtEvent::Completed {
                id,
                result: Err(expected)
            }],
            "{line}"
        );
    }
}

#[test]
fn stray_ok_with_nothing_in_flight_is_ignored() {
    let mut engine = AtEngine::new();
    engine.handle_rx(b"\r\nOK\r\n\r\nERROR\r\n", Instant::now());
    assert_eq!(drain(&mut engine), vec![]);
}

#[test]
fn urc_fields_are_parsed() {
    let mut engine = AtEngine::new();
    let now = Instant::now();
    engine.handle_rx(
        b"+CIEV: 2,-1\r\n+CGREG: 5\r\n+CDSI: \"SR\",4\r\n+CLIP: \"+491701234\",145\r\n+CUSD: 2\r\n+CMTI: \"SM\",-1\r\n",
        now,
    );
    assert_eq!(
        urcs(&drain(&mut engine)),
        vec![
            Urc::Ciev { ind: 2, value: -1 },
            Urc::Cgreg {
                stat: 5,
                lac: None,
                ci: None
            },
            Urc::Cdsi {
                mem: "SR".into(),
                index: 4
            },
            Urc::Clip {
                number: Some("+491701234".into()),
                validity: None
            },
            Urc::Cusd {
                status: 2,
                text: None,
                dcs: None
            },
            vendor("+CMTI: \"SM\",-1"),
        ]
    );
}

#[test]
fn reset_fails_in_flight_and_queued_and_clears_buffers() {
    let mut engine = AtEngine::new();
    let now = Instant::now();
    let a = engine.submit(cmd("AT+CSQ"), now);
    let b = engine.submit(cmd("AT+CREG?"), now);
    engine.handle_rx(b"\r\n+CSQ: 1", now);
    engine.reset();
    assert_eq!(engine.in_flight(), None);
    assert_eq!(engine.queued(), 0);
    assert_eq!(engine.poll_transmit(), None, "unsent bytes are dropped");
    let c = engine.submit(cmd("AT"), now);
    engine.handle_rx(b"\r\nOK\r\n", now);
    assert_eq!(
        drain(&mut engine),
        vec![
            AtEvent::Completed {
                id: a,
                result: Err(AtError::Reset)
            },
            AtEvent::Completed {
                id: b,
                result: Err(AtError::Reset)
            },
            AtEvent::Completed {
                id: c,
                result: Ok(Response::default())
            },
        ]
    );
}

#[test]
fn binary_garbage_and_overlong_line_do_not_desynchronise() {
    let mut engine = AtEngine::new();
    let now = Instant::now();
    engine.handle_rx(b"\r\n\xff\xfe\x00garbage\x80\r\n", now);
    engine.handle_rx(&vec![b'A'; MAX_LINE + 100], now);
    let id = engine.submit(cmd("AT+CSQ"), now);
    engine.handle_rx(b"\r\n+CSQ: 5,99\r\n\r\nOK\r\n", now);
    let events = drain(&mut engine);
    assert!(matches!(&events[0], AtEvent::Urc(Urc::Vendor(s)) if s.contains("garbage")));
    assert_eq!(events[1], AtEvent::Discarded { bytes: MAX_LINE });
    assert_eq!(
        events[2],
        AtEvent::Completed {
            id,
            result: Ok(Response {
                lines: vec!["+CSQ: 5,99".into()]
            })
        }
    );
    assert_eq!(events.len(), 3);
}

#[test]
fn unterminated_cusd_string_does_not_swallow_ok() {
    let mut engine = AtEngine::new();
    let now = Instant::now();
    let id = engine.submit(cmd("AT+CUSD=1,\"*100#\",15"), now);
    engine.handle_rx(b"\r\n+CUSD: 1,\"broken\r\n\r\nOK\r\n", now);
    let events = drain(&mut engine);
    assert!(matches!(
        events[0],
        AtEvent::Urc(Urc::Cusd { status: 1, .. })
    ));
    assert_eq!(
        events[1],
        AtEvent::Completed {
            id,
            result: Ok(Response::default())
        }
    );
}

#[test]
fn command_debug_output_hides_the_pin() {
    let shown = format!("{:?}", cmd("AT+CPIN=\"4711\""));
    assert!(!shown.contains("4711"), "{shown}");
    assert!(shown.contains("+CPIN"), "{shown}");
}

#[test]
fn response_field_returns_parameters_after_the_colon() {
    let r = Response {
        lines: vec!["+CSQ: 18,99".into()],
    };
    assert_eq!(r.field("+CSQ"), Some("18,99"));
    assert_eq!(r.field("+CREG"), None);
}

// ---------------------------------------------------------------------------------------------
// Property: nothing the modem sends makes the engine panic or lose track for good.

#[derive(Debug, Clone)]
enum Op {
    Rx(Vec<u8>),
    Submit(usize),
    Timeout(u64),
    Reset,
}

const COMMANDS: &[&str] = &[
    "AT",
    "AT+CSQ",
    "AT+CMGL=4",
    "AT+CMGR=1",
    "AT+CUSD=1,\"*100#\",15",
    "ATD123;",
    "AT+CREG?",
    "AT+CMGS=5",
];

const TOKENS: &[&str] = &[
    "\r\n",
    "\r",
    "OK",
    "ERROR",
    "> ",
    "+CMGL: 1,1,,20",
    "+CMGR: 0,,3",
    "+CUSD: 1,\"",
    "\"",
    "ERROR+CNUM: 1",
    "+CME ERROR: 3",
    "^BOOT:1,2",
    "07",
    "91AB",
    "RING",
    "NO CARRIER",
    "+CMT: ,2",
    "+CDS: 9",
    "AT+CSQ",
    "+CREG: 1",
];

fn rx_strategy() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..64),
        prop::collection::vec(prop::sample::select(TOKENS), 0..12)
            .prop_map(|t| t.concat().into_bytes()),
    ]
}

fn op_strategy() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => rx_strategy().prop_map(Op::Rx),
        2 => (0..COMMANDS.len()).prop_map(Op::Submit),
        1 => (0u64..10).prop_map(Op::Timeout),
        1 => Just(Op::Reset),
    ]
}

proptest! {
    #[test]
    fn random_input_never_panics_and_engine_recovers(
        ops in prop::collection::vec(op_strategy(), 0..40),
        end_with_reset in any::<bool>(),
    ) {
        let t0 = Instant::now();
        let mut now = t0;
        let mut engine = AtEngine::new();
        for op in ops {
            match op {
                Op::Rx(bytes) => engine.handle_rx(&bytes, now),
                Op::Submit(i) => {
                    let text = COMMANDS.get(i).copied().unwrap_or("AT");
                    let mut c = cmd(text);
                    if text.starts_with("AT+CMGS") {
                        c = c.with_payload(b"00".to_vec());
                    }
                    engine.submit(c, now);
                }
                Op::Timeout(secs) => {
                    now += Duration::from_secs(secs);
                    engine.handle_timeout(now);
                }
                Op::Reset => engine.reset(),
            }
            while engine.poll_transmit().is_some() {}
            while engine.poll_event().is_some() {}
        }
        if end_with_reset {
            engine.reset();
        } else {
            // Let everything pending time out, then end whatever partial line is buffered.
            while engine.in_flight().is_some() {
                now += TIMEOUT;
                engine.handle_timeout(now);
            }
            engine.handle_rx(b"\r\n", now);
        }
        while engine.poll_transmit().is_some() {}
        while engine.poll_event().is_some() {}
        prop_assert_eq!(engine.queued(), 0);
        let id = engine.submit(cmd("AT+CGMM"), now);
        prop_assert_eq!(engine.poll_transmit(), Some(b"AT+CGMM\r".to_vec()));
        engine.handle_rx(b"\r\nE220\r\n\r\nOK\r\n", now);
        let done: Vec<_> = completions(&drain(&mut engine));
        prop_assert_eq!(
            done,
            vec![(id, Ok(Response { lines: vec!["E220".to_string()] }))]
        );
    }
}

#[test]
fn response_lines_are_capped() {
    let mut engine = AtEngine::new();
    let now = Instant::now();
    let id = engine.submit(cmd("AT+CLAC"), now);
    for i in 0..MAX_RESPONSE_LINES + 10 {
        engine.handle_rx(format!("+X{i}\r\n").as_bytes(), now);
    }
    engine.handle_rx(b"OK\r\n", now);
    let done = completions(&drain(&mut engine));
    assert_eq!(done[0].0, id);
    assert_eq!(ok_lines(&done[0].1).len(), MAX_RESPONSE_LINES);
}

#[test]
fn engine_debug_output_hides_buffered_echo() {
    let mut engine = AtEngine::new();
    engine.submit(cmd("AT+CPIN=\"4711\""), Instant::now());
    engine.handle_rx(b"AT+CPIN=\"4711", Instant::now());
    let shown = format!("{engine:?}");
    assert!(!shown.contains("4711"), "{shown}");
}

#[test]
fn cusd_answered_before_ok_is_a_urc_not_a_response_line() {
    let mut engine = AtEngine::new();
    let now = Instant::now();
    let id = engine.submit(cmd("AT+CUSD=1,\"*100#\",15"), now);
    engine.handle_rx(b"\r\n+CUSD: 0,\"Balance 5\",15\r\n\r\nOK\r\n", now);
    let events = drain(&mut engine);
    assert_eq!(
        events,
        vec![
            AtEvent::Urc(Urc::Cusd {
                status: 0,
                text: Some("Balance 5".into()),
                dcs: Some(15)
            }),
            AtEvent::Completed {
                id,
                result: Ok(Response::default())
            }
        ]
    );
}

#[test]
fn sim_full_indicator_during_a_command_is_a_urc() {
    let mut engine = AtEngine::new();
    let now = Instant::now();
    let id = engine.submit(cmd("AT+CMGL=4"), now);
    engine.handle_rx(b"\r\n+CIEV: \"SMSFULL\",1\r\n\r\nOK\r\n", now);
    assert_eq!(
        drain(&mut engine),
        vec![
            AtEvent::Urc(Urc::Vendor("+CIEV: \"SMSFULL\",1".into())),
            AtEvent::Completed {
                id,
                result: Ok(Response::default())
            }
        ]
    );
}
