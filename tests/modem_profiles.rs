//! The driver against the simulated modem in every module profile (SIM800, SIM900, SIM7600,
//! A7670, EC25, E3372, E173 and the 3GPP reference): what it probes and chooses, SMS in and
//! out, delivery reports, calls with caller ID, and a modem that restarts under it.

#[path = "support/wait.rs"]
mod wait;

use std::time::Duration;

use gsmgw::bus::{Bus, Event, IncomingSms};
use gsmgw::config::{ModemConfig, SmsConfig};
use gsmgw::modem::driver::{self, DriverOptions, ModemHandle};
use gsmgw::modem::profiles::{self, Profile, PROFILES};
use gsmgw::modem::sim::{SimConfig, SimEvent, SimHandle, SimModem};
use gsmgw::store::{self, Store, StoreHandle};
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
    profile: &'static Profile,
    _dir: tempfile::TempDir,
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

async fn start(profile: &'static Profile, modem: ModemConfig, delivery_reports: bool) -> Rig {
    init_logs();
    let (sim, sim_events) = SimModem::start(SimConfig {
        profile,
        ..SimConfig::default()
    })
    .expect("sim modem starts");
    let dir = tempfile::tempdir().expect("temp dir");
    let db = Store::open(&dir.path().join("gsmgw.db"), SmsConfig::default()).expect("store");
    let (store, _thread) = store::spawn(db);
    let bus = Bus::new();
    let events = bus.subscribe();
    let (stop, stop_rx) = watch::channel(false);
    let opts = DriverOptions {
        modem: ModemConfig {
            port: sim.path().to_path_buf(),
            ..modem
        },
        send_attempts: 3,
        country_code: Some("44".into()),
        delivery_reports,
        concat_timeout: Duration::from_secs(3600),
        national_language: None,
        power_key: None,
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
        profile,
        _dir: dir,
    };
    next_matching(
        &mut rig.events,
        20,
        "the modem to be ready",
        |ev| match ev {
            Event::Modem(s) if s.ready => Some(()),
            _ => None,
        },
    )
    .await;
    rig
}

impl Rig {
    async fn received(&mut self, what: &str) -> IncomingSms {
        let what = format!("{what} on {}", self.profile.id);
        next_matching(&mut self.events, 10, &what, |ev| match ev {
            Event::SmsReceived(sms) => Some(sms),
            _ => None,
        })
        .await
    }

    async fn sim_command(&mut self, prefix: &str) -> String {
        let what = format!("the command {prefix} on {}", self.profile.id);
        next_matching(&mut self.sim_events, 10, &what, |ev| match ev {
            SimEvent::Command(c) if c.starts_with(prefix) => Some(c),
            _ => None,
        })
        .await
    }

    /// Rings, checks the call is announced with the caller's number, rejects it.
    async fn call_is_rejected_with_caller_id(&mut self) {
        self.sim.ring(Some(SENDER));
        let what = format!("the call on {}", self.profile.id);
        let call = next_matching(&mut self.events, 10, &what, |ev| match ev {
            Event::CallRinging(call) => Some(call),
            _ => None,
        })
        .await;
        assert_eq!(call.from.as_deref(), Some(SENDER), "{}", self.profile.id);
        self.modem.reject_call(call.id).await.expect("rejected");
        let what = format!("the reject on {}", self.profile.id);
        next_matching(&mut self.sim_events, 10, &what, |ev| {
            (ev == SimEvent::CallRejected).then_some(())
        })
        .await;
    }

    async fn shutdown(self) {
        let _ = self.stop.send(true);
        within(10, "the driver to stop", self.task)
            .await
            .expect("driver task ends cleanly");
    }
}

#[tokio::test]
async fn every_profile_gets_indications_it_accepts_and_that_announce_new_sms() {
    for profile in PROFILES {
        let rig = start(profile, ModemConfig::default(), false).await;
        let cnmi = profiles::Cnmi(rig.sim.cnmi());
        assert!(cnmi.indicates_new_sms(), "{}: {cnmi}", profile.id);
        let support = profiles::parse_cnmi_test(profile.cnmi_test).expect("profile parses");
        assert!(support.allows(cnmi), "{}: {cnmi}", profile.id);
        // Delivery reports as each manual allows: SIM800/SIM900 only route them (+CDS).
        let expected_ds = if support.ds.contains(2) { 2 } else { 1 };
        assert_eq!(cnmi.ds(), expected_ds, "{}", profile.id);
        rig.shutdown().await;
    }
}

#[tokio::test]
async fn sms_in_single_multipart_and_ucs2_arrive_on_every_profile() {
    let long = "Long message. ".repeat(20);
    let ucs2 = "Grüße aus Köln 😀 — Привет";
    for profile in PROFILES {
        let mut rig = start(profile, ModemConfig::default(), false).await;
        for text in ["hello", long.as_str(), ucs2] {
            rig.sim.inject_sms(SENDER, text);
            let sms = rig.received("an SMS").await;
            assert_eq!(
                (sms.from.as_str(), sms.text.as_str()),
                (SENDER, text),
                "{}",
                profile.id
            );
        }
        rig.shutdown().await;
    }
}

