//! The PDU codec as the simulated modem uses it.

use chrono::{DateTime, FixedOffset};

use crate::modem::pdu::{self, Pdu, PduError};

/// The hex SMS-DELIVER PDU(s), with SMSC field, of `text` from `from`.
pub(super) fn encode_deliver(
    from: &str,
    text: &str,
    timestamp: DateTime<FixedOffset>,
    reference: u16,
) -> Result<Vec<String>, PduError> {
    pdu::encode_deliver(from, text, timestamp, reference)
}

/// The hex SMS-STATUS-REPORT (with empty SMSC field) saying message `reference` to `to` was
/// delivered.
pub(super) fn encode_delivered_report(
    to: &str,
    reference: u8,
    timestamp: DateTime<FixedOffset>,
) -> Result<String, PduError> {
    pdu::encode_status_report(to, reference, 0x00, timestamp)
}

/// The recipient and text of a hex SMS-SUBMIT (with SMSC field), and whether it asks for a
/// delivery report; `None` if it is not one.
pub(super) fn decode_submit(hex: &str) -> Option<(String, String, bool)> {
    match pdu::decode(hex, true) {
        Ok(Pdu::Submit(submit)) => {
            Some((submit.recipient, submit.text, submit.status_report_request))
        }
        Ok(other) => {
            tracing::warn!("simulated modem got a PDU that is not an SMS-SUBMIT: {other:?}");
            None
        }
        Err(e) => {
            tracing::warn!("simulated modem got an undecodable PDU: {e}");
            None
        }
    }
}
