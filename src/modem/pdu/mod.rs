//! The SMS PDU codec (3GPP TS 23.040 / 23.038): SMS-DELIVER, SMS-SUBMIT and SMS-STATUS-REPORT,
//! the GSM 7-bit default alphabet with its extension table, UCS-2 (surrogate pairs included),
//! 8-bit data, and concatenation through the user data header.
//!
//! Decoding is strict about lengths (a PDU that announces more than it holds is an error, so a
//! truncated part is never mistaken for a complete one) and lenient about content that real
//! networks get wrong (non-BCD time zone digits, reserved DCS bits, unpaired surrogates).

mod gsm7;

use chrono::{DateTime, Datelike, FixedOffset, NaiveDate, TimeZone, Timelike};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::bus::SenderKind;

/// The alphabet of a message's user data (from its data coding scheme).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Encoding {
    /// GSM 7-bit default alphabet with the extension table.
    #[serde(rename = "gsm7")]
    Gsm7,
    /// UCS-2, read as UTF-16 so that surrogate pairs (emoji) survive.
    #[serde(rename = "ucs2")]
    Ucs2,
    /// 8-bit data: the bytes are in `data`.
    #[serde(rename = "8bit")]
    EightBit,
}

impl Encoding {
    /// The name used in JSON and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Encoding::Gsm7 => "gsm7",
            Encoding::Ucs2 => "ucs2",
            Encoding::EightBit => "8bit",
        }
    }
}

/// The concatenation information element of one part of a long message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Concat {
    /// Reference shared by all parts of one message (8- or 16-bit on the air).
    pub reference: u16,
    /// Number of parts.
    pub total: u8,
    /// This part's number, from 1.
    pub seq: u8,
}

/// A received message (SMS-DELIVER).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deliver {
    /// Service centre number, when the PDU carries one.
    pub smsc: Option<String>,
    /// Originating address: `+` and digits, national digits, or an alphanumeric name.
    pub sender: String,
    /// What the type-of-address says `sender` is (a name of digits stays alphanumeric).
    pub sender_kind: SenderKind,
    /// Service centre time stamp, in the time zone the network gave.
    pub timestamp: Option<DateTime<FixedOffset>>,
    /// The text (for 8-bit data, the bytes read as Latin-1).
    pub text: String,
    /// Alphabet of the user data.
    pub encoding: Encoding,
    /// Raw user data (after the header) for 8-bit messages; empty otherwise.
    pub data: Vec<u8>,
    /// Message class; 0 is a flash message.
    pub class: Option<u8>,
    /// Concatenation, when this is one part of a long message.
    pub concat: Option<Concat>,
    /// TP-PID.
    pub pid: u8,
    /// TP-DCS as received.
    pub dcs: u8,
}

/// An outgoing message (SMS-SUBMIT), as stored on a SIM or built by `encode_submit`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Submit {
    /// Service centre number, when the PDU carries one.
    pub smsc: Option<String>,
    /// Destination address.
    pub recipient: String,
    /// TP-MR.
    pub message_ref: u8,
    /// The text (for 8-bit data, the bytes read as Latin-1).
    pub text: String,
    /// Alphabet of the user data.
    pub encoding: Encoding,
    /// Raw user data (after the header) for 8-bit messages; empty otherwise.
    pub data: Vec<u8>,
    /// Message class; 0 is a flash message.
    pub class: Option<u8>,
    /// Concatenation, when this is one part of a long message.
    pub concat: Option<Concat>,
    /// TP-SRR: a status report is requested.
    pub status_report_request: bool,
}

/// A delivery report (SMS-STATUS-REPORT).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusReport {
    /// Service centre number, when the PDU carries one.
    pub smsc: Option<String>,
    /// TP-MR of the message this report is about.
    pub message_ref: u8,
    /// The recipient of that message.
    pub recipient: String,
    /// When the service centre received the message.
    pub service_centre_time: Option<DateTime<FixedOffset>>,
    /// When the message was delivered (or the status last changed).
    pub discharge_time: Option<DateTime<FixedOffset>>,
    /// TP-ST: 0x00–0x1F delivered, 0x20–0x3F still trying, 0x40 and above failed.
    pub status: u8,
}

/// A decoded PDU.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pdu {
    /// SMS-DELIVER.
    Deliver(Deliver),
    /// SMS-SUBMIT.
    Submit(Submit),
    /// SMS-STATUS-REPORT.
    StatusReport(StatusReport),
}

/// Why a PDU could not be decoded or a message could not be encoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PduError {
    /// The input is empty.
    #[error("empty PDU")]
    Empty,
    /// A character of the input is not a hex digit.
    #[error("not a hex PDU: {found:?} at position {position}")]
    InvalidHex {
        /// Index of the character in the input.
        position: usize,
        /// The character.
        found: char,
    },
    /// The hex has an odd number of digits, so its last octet is incomplete.
    #[error("odd number of hex digits ({0}): the PDU is truncated")]
    OddLength(usize),
    /// The PDU ends before a field it announces.
    #[error(
        "PDU ends inside the {field}: {needed} octets needed at offset {offset}, {available} left"
    )]
    Truncated {
        /// The field being read.
        field: &'static str,
        /// Octet offset of the field.
        offset: usize,
        /// Octets the field needs.
        needed: usize,
        /// Octets left in the PDU.
        available: usize,
    },
    /// TP-UDL announces more user data than the PDU holds.
    #[error("user data length {udl} exceeds the {present} octets present ({needed} needed)")]
    UserDataTooLong {
        /// TP-UDL (septets for GSM 7-bit, octets otherwise).
        udl: u8,
        /// Octets that TP-UDL requires.
        needed: usize,
        /// Octets left in the PDU.
        present: usize,
    },
    /// The message type indicator is 3, which TS 23.040 reserves.
    #[error("reserved message type (first octet {first_octet:#04x})")]
    ReservedMessageType {
        /// The first octet of the TPDU.
        first_octet: u8,
    },
    /// A semi-octet that must be a decimal digit is not one.
    #[error("invalid semi-octet in the {field}: octet {octet:#04x}")]
    InvalidSemiOctet {
        /// The field being read.
        field: &'static str,
        /// The octet holding the bad semi-octet.
        octet: u8,
    },
    /// Time stamp digits that make no date or time.
    #[error("invalid {field}: {value}")]
    InvalidTimestamp {
        /// The field being read.
        field: &'static str,
        /// The digits as read.
        value: String,
    },
    /// An address longer than TS 23.040 allows.
    #[error("{field} is {length} semi-octets long, more than the 20 allowed")]
    AddressTooLong {
        /// The field being read.
        field: &'static str,
        /// Its announced length.
        length: usize,
    },
    /// TP-UDHI says there is a user data header but there is no user data.
    #[error("user data header indicated but the user data is empty")]
    MissingUserDataHeader,
    /// The user data header is longer than the user data.
    #[error("user data header length {udh_len} exceeds the {available} octets of user data")]
    HeaderTooLong {
        /// Octets of header including its length octet.
        udh_len: usize,
        /// Octets of user data.
        available: usize,
    },
    /// An information element runs past the end of the user data header.
    #[error("information element {iei:#04x} of length {length} runs past the user data header ({available} octets left)")]
    ElementTooLong {
        /// The information element identifier.
        iei: u8,
        /// Its announced length.
        length: usize,
        /// Octets left in the header.
        available: usize,
    },
    /// A number to send to (or from) is not `+` and digits.
    #[error("invalid phone number {0:?}: expected digits with an optional leading '+'")]
    InvalidNumber(String),
    /// An alphanumeric sender is longer than 11 characters or outside the GSM 7-bit alphabet.
    #[error("invalid alphanumeric sender {0:?}: at most 11 characters of the GSM 7-bit alphabet")]
    InvalidAlphanumeric(String),
    /// The message class is not 0–3.
    #[error("message class {0} is not 0-3")]
    InvalidClass(u8),
    /// The text needs more than 255 parts.
    #[error("text needs {parts} parts, more than the 255 a concatenated message can have")]
    TooManyParts {
        /// Parts needed.
        parts: usize,
    },
}

