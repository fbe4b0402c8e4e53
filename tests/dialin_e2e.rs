//! End to end: the dial-in golden cases of the David and CALL/REJECT/CONN dialects through
//! every layer — the simulated modem on a pty, the driver, the Lua plugins from `plugins/` and
//! simulated GPIO, on a paused clock (MQTT off).
//!
//! That a call "does nothing" is checked behind a barrier: after the call, an SMS that the
//! plugin answers is injected; the plugins handle events in order, so by the time the answer
//! is sent the call has been handled, and the sim events before the answer show what it did.

#[path = "support/gateway.rs"]
mod gateway;
#[path = "support/wait.rs"]
mod wait;

use std::time::Duration;

use gateway::Rig;
use gsmgw::bus::Event;
use gsmgw::modem::sim::SimEvent;
use tokio::sync::mpsc;
use wait::next_matching;

const MASTER: &str = "+447700900123";
const USER: &str = "+447700900456";
const STRANGER: &str = "+447700900999";

const DAVID: &str = r#"
[plugins.david]
relay_x = "relay"
relay_y = "relay_y"
input_a = "door"
input_b = "input2"
access_code = "PC"
"#;

const CALL_REJECT_CONN: &str = r#"
[plugins.call_reject_conn]
relay = "relay"
input = "door"
master = "+447700900123"
"#;

type BusRx = mpsc::UnboundedReceiver<Event>;

/// Waits for the output `name` to change to `on`, on the bus.
async fn output_changes(bus: &mut BusRx, name: &str, on: bool) {
    let what = format!("output {name} to go {}", if on { "on" } else { "off" });
    next_matching(bus, 20, &what, |ev| match ev {
        Event::OutputChanged { name: n, on: o } if n == name && o == on => Some(()),
        _ => None,
    })
    .await;
}

/// Waits for the driver to announce a call, on the bus.
async fn call_announced(bus: &mut BusRx) {
    next_matching(bus, 20, "the call to be announced", |ev| {
        matches!(ev, Event::CallRinging(_)).then_some(())
    })
    .await;
}

/// Sends the configuration SMS `text` from `from` and waits for its confirmation.
async fn configure(rig: &mut Rig, from: &str, text: &str, confirmation: &str) {
    rig.sim.inject_sms(from, text);
    let (to, reply) = rig.next_sms().await;
    assert_eq!(
        (to.as_str(), reply.as_str()),
        (from, confirmation),
        "reply to {text}"
    );
}

/// A call from `from` that is left ringing until the caller gives up, behind the barrier of
/// the module doc (`barrier_sms` from `barrier_from`); the sim events up to the answer.
async fn unhandled_call(
    rig: &mut Rig,
    from: Option<&str>,
    barrier_from: &str,
    barrier_sms: &str,
) -> (Vec<SimEvent>, String) {
    let mut bus = rig.gateway.handles.bus.subscribe();
    rig.sim.ring(from);
    call_announced(&mut bus).await;
    rig.sim.inject_sms(barrier_from, barrier_sms);
    let events = rig
        .events_until("the barrier SMS answer", |ev| {
            matches!(ev, SimEvent::SmsSent { .. })
        })
        .await;
    let answer = match events.last() {
        Some(SimEvent::SmsSent { text, .. }) => text.clone(),
        other => panic!("expected an SMS, got {other:?}"),
    };
    rig.sim.remote_hang_up();
    (events, answer)
}

fn call_untouched(events: &[SimEvent]) -> bool {
    !events.iter().any(|ev| {
        matches!(
            ev,
            SimEvent::CallRejected | SimEvent::CallAnswered | SimEvent::CallEnded
        ) || matches!(ev, SimEvent::Command(c) if c == "ATA" || c == "AT+CHUP" || c == "ATH")
    })
}

#[tokio::test(start_paused = true)]
async fn david_listed_caller_is_rejected_and_switches_relay_x_on_for_tmx() {
    let mut rig = gateway::start(&["david"], DAVID, None).await;
    configure(&mut rig, USER, "PC,ADX,+447700900456,TMX,5", "PROGRAM OK").await;

    let mut bus = rig.gateway.handles.bus.subscribe();
    rig.sim.ring(Some(USER));
    let events = rig
        .events_until("the call to be rejected", |ev| {
            matches!(ev, SimEvent::CallRejected)
        })
        .await;
    assert!(
        !events.iter().any(|ev| matches!(ev, SimEvent::CallAnswered)),
        "the call was answered: {events:?}"
    );
    output_changes(&mut bus, "relay", true).await;
    assert!(
        !rig.output("relay_y").await,
        "relay Y is not listed for the caller"
    );

    tokio::time::advance(Duration::from_millis(4900)).await;
    assert!(rig.output("relay").await, "relay X went off before TMX");
    tokio::time::advance(Duration::from_millis(200)).await;
    output_changes(&mut bus, "relay", false).await;
    rig.stop().await;
}

#[tokio::test(start_paused = true)]
async fn david_unknown_and_withheld_callers_change_nothing() {
    let mut rig = gateway::start(&["david"], DAVID, None).await;
    configure(&mut rig, USER, "PC,ADX,+447700900456,TMX,5", "PROGRAM OK").await;

    for caller in [Some(STRANGER), None] {
        let (events, status) = unhandled_call(&mut rig, caller, STRANGER, "STATUS").await;
        assert!(call_untouched(&events), "call from {caller:?}: {events:?}");
        assert!(
            status.starts_with("A0 B0 C0 D0 X0 Y0"),
            "call from {caller:?}, status {status}"
        );
        assert!(!rig.output("relay").await, "call from {caller:?}");
    }
    rig.stop().await;
}

