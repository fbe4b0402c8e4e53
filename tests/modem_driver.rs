//! The modem driver against the simulated modem on a pty: SMS in every way they arrive,
//! delivery reports, USSD, caps, SIM PIN, network status, and recovery from a hung modem or a
//! port that disappears.

#[path = "support/wait.rs"]
mod wait;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use gsmgw::bus::{Bus, Event, IncomingSms, SendStatus};
use gsmgw::config::{ModemConfig, SmsConfig};
use gsmgw::modem::driver::{self, DriverOptions, ModemError, ModemHandle};
use gsmgw::modem::pdu;
use gsmgw::modem::sim::{SimConfig, SimEvent, SimHandle, SimModem};
use gsmgw::store::{self, Store, StoreError, StoreHandle};
use tokio::sync::{mpsc, watch};
use wait::{eventually, next_matching, within};

const SENDER: &str = "+447700900123";

struct Rig {
    modem: ModemHandle,
    store: StoreHandle,
    events: mpsc::UnboundedReceiver<Event>,
    sim: SimHandle,
    sim_events: mpsc::UnboundedReceiver<SimEvent>,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
    _dir: tempfile::TempDir,
}

struct Setup {
    sim: SimConfig,
    modem: ModemConfig,
    sms: SmsConfig,
    delivery_reports: bool,
    concat_timeout: Duration,
    power_key: Option<driver::PowerKey>,
    /// Open this path instead of the sim's pty (a symlink to it).
    port: Option<PathBuf>,
}

impl Default for Setup {
    fn default() -> Self {
        Setup {
            sim: SimConfig::default(),
            modem: ModemConfig::default(),
            sms: SmsConfig::default(),
            delivery_reports: false,
            concat_timeout: Duration::from_secs(3600),
            power_key: None,
            port: None,
        }
    }
}

fn init_logs() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("GSMGW_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("gsmgw=warn")),
        )
        .with_test_writer()
        .try_init();
}

async fn start(setup: Setup) -> Rig {
    init_logs();
    let (sim, sim_events) = SimModem::start(setup.sim.clone()).expect("sim modem starts");
    start_on(setup.port.clone(), setup, sim, sim_events).await
}

async fn start_on(
    port: Option<PathBuf>,
    setup: Setup,
    sim: SimHandle,
    sim_events: mpsc::UnboundedReceiver<SimEvent>,
) -> Rig {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = Store::open(&dir.path().join("gsmgw.db"), setup.sms).expect("store opens");
    let (store, _thread) = store::spawn(db);
    let bus = Bus::new();
    let events = bus.subscribe();
    let (stop, stop_rx) = watch::channel(false);
    let opts = DriverOptions {
        modem: ModemConfig {
            port: port.unwrap_or_else(|| sim.path().to_path_buf()),
            ..setup.modem
        },
        send_attempts: 3,
        country_code: Some("44".into()),
        delivery_reports: setup.delivery_reports,
        concat_timeout: setup.concat_timeout,
        power_key: setup.power_key,
    };
    let mut stop_wait = stop_rx.clone();
    let (modem, task) = driver::spawn(opts, store.clone(), bus, async move {
        let _ = stop_wait.wait_for(|s| *s).await;
    });
    let mut rig = Rig {
        modem,
        store,
        events,
        sim,
        sim_events,
        stop,
        task,
        _dir: dir,
    };
    rig.ready(20).await;
    rig
}

impl Rig {
    async fn ready(&mut self, secs: u64) {
        next_matching(
            &mut self.events,
            secs,
            "the modem to be ready",
            |ev| match ev {
                Event::Modem(s) if s.ready => Some(()),
                _ => None,
            },
        )
        .await;
    }

    async fn received(&mut self, what: &str) -> IncomingSms {
        next_matching(&mut self.events, 10, what, |ev| match ev {
            Event::SmsReceived(sms) => Some(sms),
            _ => None,
        })
        .await
    }

    async fn sim_command(&mut self, prefix: &str) -> String {
        let what = format!("the command {prefix}");
        next_matching(&mut self.sim_events, 10, &what, |ev| match ev {
            SimEvent::Command(c) if c.starts_with(prefix) => Some(c),
            _ => None,
        })
        .await
    }

    async fn shutdown(self) {
        let _ = self.stop.send(true);
        within(10, "the driver to stop", self.task)
            .await
            .expect("driver task ends cleanly");
    }
}

