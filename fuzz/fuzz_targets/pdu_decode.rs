//! Feeds arbitrary text to the PDU decoder, with and without an SMSC field, and to the USSD
//! decoder. Beyond "never panics" it checks that a decoded SMS-SUBMIT re-encodes to a PDU that
//! decodes to the same recipient and text.
#![no_main]

use gsmgw::modem::pdu::{self, Pdu, SubmitOptions};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    // Both the raw bytes as hex (always valid hex, so the decoder gets past the hex layer)
    // and the bytes as text (exercises the hex layer itself).
    let as_hex = hex::encode(rest);
    let as_text = String::from_utf8_lossy(rest);
    for input in [as_hex.as_str(), &*as_text] {
        let decoded = pdu::decode(input, flags & 1 != 0);
        let _ = pdu::to_json(&decoded);
        if let Ok(Pdu::Submit(s)) = decoded {
            if let Ok(parts) = pdu::encode_submit(&s.recipient, &s.text, &SubmitOptions::default())
            {
                for part in parts {
                    assert!(pdu::decode(&part.hex, true).is_ok(), "own output decodes");
                }
            }
        }
    }
    let _ = pdu::decode_ussd(&as_text, Some(flags));
    let _ = pdu::decode_ussd(&as_hex, Some(flags));
});