#[tokio::test(start_paused = true)]
async fn david_limited_caller_works_for_its_calls_then_is_dropped() {
    let mut rig = gateway::start(&["david"], DAVID, None).await;
    configure(&mut rig, MASTER, "PC,STN,+447700900123", "PROGRAM OK").await;
    configure(&mut rig, MASTER, "PC,LDX,+447700900456,2", "PROGRAM OK").await;

    // TMX is 0: each call toggles relay X.
    let mut bus = rig.gateway.handles.bus.subscribe();
    let mut seen = Vec::new();
    for on in [true, false] {
        rig.sim.ring(Some(USER));
        seen.extend(
            rig.events_until("the call to be rejected", |ev| {
                matches!(ev, SimEvent::CallRejected)
            })
            .await,
        );
        output_changes(&mut bus, "relay", on).await;
    }
    // The second call used the last one up: the service number is told (the driver may send
    // that SMS before or after rejecting the call).
    let told = seen.into_iter().find_map(|ev| match ev {
        SimEvent::SmsSent { to, text, .. } => Some((to, text)),
        _ => None,
    });
    let (to, text) = match told {
        Some(sms) => sms,
        None => rig.next_sms().await,
    };
    assert_eq!(
        (to.as_str(), text.as_str()),
        (MASTER, "+447700900456 call limit reached")
    );

    let (events, status) = unhandled_call(&mut rig, Some(USER), STRANGER, "STATUS").await;
    assert!(call_untouched(&events), "third call: {events:?}");
    assert!(status.contains("X0"), "status {status}");
    rig.stop().await;
}

#[tokio::test(start_paused = true)]
async fn crc_toggle_with_reject_open_answers_the_switch_on_and_rejects_the_switch_off() {
    let mut rig = gateway::start(&["call_reject_conn"], CALL_REJECT_CONN, None).await;
    for cmd in [
        "TEXTRES ENABLE",
        "ADD 07700900456",
        "RLYMODE TOGGLE",
        "REJECT OPEN",
    ] {
        configure(&mut rig, MASTER, cmd, "Operation Successful").await;
    }
    let mut bus = rig.gateway.handles.bus.subscribe();

    rig.sim.ring(Some(USER));
    let events = rig
        .events_until("the call to be answered", |ev| {
            matches!(ev, SimEvent::CallAnswered)
        })
        .await;
    assert!(
        events
            .iter()
            .any(|ev| matches!(ev, SimEvent::Command(c) if c == "ATA")),
        "{events:?}"
    );
    assert!(
        !events.iter().any(|ev| matches!(ev, SimEvent::CallRejected)),
        "{events:?}"
    );
    output_changes(&mut bus, "relay", true).await;
    // A connected call is hung up after 5 s.
    tokio::time::advance(Duration::from_secs(5)).await;
    rig.events_until("the connected call to be hung up", |ev| {
        matches!(ev, SimEvent::CallEnded)
    })
    .await;

    rig.sim.ring(Some(USER));
    let events = rig
        .events_until("the call to be rejected", |ev| {
            matches!(ev, SimEvent::CallRejected)
        })
        .await;
    assert!(
        !events.iter().any(|ev| matches!(ev, SimEvent::CallAnswered)),
        "{events:?}"
    );
    output_changes(&mut bus, "relay", false).await;
    rig.stop().await;
}

#[tokio::test(start_paused = true)]
async fn crc_conn_cl_answers_while_the_input_is_high_and_hangs_up_after_5_s() {
    let mut rig = gateway::start(&["call_reject_conn"], CALL_REJECT_CONN, None).await;
    for cmd in ["TEXTRES ENABLE", "ADD 07700900456", "CONN CL"] {
        configure(&mut rig, MASTER, cmd, "Operation Successful").await;
    }
    let mut bus = rig.gateway.handles.bus.subscribe();
    assert!(rig.gpio.set_input("door", true), "the door input exists");
    next_matching(&mut bus, 20, "the input to go high", |ev| {
        matches!(ev, Event::InputChanged { ref name, on: true } if name == "door").then_some(())
    })
    .await;

    rig.sim.ring(Some(USER));
    rig.events_until("the call to be answered", |ev| {
        matches!(ev, SimEvent::CallAnswered)
    })
    .await;
    // Still connected just before the 5 s are up.
    tokio::time::advance(Duration::from_millis(4900)).await;
    rig.sim.inject_sms(MASTER, "STATUS");
    let events = rig
        .events_until("the status answer", |ev| {
            matches!(ev, SimEvent::SmsSent { .. })
        })
        .await;
    assert!(
        !events.iter().any(|ev| matches!(ev, SimEvent::CallEnded)),
        "hung up early: {events:?}"
    );
    tokio::time::advance(Duration::from_millis(200)).await;
    let events = rig
        .events_until("the connected call to be hung up", |ev| {
            matches!(ev, SimEvent::CallEnded)
        })
        .await;
    assert!(
        events
            .iter()
            .any(|ev| matches!(ev, SimEvent::Command(c) if c == "AT+CHUP" || c == "ATH")),
        "{events:?}"
    );
    rig.stop().await;
}

#[tokio::test(start_paused = true)]
async fn crc_call_none_makes_a_users_call_do_nothing() {
    let mut rig = gateway::start(&["call_reject_conn"], CALL_REJECT_CONN, None).await;
    for cmd in [
        "TEXTRES ENABLE",
        "ADD 07700900456",
        "REJECT ALL",
        "CALL NONE",
    ] {
        configure(&mut rig, MASTER, cmd, "Operation Successful").await;
    }
    let (events, status) = unhandled_call(&mut rig, Some(USER), MASTER, "STATUS").await;
    assert!(call_untouched(&events), "{events:?}");
    assert_eq!(status, "RELAY OPEN INPUT LOW");
    assert!(!rig.output("relay").await);
    rig.stop().await;
}
