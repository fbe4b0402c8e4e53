//! The simulated modem seen through its pty, opened with `tokio-serial` like the gateway does.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc::UnboundedReceiver;
use tokio::time::timeout;
use tokio_serial::{SerialPortBuilderExt, SerialStream};

use super::{SimConfig, SimEvent, SimHandle, SimModem};
use crate::modem::pdu;

const WAIT: Duration = Duration::from_secs(5);

/// The gateway's end of the pty, with what it has read but not yet looked at.
struct Port {
    stream: SerialStream,
    unread: String,
}

impl Port {
    async fn open(sim: &SimHandle) -> Port {
        let path = sim.path().to_string_lossy().into_owned();
        let stream = tokio_serial::new(path, 115_200)
            .open_native_async()
            .unwrap_or_else(|e| panic!("tokio-serial cannot open the pty {:?}: {e}", sim.path()));
        Port {
            stream,
            unread: String::new(),
        }
    }

    async fn send(&mut self, bytes: &str) {
        self.stream
            .write_all(bytes.as_bytes())
            .await
            .expect("write to the pty");
    }

    /// Reads until `needle` has arrived; returns everything up to and including it.
    async fn expect(&mut self, needle: &str) -> String {
        let read = async {
            loop {
                if let Some(at) = self.unread.find(needle) {
                    let rest = self.unread.split_off(at + needle.len());
                    return std::mem::replace(&mut self.unread, rest);
                }
                let mut buf = [0u8; 256];
                let n = self.stream.read(&mut buf).await.expect("read from the pty");
                assert_ne!(n, 0, "pty closed while waiting for {needle:?}");
                self.unread.push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        };
        match timeout(WAIT, read).await {
            Ok(text) => text,
            Err(_) => panic!("no {needle:?} within {WAIT:?}; got {:?}", self.unread),
        }
    }

    /// Sends a command line and returns the answer up to its final `OK`.
    async fn command(&mut self, line: &str) -> String {
        self.send(&format!("{line}\r")).await;
        self.expect("\r\nOK\r\n").await
    }
}

/// A simulated modem with echo off and numeric errors, as the gateway sets it up.
async fn started(cfg: SimConfig) -> (SimHandle, UnboundedReceiver<SimEvent>, Port) {
    let (sim, events) = SimModem::start(cfg).expect("start the simulated modem");
    let mut port = Port::open(&sim).await;
    port.command("ATE0").await;
    port.command("AT+CMEE=1").await;
    (sim, events, port)
}

/// The next event other than a received command line.
async fn next_event(events: &mut UnboundedReceiver<SimEvent>) -> SimEvent {
    let wait = async {
        loop {
            match events.recv().await {
                Some(SimEvent::Command(_)) => continue,
                Some(event) => return event,
                None => panic!("the simulated modem stopped"),
            }
        }
    };
    timeout(WAIT, wait)
        .await
        .expect("an event within the bounded wait")
}

#[tokio::test]
async fn at_is_answered_ok_through_tokio_serial() {
    let (sim, _events) = SimModem::start(SimConfig::default()).expect("start");
    let mut port = Port::open(&sim).await;
    port.send("AT\r").await;
    let answer = port.expect("OK\r\n").await;
    assert_eq!(answer, "AT\r\r\nOK\r\n");
}

#[tokio::test]
async fn commands_are_echoed_until_ate0() {
    let (sim, _events) = SimModem::start(SimConfig::default()).expect("start");
    let mut port = Port::open(&sim).await;
    assert_eq!(
        port.command("AT+CSQ").await,
        "AT+CSQ\r\r\n+CSQ: 20,99\r\n\r\nOK\r\n"
    );
    assert_eq!(port.command("ATE0").await, "ATE0\r\r\nOK\r\n");
    assert_eq!(
        port.command("AT+CSQ").await,
        "\r\n+CSQ: 20,99\r\n\r\nOK\r\n"
    );
}

#[tokio::test]
async fn every_command_line_is_an_event() {
    let (sim, mut events) = SimModem::start(SimConfig::default()).expect("start");
    let mut port = Port::open(&sim).await;
    port.command("AT+COPS?").await;
    let event = timeout(WAIT, events.recv())
        .await
        .expect("an event in time");
    assert_eq!(event, Some(SimEvent::Command("AT+COPS?".to_owned())));
}

#[tokio::test]
async fn port_can_be_closed_and_opened_again() {
    let (sim, _events) = SimModem::start(SimConfig::default()).expect("start");
    let mut port = Port::open(&sim).await;
    port.command("ATE0").await;
    drop(port);
    let mut port = Port::open(&sim).await;
    assert_eq!(port.command("AT").await, "\r\nOK\r\n");
}

#[tokio::test]
async fn identity_and_network_queries_answer_from_the_config() {
    let cfg = SimConfig {
        operator: "Test Net".to_owned(),
        csq: 17,
        ..SimConfig::default()
    };
    let (_sim, _events, mut port) = started(cfg).await;
    assert!(port
        .command("AT+CGSN")
        .await
        .contains("\r\n356938035643809\r\n"));
    assert!(port
        .command("AT+COPS?")
        .await
        .contains("+COPS: 0,0,\"Test Net\""));
    assert!(port.command("AT+CSQ").await.contains("+CSQ: 17,99"));
    assert!(port
        .command("AT+CREG=1;+CREG?")
        .await
        .contains("+CREG: 1,1"));
}

#[tokio::test]
async fn text_mode_is_refused() {
    let (_sim, _events, mut port) = started(SimConfig::default()).await;
    port.send("AT+CMGF=1\r").await;
    assert_eq!(port.expect("ERROR\r\n").await, "\r\nERROR\r\n");
    assert_eq!(port.command("AT+CMGF=0").await, "\r\nOK\r\n");
}

#[tokio::test]
async fn unknown_command_is_an_error() {
    let (_sim, _events, mut port) = started(SimConfig::default()).await;
    port.send("AT+NOSUCH\r").await;
    assert_eq!(port.expect("ERROR\r\n").await, "\r\nERROR\r\n");
}

#[tokio::test]
async fn sim_pin_unlocks_only_with_the_right_pin() {
    let cfg = SimConfig {
        pin: Some("1234".to_owned()),
        ..SimConfig::default()
    };
    let (_sim, _events, mut port) = started(cfg).await;
    assert!(port.command("AT+CPIN?").await.contains("+CPIN: SIM PIN"));
    port.send("AT+CMGL=4\r").await;
    port.expect("+CME ERROR: 11\r\n").await;
    port.send("AT+CPIN=\"0000\"\r").await;
    port.expect("+CME ERROR: 16\r\n").await;
    port.command("AT+CPIN=\"1234\"").await;
    port.expect("SMS Ready\r\n").await;
    assert!(port.command("AT+CPIN?").await.contains("+CPIN: READY"));
}

#[tokio::test]
async fn three_wrong_pins_lock_the_sim_until_puk() {
    let cfg = SimConfig {
        pin: Some("1234".to_owned()),
        ..SimConfig::default()
    };
    let (_sim, _events, mut port) = started(cfg).await;
    for _ in 0..3 {
        port.send("AT+CPIN=\"0000\"\r").await;
        port.expect("+CME ERROR: 16\r\n").await;
    }
    assert!(port.command("AT+CPIN?").await.contains("+CPIN: SIM PUK"));
    port.send("AT+CPIN=\"1234\"\r").await;
    port.expect("+CME ERROR: 12\r\n").await;
}

#[test]
fn config_debug_hides_the_pin() {
    let cfg = SimConfig {
        pin: Some("4711".to_owned()),
        ..SimConfig::default()
    };
    let shown = format!("{cfg:?}");
    assert!(
        !shown.contains("4711") && shown.contains("redacted"),
        "{shown}"
    );
}

#[tokio::test]
async fn registration_change_is_reported_when_creg_urcs_are_on() {
    let (sim, _events, mut port) = started(SimConfig::default()).await;
    port.command("AT+CREG=1").await;
    sim.set_registered(false);
    port.expect("\r\n+CREG: 0\r\n").await;
    assert!(port.command("AT+CREG?").await.contains("+CREG: 1,0"));
    assert_eq!(port.command("AT+COPS?").await, "\r\n+COPS: 0\r\n\r\nOK\r\n");
}

#[tokio::test]
async fn cnmi_mt_2_routes_new_sms_to_the_port_without_storing() {
    let (sim, _events, mut port) = started(SimConfig::default()).await;
    port.command("AT+CNMI=2,2,0,0,0").await;
    sim.inject_sms("+491701234567", "direct");
    let header = port.expect("\r\n+CMT: ,").await;
    assert_eq!(header, "\r\n+CMT: ,");
    let rest = port.expect("\r\n").await;
    let len: usize = rest.trim_end().parse().expect("a length after +CMT: ,");
    let pdu = port.expect("\r\n").await;
    assert_eq!(pdu.trim_end().len() / 2 - smsc_octets(pdu.trim_end()), len);
    assert_eq!(sim.stored_sms(), 0);
}

#[tokio::test]
async fn cmgs_round_trip_reports_the_decoded_sms() {
    let (_sim, mut events, mut port) = started(SimConfig::default()).await;
    let text = "Relay 1 on";
    let pdu = submit_pdu("+491701234567", text);
    let tpdu_len = pdu.len() / 2 - 1;
    port.send(&format!("AT+CMGS={tpdu_len}\r")).await;
    assert_eq!(port.expect("> ").await, "\r\n> ");
    port.send(&format!("{pdu}\x1a")).await;
    let answer = port.expect("OK\r\n").await;
    assert_eq!(answer, "\r\n+CMGS: 0\r\n\r\nOK\r\n");
    let event = next_event(&mut events).await;
    assert_eq!(
        event,
        SimEvent::SmsSent {
            to: "+491701234567".to_owned(),
            text: text.to_owned(),
            pdu
        }
    );
}

#[tokio::test]
async fn cmgs_with_a_bad_pdu_is_refused() {
    let (_sim, _events, mut port) = started(SimConfig::default()).await;
    port.send("AT+CMGS=5\r").await;
    port.expect("> ").await;
    port.send("0011zz\x1a").await;
    assert_eq!(port.expect("\r\n").await, "\r\n");
    assert_eq!(port.expect("ERROR: 304\r\n").await, "+CMS ERROR: 304\r\n");
}

#[tokio::test]
async fn escape_cancels_cmgs() {
    let (sim, mut events, mut port) = started(SimConfig::default()).await;
    port.send("AT+CMGS=5\r").await;
    port.expect("> ").await;
    port.send("0011\x1b").await;
    port.expect("\r\nOK\r\n").await;
    drop(port);
    drop(sim);
    while let Ok(Some(event)) = timeout(WAIT, events.recv()).await {
        assert!(
            matches!(event, SimEvent::Command(_)),
            "unexpected {event:?}"
        );
    }
}

#[tokio::test]
async fn injected_sms_is_announced_and_reads_back_with_sender_and_text() {
    let (sim, _events, mut port) = started(SimConfig::default()).await;
    sim.inject_sms("+491701234567", "STATUS");
    port.expect("+CMTI: \"SM\",1\r\n").await;
    let answer = port.command("AT+CMGR=1").await;
    let (header, pdu) = cmgr_header_and_pdu(&answer);
    assert_eq!(
        header,
        format!("+CMGR: 0,,{}", pdu.len() / 2 - smsc_octets(&pdu))
    );
    let pdu::Pdu::Deliver(deliver) = pdu::decode(&pdu, true).expect("a PDU the codec reads") else {
        panic!("not an SMS-DELIVER: {pdu}");
    };
    assert_eq!(deliver.sender, "+491701234567");
    assert_eq!(deliver.text, "STATUS");
    let again = port.command("AT+CMGR=1").await;
    assert!(
        again.contains("+CMGR: 1,,"),
        "read messages are stat 1: {again}"
    );
}

#[tokio::test]
async fn long_sms_is_stored_in_several_slots() {
    let (sim, _events, mut port) = started(SimConfig::default()).await;
    sim.inject_sms("+491701234567", &"x".repeat(200));
    port.expect("+CMTI: \"SM\",2\r\n").await;
    assert_eq!(sim.stored_sms(), 2);
}

#[tokio::test]
async fn cmgl_lists_all_messages_and_cmgd_deletes() {
    let (sim, _events, mut port) = started(SimConfig::default()).await;
    sim.inject_sms("+491701234567", "one");
    sim.inject_sms("+491701234567", "two");
    port.expect("+CMTI: \"SM\",2\r\n").await;
    port.command("AT+CMGR=1").await;
    let list = port.command("AT+CMGL=4").await;
    assert!(list.starts_with("\r\n+CMGL: 1,1,,"), "{list}");
    assert!(list.contains("\r\n+CMGL: 2,0,,"), "{list}");
    assert_eq!(list.matches("+CMGL:").count(), 2, "{list}");
    port.command("AT+CMGD=1").await;
    assert_eq!(sim.stored_sms(), 1);
    let list = port.command("AT+CMGL=4").await;
    assert_eq!(list.matches("+CMGL:").count(), 1, "{list}");
    assert_eq!(port.command("AT+CMGR=1").await, "\r\nOK\r\n");
    port.command("AT+CMGD=1,4").await;
    assert_eq!(sim.stored_sms(), 0);
}

#[tokio::test]
async fn full_sim_holds_messages_until_a_slot_is_freed() {
    let cfg = SimConfig {
        storage_slots: 1,
        ..SimConfig::default()
    };
    let (sim, _events, mut port) = started(cfg).await;
    sim.inject_sms("+491701234567", "first");
    port.expect("+CMTI: \"SM\",1\r\n").await;
    sim.inject_sms("+491701234567", "second");
    port.expect("+CIEV: \"SMSFULL\",1\r\n").await;
    assert_eq!((sim.stored_sms(), sim.waiting_sms()), (1, 1));
    port.command("AT+CMGD=1").await;
    port.expect("+CMTI: \"SM\",1\r\n").await;
    assert_eq!((sim.stored_sms(), sim.waiting_sms()), (1, 0));
}

#[tokio::test]
async fn lost_urc_mode_stores_without_cmti() {
    let (sim, _events, mut port) = started(SimConfig::default()).await;
    sim.set_new_sms_urcs(false);
    sim.inject_pdu("07911326040000F0040B911346610089F60000208062917314080CC8F71D14969741F977FD07");
    let list = port.command("AT+CMGL=4").await;
    assert!(!list.contains("+CMTI"), "{list}");
    assert!(list.contains("+CMGL: 1,0,,"), "{list}");
    assert_eq!(sim.stored_sms(), 1);
}

#[tokio::test]
async fn ring_sends_ring_and_clip_and_ath_rejects() {
    let (sim, mut events, mut port) = started(SimConfig::default()).await;
    port.command("AT+CLIP=1").await;
    sim.ring(Some("+491701234567"));
    port.expect("\r\nRING\r\n").await;
    port.expect("\r\n+CLIP: \"+491701234567\",145,,,,0\r\n")
        .await;
    sim.ring(None);
    port.expect("\r\n+CLIP: \"\",128,,,,1\r\n").await;
    port.command("ATH").await;
    assert_eq!(next_event(&mut events).await, SimEvent::CallRejected);
}

#[tokio::test]
async fn answered_call_ends_with_chup() {
    let (sim, mut events, mut port) = started(SimConfig::default()).await;
    sim.ring(Some("0170123"));
    port.expect("RING\r\n").await;
    port.command("ATA").await;
    assert_eq!(next_event(&mut events).await, SimEvent::CallAnswered);
    port.command("AT+CHUP").await;
    assert_eq!(next_event(&mut events).await, SimEvent::CallEnded);
}

#[tokio::test]
async fn remote_hang_up_sends_no_carrier() {
    let (sim, _events, mut port) = started(SimConfig::default()).await;
    sim.ring(Some("0170123"));
    port.expect("RING\r\n").await;
    sim.remote_hang_up();
    port.expect("\r\nNO CARRIER\r\n").await;
    port.send("ATA\r").await;
    port.expect("\r\nNO CARRIER\r\n").await;
}

#[tokio::test]
async fn ussd_is_answered_after_ok() {
    let (_sim, mut events, mut port) = started(SimConfig::default()).await;
    port.command("AT+CUSD=1,\"*100#\",15").await;
    port.expect("\r\n+CUSD: 0,\"Your balance is 12.34 EUR.\",15\r\n")
        .await;
    assert_eq!(
        next_event(&mut events).await,
        SimEvent::UssdSent("*100#".to_owned())
    );
}

#[tokio::test]
async fn reset_sends_ready_urcs_and_turns_echo_back_on() {
    let (_sim, _events, mut port) = started(SimConfig::default()).await;
    port.command("AT+CFUN=1,1").await;
    let urcs = port.expect("SMS Ready\r\n").await;
    assert!(
        urcs.contains("\r\nRDY\r\n") && urcs.contains("\r\n+CPIN: READY\r\n"),
        "{urcs}"
    );
    assert_eq!(port.command("AT").await, "AT\r\r\nOK\r\n");
}

#[tokio::test]
async fn unresponsive_modem_swallows_commands_until_it_recovers() {
    let (sim, mut events, mut port) = started(SimConfig::default()).await;
    sim.set_responsive(false);
    port.send("AT\r").await;
    // The swallowed command still arrives as an event, after those of the set-up.
    let swallowed = async {
        while let Some(event) = events.recv().await {
            if event == SimEvent::Command("AT".to_owned()) {
                return true;
            }
        }
        false
    };
    assert_eq!(timeout(WAIT, swallowed).await, Ok(true));
    // The "OK" below could only be the answer to the second AT (the first one was swallowed),
    // which is checked by the URC sent in between arriving first.
    sim.send_raw(b"\r\n^MARK\r\n");
    sim.set_responsive(true);
    let answer = port.command("AT").await;
    assert_eq!(answer, "\r\n^MARK\r\n\r\nOK\r\n");
}

#[tokio::test]
async fn dropping_the_handle_ends_the_loop() {
    let (sim, mut events) = SimModem::start(SimConfig::default()).expect("start");
    drop(sim);
    let ended = timeout(WAIT, async { while events.recv().await.is_some() {} }).await;
    assert!(
        ended.is_ok(),
        "the loop still runs after the handle was dropped"
    );
}

#[test]
fn stop_ends_the_loop_outside_a_runtime() {
    let (sim, mut events) = SimModem::start(SimConfig::default()).expect("start");
    let clone = sim.clone();
    sim.stop();
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        match events.try_recv() {
            Err(tokio::sync::mpsc::error::TryRecvError::Disconnected) => break,
            _ if std::time::Instant::now() > deadline => panic!("the loop did not stop"),
            _ => std::thread::yield_now(),
        }
    }
    drop(clone);
}

