//! The simulated modem's state and AT interpreter, without any I/O: bytes from the gateway go
//! in through [`SimulatedModem::receive`], bytes for the gateway and [`SimEvent`]s come out.

use std::collections::VecDeque;

use super::codec;
use super::{SimConfig, SimEvent};
use crate::modem::profiles::{parse_cnmi_test, parse_cpms_test, Cnmi, Profile};

/// Longest command line kept; longer lines are cut, like a modem's fixed input buffer.
const MAX_LINE: usize = 1024;
/// Longest PDU accepted after `AT+CMGS` (a TPDU is at most 176 octets, plus the SMSC field).
const MAX_PDU_HEX: usize = 2 * 200;
/// Wrong PINs before the SIM wants its PUK, as on a real SIM.
const PIN_ATTEMPTS: u8 = 3;
/// Slots of the separate status report storage ("SR") of modems that have one.
const REPORT_SLOTS: usize = 20;

/// `+CMGR`/`+CMGL` `<stat>` values in PDU mode.
const STAT_UNREAD: u8 = 0;
const STAT_READ: u8 = 1;
const STAT_ALL: u8 = 4;

/// `+CME ERROR` codes (3GPP TS 27.007 §9.2).
const CME_NOT_ALLOWED: u16 = 3;
const CME_NOT_SUPPORTED: u16 = 4;
const CME_SIM_PIN_REQUIRED: u16 = 11;
const CME_SIM_PUK_REQUIRED: u16 = 12;
const CME_INCORRECT_PASSWORD: u16 = 16;
/// `+CMS ERROR` codes (3GPP TS 27.005 §3.2.5).
const CMS_OPERATION_NOT_ALLOWED: u16 = 302;
const CMS_INVALID_PDU_MODE_PARAMETER: u16 = 304;
const CMS_INVALID_MEMORY_INDEX: u16 = 321;

/// What the SIM asks for before it can be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PinState {
    Ready,
    PinRequired { attempts_left: u8 },
    PukRequired,
}

/// The voice call, seen from the modem.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CallState {
    Idle,
    Ringing,
    Active,
}

/// Whether received bytes are a command line or the PDU after an `AT+CMGS` prompt.
#[derive(Debug, Clone, PartialEq, Eq)]
enum InputMode {
    Command,
    PduEntry { tpdu_len: usize, hex: String },
}

/// One SIM storage slot in use.
#[derive(Debug, Clone)]
struct StoredSms {
    /// The PDU as hex, including the SMSC field.
    pdu: String,
    stat: u8,
}

/// How one command of a command line ended.
enum Outcome {
    /// Carry on with the next command; `OK` after the last one.
    Done,
    /// Stop the line with this final result code.
    Final(String),
    /// Send the `> ` prompt and read a PDU of this many TPDU octets.
    Prompt(usize),
}

/// The settings that `ATZ`, `AT&F` and a reset restore.
#[derive(Debug, Clone)]
struct Settings {
    echo: bool,
    cmee: u8,
    clip: bool,
    creg_mode: u8,
    cnmi: [u8; 5],
}

impl Settings {
    fn power_on(echo: bool, profile: &Profile) -> Self {
        Settings {
            echo,
            cmee: 0,
            clip: false,
            creg_mode: 0,
            cnmi: profile.cnmi_power_on,
        }
    }
}

/// The storage `AT+CPMS` selected for reading, listing and deleting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ReadStorage {
    /// The SIM (whatever name the profile uses for it).
    Messages,
    /// The separate status report storage ("SR").
    Reports,
}

/// The simulated modem: SIM storage, call state, settings, and the bytes waiting to go out.
pub(super) struct SimulatedModem {
    cfg: SimConfig,
    settings: Settings,
    pin: PinState,
    registered: bool,
    csq: u8,
    responsive: bool,
    new_sms_urcs: bool,
    slots: Vec<Option<StoredSms>>,
    /// Status reports, on modems that keep them in "SR".
    report_slots: Vec<Option<StoredSms>>,
    read_storage: ReadStorage,
    /// Messages the "network" holds because the SIM is full; stored when a slot frees up.
    waiting_for_space: VecDeque<String>,
    full_reported: bool,
    call: CallState,
    line: Vec<u8>,
    input: InputMode,
    next_message_reference: u8,
    next_concat_reference: u16,
    /// The service-centre time stamp of the last injected SMS.
    last_timestamp: Option<chrono::DateTime<chrono::FixedOffset>>,
    output: Vec<u8>,
    events: Vec<SimEvent>,
}

impl SimulatedModem {
    pub(super) fn new(cfg: SimConfig) -> Self {
        let pin = match cfg.pin {
            Some(_) => PinState::PinRequired {
                attempts_left: PIN_ATTEMPTS,
            },
            None => PinState::Ready,
        };
        SimulatedModem {
            settings: Settings::power_on(cfg.echo, cfg.profile),
            pin,
            registered: true,
            csq: cfg.csq,
            responsive: true,
            new_sms_urcs: true,
            slots: vec![None; cfg.storage_slots],
            report_slots: vec![None; REPORT_SLOTS],
            read_storage: ReadStorage::Messages,
            waiting_for_space: VecDeque::new(),
            full_reported: false,
            call: CallState::Idle,
            line: Vec::new(),
            input: InputMode::Command,
            next_message_reference: 0,
            next_concat_reference: 0,
            last_timestamp: None,
            output: Vec::new(),
            events: Vec::new(),
            cfg,
        }
    }