// ---------------------------------------------------------------------------------------------
// Decoding

/// Decodes a hex PDU as read with `AT+CMGR`/`AT+CMGL` (`has_smsc` = the PDU starts with the
/// SMSC address field, as modems give it) or as a bare TPDU (`has_smsc` = false).
pub fn decode(hex: &str, has_smsc: bool) -> Result<Pdu, PduError> {
    let bytes = parse_hex(hex)?;
    let mut reader = Reader::new(&bytes);
    let smsc = if has_smsc { reader.smsc()? } else { None };
    let first_octet = reader.u8("first octet")?;
    match first_octet & 0x03 {
        0x00 => decode_deliver(&mut reader, smsc, first_octet).map(Pdu::Deliver),
        0x01 => decode_submit(&mut reader, smsc, first_octet).map(Pdu::Submit),
        0x02 => decode_status_report(&mut reader, smsc).map(Pdu::StatusReport),
        _ => Err(PduError::ReservedMessageType { first_octet }),
    }
}

fn parse_hex(hex: &str) -> Result<Vec<u8>, PduError> {
    let hex = hex.trim();
    if hex.is_empty() {
        return Err(PduError::Empty);
    }
    // Report a stray character before an odd length: it is the more useful of the two.
    if let Some((position, found)) = hex.char_indices().find(|(_, c)| !c.is_ascii_hexdigit()) {
        return Err(PduError::InvalidHex { position, found });
    }
    hex::decode(hex).map_err(|e| match e {
        hex::FromHexError::InvalidHexCharacter { c, index } => PduError::InvalidHex {
            position: index,
            found: c,
        },
        hex::FromHexError::OddLength | hex::FromHexError::InvalidStringLength => {
            PduError::OddLength(hex.len())
        }
    })
}

const UDHI: u8 = 0x40;

fn decode_deliver(r: &mut Reader, smsc: Option<String>, fo: u8) -> Result<Deliver, PduError> {
    let (sender, toa) = r.typed_address("originating address")?;
    let sender_kind = sender_kind(toa, &sender);
    let pid = r.u8("protocol identifier")?;
    let dcs = r.u8("data coding scheme")?;
    let timestamp = r.timestamp("service centre time stamp")?;
    let scheme = DataCoding::from_dcs(dcs);
    let ud = r.user_data(fo & UDHI != 0, scheme.encoding)?;
    Ok(Deliver {
        smsc,
        sender,
        sender_kind,
        timestamp,
        text: ud.text,
        encoding: scheme.encoding,
        data: ud.data,
        class: scheme.class,
        concat: ud.concat,
        pid,
        dcs,
    })
}

fn decode_submit(r: &mut Reader, smsc: Option<String>, fo: u8) -> Result<Submit, PduError> {
    let message_ref = r.u8("message reference")?;
    let recipient = r.address("destination address")?;
    let _pid = r.u8("protocol identifier")?;
    let dcs = r.u8("data coding scheme")?;
    // TP-VPF (bits 4-3): none, enhanced (7 octets), relative (1 octet), absolute (7 octets).
    let vp_len = match (fo >> 3) & 0x03 {
        0b00 => 0,
        0b10 => 1,
        _ => 7,
    };
    r.take(vp_len, "validity period")?;
    let scheme = DataCoding::from_dcs(dcs);
    let ud = r.user_data(fo & UDHI != 0, scheme.encoding)?;
    Ok(Submit {
        smsc,
        recipient,
        message_ref,
        text: ud.text,
        encoding: scheme.encoding,
        data: ud.data,
        class: scheme.class,
        concat: ud.concat,
        status_report_request: fo & 0x20 != 0,
    })
}

fn decode_status_report(r: &mut Reader, smsc: Option<String>) -> Result<StatusReport, PduError> {
    let message_ref = r.u8("message reference")?;
    let recipient = r.address("recipient address")?;
    let service_centre_time = r.timestamp("service centre time stamp")?;
    let discharge_time = r.timestamp("discharge time")?;
    let status = r.u8("status")?;
    // The optional parameter indicator and what follows add nothing a gateway uses.
    Ok(StatusReport {
        smsc,
        message_ref,
        recipient,
        service_centre_time,
        discharge_time,
        status,
    })
}

/// What the data coding scheme says (TS 23.038 §4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct DataCoding {
    encoding: Encoding,
    class: Option<u8>,
}

impl DataCoding {
    fn from_dcs(dcs: u8) -> Self {
        match dcs >> 4 {
            // General data coding and automatic deletion groups.
            0x0..=0x7 => {
                let class = (dcs & 0x10 != 0).then_some(dcs & 0x03);
                let encoding = if dcs & 0x20 != 0 {
                    // Compressed text: nobody implements the compression, so hand over the bytes.
                    Encoding::EightBit
                } else {
                    match (dcs >> 2) & 0x03 {
                        0b01 => Encoding::EightBit,
                        0b10 => Encoding::Ucs2,
                        // 0b11 is reserved; TS 23.038 says to treat it as the default alphabet.
                        _ => Encoding::Gsm7,
                    }
                };
                Self { encoding, class }
            }
            0xE => Self {
                encoding: Encoding::Ucs2,
                class: None,
            },
            // Bit 3 is reserved: real messages with it set are GSM 7-bit (see gq-42 in the tests).
            0xF => Self {
                encoding: if dcs & 0x04 != 0 {
                    Encoding::EightBit
                } else {
                    Encoding::Gsm7
                },
                class: Some(dcs & 0x03),
            },
            // Reserved groups and message waiting indication (discard/store): default alphabet.
            _ => Self {
                encoding: Encoding::Gsm7,
                class: None,
            },
        }
    }
}

struct UserData {
    text: String,
    data: Vec<u8>,
    concat: Option<Concat>,
}

