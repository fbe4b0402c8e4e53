//! Classification of single modem lines: final result codes, URCs and their fields.
//!
//! Everything here is a pure function of one line of text, so the engine's state machine stays
//! in `mod.rs` and these rules can be read (and tested) on their own.

use super::{AtError, Urc};

/// Names of URCs that the engine parses into their own [`Urc`] variant.
const PARSED_URC_NAMES: &[&str] = &[
    "+CMTI", "+CMT", "+CDSI", "+CDS", "+CRING", "+CLIP", "+CUSD", "+CREG", "+CGREG", "+CIEV",
];

/// `+XXX` names that modems send unsolicited and that become [`Urc::Vendor`] whenever they are
/// not the answer to the command in flight (lines starting with `^` are always treated so).
const VENDOR_URC_NAMES: &[&str] = &[
    "+CPIN",
    "+QIND",
    "+CFUN",
    "+CSSU",
    "+CSSI",
    "+STIN",
    "+ZDONR",
    "+ZPASR",
    "+CEREG",
    "+CTZV",
    "+CTZE",
    "+CTZU",
    "+CGEV",
    "+WIND",
    "+QUSIM",
    "+PACSP",
    "+CUSATP",
    "+CUSATEND",
];

/// Whole lines (or line starts) of vendor boot/power noise.
const VENDOR_NOISE_STARTS: &[&str] = &[
    "RDY",
    "CALL READY",
    "SMS READY",
    "OVER-VOLTAGE",
    "UNDER-VOLTAGE",
    "NORMAL POWER DOWN",
    "PB DONE",
    "SMS DONE",
    "*ATREADY",
    "+PACSP",
];

/// A final result code: the end of the command in flight.
pub(crate) fn final_code(line: &str) -> Option<Result<(), AtError>> {
    let upper = line.trim().to_ascii_uppercase();
    let code = match upper.as_str() {
        "OK" => Ok(()),
        "ERROR" | "COMMAND NOT SUPPORT" => Err(AtError::Error),
        "NO CARRIER" => Err(AtError::NoCarrier),
        "BUSY" => Err(AtError::Busy),
        "NO ANSWER" => Err(AtError::NoAnswer),
        "NO DIALTONE" | "NO DIAL TONE" => Err(AtError::NoDialtone),
        _ => {
            let trimmed = line.trim();
            if let Some(rest) = strip_prefix_ignore_case(trimmed, "+CME ERROR:") {
                let rest = rest.trim();
                Err(match rest.parse::<u16>() {
                    Ok(n) => AtError::CmeError(n),
                    Err(_) => AtError::CmeErrorText(rest.to_string()),
                })
            } else if let Some(rest) = strip_prefix_ignore_case(trimmed, "+CMS ERROR:") {
                let rest = rest.trim();
                Err(match rest.parse::<u16>() {
                    Ok(n) => AtError::CmsError(n),
                    Err(_) => AtError::CmsErrorText(rest.to_string()),
                })
            } else {
                return None;
            }
        }
    };
    Some(code)
}

/// True for the call-progress codes that only end a dial/answer command.
pub(crate) fn is_call_progress(code: &Result<(), AtError>) -> bool {
    matches!(
        code,
        Err(AtError::NoCarrier | AtError::Busy | AtError::NoAnswer | AtError::NoDialtone)
    )
}

/// Huawei glues a final code onto the first line of the next reply without a line end
/// (`+CME ERROR: 25+CNUM: ...`, `ERROR+CNUM: ...`). Returns `(final code, rest)` when `line`
/// is such a pair.
pub(crate) fn split_glued_final(line: &str) -> Option<(&str, &str)> {
    for (prefix, anywhere) in [
        ("+CME ERROR:", true),
        ("+CMS ERROR:", true),
        ("ERROR", false),
        ("OK", false),
    ] {
        let Some(rest) = strip_prefix_ignore_case(line, prefix) else {
            continue;
        };
        let start = line.len() - rest.len();
        let found = if anywhere {
            rest.match_indices(['+', '^'])
                .map(|(i, _)| i)
                .find(|&i| rest.get(i..).is_some_and(starts_with_name))
        } else {
            Some(0).filter(|_| starts_with_name(rest))
        };
        if let Some(i) = found {
            let (head, tail) = line.split_at(start + i);
            return Some((head.trim(), tail));
        }
    }
    None
}