    /// Bytes for the gateway, oldest first.
    pub(super) fn take_output(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.output)
    }

    /// Events for the test or demo, oldest first.
    pub(super) fn take_events(&mut self) -> Vec<SimEvent> {
        std::mem::take(&mut self.events)
    }

    pub(super) fn stored_sms(&self) -> usize {
        self.slots.iter().filter(|s| s.is_some()).count()
    }

    pub(super) fn waiting_sms(&self) -> usize {
        self.waiting_for_space.len()
    }

    // ---- what the outside world does ----

    pub(super) fn inject_sms(&mut self, from: &str, text: &str) {
        let reference = self.next_concat_reference;
        self.next_concat_reference = self.next_concat_reference.wrapping_add(1);
        // One second apart at least: the PDU carries whole seconds, and two identical PDUs
        // are one message to the gateway (it recognises re-reads by the PDU), while tests
        // send the same text twice in a second on purpose.
        let now = chrono::Local::now().fixed_offset();
        let timestamp = match self.last_timestamp {
            Some(last) if now <= last + chrono::TimeDelta::seconds(1) => {
                last + chrono::TimeDelta::seconds(1)
            }
            _ => now,
        };
        self.last_timestamp = Some(timestamp);
        match codec::encode_deliver(from, text, timestamp, reference) {
            Ok(parts) => {
                for pdu in parts {
                    self.deliver_pdu(pdu);
                }
            }
            Err(e) => tracing::warn!("simulated modem cannot encode an SMS from {from}: {e}"),
        }
    }

    /// Stores `pdu` as it is (even if it is not valid, so that tests can feed garbage).
    pub(super) fn inject_pdu(&mut self, pdu: &str) {
        self.deliver_pdu(pdu.trim().to_owned());
    }

    pub(super) fn ring(&mut self, from: Option<&str>) {
        if !self.cfg.profile.voice {
            tracing::warn!("simulated {} has no voice: no ring", self.cfg.profile.id);
            return;
        }
        if self.call == CallState::Active {
            tracing::warn!("simulated modem ignores a ring during a connected call");
            return;
        }
        self.call = CallState::Ringing;
        self.urc("RING");
        if self.settings.clip {
            let clip = match from {
                Some(number) => {
                    let toa = if number.starts_with('+') { 145 } else { 129 };
                    format!("+CLIP: \"{number}\",{toa},,,,0")
                }
                None => "+CLIP: \"\",128,,,,1".to_owned(),
            };
            self.urc(&clip);
        }
    }

    pub(super) fn remote_hang_up(&mut self) {
        if self.call != CallState::Idle {
            self.call = CallState::Idle;
            self.urc("NO CARRIER");
        }
    }

    pub(super) fn send_raw(&mut self, bytes: &[u8]) {
        self.output.extend_from_slice(bytes);
    }

    pub(super) fn set_responsive(&mut self, on: bool) {
        if on && !self.responsive {
            // What arrived while hung is lost, as in a modem that rebooted its firmware.
            self.line.clear();
            self.input = InputMode::Command;
        }
        self.responsive = on;
    }

    pub(super) fn set_new_sms_urcs(&mut self, on: bool) {
        self.new_sms_urcs = on;
    }

    pub(super) fn set_registered(&mut self, registered: bool) {
        if registered != self.registered {
            self.registered = registered;
            if self.settings.creg_mode >= 1 {
                let stat = self.registration_stat();
                self.urc(&format!("+CREG: {stat}"));
            }
        }
    }

    pub(super) fn set_csq(&mut self, csq: u8) {
        self.csq = csq;
    }

    // ---- bytes from the gateway ----

    pub(super) fn receive(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.receive_byte(byte);
        }
    }

    fn receive_byte(&mut self, byte: u8) {
        if let InputMode::PduEntry { .. } = self.input {
            self.receive_pdu_byte(byte);
            return;
        }
        if self.responsive && self.settings.echo {
            self.output.push(byte);
        }
        match byte {
            b'\r' => {
                let line = String::from_utf8_lossy(&std::mem::take(&mut self.line)).into_owned();
                self.command_line(&line);
            }
            // Terminals send CR LF; the LF starts no new command.
            b'\n' if self.line.is_empty() => {}
            0x08 => {
                self.line.pop();
            }
            _ if self.line.len() < MAX_LINE => self.line.push(byte),
            _ => {}
        }
    }

    fn receive_pdu_byte(&mut self, byte: u8) {
        let InputMode::PduEntry { tpdu_len, hex } = &mut self.input else {
            return;
        };
        match byte {
            0x1A => {
                let (tpdu_len, hex) = (*tpdu_len, std::mem::take(hex));
                self.input = InputMode::Command;
                self.submit(tpdu_len, &hex);
            }
            0x1B => {
                self.input = InputMode::Command;
                self.final_result("OK");
            }
            b'\r' | b'\n' | b' ' => {}
            _ => {
                if hex.len() < MAX_PDU_HEX {
                    hex.push(char::from(byte));
                }
                if self.settings.echo {
                    self.output.push(byte);
                }
            }
        }
    }

    fn command_line(&mut self, line: &str) {
        if line.trim().is_empty() {
            return;
        }
        self.events.push(SimEvent::Command(line.to_owned()));
        if !self.responsive {
            return;
        }
        // A modem looks for "AT" and ignores whatever noise came before it.
        let Some(start) = line.to_ascii_uppercase().find("AT") else {
            return;
        };
        let body = line.get(start + 2..).unwrap_or("").trim_end();
        let mut after_ok = Vec::new();
        for command in split_commands(body) {
            match self.execute(&command, &mut after_ok) {
                Outcome::Done => {}
                Outcome::Final(result) => {
                    self.final_result(&result);
                    return;
                }
                Outcome::Prompt(tpdu_len) => {
                    // The prompt has no line end; whatever follows on the line is dropped, as
                    // the PDU comes next.
                    self.output.extend_from_slice(b"\r\n> ");
                    self.input = InputMode::PduEntry {
                        tpdu_len,
                        hex: String::new(),
                    };
                    return;
                }
            }
        }
        self.final_result("OK");
        for urc in after_ok {
            self.urc(&urc);
        }
    }

    fn execute(&mut self, command: &Command, after_ok: &mut Vec<String>) -> Outcome {
        match command {
            Command::Basic(letter, arg) => self.execute_basic(*letter, *arg),
            Command::Ampersand('F', _) => {
                self.settings = Settings::power_on(true, self.cfg.profile);
                Outcome::Done
            }
            // `&W` (save profile), `&D` (DTR), `&C` (DCD)...: nothing to simulate.
            Command::Ampersand(..) => Outcome::Done,
            Command::Extended { name, form } => self.execute_extended(name, form, after_ok),
            Command::Invalid => Outcome::Final("ERROR".to_owned()),
        }
    }

    fn execute_basic(&mut self, letter: char, arg: Option<u32>) -> Outcome {
        match (letter, arg) {
            // A missing value is 0 (V.250), so `ATE` turns echo off.
            ('E', None | Some(0)) => self.settings.echo = false,
            ('E', Some(1)) => self.settings.echo = true,
            ('Z', _) => self.settings = Settings::power_on(true, self.cfg.profile),
            ('H', _) => self.hang_up(),
            ('A', _) => {
                if self.call != CallState::Ringing {
                    return Outcome::Final("NO CARRIER".to_owned());
                }
                self.call = CallState::Active;
                self.events.push(SimEvent::CallAnswered);
            }
            ('I', _) => {
                let lines = self.cfg.profile.ati;
                self.info(lines);
            }
            // Only verbose result codes (V1, Q0) are simulated.
            ('V', None | Some(1)) | ('Q', None | Some(0)) => {}
            ('X' | 'S', _) => {}
            _ => return Outcome::Final("ERROR".to_owned()),
        }
        Outcome::Done
    }

    fn execute_extended(&mut self, name: &str, form: &Form, after_ok: &mut Vec<String>) -> Outcome {
        use Form::{Exec, Read, Set, Test};
        let needs_sim = matches!(
            name,
            "+CMGR" | "+CMGL" | "+CMGD" | "+CMGS" | "+CPMS" | "+CUSD" | "+CIMI" | "+CCID"
        );
        if needs_sim {
            match self.pin {
                PinState::Ready => {}
                PinState::PinRequired { .. } => return self.cme(CME_SIM_PIN_REQUIRED),
                PinState::PukRequired => return self.cme(CME_SIM_PUK_REQUIRED),
            }
        }
        match (name, form) {
            ("+CMEE", Set(args)) => match number_arg(args, 0) {
                Some(n @ 0..=2) => self.settings.cmee = n as u8,
                _ => return self.cme(CME_NOT_SUPPORTED),
            },
            ("+CMEE", Read) => self.info(&[&format!("+CMEE: {}", self.settings.cmee)]),
            ("+CPIN", Read) => {
                let state = match self.pin {
                    PinState::Ready => "READY",
                    PinState::PinRequired { .. } => "SIM PIN",
                    PinState::PukRequired => "SIM PUK",
                };
                self.info(&[&format!("+CPIN: {state}")]);
            }
            ("+CPIN", Set(args)) => return self.enter_pin(args, after_ok),
            ("+CMGF", Set(args)) => {
                if number_arg(args, 0) != Some(0) {
                    // A modem without text mode.
                    return Outcome::Final("ERROR".to_owned());
                }
            }
            ("+CMGF", Read) => self.info(&["+CMGF: 0"]),
            ("+CMGF", Test) => self.info(&["+CMGF: (0)"]),
            ("+CNMI", Set(args)) => {
                let mut cnmi = self.settings.cnmi;
                for (i, value) in cnmi.iter_mut().enumerate() {
                    match args.split(',').nth(i).map(str::trim) {
                        None | Some("") => {}
                        Some(arg) => match arg.parse::<u8>() {
                            Ok(n) => *value = n,
                            Err(_) => return self.cms(self.cfg.profile.cnmi_error),
                        },
                    }
                }
                let allowed = parse_cnmi_test(self.cfg.profile.cnmi_test)
                    .is_some_and(|support| support.allows(Cnmi(cnmi)));
                if !allowed {
                    return self.cms(self.cfg.profile.cnmi_error);
                }
                self.settings.cnmi = cnmi;
            }
            ("+CNMI", Test) => {
                let line = self.cfg.profile.cnmi_test;
                self.info(&[line]);
            }
            ("+CNMI", Read) => {
                let [mode, mt, bm, ds, bfr] = self.settings.cnmi;
                let mode = self.cfg.profile.cnmi_reported_mode.unwrap_or(mode);
                self.info(&[&format!("+CNMI: {mode},{mt},{bm},{ds},{bfr}")]);
            }
            ("+CLIP", Set(args)) => self.settings.clip = number_arg(args, 0) == Some(1),
            ("+CLIP", Read) => self.info(&[&format!("+CLIP: {},1", u8::from(self.settings.clip))]),
            ("+CREG", Set(args)) => match number_arg(args, 0) {
                Some(n @ 0..=2) => self.settings.creg_mode = n as u8,
                _ => return self.cme(CME_NOT_SUPPORTED),
            },
            ("+CREG", Read) => {
                let line = format!(
                    "+CREG: {},{}",
                    self.settings.creg_mode,
                    self.registration_stat()
                );
                self.info(&[&line]);
            }
            ("+CSQ", Exec) => self.info(&[&format!("+CSQ: {},99", self.csq)]),
            ("+COPS", Read) => {
                let line = if self.registered && self.pin == PinState::Ready {
                    format!("+COPS: 0,0,\"{}\"", self.cfg.operator)
                } else {
                    "+COPS: 0".to_owned()
                };
                self.info(&[&line]);
            }
            ("+CGSN" | "+GSN", Exec) => {
                let imei = self.cfg.imei.clone();
                self.info(&[&imei]);
            }
            ("+CGMI" | "+GMI", Exec) => self.info(&[self.cfg.profile.manufacturer]),
            ("+CGMM" | "+GMM", Exec) => self.info(&[self.cfg.profile.model]),
            ("+CGMR" | "+GMR", Exec) => self.info(&[self.cfg.profile.revision]),
            ("+CIMI", Exec) => self.info(&["001010123456789"]),
            ("+CCID", Exec) => self.info(&["89001012345678901234"]),
            ("+CPMS", Read) => {
                let (used, total) = (self.stored_sms(), self.slots.len());
                let (read, read_used, read_total) = match self.read_storage {
                    ReadStorage::Messages => ("SM", used, total),
                    ReadStorage::Reports => ("SR", self.stored_reports(), self.report_slots.len()),
                };
                let line = format!(
                    "+CPMS: \"{read}\",{read_used},{read_total},\"SM\",{used},{total},\"SM\",{used},{total}"
                );
                self.info(&[&line]);
            }
            ("+CPMS", Set(args)) => return self.select_storage(args),
            ("+CPMS", Test) => {
                let line = self.cfg.profile.cpms_test;
                self.info(&[line]);
            }
            ("+CMGR", Set(args)) => return self.read_sms(args),
            ("+CMGL", Exec) => return self.list_sms(STAT_UNREAD),
            ("+CMGL", Set(args)) => match number_arg(args, 0).and_then(|n| u8::try_from(n).ok()) {
                Some(stat @ 0..=4) => return self.list_sms(stat),
                _ => return self.cme(CME_NOT_SUPPORTED),
            },
            ("+CMGD", Set(args)) => return self.delete_sms(args, after_ok),
            ("+CMGS", Set(args)) => match number_arg(args, 0) {
                Some(len @ 1..=200) => return Outcome::Prompt(len as usize),
                _ => return self.cms(CMS_INVALID_PDU_MODE_PARAMETER),
            },
            ("+CHUP", Exec) => self.hang_up(),
            ("+CUSD", Set(args)) => {
                if let Some(code) = quoted_arg(args) {
                    self.events.push(SimEvent::UssdSent(code.clone()));
                    after_ok.push(format!("+CUSD: 0,\"{}\",15", ussd_reply(&code)));
                }
            }
            ("+CUSD", Read) => self.info(&["+CUSD: 1"]),
            ("+CFUN", Set(args)) => {
                if number_arg(args, 1) == Some(1) {
                    self.reset(after_ok);
                }
            }
            ("+CFUN", Read) => self.info(&["+CFUN: 1"]),
            ("+CSCS", Set(_)) | ("+IPR", Set(_)) | ("+CSCA", Set(_)) | ("+CSMS", Set(_)) => {}
            ("+CSCS", Read) => self.info(&["+CSCS: \"GSM\""]),
            (name, Set(_)) if self.cfg.profile.accepts.contains(&name) => {}
            ("+CSCA", Read) => self.info(&["+CSCA: \"+10000000000\",145"]),
            (_, Test) => {}
            _ => return Outcome::Final("ERROR".to_owned()),
        }
        Outcome::Done
    }

    fn enter_pin(&mut self, args: &str, after_ok: &mut Vec<String>) -> Outcome {
        match self.pin {
            PinState::Ready => self.cme(CME_NOT_ALLOWED),
            PinState::PukRequired => self.cme(CME_SIM_PUK_REQUIRED),
            PinState::PinRequired { attempts_left } => {
                let given = quoted_arg(args).unwrap_or_else(|| args.trim().to_owned());
                if self.cfg.pin.as_deref() == Some(given.as_str()) {
                    self.pin = PinState::Ready;
                    // What the module says once the SIM is open: the boot URCs from +CPIN on.
                    let ready = self
                        .cfg
                        .profile
                        .boot_urcs
                        .iter()
                        .skip_while(|u| !u.starts_with("+CPIN:"))
                        .map(|u| (*u).to_owned());
                    after_ok.extend(ready);
                    return Outcome::Done;
                }
                let attempts_left = attempts_left.saturating_sub(1);
                if attempts_left == 0 {
                    self.pin = PinState::PukRequired;
                } else {
                    self.pin = PinState::PinRequired { attempts_left };
                }
                self.cme(CME_INCORRECT_PASSWORD)
            }
        }
    }

    fn read_sms(&mut self, args: &str) -> Outcome {
        let Some(index) = self.slot_index(args) else {
            return self.cms(CMS_INVALID_MEMORY_INDEX);
        };
        let Some(Some(sms)) = self.read_slots().get_mut(index) else {
            // An empty slot: no message, just OK, as SIM800 and Quectel modems do.
            return Outcome::Done;
        };
        let header = format!("+CMGR: {},,{}", sms.stat, tpdu_octets(&sms.pdu));
        let pdu = sms.pdu.clone();
        sms.stat = STAT_READ.max(sms.stat);
        self.info(&[&header, &pdu]);
        Outcome::Done
    }

    fn list_sms(&mut self, stat: u8) -> Outcome {
        let mut lines = Vec::new();
        for (i, slot) in self.read_slots().iter_mut().enumerate() {
            let Some(sms) = slot else { continue };
            if stat != STAT_ALL && sms.stat != stat {
                continue;
            }
            lines.push(format!(
                "+CMGL: {},{},,{}",
                i + 1,
                sms.stat,
                tpdu_octets(&sms.pdu)
            ));
            lines.push(sms.pdu.clone());
            if sms.stat == STAT_UNREAD {
                sms.stat = STAT_READ;
            }
        }
        if !lines.is_empty() {
            let lines: Vec<&str> = lines.iter().map(String::as_str).collect();
            self.info(&lines);
        }
        Outcome::Done
    }

    fn delete_sms(&mut self, args: &str, after_ok: &mut Vec<String>) -> Outcome {
        let flag = number_arg(args, 1).unwrap_or(0);
        if flag == 0 {
            let Some(index) = self.slot_index(args) else {
                return self.cms(CMS_INVALID_MEMORY_INDEX);
            };
            if let Some(slot) = self.read_slots().get_mut(index) {
                *slot = None;
            }
        } else {
            // <delflag> 1: read, 2: read and sent, 3: read, sent and unsent, 4: all.
            for slot in self.read_slots().iter_mut() {
                let delete = match slot {
                    Some(sms) => flag >= 4 || sms.stat != STAT_UNREAD,
                    None => false,
                };
                if delete {
                    *slot = None;
                }
            }
        }
        // The network delivers what it held back once there is room again.
        while self.slots.iter().any(Option::is_none) {
            let Some(pdu) = self.waiting_for_space.pop_front() else {
                break;
            };
            if let Some(urc) = self.store(pdu) {
                after_ok.push(urc);
            }
        }
        if self.waiting_for_space.is_empty() {
            self.full_reported = false;
        }
        Outcome::Done
    }

    fn submit(&mut self, tpdu_len: usize, hex: &str) {
        let length_matches = hex::decode(hex).ok().is_some_and(|octets| {
            let smsc_len = octets.first().map_or(0, |&n| usize::from(n));
            octets.len().checked_sub(1 + smsc_len) == Some(tpdu_len)
        });
        let decoded = if length_matches {
            codec::decode_submit(hex)
        } else {
            None
        };
        let Some((to, text, wants_report)) = decoded else {
            let Outcome::Final(result) = self.cms(CMS_INVALID_PDU_MODE_PARAMETER) else {
                return;
            };
            self.final_result(&result);
            return;
        };
        let reference = self.next_message_reference;
        self.next_message_reference = self.next_message_reference.wrapping_add(1);
        self.info(&[&format!("+CMGS: {reference}")]);
        self.final_result("OK");
        if wants_report {
            self.delivery_report(&to, reference);
        }
        self.events.push(SimEvent::SmsSent {
            to,
            text,
            pdu: hex.to_owned(),
        });
    }

    /// The network reports at once that message `reference` reached `to`, as `AT+CNMI`'s
    /// `<ds>` asks: 1 routes it as `+CDS`, 2 stores it and sends `+CDSI`, 0 drops it.
    fn delivery_report(&mut self, to: &str, reference: u8) {
        let timestamp = chrono::Local::now().fixed_offset();
        let pdu = match codec::encode_delivered_report(to, reference, timestamp) {
            Ok(pdu) => pdu,
            Err(e) => {
                tracing::warn!("simulated modem cannot encode a delivery report to {to}: {e}");
                return;
            }
        };
        match self.settings.cnmi[3] {
            1 => {
                let header = format!("+CDS: {}", tpdu_octets(&pdu));
                self.output
                    .extend_from_slice(format!("\r\n{header}\r\n{pdu}\r\n").as_bytes());
            }
            2 => {
                let mem = self.cfg.profile.report_storage;
                let slots = if mem == "SR" {
                    &mut self.report_slots
                } else {
                    &mut self.slots
                };
                let Some(index) = slots.iter().position(Option::is_none) else {
                    return;
                };
                if let Some(slot) = slots.get_mut(index) {
                    *slot = Some(StoredSms {
                        pdu,
                        stat: STAT_UNREAD,
                    });
                }
                self.urc(&format!("+CDSI: \"{mem}\",{}", index + 1));
            }
            _ => {}
        }
    }

    fn hang_up(&mut self) {
        match self.call {
            CallState::Idle => {}
            CallState::Ringing => self.events.push(SimEvent::CallRejected),
            CallState::Active => self.events.push(SimEvent::CallEnded),
        }
        self.call = CallState::Idle;
    }

    /// A restart: settings back to the profile's power-on values (echo on, no caller ID,
    /// `+CNMI` as shipped), the call and any half-typed command gone, the volatile report
    /// storage emptied; the SIM's messages stay. Returns the boot URCs to send; with a PIN
    /// lock they stop at `+CPIN: SIM PIN`.
    fn restart(&mut self) -> Vec<String> {
        self.settings = Settings::power_on(true, self.cfg.profile);
        self.call = CallState::Idle;
        self.line.clear();
        self.input = InputMode::Command;
        self.read_storage = ReadStorage::Messages;
        self.report_slots.iter_mut().for_each(|s| *s = None);
        self.responsive = true;
        if self.cfg.pin.is_some() {
            self.pin = PinState::PinRequired {
                attempts_left: PIN_ATTEMPTS,
            };
        }
        let mut urcs = Vec::new();
        for urc in self.cfg.profile.boot_urcs {
            if urc.starts_with("+CPIN:") && self.pin != PinState::Ready {
                urcs.push("+CPIN: SIM PIN".to_owned());
                break;
            }
            urcs.push((*urc).to_owned());
        }
        urcs
    }

    fn reset(&mut self, after_ok: &mut Vec<String>) {
        let urcs = self.restart();
        after_ok.extend(urcs);
    }

    pub(super) fn reboot_silently(&mut self) {
        self.restart();
    }

    pub(super) fn cnmi(&self) -> [u8; 5] {
        self.settings.cnmi
    }

    /// The module restarts on its own (brown-out, watchdog) while the port stays open.
    pub(super) fn reboot(&mut self) {
        for urc in self.restart() {
            self.urc(&urc);
        }
    }

    /// Puts a new message into storage (or holds it when the SIM is full) and announces it.
    fn deliver_pdu(&mut self, pdu: String) {
        let new_sms_mode = self.settings.cnmi[1];
        if new_sms_mode >= 2 {
            // Routed straight to the terminal (`+CMT`), never stored.
            if self.new_sms_urcs {
                let header = format!("+CMT: ,{}", tpdu_octets(&pdu));
                self.output
                    .extend_from_slice(format!("\r\n{header}\r\n{pdu}\r\n").as_bytes());
            }
            return;
        }
        if !self.slots.iter().any(Option::is_none) {
            self.waiting_for_space.push_back(pdu);
            if !self.full_reported {
                self.full_reported = true;
                self.urc("+CIEV: \"SMSFULL\",1");
            }
            return;
        }
        if let Some(urc) = self.store(pdu) {
            self.urc(&urc);
        }
    }

    /// Stores `pdu` in the first free slot; returns the `+CMTI` to send, if any.
    fn store(&mut self, pdu: String) -> Option<String> {
        let index = self.slots.iter().position(Option::is_none)?;
        let slot = self.slots.get_mut(index)?;
        *slot = Some(StoredSms {
            pdu,
            stat: STAT_UNREAD,
        });
        let announce = self.new_sms_urcs && self.settings.cnmi[1] == 1;
        announce.then(|| format!("+CMTI: \"SM\",{}", index + 1))
    }

    /// The 0-based slot for a 1-based `<index>` argument, if it is in range.
    fn slot_index(&mut self, args: &str) -> Option<usize> {
        let index = usize::try_from(number_arg(args, 0)?).ok()?;
        (1..=self.read_slots().len())
            .contains(&index)
            .then(|| index - 1)
    }

    /// The slots `AT+CPMS` selected for reading, listing and deleting.
    fn read_slots(&mut self) -> &mut Vec<Option<StoredSms>> {
        match self.read_storage {
            ReadStorage::Messages => &mut self.slots,
            ReadStorage::Reports => &mut self.report_slots,
        }
    }

    fn stored_reports(&self) -> usize {
        self.report_slots.iter().filter(|s| s.is_some()).count()
    }

    /// `AT+CPMS=<mem1>[,...]`: only `<mem1>` changes what is read; each must be a storage
    /// the profile lists for its place.
    fn select_storage(&mut self, args: &str) -> Outcome {
        let Some(support) = parse_cpms_test(self.cfg.profile.cpms_test) else {
            return self.cms(CMS_OPERATION_NOT_ALLOWED);
        };
        let names: Vec<String> = args
            .split(',')
            .map(|a| a.trim().trim_matches('"').to_ascii_uppercase())
            .collect();
        let lists = [&support.read, &support.write, &support.receive];
        let valid = names.len() <= 3
            && names
                .iter()
                .zip(lists)
                .all(|(name, list)| list.contains(name));
        if !valid {
            return self.cms(CMS_OPERATION_NOT_ALLOWED);
        }
        let separate_reports = self.cfg.profile.report_storage == "SR";
        self.read_storage = match names.first().map(String::as_str) {
            Some("SR") if separate_reports => ReadStorage::Reports,
            _ => ReadStorage::Messages,
        };
        let (used, total) = (self.stored_sms(), self.slots.len());
        let (read_used, read_total) = match self.read_storage {
            ReadStorage::Messages => (used, total),
            ReadStorage::Reports => (self.stored_reports(), self.report_slots.len()),
        };
        self.info(&[&format!(
            "+CPMS: {read_used},{read_total},{used},{total},{used},{total}"
        )]);
        Outcome::Done
    }

    fn registration_stat(&self) -> u8 {
        u8::from(self.registered && self.pin == PinState::Ready)
    }

    // ---- output framing (V1: every line is "\r\n<line>\r\n") ----

    fn info(&mut self, lines: &[&str]) {
        self.output.extend_from_slice(b"\r\n");
        for line in lines {
            self.output.extend_from_slice(line.as_bytes());
            self.output.extend_from_slice(b"\r\n");
        }
    }

    fn final_result(&mut self, line: &str) {
        self.info(&[line]);
    }

    fn urc(&mut self, line: &str) {
        self.info(&[line]);
    }

    fn cme(&self, code: u16) -> Outcome {
        Outcome::Final(match self.settings.cmee {
            0 => "ERROR".to_owned(),
            _ => format!("+CME ERROR: {code}"),
        })
    }

    fn cms(&self, code: u16) -> Outcome {
        Outcome::Final(match self.settings.cmee {
            0 => "ERROR".to_owned(),
            _ => format!("+CMS ERROR: {code}"),
        })
    }
}