/// A cursor over the PDU octets whose every read is bounds-checked.
struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Self { bytes, pos: 0 }
    }

    fn remaining(&self) -> &'a [u8] {
        self.bytes.get(self.pos..).unwrap_or_default()
    }

    fn take(&mut self, n: usize, field: &'static str) -> Result<&'a [u8], PduError> {
        let rest = self.remaining();
        let out = rest.get(..n).ok_or(PduError::Truncated {
            field,
            offset: self.pos,
            needed: n,
            available: rest.len(),
        })?;
        self.pos += n;
        Ok(out)
    }

    fn u8(&mut self, field: &'static str) -> Result<u8, PduError> {
        self.take(1, field)
            .map(|b| b.first().copied().unwrap_or_default())
    }

    /// The SMSC field: a length in octets (type of address included), 0 = none.
    fn smsc(&mut self) -> Result<Option<String>, PduError> {
        let len = usize::from(self.u8("SMSC length")?);
        if len == 0 {
            return Ok(None);
        }
        if len > 11 {
            return Err(PduError::AddressTooLong {
                field: "SMSC address",
                length: (len - 1) * 2,
            });
        }
        let field = self.take(len, "SMSC address")?;
        let Some((&toa, digits)) = field.split_first() else {
            return Ok(None);
        };
        let number = semi_octet_digits(digits, digits.len() * 2, "SMSC address")?;
        Ok((!number.is_empty()).then(|| with_type_prefix(toa, number)))
    }

    /// An address field: a length in useful semi-octets, the type of address, the digits.
    fn address(&mut self, field: &'static str) -> Result<String, PduError> {
        Ok(self.typed_address(field)?.0)
    }

    /// An address field and its type-of-address octet.
    fn typed_address(&mut self, field: &'static str) -> Result<(String, u8), PduError> {
        let len = usize::from(self.u8(field)?);
        if len > 20 {
            return Err(PduError::AddressTooLong { field, length: len });
        }
        let toa = self.u8(field)?;
        let octets = self.take(len.div_ceil(2), field)?;
        if (toa >> 4) & 0x07 == 0x05 {
            // Alphanumeric: GSM 7-bit packed; count whole septets only, or a padding septet
            // shows up as a trailing '@'.
            let septets = gsm7::unpack(octets, 0, len * 4 / 7);
            return Ok((gsm7::decode(&septets), toa));
        }
        let number = semi_octet_digits(octets, len, field)?;
        Ok((with_type_prefix(toa, number), toa))
    }

    /// A time stamp; `None` when its digits make no date (all zeros, as some SIMs store),
    /// since losing the message over its time stamp would be worse.
    fn timestamp(
        &mut self,
        field: &'static str,
    ) -> Result<Option<DateTime<FixedOffset>>, PduError> {
        let raw = self.take(7, field)?;
        match decode_timestamp(raw, field) {
            Ok(t) => Ok(Some(t)),
            Err(e @ PduError::InvalidTimestamp { .. }) => {
                tracing::debug!("ignoring time stamp: {e}");
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    fn user_data(&mut self, has_header: bool, encoding: Encoding) -> Result<UserData, PduError> {
        let udl = self.u8("user data length")?;
        let present = self.remaining().len();
        let needed = match encoding {
            Encoding::Gsm7 => (usize::from(udl) * 7).div_ceil(8),
            Encoding::Ucs2 | Encoding::EightBit => usize::from(udl),
        };
        let ud = self
            .remaining()
            .get(..needed)
            .ok_or(PduError::UserDataTooLong {
                udl,
                needed,
                present,
            })?;
        self.pos += needed;
        let (header_len, concat) = if has_header {
            let udhl = usize::from(*ud.first().ok_or(PduError::MissingUserDataHeader)?);
            let header = ud.get(1..=udhl).ok_or(PduError::HeaderTooLong {
                udh_len: udhl + 1,
                available: ud.len(),
            })?;
            (udhl + 1, parse_header(header)?)
        } else {
            (0, None)
        };
        let (text, data) = match encoding {
            Encoding::Gsm7 => {
                let header_septets = (header_len * 8).div_ceil(7);
                let septets = gsm7::unpack(ud, 0, usize::from(udl));
                let body = septets
                    .get(header_septets..)
                    .ok_or(PduError::HeaderTooLong {
                        udh_len: header_len,
                        available: needed,
                    })?;
                (gsm7::decode(body), Vec::new())
            }
            Encoding::Ucs2 => (
                decode_ucs2(ud.get(header_len..).unwrap_or_default()),
                Vec::new(),
            ),
            Encoding::EightBit => {
                let body = ud.get(header_len..).unwrap_or_default();
                (
                    body.iter().copied().map(char::from).collect(),
                    body.to_vec(),
                )
            }
        };
        Ok(UserData { text, data, concat })
    }
}

/// Reads the information elements of a user data header, keeping the concatenation one.
fn parse_header(header: &[u8]) -> Result<Option<Concat>, PduError> {
    let mut concat = None;
    let mut rest = header;
    while let [iei, len, tail @ ..] = rest {
        let len = usize::from(*len);
        let data = tail.get(..len).ok_or(PduError::ElementTooLong {
            iei: *iei,
            length: len,
            available: tail.len(),
        })?;
        let element = match (*iei, data) {
            (0x00, &[reference, total, seq]) => Some((u16::from(reference), total, seq)),
            (0x08, &[hi, lo, total, seq]) => Some((u16::from_be_bytes([hi, lo]), total, seq)),
            _ => None,
        };
        if let Some((reference, total, seq)) = element {
            // TS 23.040 tells receivers to ignore an element with impossible numbers.
            if total >= 1 && (1..=total).contains(&seq) {
                concat = Some(Concat {
                    reference,
                    total,
                    seq,
                });
            } else {
                tracing::debug!(
                    reference,
                    total,
                    seq,
                    "ignoring invalid concatenation element"
                );
            }
        }
        rest = tail.get(len..).unwrap_or_default();
    }
    if let [iei] = rest {
        return Err(PduError::ElementTooLong {
            iei: *iei,
            length: 1,
            available: 0,
        });
    }
    Ok(concat)
}

fn decode_ucs2(bytes: &[u8]) -> String {
    let units = bytes.chunks_exact(2).map(|pair| {
        u16::from_be_bytes([
            pair.first().copied().unwrap_or(0),
            pair.get(1).copied().unwrap_or(0),
        ])
    });
    let mut text: String = char::decode_utf16(units)
        .map(|c| c.unwrap_or(char::REPLACEMENT_CHARACTER))
        .collect();
    if bytes.len() % 2 == 1 {
        text.push(char::REPLACEMENT_CHARACTER);
    }
    text
}

/// Digits of a semi-octet (swapped BCD) number. A trailing `F` is filler; `A`–`E` are the
/// `*`, `#`, `a`, `b`, `c` of TS 23.040 §9.1.2.3.
fn semi_octet_digits(octets: &[u8], count: usize, field: &'static str) -> Result<String, PduError> {
    let mut out = String::with_capacity(count);
    let nibbles = octets.iter().flat_map(|o| [(o & 0x0F, *o), (o >> 4, *o)]);
    for (i, (nibble, octet)) in nibbles.take(count).enumerate() {
        let c = match nibble {
            0..=9 => char::from(b'0' + nibble),
            0xA => '*',
            0xB => '#',
            0xC => 'a',
            0xD => 'b',
            0xE => 'c',
            // Filler is allowed only as the last semi-octet.
            _ if i + 1 == count => continue,
            _ => return Err(PduError::InvalidSemiOctet { field, octet }),
        };
        out.push(c);
    }
    Ok(out)
}

/// The kind of an originating address from its type-of-address (3GPP TS 23.040 9.1.2.5):
/// type 5 is alphanumeric whatever the characters; type 3 (network specific) is a service's
/// short code; otherwise the digits decide between a short code and a number.
fn sender_kind(toa: u8, address: &str) -> SenderKind {
    match (toa >> 4) & 0x07 {
        _ if address.trim().is_empty() => SenderKind::Empty,
        0x05 => SenderKind::Alphanumeric,
        0x03 => SenderKind::Short,
        0x01 => SenderKind::of_number(address, true),
        _ => SenderKind::of_number(address, false),
    }
}

fn with_type_prefix(toa: u8, number: String) -> String {
    if (toa >> 4) & 0x07 == 0x01 && !number.is_empty() {
        format!("+{number}")
    } else {
        number
    }
}

fn bcd(octet: u8, field: &'static str) -> Result<u32, PduError> {
    let (tens, units) = (octet & 0x0F, octet >> 4);
    if tens > 9 || units > 9 {
        return Err(PduError::InvalidSemiOctet { field, octet });
    }
    Ok(u32::from(tens) * 10 + u32::from(units))
}

fn decode_timestamp(raw: &[u8], field: &'static str) -> Result<DateTime<FixedOffset>, PduError> {
    let &[y, mo, d, h, mi, s, tz] = raw else {
        return Err(PduError::Truncated {
            field,
            offset: 0,
            needed: 7,
            available: raw.len(),
        });
    };
    let year = bcd(y, field)?;
    // Two-digit years: SMS did not exist before the 1990s.
    let year = if year >= 90 { 1900 + year } else { 2000 + year };
    let (month, day) = (bcd(mo, field)?, bcd(d, field)?);
    let (hour, minute, second) = (bcd(h, field)?, bcd(mi, field)?, bcd(s, field)?);
    // The zone is in quarter hours with a sign bit. Some modems write a non-BCD units digit
    // (0xC2 for +8 h): counting it at face value gives the offset they meant.
    let quarters = i32::from(tz & 0x07) * 10 + i32::from(tz >> 4);
    let seconds = if tz & 0x08 != 0 { -quarters } else { quarters } * 15 * 60;
    let invalid = || PduError::InvalidTimestamp {
        field,
        value: hex::encode_upper(raw),
    };
    let offset = FixedOffset::east_opt(seconds).ok_or_else(invalid)?;
    let naive = i32::try_from(year)
        .ok()
        .and_then(|y| NaiveDate::from_ymd_opt(y, month, day))
        .and_then(|date| date.and_hms_opt(hour, minute, second))
        .ok_or_else(invalid)?;
    offset
        .from_local_datetime(&naive)
        .single()
        .ok_or_else(invalid)
}

// ---------------------------------------------------------------------------------------------
// Encoding

/// Options of `encode_submit`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SubmitOptions {
    /// Concatenation reference shared by the parts; above 255 the 16-bit element is used.
    pub reference: u16,
    /// Ask the network for a delivery report (TP-SRR).
    pub status_report: bool,
    /// Message class (0 = flash).
    pub class: Option<u8>,
    /// Send UCS-2 even when the text fits the GSM 7-bit alphabet.
    pub force_ucs2: bool,
}

/// One SMS-SUBMIT part, ready for `AT+CMGS=<tpdu_len>` followed by `hex`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodedPart {
    /// The PDU in hex; starts with `00` (no SMSC: the modem uses the SIM's).
    pub hex: String,
    /// Octets after the SMSC field, the length `AT+CMGS` wants.
    pub tpdu_len: usize,
}

/// Septets of one message part at most, without and with a user data header.
const GSM7_SINGLE: usize = 160;
const UCS2_SINGLE: usize = 70;
/// Octets of user data in one part.
const UD_OCTETS: usize = 140;

/// Encodes `text` to `to` as one SMS-SUBMIT, or as concatenated parts when it does not fit:
/// GSM 7-bit when every character is in the alphabet, UCS-2 otherwise.
pub fn encode_submit(
    to: &str,
    text: &str,
    opts: &SubmitOptions,
) -> Result<Vec<EncodedPart>, PduError> {
    let class = check_class(opts.class)?;
    let address = encode_number(to)?;
    let body = split_text(text, opts.force_ucs2, opts.reference)?;
    let mut first_octet = 0x01; // SMS-SUBMIT, no validity period
    if opts.status_report {
        first_octet |= 0x20;
    }
    let dcs = data_coding_scheme(body.encoding, class);
    Ok(body
        .parts
        .iter()
        .map(|part| {
            let mut tpdu = Vec::with_capacity(address.len() + part.ud.len() + 6);
            tpdu.push(first_octet | if part.has_header { UDHI } else { 0 });
            tpdu.push(0x00); // TP-MR: the modem assigns the real one.
            tpdu.extend_from_slice(&address);
            tpdu.push(0x00); // TP-PID
            tpdu.push(dcs);
            tpdu.push(part.udl);
            tpdu.extend_from_slice(&part.ud);
            EncodedPart {
                hex: format!("00{}", hex::encode_upper(&tpdu)),
                tpdu_len: tpdu.len(),
            }
        })
        .collect())
}

/// Encodes `text` from `from` as SMS-DELIVER PDUs (one per part, SMSC field included), as a
/// modem would hand them over: for the simulated modem and tests. A `from` that is not a number
/// becomes an alphanumeric sender.
pub fn encode_deliver(
    from: &str,
    text: &str,
    timestamp: DateTime<FixedOffset>,
    reference: u16,
) -> Result<Vec<String>, PduError> {
    let address = match encode_number(from) {
        Ok(address) => address,
        Err(_) => encode_alphanumeric(from)?,
    };
    let body = split_text(text, false, reference)?;
    let dcs = data_coding_scheme(body.encoding, None);
    let scts = encode_timestamp(timestamp);
    Ok(body
        .parts
        .iter()
        .map(|part| {
            let mut tpdu = Vec::with_capacity(address.len() + part.ud.len() + 12);
            // SMS-DELIVER with TP-MMS set: no more messages waiting.
            tpdu.push(0x04 | if part.has_header { UDHI } else { 0 });
            tpdu.extend_from_slice(&address);
            tpdu.push(0x00);
            tpdu.push(dcs);
            tpdu.extend_from_slice(&scts);
            tpdu.push(part.udl);
            tpdu.extend_from_slice(&part.ud);
            format!("00{}", hex::encode_upper(&tpdu))
        })
        .collect())
}

/// An SMS-STATUS-REPORT about message `message_ref` sent to `recipient`, as hex with an empty
/// SMSC field, the way a modem hands it over: for the simulated modem and tests.
pub fn encode_status_report(
    recipient: &str,
    message_ref: u8,
    status: u8,
    timestamp: DateTime<FixedOffset>,
) -> Result<String, PduError> {
    let address = encode_number(recipient)?;
    let time = encode_timestamp(timestamp);
    let mut tpdu = Vec::with_capacity(address.len() + 17);
    // SMS-STATUS-REPORT (TP-MTI 10) with TP-MMS set.
    tpdu.push(0x06);
    tpdu.push(message_ref);
    tpdu.extend_from_slice(&address);
    tpdu.extend_from_slice(&time);
    tpdu.extend_from_slice(&time);
    tpdu.push(status);
    Ok(format!("00{}", hex::encode_upper(&tpdu)))
}

fn check_class(class: Option<u8>) -> Result<Option<u8>, PduError> {
    match class {
        Some(c) if c > 3 => Err(PduError::InvalidClass(c)),
        other => Ok(other),
    }
}

fn data_coding_scheme(encoding: Encoding, class: Option<u8>) -> u8 {
    let alphabet = match encoding {
        Encoding::Gsm7 => 0x00,
        Encoding::EightBit => 0x04,
        Encoding::Ucs2 => 0x08,
    };
    match class {
        Some(c) => alphabet | 0x10 | (c & 0x03),
        None => alphabet,
    }
}

/// The address field (length, type, digits) of a phone number; spaces, dashes, dots, slashes
/// and brackets are ignored.
fn encode_number(number: &str) -> Result<Vec<u8>, PduError> {
    let compact: String = number
        .chars()
        .filter(|c| !matches!(c, ' ' | '-' | '.' | '(' | ')' | '/'))
        .collect();
    let (toa, digits) = match compact.strip_prefix('+') {
        Some(rest) => (0x91, rest),
        None => (0x81, compact.as_str()),
    };
    if digits.is_empty() || digits.len() > 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(PduError::InvalidNumber(number.to_string()));
    }
    let mut out = Vec::with_capacity(2 + digits.len().div_ceil(2));
    out.push(u8::try_from(digits.len()).map_err(|_| PduError::InvalidNumber(number.to_string()))?);
    out.push(toa);
    for pair in digits.as_bytes().chunks(2) {
        let low = pair.first().map_or(0x0F, |d| d - b'0');
        let high = pair.get(1).map_or(0x0F, |d| d - b'0');
        out.push(low | (high << 4));
    }
    Ok(out)
}