#[tokio::test]
async fn a_directly_delivered_sms_is_stored_and_published() {
    let mut rig = start(Setup::default()).await;
    let now = Utc::now().fixed_offset();
    let parts = pdu::encode_deliver(SENDER, "direct hello", now, 1).expect("encodes");
    let pdu = parts.first().expect("one part");
    let tpdu_len = pdu.len() / 2 - 1;
    rig.sim
        .send_raw(format!("\r\n+CMT: ,{tpdu_len}\r\n{pdu}\r\n").as_bytes());
    let sms = rig.received("the +CMT message").await;
    assert_eq!(
        (sms.from.as_str(), sms.text.as_str()),
        (SENDER, "direct hello")
    );
    let row = rig.store.inbox_get(sms.id).await.unwrap().expect("stored");
    assert_eq!(row.text, "direct hello");
    rig.shutdown().await;
}

#[tokio::test]
async fn a_stored_delivery_report_is_matched_to_its_outbox_row() {
    let mut rig = start(Setup {
        delivery_reports: true,
        ..Default::default()
    })
    .await;
    let id = rig
        .modem
        .queue_sms(SENDER, "report me", None, false)
        .await
        .unwrap();
    // The sim stores the report (+CDSI); the driver reads it and then deletes it.
    rig.sim_command("AT+CMGD=").await;
    let row = rig.store.outbox_get(id).await.unwrap().expect("row");
    assert_eq!(row.delivery_status, Some(0));
    assert_eq!(rig.sim.stored_sms(), 0);
    rig.shutdown().await;
}

#[tokio::test]
async fn a_direct_delivery_report_is_matched_to_its_outbox_row() {
    let mut rig = start(Setup::default()).await;
    let id = rig
        .modem
        .queue_sms(SENDER, "no report asked", None, false)
        .await
        .unwrap();
    next_matching(&mut rig.events, 10, "the SMS to be sent", |ev| match ev {
        Event::SmsStatus(s) if s.outbox_id == id && s.status == SendStatus::Sent => Some(()),
        _ => None,
    })
    .await;
    let row = rig.store.outbox_get(id).await.unwrap().expect("row");
    assert_eq!(row.delivery_status, None, "no report requested, none sent");
    let mr = *row.parts_sent.first().expect("one part recorded");
    let report = pdu::encode_status_report(SENDER, mr, 0x41, Utc::now().fixed_offset()).unwrap();
    let len = report.len() / 2 - 1;
    rig.sim
        .send_raw(format!("\r\n+CDS: {len}\r\n{report}\r\n").as_bytes());
    let store = rig.store.clone();
    let status = eventually(10, "the report to be recorded", || {
        let store = store.clone();
        async move {
            store
                .outbox_get(id)
                .await
                .ok()
                .flatten()
                .and_then(|r| r.delivery_status)
        }
    })
    .await;
    assert_eq!(status, 0x41);
    rig.shutdown().await;
}

#[tokio::test]
async fn an_incomplete_concatenated_sms_is_delivered_with_markers_after_the_timeout() {
    let mut rig = start(Setup {
        concat_timeout: Duration::ZERO,
        modem: ModemConfig {
            sweep_interval_s: 1,
            ..Default::default()
        },
        ..Default::default()
    })
    .await;
    // 153 septets fill the first part of a concatenated GSM 7-bit message.
    let text = "x".repeat(153) + &"y".repeat(100);
    let parts = pdu::encode_deliver(SENDER, &text, Utc::now().fixed_offset(), 7).unwrap();
    assert_eq!(parts.len(), 2);
    rig.sim.inject_pdu(parts.first().expect("part 1"));
    let sms = rig.received("the incomplete message").await;
    assert!(sms.incomplete);
    assert!(sms.text.starts_with(&"x".repeat(153)), "{}", sms.text);
    assert!(!sms.text.contains('y'), "{}", sms.text);
    assert!(
        sms.text.contains(gsmgw::store::MISSING_PART_MARKER),
        "{}",
        sms.text
    );
    rig.shutdown().await;
}

#[tokio::test]
async fn a_full_sim_is_swept_at_once_and_held_messages_follow() {
    let mut rig = start(Setup {
        sim: SimConfig {
            storage_slots: 2,
            ..Default::default()
        },
        ..Default::default()
    })
    .await;
    // No +CMTI and a sweep only every 300 s: only the SIM-full report can bring them in.
    rig.sim.set_new_sms_urcs(false);
    for n in 1..=3 {
        rig.sim.inject_sms(SENDER, &format!("msg {n}"));
    }
    let mut texts = Vec::new();
    for _ in 0..3 {
        texts.push(rig.received("the swept messages").await.text);
    }
    texts.sort();
    assert_eq!(texts, ["msg 1", "msg 2", "msg 3"]);
    assert_eq!(rig.sim.waiting_sms(), 0);
    rig.shutdown().await;
}