/// `+NAME:` or `^NAME:` with an upper-case name: the start of an information line.
fn starts_with_name(s: &str) -> bool {
    let Some(rest) = s.strip_prefix(['+', '^']) else {
        return false;
    };
    let Some(colon) = rest.find(':') else {
        return false;
    };
    colon > 0
        && rest.get(..colon).is_some_and(|n| {
            n.bytes()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
        })
}

/// The `+NAME`/`^NAME` a line starts with (up to `:`), upper-cased.
pub(crate) fn line_name(line: &str) -> Option<String> {
    if !line.starts_with(['+', '^']) {
        return None;
    }
    let end = line
        .find(|c: char| c == ':' || c == ',' || c.is_whitespace())
        .unwrap_or(line.len());
    Some(line.get(..end)?.to_ascii_uppercase())
}

/// Lines that are URCs whenever they are not the answer to the command in flight.
pub(crate) fn is_urc_name(name: &str) -> bool {
    PARSED_URC_NAMES.contains(&name) || VENDOR_URC_NAMES.contains(&name)
}

/// Vendor noise: `^` lines, boot/power messages, unsolicited `+CPIN:` and friends.
pub(crate) fn is_vendor_noise(line: &str) -> bool {
    if line.starts_with('^') {
        return true;
    }
    let upper = line.to_ascii_uppercase();
    if VENDOR_NOISE_STARTS.iter().any(|s| upper.starts_with(s)) {
        return true;
    }
    line_name(line).is_some_and(|n| VENDOR_URC_NAMES.contains(&n.as_str()))
}

/// Single-line URCs that may be injected into the middle of a PDU without ending it.
pub(crate) fn is_interjection(line: &str) -> bool {
    if is_vendor_noise(line) || line.eq_ignore_ascii_case("RING") {
        return true;
    }
    line_name(line).is_some_and(|n| {
        matches!(
            n.as_str(),
            "+CMTI" | "+CDSI" | "+CRING" | "+CLIP" | "+CREG" | "+CGREG" | "+CIEV"
        )
    })
}

/// What a recognised URC line starts.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum UrcLine {
    /// A complete URC.
    Done(Urc),
    /// `+CMT:`/`+CDS:` header; the PDU follows on the next line(s).
    Body { kind: BodyKind, params: String },
    /// `+CUSD:` whose quoted text continues on the following lines.
    CusdContinues(String),
}

/// Two-line URCs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BodyKind {
    Cmt,
    Cds,
}