fn encode_alphanumeric(name: &str) -> Result<Vec<u8>, PduError> {
    let invalid = || PduError::InvalidAlphanumeric(name.to_string());
    let septets = gsm7::encode(name).ok_or_else(invalid)?;
    if septets.is_empty() || septets.len() > 11 {
        return Err(invalid());
    }
    let packed = gsm7::pack(&septets, 0);
    let semi_octets = u8::try_from((septets.len() * 7).div_ceil(4)).map_err(|_| invalid())?;
    let mut out = Vec::with_capacity(packed.len() + 2);
    out.push(semi_octets);
    out.push(0xD0);
    out.extend_from_slice(&packed);
    Ok(out)
}

fn encode_timestamp(ts: DateTime<FixedOffset>) -> [u8; 7] {
    fn swapped(value: u32) -> u8 {
        let v = (value % 100) as u8;
        ((v % 10) << 4) | (v / 10)
    }
    let offset = ts.offset().local_minus_utc();
    let quarters = (offset.unsigned_abs() / 900).min(79);
    let sign = if offset < 0 { 0x08 } else { 0x00 };
    [
        swapped(ts.year().unsigned_abs()),
        swapped(ts.month()),
        swapped(ts.day()),
        swapped(ts.hour()),
        swapped(ts.minute()),
        swapped(ts.second()),
        swapped(quarters) | sign,
    ]
}