/// The simulated network's answer to a USSD code.
fn ussd_reply(code: &str) -> String {
    match code {
        "*100#" | "*101#" => "Your balance is 12.34 EUR.".to_owned(),
        _ => format!("Unknown service code {code}."),
    }
}

/// The TP layer length of a hex PDU that starts with its SMSC field, as `+CMGR` reports it;
/// for garbage that is not hex, half its length.
fn tpdu_octets(pdu: &str) -> usize {
    match hex::decode(pdu) {
        Ok(octets) => {
            let smsc_len = octets.first().map_or(0, |&n| usize::from(n));
            octets.len().saturating_sub(1 + smsc_len)
        }
        Err(_) => pdu.len() / 2,
    }
}

/// One command of a command line.
#[derive(Debug, PartialEq, Eq)]
enum Command {
    /// `E0`, `Z`, `H`...: a letter and an optional number.
    Basic(char, Option<u32>),
    /// `&F`, `&W`...
    Ampersand(char, Option<u32>),
    /// `+CMGS=20`, `+CSQ`...: the upper-case name and what follows it.
    Extended {
        name: String,
        form: Form,
    },
    Invalid,
}

/// How an extended command is used.
#[derive(Debug, PartialEq, Eq)]
enum Form {
    Exec,
    Read,
    Test,
    Set(String),
}