#[tokio::test]
async fn ussd_answers_are_decoded_and_bad_codes_refused() {
    let mut rig = start(Setup::default()).await;
    let answer = within(10, "the USSD answer", rig.modem.ussd("*100#"))
        .await
        .expect("USSD answered");
    assert_eq!(answer, "Your balance is 12.34 EUR.");
    rig.sim_command("AT+CUSD=1,\"*100#\",15").await;
    assert!(matches!(
        rig.modem.ussd("*100#\",0;+CFUN=0").await,
        Err(ModemError::InvalidUssdCode(_))
    ));
    rig.shutdown().await;
}

#[tokio::test]
async fn a_capped_sms_is_recorded_failed_with_the_reason_and_published() {
    let mut rig = start(Setup {
        sms: SmsConfig {
            max_per_recipient_per_hour: 1,
            ..Default::default()
        },
        ..Default::default()
    })
    .await;
    rig.modem
        .queue_sms(SENDER, "first", None, false)
        .await
        .unwrap();
    let err = rig
        .modem
        .queue_sms(SENDER, "second", Some("req-2"), false)
        .await
        .expect_err("capped");
    let ModemError::Queue(StoreError::Capped { id, reason }) = err else {
        panic!("not a cap: {err}");
    };
    assert!(reason.contains("max_per_recipient_per_hour"), "{reason}");
    let published = next_matching(&mut rig.events, 10, "the failed status", |ev| match ev {
        Event::SmsStatus(s) if s.outbox_id == id => Some(s),
        _ => None,
    })
    .await;
    assert_eq!(published.request_id.as_deref(), Some("req-2"));
    assert_eq!(published.status, SendStatus::Failed(reason));
    let row = rig.store.outbox_get(id).await.unwrap().expect("row kept");
    assert_eq!(row.status, gsmgw::store::OutboxStatus::Failed);
    rig.shutdown().await;
}

/// Collects log output in memory.
#[derive(Clone, Default)]
struct LogBuffer(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for LogBuffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

// current_thread: the driver task runs on this thread, under the log capture set here.
#[tokio::test(flavor = "current_thread")]
async fn the_sim_pin_unlocks_the_modem_and_never_reaches_the_log() {
    let logs = LogBuffer::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new("gsmgw=trace"))
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    let (sim, sim_events) = SimModem::start(SimConfig {
        pin: Some("4711".into()),
        ..Default::default()
    })
    .expect("sim starts");
    let setup = Setup {
        modem: ModemConfig {
            pin: Some("4711".into()),
            ..Default::default()
        },
        ..Default::default()
    };
    let mut rig = start_on(None, setup, sim, sim_events).await;
    let status = rig.modem.status();
    assert!(status.ready && status.registered, "{status:?}");
    rig.sim_command("AT+CPIN=").await;
    rig.shutdown().await;
    let text =
        String::from_utf8_lossy(&logs.0.lock().unwrap_or_else(|p| p.into_inner())).to_string();
    assert!(
        text.contains("AT+CPIN=***"),
        "the PIN command is logged, redacted"
    );
    assert!(!text.contains("4711"), "the PIN leaked into the log");
}

#[tokio::test]
async fn registration_and_signal_changes_reach_the_bus() {
    let mut rig = start(Setup {
        modem: ModemConfig {
            poll_interval_s: 1,
            ..Default::default()
        },
        ..Default::default()
    })
    .await;
    assert_eq!(rig.modem.status().signal_dbm, Some(-73));
    rig.sim.set_registered(false);
    next_matching(&mut rig.events, 10, "deregistration", |ev| match ev {
        Event::Modem(s) if !s.registered => Some(()),
        _ => None,
    })
    .await;
    rig.sim.set_registered(true);
    rig.sim.set_csq(10);
    let st = next_matching(&mut rig.events, 10, "the new signal", |ev| match ev {
        Event::Modem(s) if s.signal_dbm == Some(-93) && s.registered => Some(s),
        _ => None,
    })
    .await;
    assert_eq!(st.operator.as_deref(), Some("Sim Mobile"));
    rig.shutdown().await;
}