struct EncodedBody {
    encoding: Encoding,
    parts: Vec<BodyPart>,
}

struct BodyPart {
    has_header: bool,
    udl: u8,
    ud: Vec<u8>,
}

/// Chooses the alphabet and cuts `text` into parts, each character whole (an escape sequence
/// or a surrogate pair never straddles two parts).
fn split_text(text: &str, force_ucs2: bool, reference: u16) -> Result<EncodedBody, PduError> {
    let header_len = if reference > 255 { 7 } else { 6 };
    let gsm = if force_ucs2 {
        None
    } else {
        text.chars()
            .map(gsm7::char_to_septets)
            .collect::<Option<Vec<_>>>()
    };
    let (encoding, chunks): (Encoding, Vec<Vec<u8>>) = match gsm {
        Some(chars) => {
            let total: usize = chars.iter().map(|s| s.len()).sum();
            let limit = if total <= GSM7_SINGLE {
                GSM7_SINGLE
            } else {
                (UD_OCTETS - header_len) * 8 / 7
            };
            let mut chunks = vec![Vec::new()];
            for septets in chars {
                if chunks.last().map_or(0, Vec::len) + septets.len() > limit {
                    chunks.push(Vec::new());
                }
                if let Some(chunk) = chunks.last_mut() {
                    septets.push_to(chunk);
                }
            }
            (Encoding::Gsm7, chunks)
        }
        None => {
            let total = text.encode_utf16().count();
            let limit = if total <= UCS2_SINGLE {
                UCS2_SINGLE
            } else {
                (UD_OCTETS - header_len) / 2
            };
            let mut chunks: Vec<Vec<u8>> = vec![Vec::new()];
            let mut buf = [0u16; 2];
            for c in text.chars() {
                let units = c.encode_utf16(&mut buf);
                if chunks.last().map_or(0, Vec::len) / 2 + units.len() > limit {
                    chunks.push(Vec::new());
                }
                if let Some(chunk) = chunks.last_mut() {
                    chunk.extend(units.iter().flat_map(|u| u.to_be_bytes()));
                }
            }
            (Encoding::Ucs2, chunks)
        }
    };
    let total = u8::try_from(chunks.len()).map_err(|_| PduError::TooManyParts {
        parts: chunks.len(),
    })?;
    let parts = chunks
        .into_iter()
        .zip(1u8..)
        .map(|(chunk, seq)| {
            let header = (total > 1).then(|| concat_header(reference, total, seq));
            body_part(encoding, header, &chunk)
        })
        .collect();
    Ok(EncodedBody { encoding, parts })
}

fn concat_header(reference: u16, total: u8, seq: u8) -> Vec<u8> {
    match u8::try_from(reference) {
        Ok(r) => vec![0x05, 0x00, 0x03, r, total, seq],
        Err(_) => {
            let [hi, lo] = reference.to_be_bytes();
            vec![0x06, 0x08, 0x04, hi, lo, total, seq]
        }
    }
}

/// One part's TP-UDL and user data. `chunk` is septets for GSM 7-bit, UTF-16BE bytes otherwise;
/// `split_text` keeps both within one part, so the lengths fit an octet.
fn body_part(encoding: Encoding, header: Option<Vec<u8>>, chunk: &[u8]) -> BodyPart {
    let has_header = header.is_some();
    let mut ud = header.unwrap_or_default();
    let udl = match encoding {
        Encoding::Gsm7 => {
            // Text after a header starts on a septet boundary: pad with fill bits.
            let header_septets = (ud.len() * 8).div_ceil(7);
            let fill_bits = header_septets * 7 - ud.len() * 8;
            ud.extend(gsm7::pack(chunk, fill_bits));
            header_septets + chunk.len()
        }
        Encoding::Ucs2 | Encoding::EightBit => {
            ud.extend_from_slice(chunk);
            ud.len()
        }
    };
    BodyPart {
        has_header,
        udl: u8::try_from(udl).unwrap_or(u8::MAX),
        ud,
    }
}

/// How many SMS parts `text` is sent in (what the operator bills): as [`encode_submit`] cuts
/// it, GSM 7-bit when every character fits, else UCS-2, with 8-bit concatenation references.
pub fn part_count(text: &str) -> usize {
    match split_text(text, false, 0) {
        Ok(body) => body.parts.len(),
        Err(PduError::TooManyParts { parts }) => parts,
        Err(_) => 1,
    }
}

/// Septets `text` needs in the GSM 7-bit alphabet (extension characters count two), or `None`
/// when some character is not in the alphabet (the text goes out as UCS-2).
pub fn gsm7_septets(text: &str) -> Option<usize> {
    gsm7::septet_count(text)
}

// ---------------------------------------------------------------------------------------------
// JSON and USSD