/// Parses a line as one of the URCs the engine knows. `None`: not a known URC name.
/// A known name with unparseable fields becomes [`Urc::Vendor`] so that it is still reported.
pub(crate) fn parse_urc(line: &str) -> Option<UrcLine> {
    if line.eq_ignore_ascii_case("RING") {
        return Some(UrcLine::Done(Urc::Ring));
    }
    let name = line_name(line)?;
    if !PARSED_URC_NAMES.contains(&name.as_str()) {
        return None;
    }
    let params = line
        .get(name.len()..)
        .unwrap_or("")
        .trim_start_matches(':')
        .trim();
    match name.as_str() {
        "+CMT" => {
            return Some(UrcLine::Body {
                kind: BodyKind::Cmt,
                params: params.to_string(),
            })
        }
        "+CDS" => {
            return Some(UrcLine::Body {
                kind: BodyKind::Cds,
                params: params.to_string(),
            })
        }
        "+CUSD" if !quotes_balanced(params) => {
            return Some(UrcLine::CusdContinues(line.to_string()))
        }
        _ => {}
    }
    // A closure, so that a `?` on a bad field yields a vendor line below instead of "not a
    // URC" (which would make the line part of the response of the command in flight).
    let parsed = (|| match name.as_str() {
        "+CUSD" => parse_cusd(params),
        "+CMTI" | "+CDSI" => {
            let f = split_fields(params);
            let mem = unquote(f.first()?).to_string();
            let index = f.get(1)?.trim().parse::<u32>().ok()?;
            if name == "+CMTI" {
                Some(Urc::Cmti { mem, index })
            } else {
                Some(Urc::Cdsi { mem, index })
            }
        }
        "+CRING" => Some(Urc::Cring {
            kind: params.to_string(),
        }),
        "+CLIP" => {
            let f = split_fields(params);
            let number = f
                .first()
                .map(|s| unquote(s))
                .filter(|s| !s.is_empty())
                .map(str::to_string);
            let validity = f.get(5).and_then(|s| s.trim().parse::<u8>().ok());
            Some(Urc::Clip { number, validity })
        }
        "+CREG" | "+CGREG" => {
            let f = split_fields(params);
            let stat = f.first()?.trim().parse::<u8>().ok()?;
            let field = |i: usize| {
                f.get(i)
                    .map(|s| unquote(s))
                    .filter(|s| !s.is_empty())
                    .map(str::to_string)
            };
            let (lac, ci) = (field(1), field(2));
            if name == "+CREG" {
                Some(Urc::Creg { stat, lac, ci })
            } else {
                Some(Urc::Cgreg { stat, lac, ci })
            }
        }
        "+CIEV" => {
            let f = split_fields(params);
            let ind = f.first()?.trim().parse::<u32>().ok()?;
            let value = f.get(1)?.trim().parse::<i32>().ok()?;
            Some(Urc::Ciev { ind, value })
        }
        _ => None,
    })();
    Some(UrcLine::Done(parsed.unwrap_or_else(|| {
        tracing::debug!(line, "malformed URC reported as vendor line");
        Urc::Vendor(line.to_string())
    })))
}

/// `+CUSD: <m>[,"<str>"[,<dcs>]]`; `params` is everything after the colon.
pub(crate) fn parse_cusd(params: &str) -> Option<Urc> {
    let f = split_fields(params);
    let status = f.first()?.trim().parse::<u8>().ok()?;
    let text = f.get(1).map(|s| unquote(s).to_string());
    let dcs = f.get(2).and_then(|s| s.trim().parse::<u8>().ok());
    Some(Urc::Cusd { status, text, dcs })
}

/// Parses a complete (possibly multi-line) `+CUSD:` line.
pub(crate) fn parse_cusd_line(line: &str) -> Urc {
    let params = strip_prefix_ignore_case(line.trim_start(), "+CUSD:").unwrap_or(line);
    parse_cusd(params.trim()).unwrap_or_else(|| Urc::Vendor(line.to_string()))
}

/// The TPDU length at the end of a `+CMGR:`/`+CMGL:`/`+CMT:`/`+CDS:` PDU-mode header;
/// `None` in text mode or for test responses (`+CMGL: (0-4)`).
pub(crate) fn tpdu_length(params: &str) -> Option<u32> {
    split_fields(params).last()?.trim().parse::<u32>().ok()
}

/// Splits on commas outside double quotes.
pub(crate) fn split_fields(s: &str) -> Vec<&str> {
    let mut fields = Vec::new();
    let mut in_quotes = false;
    let mut start = 0;
    for (i, c) in s.char_indices() {
        match c {
            '"' => in_quotes = !in_quotes,
            ',' if !in_quotes => {
                fields.push(s.get(start..i).unwrap_or(""));
                start = i + 1;
            }
            _ => {}
        }
    }
    fields.push(s.get(start..).unwrap_or(""));
    fields
}

/// Trims and removes one pair of surrounding double quotes.
pub(crate) fn unquote(s: &str) -> &str {
    let s = s.trim();
    s.strip_prefix('"')
        .and_then(|s| s.strip_suffix('"'))
        .unwrap_or(s)
}

pub(crate) fn quotes_balanced(s: &str) -> bool {
    s.matches('"').count() % 2 == 0
}

pub(crate) fn is_hex(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_hexdigit())
}

pub(crate) fn strip_prefix_ignore_case<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| s.get(prefix.len()..))
        .flatten()
}