/// An SMS-SUBMIT for `text` (GSM 7-bit), built by hand so the test does not trust the encoder
/// it checks the simulated modem with.
fn submit_pdu(to: &str, text: &str) -> String {
    let digits: String = to.trim_start_matches('+').to_owned();
    let mut semi_octets = digits.clone();
    if semi_octets.len() % 2 == 1 {
        semi_octets.push('F');
    }
    let swapped: String = semi_octets
        .as_bytes()
        .chunks(2)
        .map(|pair| format!("{}{}", char::from(pair[1]), char::from(pair[0])))
        .collect();
    let septets: Vec<u8> = text.bytes().collect(); // ASCII letters, digits, space: same in GSM 7-bit
    let mut packed = Vec::new();
    let (mut acc, mut bits) = (0u32, 0);
    for septet in &septets {
        acc |= u32::from(*septet) << bits;
        bits += 7;
        while bits >= 8 {
            packed.push((acc & 0xFF) as u8);
            acc >>= 8;
            bits -= 8;
        }
    }
    if bits > 0 {
        packed.push(acc as u8);
    }
    format!(
        "001100{:02X}91{}0000AA{:02X}{}",
        digits.len(),
        swapped,
        septets.len(),
        hex::encode_upper(packed)
    )
}

fn smsc_octets(pdu: &str) -> usize {
    1 + usize::from_str_radix(&pdu[..2], 16).expect("hex SMSC length")
}

fn cmgr_header_and_pdu(answer: &str) -> (String, String) {
    let lines: Vec<&str> = answer.split("\r\n").filter(|l| !l.is_empty()).collect();
    assert_eq!(lines.len(), 3, "header, PDU, OK: {answer:?}");
    (lines[0].to_owned(), lines[1].to_owned())
}
