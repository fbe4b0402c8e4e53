//! The sans-IO AT engine: bytes from the modem in, command completions and URCs out.
//!
//! Built like quinn-proto: no serial port, no timers, no clock. The driver feeds received
//! bytes with [`AtEngine::handle_rx`], writes whatever [`AtEngine::poll_transmit`] returns,
//! sleeps until [`AtEngine::poll_timeout`] and then calls [`AtEngine::handle_timeout`], and acts
//! on [`AtEngine::poll_event`]. One command is in flight at a time; the rest wait in a queue.
//!
//! How a line is read, in order:
//! 1. a continuation of a multi-line `+CUSD:` string or of a PDU that is being collected;
//! 2. the echo of the command in flight (dropped, also before `ATE0` took effect), the SMS
//!    prompt, the modem's echo of the SMS payload (dropped);
//! 3. a final result code (possibly glued onto the next reply, as Huawei does);
//! 4. an information line of the command in flight, when its `+NAME` is the command's own;
//! 5. a URC (`+CMTI`, `+CMT`, `RING`, ... and vendor noise such as `^BOOT`, `RDY`);
//! 6. otherwise an information line of the command in flight, or a [`Urc::Vendor`] when no
//!    command is in flight.
//!
//! `NO CARRIER`, `BUSY`, `NO ANSWER` and `NO DIALTONE` end only `ATD`/`ATA`: while any other
//! command is in flight they report the end (or failure) of a call, so they become URCs
//! ([`Urc::NoCarrier`], [`Urc::Vendor`]) and that command still waits for its own `OK`.
//!
//! Processing is byte by byte, so how the bytes are split into reads never changes the result.

mod parse;
#[cfg(test)]
mod tests;

use std::collections::VecDeque;
use std::fmt;
use std::time::{Duration, Instant};

use parse::{BodyKind, UrcLine};

/// Longest line kept; longer lines are dropped (reported as [`AtEvent::Discarded`]).
/// The longest legitimate line is a `+CMGL` PDU (at most ~360 hex characters).
pub const MAX_LINE: usize = 4096;

/// Most information lines kept for one command (`AT+CLAC` lists ~270); a modem that streams
/// more is cut off rather than allowed to grow memory until the timeout.
pub const MAX_RESPONSE_LINES: usize = 1024;

/// Ctrl-Z, which ends an SMS payload after the `> ` prompt.
const CTRL_Z: u8 = 0x1A;

/// Identifies a submitted command in its [`AtEvent::Completed`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CommandId(pub u64);

/// A command to send to the modem.
#[derive(Clone, PartialEq, Eq)]
pub struct AtCommand {
    /// The command line without the final CR, e.g. `AT+CMGR=3`.
    pub text: String,
    /// How long to wait for the final result code, counted from the moment the command is
    /// transmitted (and again from the moment a payload is transmitted).
    pub timeout: Duration,
    /// Sent after the `> ` prompt (for `AT+CMGS`); the engine appends Ctrl-Z.
    pub payload: Option<Vec<u8>>,
}

impl AtCommand {
    /// A command without payload.
    pub fn new(text: impl Into<String>, timeout: Duration) -> Self {
        Self {
            text: text.into(),
            timeout,
            payload: None,
        }
    }

    /// Adds the bytes to send after the `> ` prompt (without the Ctrl-Z).
    pub fn with_payload(mut self, bytes: impl Into<Vec<u8>>) -> Self {
        self.payload = Some(bytes.into());
        self
    }
}

// The text may hold a PIN (`AT+CPIN="1234"`): only the command name is ever printed.
impl fmt::Debug for AtCommand {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AtCommand")
            .field("name", &CommandShape::of(&self.text).name)
            .field("timeout", &self.timeout)
            .field("payload_len", &self.payload.as_ref().map(Vec::len))
            .finish()
    }
}

/// What the engine reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AtEvent {
    /// A command ended: with its information lines, or with an error.
    Completed {
        /// The id returned by [`AtEngine::submit`].
        id: CommandId,
        /// The information lines, or why the command failed.
        result: Result<Response, AtError>,
    },
    /// An unsolicited result code.
    Urc(Urc),
    /// An overlong line (more than [`MAX_LINE`] bytes) was dropped; the engine resynchronises
    /// at the next line end.
    Discarded {
        /// How many bytes were dropped before the engine started skipping to the line end.
        bytes: usize,
    },
}