/// The `gsmgw pdu decode --json` object: every key present, `null` where it does not apply;
/// `{"error": "…"}` when decoding failed.
pub fn to_json(result: &Result<Pdu, PduError>) -> serde_json::Value {
    let pdu = match result {
        Ok(pdu) => pdu,
        Err(e) => return json!({ "error": e.to_string() }),
    };
    let rfc3339 = |t: &Option<DateTime<FixedOffset>>| t.map(|t| t.to_rfc3339());
    let concat = |c: &Option<Concat>| {
        c.map(|c| json!({ "ref": c.reference, "total": c.total, "seq": c.seq }))
    };
    let data_hex = |encoding: Encoding, data: &[u8]| {
        (encoding == Encoding::EightBit).then(|| hex::encode_upper(data))
    };
    match pdu {
        Pdu::Deliver(d) => json!({
            "type": "deliver",
            "smsc": d.smsc,
            "sender": d.sender,
            "text": d.text,
            "encoding": d.encoding.as_str(),
            "data_hex": data_hex(d.encoding, &d.data),
            "timestamp": rfc3339(&d.timestamp),
            "class": d.class,
            "concat": concat(&d.concat),
            "message_ref": null,
            "status": null,
        }),
        Pdu::Submit(s) => json!({
            "type": "submit",
            "smsc": s.smsc,
            "recipient": s.recipient,
            "text": s.text,
            "encoding": s.encoding.as_str(),
            "data_hex": data_hex(s.encoding, &s.data),
            "timestamp": null,
            "class": s.class,
            "concat": concat(&s.concat),
            "message_ref": s.message_ref,
            "status": null,
        }),
        Pdu::StatusReport(r) => json!({
            "type": "status-report",
            "smsc": r.smsc,
            "recipient": r.recipient,
            "text": null,
            "encoding": null,
            "data_hex": null,
            "timestamp": rfc3339(&r.service_centre_time),
            "class": null,
            "concat": null,
            "message_ref": r.message_ref,
            "status": r.status,
        }),
    }
}