/// Splits what follows `AT` into commands: basic ones may be chained (`E0V1`), extended ones
/// are separated by `;` outside quotes.
fn split_commands(body: &str) -> Vec<Command> {
    let mut commands = Vec::new();
    let mut rest = body;
    while let Some(first) = rest.chars().next() {
        match first {
            ';' | ' ' => rest = rest.get(1..).unwrap_or(""),
            '+' | '^' => {
                let end = end_of_extended(rest);
                let (text, tail) = rest.split_at(end);
                commands.push(parse_extended(text));
                rest = tail;
            }
            '&' => {
                let tail = rest.get(1..).unwrap_or("");
                let (command, tail) = parse_basic(tail);
                commands.push(match command {
                    Command::Basic(letter, arg) => Command::Ampersand(letter, arg),
                    other => other,
                });
                rest = tail;
            }
            _ => {
                let (command, tail) = parse_basic(rest);
                commands.push(command);
                rest = tail;
            }
        }
    }
    commands
}

/// Byte offset of the `;` (outside quotes) that ends the extended command at the start of `s`.
fn end_of_extended(s: &str) -> usize {
    let mut quoted = false;
    for (i, c) in s.char_indices() {
        match c {
            '"' => quoted = !quoted,
            ';' if !quoted => return i,
            _ => {}
        }
    }
    s.len()
}