/// The information lines of a successful command.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Response {
    /// Information lines in order, echo and empty lines removed. For `+CMGR`/`+CMGL` the PDU
    /// follows its header line as one line, even when the modem split it with a URC.
    pub lines: Vec<String>,
}

impl Response {
    /// The parameters of the first line starting with `prefix` (e.g. `"+CSQ"`), after the colon.
    pub fn field(&self, prefix: &str) -> Option<&str> {
        self.lines.iter().find_map(|line| {
            parse::strip_prefix_ignore_case(line, prefix)
                .and_then(|rest| rest.strip_prefix(':'))
                .map(str::trim)
        })
    }
}

/// Why a command failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AtError {
    /// `ERROR` (or Huawei's `COMMAND NOT SUPPORT`).
    #[error("modem answered ERROR")]
    Error,
    /// `+CME ERROR: <n>` (equipment error, 3GPP TS 27.007 §9.2).
    #[error("modem answered +CME ERROR: {0}")]
    CmeError(u16),
    /// `+CME ERROR: <text>` from a modem in verbose mode (`AT+CMEE=2`).
    #[error("modem answered +CME ERROR: {0}")]
    CmeErrorText(String),
    /// `+CMS ERROR: <n>` (SMS error, 3GPP TS 27.005 §3.2.5).
    #[error("modem answered +CMS ERROR: {0}")]
    CmsError(u16),
    /// `+CMS ERROR: <text>` from a modem in verbose mode.
    #[error("modem answered +CMS ERROR: {0}")]
    CmsErrorText(String),
    /// `NO CARRIER` ending a dial or answer command.
    #[error("no carrier")]
    NoCarrier,
    /// `BUSY` ending a dial command.
    #[error("line busy")]
    Busy,
    /// `NO ANSWER` ending a dial command.
    #[error("no answer")]
    NoAnswer,
    /// `NO DIALTONE` ending a dial command.
    #[error("no dial tone")]
    NoDialtone,
    /// No final result code before the command's deadline.
    #[error("modem did not answer in time")]
    Timeout,
    /// The engine was reset (port reopened, modem restarted) before the command completed.
    #[error("engine reset before the command completed")]
    Reset,
}

/// Unsolicited result codes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Urc {
    /// `+CMTI: <mem>,<index>`: a new SMS was stored.
    Cmti {
        /// Storage, unquoted (`SM`, `ME`).
        mem: String,
        /// Index in that storage.
        index: u32,
    },
    /// `+CMT: [<alpha>],<length>` and the PDU line: an SMS delivered directly.
    Cmt {
        /// The header's parameters after `+CMT:`.
        header: String,
        /// The PDU (hex), or the text in text mode.
        pdu: String,
    },
    /// `+CDSI: <mem>,<index>`: a status report was stored.
    Cdsi {
        /// Storage, unquoted.
        mem: String,
        /// Index in that storage.
        index: u32,
    },
    /// `+CDS: <length>` and the PDU line: a status report delivered directly.
    Cds {
        /// The header's parameters after `+CDS:`.
        header: String,
        /// The PDU (hex).
        pdu: String,
    },
    /// `RING`.
    Ring,
    /// `+CRING: <type>`.
    Cring {
        /// Call type, e.g. `VOICE`.
        kind: String,
    },
    /// `+CLIP: <number>,<type>[,...,<validity>]`: caller id.
    Clip {
        /// The caller's number; `None` when empty or withheld.
        number: Option<String>,
        /// CLI validity (0 valid, 1 withheld, 2 not available), when the modem sends it.
        validity: Option<u8>,
    },
    /// `+CUSD: <m>[,<str>[,<dcs>]]`: a USSD reply or network-initiated USSD.
    Cusd {
        /// 0 done, 1 further action required, 2 terminated by network, ...
        status: u8,
        /// The text (may span lines, joined with `\n`).
        text: Option<String>,
        /// Data coding scheme.
        dcs: Option<u8>,
    },
    /// `+CREG: <stat>[,<lac>,<ci>]` (unsolicited form).
    Creg {
        /// Registration status (1 home, 5 roaming, ...).
        stat: u8,
        /// Location area code, unquoted.
        lac: Option<String>,
        /// Cell id, unquoted.
        ci: Option<String>,
    },
    /// `+CGREG: <stat>[,<lac>,<ci>]` (unsolicited form, packet domain).
    Cgreg {
        /// Registration status.
        stat: u8,
        /// Location area code, unquoted.
        lac: Option<String>,
        /// Cell id, unquoted.
        ci: Option<String>,
    },
    /// `NO CARRIER` outside a dial/answer command: the call ended.
    NoCarrier,
    /// `+CIEV: <ind>,<value>`: indicator change.
    Ciev {
        /// Indicator index.
        ind: u32,
        /// New value.
        value: i32,
    },
    /// Any other unsolicited line: `^BOOT`, `^RSSI`, `RDY`, `Call Ready`, `SMS Ready`,
    /// `+CPIN: READY` outside a command, `+QIND`, malformed known URCs, ...
    Vendor(String),
}

