//! Feeds arbitrary modem bytes, interleaved with commands, timeouts and resets, into the AT
//! engine. Beyond "never panics" it checks that the engine recovers: after a reset a command
//! answered with `OK` completes successfully.
#![no_main]

use std::time::{Duration, Instant};

use gsmgw::modem::at::{AtCommand, AtEngine, AtEvent, Response};
use libfuzzer_sys::fuzz_target;

const COMMANDS: &[&str] = &[
    "AT",
    "AT+CSQ",
    "AT+CMGL=4",
    "AT+CMGR=1",
    "ATD123;",
    "AT+CUSD=1,\"*1#\",15",
];

fuzz_target!(|data: &[u8]| {
    let timeout = Duration::from_secs(5);
    let mut now = Instant::now();
    let mut engine = AtEngine::new();
    // The first byte of every 16-byte chunk chooses an action, the rest is modem input.
    for chunk in data.chunks(16) {
        let Some((&op, bytes)) = chunk.split_first() else {
            continue;
        };
        match op % 8 {
            0 => {
                let text = COMMANDS[usize::from(op / 8) % COMMANDS.len()];
                let mut cmd = AtCommand::new(text, timeout);
                if op & 0x80 != 0 {
                    cmd = AtCommand::new("AT+CMGS=5", timeout).with_payload(b"00".to_vec());
                }
                engine.submit(cmd, now);
            }
            1 => {
                now += Duration::from_secs(u64::from(op / 8));
                engine.handle_timeout(now);
            }
            2 => engine.reset(),
            _ => engine.handle_rx(bytes, now),
        }
        while engine.poll_transmit().is_some() {}
        while engine.poll_event().is_some() {}
    }
    engine.reset();
    while engine.poll_event().is_some() {}
    let id = engine.submit(AtCommand::new("AT+CGMM", timeout), now);
    engine.handle_rx(b"\r\nE220\r\n\r\nOK\r\n", now);
    let done = std::iter::from_fn(|| engine.poll_event()).find_map(|e| match e {
        AtEvent::Completed { id: done, result } if done == id => Some(result),
        _ => None,
    });
    assert_eq!(
        done,
        Some(Ok(Response {
            lines: vec!["E220".to_string()]
        }))
    );
});