/// The text of a `+CUSD` payload. Modems give GSM 7-bit packed hex, UCS-2 hex or plain text
/// depending on the DCS and on `AT+CSCS`; whatever does not decode cleanly is returned as is.
pub fn decode_ussd(text: &str, dcs: Option<u8>) -> String {
    let Some(dcs) = dcs else {
        return text.to_string();
    };
    let encoding = match dcs >> 4 {
        // Language groups of the cell broadcast DCS (which USSD uses): default alphabet, except
        // 0x11 = UCS-2 preceded by a language.
        0x0 | 0x2 | 0x3 => Encoding::Gsm7,
        0x1 if dcs == 0x11 => Encoding::Ucs2,
        0x1 => Encoding::Gsm7,
        0x4..=0x7 | 0xF => DataCoding::from_dcs(dcs).encoding,
        // "Message with user data header": the alphabet bits are those of the general group.
        0x9 => DataCoding::from_dcs(dcs & 0x0F).encoding,
        _ => Encoding::Gsm7,
    };
    let trimmed = text.trim();
    let Ok(bytes) = hex::decode(trimmed) else {
        return text.to_string();
    };
    if bytes.is_empty() {
        return text.to_string();
    }
    match encoding {
        Encoding::Ucs2 if bytes.len() % 2 == 0 => decode_ucs2(&bytes),
        Encoding::Gsm7 => {
            let mut septets = gsm7::unpack(&bytes, 0, bytes.len() * 8 / 7);
            // With 7 spare bits in the last octet, TS 23.038 pads with CR (some modems with 0).
            if bytes.len() % 7 == 0 && matches!(septets.last(), Some(0x0D | 0x00)) {
                septets.pop();
            }
            // Plain text of hex digits ("1234") also parses as hex; packed text would
            // decode to control characters, real messages do not.
            let plausible = septets
                .iter()
                .all(|&s| s >= 0x20 || matches!(s, 0x0A | 0x0D | gsm7::ESCAPE));
            if plausible {
                gsm7::decode(&septets)
            } else {
                text.to_string()
            }
        }
        Encoding::EightBit => bytes.iter().copied().map(char::from).collect(),
        Encoding::Ucs2 => text.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> DateTime<FixedOffset> {
        DateTime::parse_from_rfc3339(s).unwrap()
    }

    fn deliver(hex: &str) -> Deliver {
        match decode(hex, true).unwrap() {
            Pdu::Deliver(d) => d,
            other => panic!("not a deliver: {other:?}"),
        }
    }

    fn submit(hex: &str) -> Submit {
        match decode(hex, true).unwrap() {
            Pdu::Submit(s) => s,
            other => panic!("not a submit: {other:?}"),
        }
    }

    #[test]
    fn encoded_deliver_decodes_to_its_sender_text_and_timestamp() {
        let when = ts("2024-03-01T12:30:45+01:00");
        let parts = encode_deliver("+447700900123", "Hello {world} €5", when, 7).unwrap();
        assert_eq!(parts.len(), 1);
        let d = deliver(&parts[0]);
        assert_eq!(d.sender, "+447700900123");
        assert_eq!(d.sender_kind, SenderKind::International);
        assert_eq!(d.text, "Hello {world} €5");
        assert_eq!(d.encoding, Encoding::Gsm7);
        assert_eq!(d.timestamp, Some(when));
        assert_eq!(d.timestamp.unwrap().offset().local_minus_utc(), 3600);
        assert_eq!(d.concat, None);
    }

    #[test]
    fn alphanumeric_deliver_sender_round_trips_as_type_d0() {
        let parts = encode_deliver("Vodafone", "hi", ts("2024-03-01T12:30:45Z"), 0).unwrap();
        // SMSC "00", first octet, then address length + type of address.
        assert_eq!(&parts[0][4..8], "0ED0");
        assert_eq!(deliver(&parts[0]).sender, "Vodafone");
        assert_eq!(deliver(&parts[0]).sender_kind, SenderKind::Alphanumeric);
    }

    #[test]
    fn a_sender_name_made_of_digits_stays_alphanumeric() {
        // TOA 0xD0 with the GSM 7-bit packed name "00900123" (the digits of a master's
        // number, chosen freely at a bulk-SMS service): 8 septets = 7 octets = 14 semi-octets.
        let hex_of = |bytes: &[u8]| bytes.iter().map(|b| format!("{b:02X}")).collect::<String>();
        let name = hex_of(&gsm7::pack(b"00900123", 0));
        let text = hex_of(&gsm7::pack(b"hi", 0));
        let hex = format!("00040ED0{name}0000421030210354400{}{text}", 2);
        let d = match decode(&hex, true) {
            Ok(Pdu::Deliver(d)) => d,
            other => panic!("not a deliver: {other:?}"),
        };
        assert_eq!(d.sender, "00900123");
        assert_eq!(d.sender_kind, SenderKind::Alphanumeric);
    }

    #[test]
    fn short_codes_and_national_numbers_are_told_apart_by_their_digits() {
        assert_eq!(sender_kind(0x81, "12345"), SenderKind::Short);
        assert_eq!(sender_kind(0xB1, "80080080"), SenderKind::Short);
        assert_eq!(sender_kind(0x81, "07700900123"), SenderKind::National);
        assert_eq!(
            sender_kind(0x91, "+447700900123"),
            SenderKind::International
        );
        assert_eq!(sender_kind(0x91, ""), SenderKind::Empty);
    }

    #[test]
    fn long_deliver_is_split_into_concatenated_parts() {
        let text = "x".repeat(200);
        let parts = encode_deliver("12345", &text, ts("2024-03-01T12:30:45-05:00"), 300).unwrap();
        assert_eq!(parts.len(), 2);
        let decoded: Vec<Deliver> = parts.iter().map(|p| deliver(p)).collect();
        assert_eq!(
            decoded[0].concat,
            Some(Concat {
                reference: 300,
                total: 2,
                seq: 1
            })
        );
        assert_eq!(
            decoded[1].concat,
            Some(Concat {
                reference: 300,
                total: 2,
                seq: 2
            })
        );
        assert_eq!(
            decoded[0].text.len(),
            152,
            "16-bit reference header leaves 152 septets"
        );
        assert_eq!(format!("{}{}", decoded[0].text, decoded[1].text), text);
    }

    #[test]
    fn encoded_submit_decodes_back_with_recipient_and_flags() {
        let opts = SubmitOptions {
            status_report: true,
            class: Some(0),
            ..Default::default()
        };
        let parts = encode_submit("0612 345 678", "Flash!", &opts).unwrap();
        assert_eq!(parts.len(), 1);
        assert!(parts[0].hex.starts_with("00"));
        assert_eq!(parts[0].tpdu_len * 2 + 2, parts[0].hex.len());
        let s = submit(&parts[0].hex);
        assert_eq!(s.recipient, "0612345678");
        assert_eq!(s.text, "Flash!");
        assert_eq!(s.class, Some(0));
        assert!(s.status_report_request);
    }

    #[test]
    fn submit_matches_the_python_messaging_reference_pdu() {
        let parts = encode_submit("+34616585119", "hola", &SubmitOptions::default()).unwrap();
        assert_eq!(parts[0].hex, "0001000B914316565811F9000004E8373B0C");
        assert_eq!(parts[0].tpdu_len, 17);
    }

    fn submit_texts(parts: &[EncodedPart]) -> Vec<Submit> {
        parts.iter().map(|p| submit(&p.hex)).collect()
    }

    #[test]
    fn exactly_160_septets_fit_one_part_and_161_need_two() {
        let opts = SubmitOptions::default();
        assert_eq!(
            encode_submit("123", &"a".repeat(160), &opts).unwrap().len(),
            1
        );
        assert_eq!(
            encode_submit("123", &"€".repeat(80), &opts).unwrap().len(),
            1
        );
        let parts = encode_submit("123", &"a".repeat(161), &opts).unwrap();
        let decoded = submit_texts(&parts);
        assert_eq!(decoded.len(), 2);
        assert_eq!(decoded[0].text.len(), 153);
        assert_eq!(
            decoded[0].concat,
            Some(Concat {
                reference: 0,
                total: 2,
                seq: 1
            })
        );
    }

    #[test]
    fn escape_sequence_is_never_split_across_parts() {
        let text = format!("{}€tail{}", "a".repeat(152), "b".repeat(10));
        let decoded =
            submit_texts(&encode_submit("123", &text, &SubmitOptions::default()).unwrap());
        assert_eq!(decoded[0].text, "a".repeat(152));
        assert!(decoded[1].text.starts_with('€'));
    }

    #[test]
    fn surrogate_pair_is_never_split_across_parts() {
        let text = format!("{}😀{}", "ü".repeat(66), "b".repeat(10));
        let parts = encode_submit("123", &format!("{text}ł"), &SubmitOptions::default()).unwrap();
        let decoded = submit_texts(&parts);
        assert_eq!(decoded[0].encoding, Encoding::Ucs2);
        assert_eq!(decoded[0].text, "ü".repeat(66));
        assert!(decoded[1].text.starts_with('😀'));
    }

    #[test]
    fn seventy_ucs2_units_fit_one_part_and_seventy_one_need_two() {
        let opts = SubmitOptions::default();
        assert_eq!(
            encode_submit("123", &"ł".repeat(70), &opts).unwrap().len(),
            1
        );
        let parts = encode_submit("123", &"ł".repeat(71), &opts).unwrap();
        assert_eq!(submit_texts(&parts)[0].text.chars().count(), 67);
    }

    #[test]
    fn reference_above_255_uses_the_16_bit_element() {
        let text = "a".repeat(200);
        let eight = encode_submit(
            "1",
            &text,
            &SubmitOptions {
                reference: 255,
                ..Default::default()
            },
        )
        .unwrap();
        assert!(eight[0].hex.contains("050003FF02"), "{}", eight[0].hex);
        let sixteen = encode_submit(
            "1",
            &text,
            &SubmitOptions {
                reference: 256,
                ..Default::default()
            },
        )
        .unwrap();
        assert!(
            sixteen[0].hex.contains("06080401000201"),
            "{}",
            sixteen[0].hex
        );
        assert_eq!(
            submit(&sixteen[1].hex).concat,
            Some(Concat {
                reference: 256,
                total: 2,
                seq: 2
            })
        );
    }

    #[test]
    fn trailing_cr_is_kept_because_the_length_counts_it() {
        for text in ["abcdef\r", "abcdefg\r", "abcdefghijklmn\r"] {
            let parts = encode_submit("1", text, &SubmitOptions::default()).unwrap();
            assert_eq!(submit(&parts[0].hex).text, text);
        }
    }

    #[test]
    fn trailing_at_sign_is_kept_when_seven_septets_leave_a_spare_bit() {
        let parts = encode_submit("1", "abcdef@", &SubmitOptions::default()).unwrap();
        assert_eq!(submit(&parts[0].hex).text, "abcdef@");
    }

    #[test]
    fn force_ucs2_sends_plain_text_as_ucs2() {
        let opts = SubmitOptions {
            force_ucs2: true,
            ..Default::default()
        };
        let s = submit(&encode_submit("1", "hi", &opts).unwrap()[0].hex);
        assert_eq!((s.encoding, s.text.as_str()), (Encoding::Ucs2, "hi"));
    }

    #[test]
    fn numbers_encode_with_their_type_of_address() {
        let national = encode_submit("0612", "x", &SubmitOptions::default()).unwrap();
        assert!(
            national[0].hex.starts_with("0001000481"),
            "{}",
            national[0].hex
        );
        let international = encode_submit("+3361", "x", &SubmitOptions::default()).unwrap();
        assert!(
            international[0].hex.starts_with("0001000491"),
            "{}",
            international[0].hex
        );
    }

    #[test]
    fn bad_inputs_to_the_encoder_are_errors() {
        let opts = SubmitOptions::default();
        assert!(matches!(
            encode_submit("12ab", "x", &opts),
            Err(PduError::InvalidNumber(_))
        ));
        assert!(matches!(
            encode_submit("", "x", &opts),
            Err(PduError::InvalidNumber(_))
        ));
        let class9 = SubmitOptions {
            class: Some(9),
            ..Default::default()
        };
        assert_eq!(
            encode_submit("1", "x", &class9),
            Err(PduError::InvalidClass(9))
        );
        let when = ts("2024-01-01T00:00:00Z");
        assert!(matches!(
            encode_deliver("TwelveChars!", "x", when, 0),
            Err(PduError::InvalidAlphanumeric(_))
        ));
        let too_long = "ł".repeat(67 * 256);
        assert_eq!(
            encode_submit("1", &too_long, &opts),
            Err(PduError::TooManyParts { parts: 256 })
        );
    }

    #[test]
    fn unpaired_surrogate_decodes_to_a_replacement_character() {
        // DELIVER, UCS-2: D83D (a lone high surrogate) then 'A'.
        let d = deliver("00040481214300081110102143650004D83D0041");
        assert_eq!(d.text, "\u{FFFD}A");
        assert_eq!(decode_ucs2(&[0x00, 0x41, 0x00]), "A\u{FFFD}");
    }

    #[test]
    fn time_zones_decode_with_sign_and_quarter_hours() {
        let cases = [
            ([0x40], 3600),      // +4 quarters
            ([0x29], -3 * 3600), // sign bit, 12 quarters
            ([0x08], 0),         // "-0"
            ([0x22], 22 * 900),  // +05:30
            ([0xC2], 8 * 3600),  // non-BCD units digit, as some modems send
        ];
        for ([tz], seconds) in cases {
            let raw = [0x11, 0x10, 0x10, 0x21, 0x43, 0x65, tz];
            let t = decode_timestamp(&raw, "test").unwrap();
            assert_eq!(t.offset().local_minus_utc(), seconds, "tz {tz:#04x}");
            assert_eq!(t.naive_local().to_string(), "2011-01-01 12:34:56");
        }
    }

    #[test]
    fn status_reports_round_trip_through_the_encoder() {
        let hex = encode_status_report("+447700900123", 42, 0x00, ts("2024-05-01T12:00:00+01:00"))
            .unwrap();
        let Pdu::StatusReport(r) = decode(&hex, true).unwrap() else {
            panic!("not a status report: {hex}");
        };
        assert_eq!(r.message_ref, 42);
        assert_eq!(r.recipient, "+447700900123");
        assert_eq!(r.status, 0);
        assert_eq!(r.discharge_time, Some(ts("2024-05-01T12:00:00+01:00")));
        assert!(encode_status_report("nope", 1, 0, ts("2024-05-01T12:00:00+01:00")).is_err());
    }

    #[test]
    fn timestamps_round_trip_through_the_encoder() {
        for s in [
            "2024-12-31T23:59:59-08:00",
            "2030-06-15T00:00:00+13:45",
            "1999-01-02T03:04:05+00:00",
        ] {
            let t = ts(s);
            assert_eq!(decode_timestamp(&encode_timestamp(t), "test"), Ok(t));
        }
    }

    #[test]
    fn all_zero_time_stamp_decodes_as_no_time_stamp() {
        let d = deliver("00040481214300000000000000000002E834");
        assert_eq!((d.timestamp, d.text.as_str()), (None, "hi"));
    }

    #[test]
    fn impossible_dates_and_non_bcd_digits_are_errors() {
        let month_13 = [0x11, 0x31, 0x10, 0x21, 0x43, 0x65, 0x00];
        assert!(matches!(
            decode_timestamp(&month_13, "t"),
            Err(PduError::InvalidTimestamp { .. })
        ));
        let hex_digit = [0x1A, 0x10, 0x10, 0x21, 0x43, 0x65, 0x00];
        assert!(matches!(
            decode_timestamp(&hex_digit, "t"),
            Err(PduError::InvalidSemiOctet { .. })
        ));
    }

    #[test]
    fn json_has_every_key_with_null_where_not_applicable() {
        let parts = encode_deliver("+4411", "hi", ts("2024-03-01T12:30:45+01:00"), 0).unwrap();
        let json = to_json(&decode(&parts[0], true));
        let expected = json!({
            "type": "deliver", "smsc": null, "sender": "+4411", "text": "hi", "encoding": "gsm7",
            "data_hex": null, "timestamp": "2024-03-01T12:30:45+01:00", "class": null,
            "concat": null, "message_ref": null, "status": null,
        });
        assert_eq!(json, expected);
        let report = to_json(&decode(
            "00060505810531F1010150610000400101506100004000",
            true,
        ));
        assert_eq!(report["type"], "status-report");
        assert_eq!(report["recipient"], "50131");
        assert_eq!(report["message_ref"], 5);
        assert_eq!(report["status"], 0);
        assert_eq!(report.as_object().map(|o| o.len()), Some(11));
        assert_eq!(
            to_json(&decode("zz", true)),
            json!({ "error": "not a hex PDU: 'z' at position 0" })
        );
    }

    #[test]
    fn encoding_serialises_to_its_short_name() {
        assert_eq!(
            serde_json::to_string(&Encoding::EightBit).unwrap(),
            "\"8bit\""
        );
        assert_eq!(
            serde_json::from_str::<Encoding>("\"ucs2\"").unwrap(),
            Encoding::Ucs2
        );
    }

    #[test]
    fn ussd_packed_gsm7_hex_decodes_and_drops_the_cr_padding() {
        let mut septets = gsm7::encode("Balance").unwrap();
        septets.push(0x0D);
        let packed = hex::encode_upper(gsm7::pack(&septets, 0));
        assert_eq!(decode_ussd(&packed, Some(0x0F)), "Balance");
        let plain = hex::encode_upper(gsm7::pack(&gsm7::encode("Your balance: 5€").unwrap(), 0));
        assert_eq!(decode_ussd(&plain, Some(0x0F)), "Your balance: 5€");
    }

    #[test]
    fn ussd_ucs2_hex_decodes_and_plain_text_passes_through() {
        assert_eq!(
            decode_ussd("04110430043B0430043D0441", Some(0x48)),
            "Баланс"
        );
        assert_eq!(decode_ussd("Balance: 5 EUR", Some(0x0F)), "Balance: 5 EUR");
        assert_eq!(decode_ussd("1234", Some(0x0F)), "1234");
        assert_eq!(decode_ussd("0041", None), "0041");
    }

    fn message_text() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        let piece = prop_oneof![
            4 => proptest::char::range(' ', '~'),
            1 => proptest::sample::select(vec!['€', '[', ']', '{', '}', '^', '~', '|', '\\', '\u{0C}']),
            1 => proptest::sample::select(vec!['é', 'ü', 'ñ', 'Ä', 'ç', 'ł', 'ő', 'Ж']),
            1 => proptest::sample::select(vec!['😀', '🎉', '👍', '𝄞']),
        ];
        proptest::collection::vec(piece, 0..400).prop_map(|chars| chars.into_iter().collect())
    }

    proptest::proptest! {
        #[test]
        fn any_text_survives_encode_submit_and_decode(text in message_text(), reference in 0u16..600) {
            let opts = SubmitOptions { reference, ..Default::default() };
            let parts = encode_submit("+15551234", &text, &opts).unwrap();
            let decoded = submit_texts(&parts);
            let joined: String = decoded.iter().map(|s| s.text.as_str()).collect();
            proptest::prop_assert_eq!(&joined, &text);
            let (single, per_part, units) = match gsm7_septets(&text) {
                Some(n) => (160, if reference > 255 { 152 } else { 153 }, n),
                None => (70, if reference > 255 { 66 } else { 67 }, text.encode_utf16().count()),
            };
            if units <= single {
                proptest::prop_assert_eq!(parts.len(), 1);
                proptest::prop_assert_eq!(decoded[0].concat, None);
            } else {
                // A character that does not fit is moved whole, so a part may end one unit short.
                proptest::prop_assert!(parts.len() >= units.div_ceil(per_part));
                proptest::prop_assert!(parts.len() <= units.div_ceil(per_part - 1));
                for (i, s) in decoded.iter().enumerate() {
                    let expected = Concat { reference, total: decoded.len() as u8, seq: i as u8 + 1 };
                    proptest::prop_assert_eq!(s.concat, Some(expected));
                }
            }
            for part in &parts {
                proptest::prop_assert!(part.tpdu_len <= 140 + 2 + 12 + 3);
            }
        }

        #[test]
        fn random_bytes_never_panic_the_decoder(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..200)) {
            let hex = hex::encode(&bytes);
            let _ = decode(&hex, true);
            let _ = decode(&hex, false);
        }

        #[test]
        fn random_strings_never_panic_the_decoder_or_ussd(text in ".{0,80}", dcs in proptest::num::u8::ANY) {
            let _ = decode(&text, true);
            let _ = decode_ussd(&text, Some(dcs));
        }
    }
}