/// What the engine knows about a command's text.
#[derive(Debug, Clone, PartialEq, Eq)]
struct CommandShape {
    /// `+CREG`, `^SYSINFO`: the prefix of the command's own information lines.
    name: Option<String>,
    /// `AT+X=...` but not `AT+X=?`: its own `+X:` URCs may arrive while it is in flight.
    is_set: bool,
    /// `ATD...`/`ATA`: ended by `NO CARRIER`, `BUSY`, ...
    is_call: bool,
}

impl CommandShape {
    fn of(text: &str) -> Self {
        let text = text.trim();
        let body = parse::strip_prefix_ignore_case(text, "AT").unwrap_or(text);
        let upper = body.to_ascii_uppercase();
        let is_call = upper.starts_with('D') || upper == "A" || upper.starts_with("A;");
        if !upper.starts_with(['+', '^', '$', '%', '*']) {
            return Self {
                name: None,
                is_set: false,
                is_call,
            };
        }
        let end = upper
            .char_indices()
            .skip(1)
            .find(|(_, c)| matches!(c, '=' | '?' | ';') || c.is_whitespace())
            .map_or(upper.len(), |(i, _)| i);
        let rest = upper.get(end..).unwrap_or("");
        Self {
            name: upper.get(..end).map(str::to_string),
            is_set: rest.starts_with('=') && !rest.starts_with("=?"),
            is_call: false,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Prompt {
    /// The command has no payload.
    NotExpected,
    /// Waiting for `> `.
    Awaiting,
    /// Payload transmitted.
    Sent,
}

#[derive(Debug)]
struct InFlight {
    id: CommandId,
    cmd: AtCommand,
    shape: CommandShape,
    deadline: Instant,
    lines: Vec<String>,
    prompt: Prompt,
}

impl InFlight {
    fn push_line(&mut self, line: String) {
        if self.lines.len() < MAX_RESPONSE_LINES {
            self.lines.push(line);
        } else {
            tracing::warn!(id = self.id.0, "too many response lines, dropping the rest");
        }
    }
}

/// Who a PDU being collected belongs to.
#[derive(Debug)]
enum BodyOwner {
    /// The `+CMGR`/`+CMGL` response of the command in flight.
    Response,
    /// A `+CMT`/`+CDS` URC, with its header parameters.
    Urc(BodyKind, String),
}

/// The line(s) after a `+CMGR`/`+CMGL`/`+CMT`/`+CDS` header.
#[derive(Debug)]
struct PendingBody {
    owner: BodyOwner,
    /// The header's TPDU length: the PDU is collected until it is this long (plus SMSC), so a
    /// URC injected into it does not cut it. `None` (text mode): exactly one line.
    tpdu_len: Option<u32>,
    text: String,
    /// A URC arrived since the last piece: only then may the PDU continue on the next line.
    interrupted: bool,
}

impl PendingBody {
    fn is_complete(&self) -> bool {
        let Some(tpdu_len) = self.tpdu_len else {
            return !self.text.is_empty();
        };
        if self.text.len() >= MAX_LINE {
            return true;
        }
        // In PDU mode the hex starts with the SMSC length octet.
        let Some(smsc_len) = self
            .text
            .get(..2)
            .and_then(|h| u8::from_str_radix(h, 16).ok())
        else {
            return false;
        };
        let octets = usize::from(smsc_len) + 1 + tpdu_len as usize;
        self.text.len() >= octets.saturating_mul(2)
    }
}

/// The sans-IO AT engine. See the module documentation.
pub struct AtEngine {
    next_id: u64,
    queue: VecDeque<(CommandId, AtCommand)>,
    in_flight: Option<InFlight>,
    line: Vec<u8>,
    /// After an overlong line: drop bytes up to the next line end.
    skipping: bool,
    body: Option<PendingBody>,
    /// A `+CUSD:` line whose quoted string is still open.
    cusd: Option<String>,
    transmit: VecDeque<Vec<u8>>,
    events: VecDeque<AtEvent>,
}

// The receive buffer may hold the echo of `AT+CPIN="..."`: show sizes, not contents.
impl fmt::Debug for AtEngine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AtEngine")
            .field("in_flight", &self.in_flight())
            .field("queued", &self.queue.len())
            .field("buffered_bytes", &self.line.len())
            .field("pending_events", &self.events.len())
            .finish_non_exhaustive()
    }
}

impl Default for AtEngine {
    fn default() -> Self {
        Self::new()
    }
}

impl AtEngine {
    /// An idle engine.
    pub fn new() -> Self {
        Self {
            next_id: 0,
            queue: VecDeque::new(),
            in_flight: None,
            line: Vec::new(),
            skipping: false,
            body: None,
            cusd: None,
            transmit: VecDeque::new(),
            events: VecDeque::new(),
        }
    }