fn parse_extended(text: &str) -> Command {
    let name_end = text.find(['=', '?']).unwrap_or(text.len());
    let (name, tail) = text.split_at(name_end);
    let form = match tail {
        "" => Form::Exec,
        "?" => Form::Read,
        "=?" => Form::Test,
        _ => match tail.strip_prefix('=') {
            Some(args) => Form::Set(args.to_owned()),
            None => return Command::Invalid,
        },
    };
    Command::Extended {
        name: name.trim().to_ascii_uppercase(),
        form,
    }
}

fn parse_basic(s: &str) -> (Command, &str) {
    let mut chars = s.char_indices();
    let Some((_, letter)) = chars.next() else {
        return (Command::Invalid, "");
    };
    let letter = letter.to_ascii_uppercase();
    if !letter.is_ascii_alphabetic() {
        return (Command::Invalid, "");
    }
    let start = letter.len_utf8();
    let digits_end = s
        .get(start..)
        .and_then(|t| t.find(|c: char| !c.is_ascii_digit()))
        .map_or(s.len(), |i| start + i);
    let digits = s.get(start..digits_end).unwrap_or("");
    let mut tail = s.get(digits_end..).unwrap_or("");
    if letter == 'S' {
        // `S0=0` or `S0?`: the register value or query belongs to this command.
        let end = tail.find(|c: char| !(c == '=' || c == '?' || c.is_ascii_digit()));
        tail = end.and_then(|i| tail.get(i..)).unwrap_or("");
    }
    if letter == 'D' {
        // Dialling (which this modem does not do) takes the rest of the line.
        return (Command::Basic('D', digits.parse().ok()), "");
    }
    (Command::Basic(letter, digits.parse().ok()), tail)
}