#[tokio::test]
async fn sms_out_and_its_delivery_report_work_on_every_profile() {
    for profile in PROFILES {
        let mut rig = start(profile, ModemConfig::default(), true).await;
        let id = rig
            .modem
            .queue_sms(SENDER, "reply 😀", None, false)
            .await
            .expect("queued");
        let what = format!("the SMS to go out on {}", profile.id);
        let (to, text) = next_matching(&mut rig.sim_events, 10, &what, |ev| match ev {
            SimEvent::SmsSent { to, text, .. } => Some((to, text)),
            _ => None,
        })
        .await;
        assert_eq!((to.as_str(), text.as_str()), (SENDER, "reply 😀"));
        let store = rig.store.clone();
        let status = eventually(10, "the delivery report to be recorded", || {
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
        assert_eq!(status, 0, "{}", profile.id);
        let row = rig.store.outbox_get(id).await.expect("read").expect("row");
        assert_eq!(row.parts_sent.len(), 1, "{}", profile.id);
        // Stored reports are deleted once recorded, from whichever storage held them.
        let sim = rig.sim.clone();
        eventually(10, "the report storage to be emptied", || {
            let empty = sim.stored_sms() == 0;
            async move { empty.then_some(()) }
        })
        .await;
        rig.shutdown().await;
    }
}

#[tokio::test]
async fn calls_are_announced_with_caller_id_and_rejected_on_every_voice_profile() {
    for profile in PROFILES.iter().filter(|p| p.voice) {
        let mut rig = start(profile, ModemConfig::default(), false).await;
        rig.call_is_rejected_with_caller_id().await;
        rig.shutdown().await;
    }
}

#[tokio::test]
async fn after_a_reboot_with_the_port_open_caller_id_and_new_sms_work_at_once() {
    for profile in PROFILES {
        let mut rig = start(profile, ModemConfig::default(), false).await;
        while rig.sim_events.try_recv().is_ok() {}
        rig.sim.reboot();
        // The reboot switched caller ID off and +CNMI back to its power-on value; only a new
        // init brings them back (the sweep is 300 s away).
        rig.sim_command("AT+CLIP=1").await;
        // After the re-init's sweep: what arrives now can only come by indication.
        rig.sim_command("AT+CMGL=4").await;
        let cnmi = profiles::Cnmi(rig.sim.cnmi());
        assert!(cnmi.indicates_new_sms(), "{}: {cnmi}", profile.id);
        if profile.voice {
            rig.call_is_rejected_with_caller_id().await;
        }
        rig.sim.inject_sms(SENDER, "after the reboot");
        let sms = rig.received("an SMS after the reboot").await;
        assert_eq!(sms.text, "after the reboot", "{}", profile.id);
        rig.shutdown().await;
    }
}

#[tokio::test]
async fn a_silent_reset_is_caught_by_the_poll_and_new_sms_flow_again() {
    // The E3372 powers on with +CNMI 0,0,0,0,0: after a reset nothing is announced at all.
    let profile = profiles::by_id("e3372").expect("profile");
    let mut rig = start(
        profile,
        ModemConfig {
            poll_interval_s: 1,
            ..ModemConfig::default()
        },
        false,
    )
    .await;
    // After the start-up sweep: the message can only be found by a new init.
    rig.sim_command("AT+CMGL=4").await;
    rig.sim.reboot_silently();
    assert_eq!(rig.sim.cnmi(), [0, 0, 0, 0, 0]);
    rig.sim.inject_sms(SENDER, "sent while nobody was told");
    let sms = rig.received("the SMS stored during the silent reset").await;
    assert_eq!(sms.text, "sent while nobody was told");
    assert!(profiles::Cnmi(rig.sim.cnmi()).indicates_new_sms());
    rig.shutdown().await;
}

/// A module that takes exactly one `+CNMI` setting, and says so.
static ONE_SETTING: Profile = Profile {
    id: "one-setting",
    cnmi_test: "+CNMI: (1),(2),(0),(0),(0)",
    cnmi_power_on: [0, 0, 0, 0, 0],
    ..profiles::GENERIC
};

#[tokio::test]
async fn a_modem_that_takes_one_cnmi_setting_only_gets_that_one() {
    let mut rig = start(&ONE_SETTING, ModemConfig::default(), false).await;
    assert_eq!(rig.sim.cnmi(), [1, 2, 0, 0, 0]);
    rig.sim.inject_sms(SENDER, "direct");
    assert_eq!(rig.received("a +CMT message").await.text, "direct");
    rig.shutdown().await;
}

#[tokio::test]
async fn a_configured_cnmi_the_modem_refuses_falls_back_to_probing() {
    let sim800 = profiles::by_id("sim800").expect("profile");
    let mut rig = start(
        sim800,
        ModemConfig {
            cnmi: Some("2,1,0,2,0".into()),
            init: vec!["AT+CSCS=\"GSM\"".into()],
            ..ModemConfig::default()
        },
        false,
    )
    .await;
    assert_eq!(rig.sim.cnmi(), [2, 1, 0, 1, 0]);
    // The extra init command goes out after the built-in sequence, at every init.
    while rig.sim_events.try_recv().is_ok() {}
    rig.sim.reboot();
    rig.sim_command("AT+CNMI=2,1,0,2,0").await;
    rig.sim_command("AT+CSCS=\"GSM\"").await;
    rig.shutdown().await;
}

/// An SMS-DELIVER part made octet by octet: UCS-2 `body` after a concatenation header.
fn ucs2_part(seq: u8, total: u8, body: &[u8]) -> String {
    let mut tpdu = vec![
        0x44, 0x0C, 0x91, 0x44, 0x77, 0x00, 0x09, 0x21, 0x43, 0x00, 0x08,
    ];
    tpdu.extend_from_slice(&[0x42, 0x10, 0x21, 0x31, 0x54, 0x80, 0x00]);
    tpdu.push(u8::try_from(6 + body.len()).expect("short"));
    tpdu.extend_from_slice(&[0x05, 0x00, 0x03, 0x5A, total, seq]);
    tpdu.extend_from_slice(body);
    format!("00{}", hex::encode_upper(tpdu))
}

#[tokio::test]
async fn an_emoji_whose_halves_are_in_two_parts_arrives_whole() {
    let mut rig = start(&profiles::GENERIC, ModemConfig::default(), false).await;
    // U+1F600 is D83D DE00: the high half ends part 1, the low half starts part 2.
    rig.sim
        .inject_pdu(&ucs2_part(1, 2, &[0x00, 0x48, 0x00, 0x69, 0xD8, 0x3D]));
    rig.sim
        .inject_pdu(&ucs2_part(2, 2, &[0xDE, 0x00, 0x00, 0x21]));
    let sms = rig.received("the two-part message").await;
    assert_eq!(sms.text, "Hi\u{1F600}!");
    let row = rig
        .store
        .inbox_get(sms.id)
        .await
        .expect("read")
        .expect("row");
    assert_eq!(row.text, "Hi\u{1F600}!");
    rig.shutdown().await;
}

#[tokio::test]
async fn a_wap_push_reaches_the_bus_as_data_and_never_as_text() {
    let mut rig = start(&profiles::GENERIC, ModemConfig::default(), false).await;
    // 8-bit data (DCS 0x04) to application port 2948 (WAP push), source port 9200.
    let mut tpdu = vec![
        0x44, 0x0C, 0x91, 0x44, 0x77, 0x00, 0x09, 0x21, 0x43, 0x00, 0x04,
    ];
    tpdu.extend_from_slice(&[0x42, 0x10, 0x21, 0x31, 0x54, 0x80, 0x00]);
    let body = [0x01, 0x06, 0x03, 0xC4, 0xAF, 0x87];
    tpdu.push(7 + body.len() as u8);
    tpdu.extend_from_slice(&[0x06, 0x05, 0x04, 0x0B, 0x84, 0x23, 0xF0]);
    tpdu.extend_from_slice(&body);
    rig.sim
        .inject_pdu(&format!("00{}", hex::encode_upper(tpdu)));
    rig.sim.inject_sms(SENDER, "text after the push");
    let mut data = None;
    let text = within(10, "the push and the text", async {
        loop {
            match rig.events.recv().await {
                Some(Event::DataSmsReceived(d)) => data = Some(d),
                Some(Event::SmsReceived(sms)) => break sms,
                Some(_) => {}
                None => panic!("bus closed"),
            }
        }
    })
    .await;
    // The text came after the push, so the push was published before it, as data.
    assert_eq!(text.text, "text after the push");
    let data = data.expect("the push was published as data");
    assert_eq!(data.data, body);
    assert_eq!(data.port, Some(2948));
    assert_eq!(data.from, "+447700901234");
    // Delivered at once: it is never offered to the plugins, not even after a restart.
    assert_eq!(
        rig.store.inbox_delivered(data.id).await.expect("read"),
        Some(true)
    );
    rig.shutdown().await;
}

/// A module whose `AT+CNMI?` reports `<mode>` 1 whatever was set.
static REPORTS_OTHER_MODE: Profile = Profile {
    id: "reports-other-mode",
    cnmi_reported_mode: Some(1),
    ..profiles::GENERIC
};

#[tokio::test]
async fn a_modem_that_reports_its_setting_differently_is_not_reinitialised_by_every_poll() {
    let mut rig = start(
        &REPORTS_OTHER_MODE,
        ModemConfig {
            poll_interval_s: 1,
            ..ModemConfig::default()
        },
        false,
    )
    .await;
    while rig.sim_events.try_recv().is_ok() {}
    let mut polls = 0;
    let mut sets = Vec::new();
    within(15, "three polls", async {
        while polls < 3 {
            match rig.sim_events.recv().await {
                Some(SimEvent::Command(c)) if c == "AT+CNMI?" => polls += 1,
                Some(SimEvent::Command(c)) if c.starts_with("AT+CNMI=") => sets.push(c),
                Some(_) => {}
                None => panic!("the simulated modem stopped"),
            }
        }
    })
    .await;
    assert!(sets.is_empty(), "re-initialised: {sets:?}");
    rig.shutdown().await;
}