    /// Queues a command; it is transmitted at once when nothing is in flight.
    pub fn submit(&mut self, cmd: AtCommand, now: Instant) -> CommandId {
        let id = CommandId(self.next_id);
        self.next_id += 1;
        self.queue.push_back((id, cmd));
        self.start_next(now);
        id
    }

    /// Feeds bytes read from the port.
    pub fn handle_rx(&mut self, bytes: &[u8], now: Instant) {
        for &b in bytes {
            self.handle_byte(b, now);
        }
    }

    /// Fails the command in flight with [`AtError::Timeout`] when its deadline has passed.
    pub fn handle_timeout(&mut self, now: Instant) {
        let Some(flight) = &self.in_flight else {
            return;
        };
        if now < flight.deadline {
            return;
        }
        let id = flight.id;
        // A final code without its line end (Huawei glues it to the next reply instead) is
        // still the answer: use it rather than a timeout, and do not let it prefix the next reply.
        let partial = String::from_utf8_lossy(&self.line).into_owned();
        if let Some(code) = parse::final_code(&partial) {
            if !parse::is_call_progress(&code) {
                self.line.clear();
                self.drop_response_body();
                self.complete(code, now);
                return;
            }
        }
        tracing::debug!(id = id.0, "AT command timed out");
        self.drop_response_body();
        self.complete(Err(AtError::Timeout), now);
    }

    /// Bytes to write to the port, in order.
    pub fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        self.transmit.pop_front()
    }

    /// The next event, in the order things happened.
    pub fn poll_event(&mut self) -> Option<AtEvent> {
        self.events.pop_front()
    }