/// The `index`th comma-separated argument as a number.
fn number_arg(args: &str, index: usize) -> Option<u32> {
    args.split(',')
        .nth(index)?
        .trim()
        .trim_matches('"')
        .parse()
        .ok()
}

/// The first quoted argument, without its quotes.
fn quoted_arg(args: &str) -> Option<String> {
    let start = args.find('"')? + 1;
    let len = args.get(start..)?.find('"')?;
    args.get(start..start + len).map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chained_basic_and_extended_commands_are_split() {
        assert_eq!(
            split_commands("E0V1+CMGF=0;+CUSD=1,\"*1;0#\",15"),
            vec![
                Command::Basic('E', Some(0)),
                Command::Basic('V', Some(1)),
                Command::Extended {
                    name: "+CMGF".into(),
                    form: Form::Set("0".into())
                },
                Command::Extended {
                    name: "+CUSD".into(),
                    form: Form::Set("1,\"*1;0#\",15".into())
                },
            ]
        );
    }

    #[test]
    fn extended_command_forms_are_recognised() {
        assert_eq!(
            split_commands("+creg?;+CMGF=?;+csq"),
            vec![
                Command::Extended {
                    name: "+CREG".into(),
                    form: Form::Read
                },
                Command::Extended {
                    name: "+CMGF".into(),
                    form: Form::Test
                },
                Command::Extended {
                    name: "+CSQ".into(),
                    form: Form::Exec
                },
            ]
        );
    }

    #[test]
    fn tpdu_length_excludes_the_smsc_field() {
        assert_eq!(tpdu_octets("0791448720003023040C91"), 3);
        assert_eq!(tpdu_octets("00010203"), 3);
        assert_eq!(tpdu_octets("zz"), 1);
    }

    fn exchange(modem: &mut SimulatedModem, line: &str) -> String {
        modem.receive(line.as_bytes());
        modem.receive(b"\r");
        String::from_utf8_lossy(&modem.take_output()).into_owned()
    }

    fn sim(id: &str) -> SimulatedModem {
        let profile = crate::modem::profiles::by_id(id).expect("profile");
        SimulatedModem::new(SimConfig {
            profile,
            echo: false,
            ..SimConfig::default()
        })
    }

    #[test]
    fn a_sim800_refuses_stored_reports_as_its_manual_says() {
        let mut m = sim("sim800");
        exchange(&mut m, "AT+CMEE=1");
        assert_eq!(
            exchange(&mut m, "AT+CNMI=?"),
            "\r\n+CNMI: (0-3),(0-3),(0,2),(0,1),(0,1)\r\n\r\nOK\r\n"
        );
        assert!(exchange(&mut m, "AT+CNMI=2,1,0,2,0").contains("+CMS ERROR: 302"));
        assert_eq!(m.cnmi(), [2, 1, 0, 0, 0], "a refused value changes nothing");
        assert!(exchange(&mut m, "AT+CNMI=2,1,0,1,0").ends_with("OK\r\n"));
        assert_eq!(m.cnmi(), [2, 1, 0, 1, 0]);
        assert!(exchange(&mut m, "AT+CGMM").contains("SIMCOM_SIM800C"));
    }

    #[test]
    fn an_ec25_files_reports_in_sr_and_lists_them_only_from_there() {
        let mut m = sim("ec25");
        exchange(&mut m, "AT+CNMI=2,1,0,2,0");
        m.delivery_report("+447700900123", 7);
        let out = String::from_utf8_lossy(&m.take_output()).into_owned();
        assert!(out.contains("+CDSI: \"SR\",1"), "{out}");
        assert!(!exchange(&mut m, "AT+CMGL=4").contains("+CMGL:"));
        assert!(exchange(&mut m, "AT+CPMS=\"SR\"").contains("+CPMS: 1,20"));
        assert!(exchange(&mut m, "AT+CMGL=4").contains("+CMGL: 1,"));
        assert!(exchange(&mut m, "AT+CPMS=\"XX\"").contains("ERROR"));
    }

    #[test]
    fn a_reboot_restores_power_on_settings_and_sends_the_boot_urcs() {
        let mut m = sim("e3372");
        exchange(&mut m, "AT+CLIP=1");
        exchange(&mut m, "AT+CNMI=2,1,0,2,0");
        m.reboot();
        let out = String::from_utf8_lossy(&m.take_output()).into_owned();
        assert_eq!(out, "\r\n^SYSSTART\r\n\r\n+CPIN: READY\r\n");
        assert_eq!(m.cnmi(), [0, 0, 0, 0, 0]);
        assert!(exchange(&mut m, "AT+CLIP?").contains("+CLIP: 0,1"));
        // Echo is back on after a restart.
        assert!(exchange(&mut m, "AT").starts_with("AT\r"));
    }

    #[test]
    fn garbage_command_lines_do_not_panic() {
        let mut modem = SimulatedModem::new(SimConfig::default());
        for line in [
            "AT\u{e9}\u{1F600}=\"",
            "ATS",
            "AT+",
            "AT+=",
            "AT&",
            "ATD",
            "AT+CMGS=x",
        ] {
            modem.receive(line.as_bytes());
            modem.receive(b"\r");
        }
        let output = String::from_utf8_lossy(&modem.take_output()).into_owned();
        assert!(output.contains("ERROR"), "{output}");
    }
}