#[tokio::test]
async fn a_hung_modem_is_reset_then_power_cycled_and_recovers() {
    let (pressed_tx, mut pressed) = mpsc::unbounded_channel();
    let mut rig = start(Setup {
        modem: ModemConfig {
            command_timeout_s: 1,
            poll_interval_s: 1,
            ..Default::default()
        },
        power_key: Some(Box::new(move || {
            let _ = pressed_tx.send(());
        })),
        ..Default::default()
    })
    .await;
    rig.sim.set_responsive(false);
    rig.sim_command("AT+CFUN=1,1").await;
    // The soft reset went unanswered too: the power key is the last resort.
    within(10, "the power key", pressed.recv()).await;
    rig.sim.set_responsive(true);
    next_matching(&mut rig.events, 10, "the modem to go down", |ev| match ev {
        Event::Modem(s) if !s.ready => Some(()),
        _ => None,
    })
    .await;
    rig.ready(20).await;
    assert!(pressed.try_recv().is_err(), "pressed only once");
    rig.shutdown().await;
}

fn point(link: &Path, target: &Path) {
    // Replaced atomically, as udev does: the link never dangles.
    let tmp = link.with_extension("new");
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(target, &tmp).expect("symlink");
    std::fs::rename(&tmp, link).expect("rename symlink");
}

#[tokio::test]
async fn a_port_that_disappears_and_comes_back_elsewhere_is_reopened_through_its_symlink() {
    init_logs();
    let links = tempfile::tempdir().expect("temp dir");
    let link = links.path().join("modem");
    let (first, first_events) = SimModem::start(SimConfig::default()).expect("sim starts");
    point(&link, first.path());
    let mut rig = start_on(Some(link.clone()), Setup::default(), first, first_events).await;
    let (second, mut second_events) = SimModem::start(SimConfig {
        imei: "490154203237518".into(),
        ..Default::default()
    })
    .expect("second sim starts");
    point(&link, second.path());
    rig.sim.stop();
    next_matching(&mut rig.events, 10, "the modem to go down", |ev| match ev {
        Event::Modem(s) if !s.ready => Some(()),
        _ => None,
    })
    .await;
    rig.ready(20).await;
    assert_eq!(rig.modem.status().imei.as_deref(), Some("490154203237518"));
    next_matching(&mut second_events, 5, "init on the new port", |ev| {
        (ev == SimEvent::Command("AT+CNMI=2,1,0,2,0".into())).then_some(())
    })
    .await;
    rig.shutdown().await;
}

#[tokio::test]
async fn urcs_on_the_urc_port_are_handled_like_those_on_the_main_port() {
    init_logs();
    let (urc_sim, _urc_events) = SimModem::start(SimConfig::default()).expect("URC sim starts");
    let mut rig = start(Setup {
        modem: ModemConfig {
            urc_port: Some(urc_sim.path().to_path_buf()),
            ..Default::default()
        },
        ..Default::default()
    })
    .await;
    let now = Utc::now().fixed_offset();
    let parts = pdu::encode_deliver(SENDER, "via the URC port", now, 1).expect("encodes");
    let pdu = parts.first().expect("one part");
    let len = pdu.len() / 2 - 1;
    urc_sim.send_raw(format!("\r\n+CMT: ,{len}\r\n{pdu}\r\n").as_bytes());
    let sms = rig.received("the SMS from the URC port").await;
    assert_eq!(sms.text, "via the URC port");
    urc_sim.send_raw(b"\r\nRING\r\n\r\n+CLIP: \"+447700900999\",145,,,,0\r\n");
    let call = next_matching(&mut rig.events, 10, "the call", |ev| match ev {
        Event::CallRinging(c) => Some(c),
        _ => None,
    })
    .await;
    assert_eq!(call.from.as_deref(), Some("+447700900999"));
    rig.shutdown().await;
}

#[tokio::test]
async fn an_alphanumeric_sender_made_of_digits_arrives_as_alphanumeric_and_stays_so_in_the_store() {
    let mut rig = start(Setup::default()).await;
    // TOA 0xD0, the name "00900123" (a master's last 8 digits), text "OPEN"; built by hand
    // from 3GPP TS 23.040 because our encoder only makes names of non-numbers.
    let pdu = "00040ED030580E068BC966000062101021035440044F68D109";
    let tpdu_len = pdu.len() / 2 - 1;
    rig.sim
        .send_raw(format!("\r\n+CMT: ,{tpdu_len}\r\n{pdu}\r\n").as_bytes());
    let sms = rig.received("the +CMT message from a name").await;
    assert_eq!(
        (sms.from.as_str(), sms.text.as_str(), sms.sender_kind),
        ("00900123", "OPEN", gsmgw::bus::SenderKind::Alphanumeric)
    );
    // What a restart would deliver again: the row remembers the type.
    let row = rig.store.inbox_get(sms.id).await.unwrap().expect("stored");
    assert_eq!(row.kind(), gsmgw::bus::SenderKind::Alphanumeric);
    rig.shutdown().await;
}