    /// The deadline of the command in flight.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.in_flight.as_ref().map(|f| f.deadline)
    }

    /// The port was reopened or the modem restarted: fails the command in flight and every
    /// queued command with [`AtError::Reset`] and forgets partial input and unsent bytes.
    /// Events not yet polled are kept.
    pub fn reset(&mut self) {
        if let Some(flight) = self.in_flight.take() {
            self.events.push_back(AtEvent::Completed {
                id: flight.id,
                result: Err(AtError::Reset),
            });
        }
        for (id, _) in self.queue.drain(..) {
            self.events.push_back(AtEvent::Completed {
                id,
                result: Err(AtError::Reset),
            });
        }
        self.line.clear();
        self.skipping = false;
        self.body = None;
        self.cusd = None;
        self.transmit.clear();
    }

    /// The command being executed.
    pub fn in_flight(&self) -> Option<CommandId> {
        self.in_flight.as_ref().map(|f| f.id)
    }

    /// How many commands wait behind the one in flight.
    pub fn queued(&self) -> usize {
        self.queue.len()
    }

    fn handle_byte(&mut self, b: u8, now: Instant) {
        if b == b'\r' || b == b'\n' {
            self.skipping = false;
            if !self.line.is_empty() {
                let line = String::from_utf8_lossy(&self.line).into_owned();
                self.line.clear();
                self.handle_line(&line, now);
            }
            return;
        }
        if self.skipping {
            return;
        }
        if self.line.len() >= MAX_LINE {
            tracing::warn!(
                bytes = self.line.len(),
                "overlong line from the modem dropped"
            );
            self.events.push_back(AtEvent::Discarded {
                bytes: self.line.len(),
            });
            self.line.clear();
            self.skipping = true;
            return;
        }
        self.line.push(b);
        // The prompt has no line end: it must be seen in the partial line.
        if self.line == b"> " && self.awaiting_prompt() {
            self.line.clear();
            self.send_payload(now);
        }
    }

    fn awaiting_prompt(&self) -> bool {
        self.in_flight
            .as_ref()
            .is_some_and(|f| f.prompt == Prompt::Awaiting)
    }

    fn handle_line(&mut self, raw: &str, now: Instant) {
        let mut next = Some(raw.to_string());
        while let Some(line) = next.take() {
            next = self.handle_one_line(&line, now);
        }
    }

    /// Handles one line; returns the rest when the line was two glued together.
    fn handle_one_line(&mut self, raw: &str, now: Instant) -> Option<String> {
        let line = raw.trim();
        if line.is_empty() {
            return None;
        }
        if let Some(mut text) = self.cusd.take() {
            if parse::final_code(line).is_some() {
                // An unterminated string must not swallow the end of a command.
                self.events
                    .push_back(AtEvent::Urc(parse::parse_cusd_line(&text)));
            } else {
                text.push('\n');
                text.push_str(raw);
                if parse::quotes_balanced(&text) || text.len() >= MAX_LINE {
                    self.events
                        .push_back(AtEvent::Urc(parse::parse_cusd_line(&text)));
                } else {
                    self.cusd = Some(text);
                }
                return None;
            }
        }
        if self.body.is_some() && self.feed_body(line) {
            return None;
        }
        if let Some(flight) = &self.in_flight {
            if line.eq_ignore_ascii_case(flight.cmd.text.trim()) {
                return None;
            }
            if flight.prompt == Prompt::Awaiting && line == ">" {
                self.send_payload(now);
                return None;
            }
            if flight.prompt == Prompt::Sent && is_payload_echo(&flight.cmd, line) {
                return None;
            }
        }
        if let Some((head, rest)) = parse::split_glued_final(line) {
            if let Some(code) = parse::final_code(head) {
                self.handle_final(code, head, now);
                return Some(rest.to_string());
            }
        }
        if let Some(code) = parse::final_code(line) {
            self.handle_final(code, line, now);
            return None;
        }
        let name = parse::line_name(line);
        if let (Some(flight), Some(name)) = (&mut self.in_flight, &name) {
            let own = flight.shape.name.as_deref() == Some(name.as_str());
            if own && !(flight.shape.is_set && parse::is_urc_name(name)) {
                flight.push_line(line.to_string());
                if name == "+CMGR" || name == "+CMGL" {
                    let params = line.get(name.len()..).unwrap_or("").trim_start_matches(':');
                    self.start_body(BodyOwner::Response, parse::tpdu_length(params));
                }
                return None;
            }
        }
        match parse::parse_urc(line) {
            Some(UrcLine::Done(urc)) => self.events.push_back(AtEvent::Urc(urc)),
            Some(UrcLine::Body { kind, params }) => {
                let len = parse::tpdu_length(&params);
                self.start_body(BodyOwner::Urc(kind, params), len);
            }
            Some(UrcLine::CusdContinues(text)) => self.cusd = Some(text),
            None if parse::is_vendor_noise(line) => self
                .events
                .push_back(AtEvent::Urc(Urc::Vendor(line.to_string()))),
            None => match &mut self.in_flight {
                Some(flight) => flight.push_line(line.to_string()),
                None => self
                    .events
                    .push_back(AtEvent::Urc(Urc::Vendor(line.to_string()))),
            },
        }
        None
    }

    /// Offers a line to the PDU being collected; `true` when it was taken.
    fn feed_body(&mut self, line: &str) -> bool {
        let Some(body) = &mut self.body else {
            return false;
        };
        if body.tpdu_len.is_none() {
            // Text mode: the next line is the message, unless the command ended without one.
            if parse::final_code(line).is_some() {
                self.close_body();
                return false;
            }
            body.text.push_str(line);
            self.close_body();
            return true;
        }
        if parse::is_hex(line) && (body.text.is_empty() || body.interrupted) {
            body.text.push_str(line);
            body.interrupted = false;
            if body.is_complete() {
                self.close_body();
            }
            return true;
        }
        if !body.text.is_empty() && parse::is_interjection(line) {
            // Huawei injects `^BOOT`/`^RSSI` into the middle of a PDU: report it, keep collecting.
            body.interrupted = true;
            return false;
        }
        self.close_body();
        false
    }

    fn start_body(&mut self, owner: BodyOwner, tpdu_len: Option<u32>) {
        self.close_body();
        self.body = Some(PendingBody {
            owner,
            tpdu_len,
            text: String::new(),
            interrupted: false,
        });
        if tpdu_len == Some(0) {
            // An empty slot (`+CMGR: 0,,0`) or a text-mode status report: no PDU line follows.
            self.close_body();
        }
    }

    fn close_body(&mut self) {
        let Some(body) = self.body.take() else {
            return;
        };
        match body.owner {
            BodyOwner::Response => {
                if let (Some(flight), false) = (&mut self.in_flight, body.text.is_empty()) {
                    flight.push_line(body.text);
                }
            }
            BodyOwner::Urc(kind, header) => {
                let pdu = body.text;
                let urc = match kind {
                    BodyKind::Cmt => Urc::Cmt { header, pdu },
                    BodyKind::Cds => Urc::Cds { header, pdu },
                };
                self.events.push_back(AtEvent::Urc(urc));
            }
        }
    }

    fn drop_response_body(&mut self) {
        if matches!(
            self.body,
            Some(PendingBody {
                owner: BodyOwner::Response,
                ..
            })
        ) {
            self.body = None;
        }
    }

    fn handle_final(&mut self, code: Result<(), AtError>, line: &str, now: Instant) {
        let dialing = self.in_flight.as_ref().is_some_and(|f| f.shape.is_call);
        // NO CARRIER & co. only answer ATD/ATA. While e.g. AT+CSQ is in flight they report
        // the end of a call, and taking them as its answer would desynchronise every reply
        // after it by one.
        if parse::is_call_progress(&code) && !dialing {
            let urc = match code {
                Err(AtError::NoCarrier) => Urc::NoCarrier,
                _ => Urc::Vendor(line.to_string()),
            };
            self.events.push_back(AtEvent::Urc(urc));
            return;
        }
        if self.in_flight.is_none() {
            tracing::debug!(line, "final result code with no command in flight ignored");
            return;
        }
        self.complete(code, now);
    }

    fn complete(&mut self, code: Result<(), AtError>, now: Instant) {
        let Some(flight) = self.in_flight.take() else {
            return;
        };
        self.events.push_back(AtEvent::Completed {
            id: flight.id,
            result: code.map(|()| Response {
                lines: flight.lines,
            }),
        });
        self.start_next(now);
    }

    fn start_next(&mut self, now: Instant) {
        if self.in_flight.is_some() {
            return;
        }
        let Some((id, cmd)) = self.queue.pop_front() else {
            return;
        };
        // A multi-line URC arrives in one burst; one still open when a command goes out was
        // cut short, and the command's reply must not be glued onto it.
        if let Some(text) = self.cusd.take() {
            self.events
                .push_back(AtEvent::Urc(parse::parse_cusd_line(&text)));
        }
        if matches!(
            self.body,
            Some(PendingBody {
                owner: BodyOwner::Urc(..),
                ..
            })
        ) {
            self.close_body();
        }
        let mut bytes = cmd.text.trim_end_matches(['\r', '\n']).as_bytes().to_vec();
        bytes.push(b'\r');
        self.transmit.push_back(bytes);
        self.in_flight = Some(InFlight {
            id,
            shape: CommandShape::of(&cmd.text),
            deadline: now + cmd.timeout,
            lines: Vec::new(),
            prompt: if cmd.payload.is_some() {
                Prompt::Awaiting
            } else {
                Prompt::NotExpected
            },
            cmd,
        });
    }

    fn send_payload(&mut self, now: Instant) {
        let Some(flight) = &mut self.in_flight else {
            return;
        };
        let mut bytes = flight.cmd.payload.clone().unwrap_or_default();
        bytes.push(CTRL_Z);
        self.transmit.push_back(bytes);
        flight.prompt = Prompt::Sent;
        // The wait for the network starts now, not when the command line went out.
        flight.deadline = now + flight.cmd.timeout;
    }
}

/// With echo on, the modem repeats the payload, wrapped into lines of its own choosing.
fn is_payload_echo(cmd: &AtCommand, line: &str) -> bool {
    let Some(payload) = &cmd.payload else {
        return false;
    };
    let line = line.trim_end_matches(char::from(CTRL_Z)).as_bytes();
    line.len() >= 2 && payload.windows(line.len()).any(|w| w == line)
}
