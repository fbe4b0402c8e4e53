//! The alarm task with its real neighbours: simulated GPIO (the door zone and the siren), a
//! real SQLite store in a temp dir, the bus; and once through the whole gateway.
//!
//! Time: every test holds a blocking task (see [`hold_the_clock`]) so that tokio's paused
//! clock never advances by itself while a task waits on the store's thread: time moves only
//! when a test calls `tokio::time::advance`, so delays are checked exactly. Waits for the
//! tasks are bounded by a wall-clock deadline instead of a tokio timeout (which would never
//! fire on a held clock).

use std::collections::HashMap;
use std::time::Duration;

use gsmgw::alarm::{self, AlarmError, AlarmHandle};
use gsmgw::app::{self, RunOptions};
use gsmgw::bus::{AlarmAction, AlarmSource, AlarmState, Bus, Command, Event, Secret};
use gsmgw::config::Config;
use gsmgw::gpio::{self, GpioHandle, SimGpio};
use gsmgw::store::{self, Store, StoreHandle};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

const OWNER: Option<&str> = Some("JOHN");

/// A dialect plugin: trusted by the host, out of band.
fn script() -> AlarmSource {
    AlarmSource::Script("plugin:pword_installer".into())
}

/// Fails the test if `fut` does not finish within `secs` seconds of real time.
async fn within<T>(secs: u64, what: &str, fut: impl std::future::Future<Output = T>) -> T {
    let (tx, rx) = oneshot::channel::<()>();
    // A detached thread: the test does not wait for it to end.
    std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(secs));
        let _ = tx.send(());
    });
    tokio::select! {
        v = fut => v,
        _ = rx => panic!("timed out after {secs} s waiting for {what}"),
    }
}

/// A blocking task keeps the paused clock from auto-advancing until the returned sender is
/// dropped.
fn hold_the_clock() -> std::sync::mpsc::Sender<()> {
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    tokio::task::spawn_blocking(move || {
        let _ = rx.recv();
    });
    tx
}

/// The next alarm state on the bus, skipping other events.
async fn next_alarm(events: &mut mpsc::UnboundedReceiver<Event>) -> (AlarmState, Option<String>) {
    within(10, "an alarm event", async {
        loop {
            match events.recv().await {
                Some(Event::Alarm { state, by }) => return (state, by),
                Some(_) => continue,
                None => panic!("the bus is gone"),
            }
        }
    })
    .await
}

/// The siren's next change on the bus.
async fn next_siren(events: &mut mpsc::UnboundedReceiver<Event>) -> bool {
    within(10, "the siren to change", async {
        loop {
            match events.recv().await {
                Some(Event::OutputChanged { name, on }) if name == "siren" => return on,
                Some(_) => continue,
                None => panic!("the bus is gone"),
            }
        }
    })
    .await
}

/// Door zone (away + home, 10 s entry delay), exit delay 10 s, siren for at most 60 s.
fn config(dir: &std::path::Path, extra: &str) -> Config {
    let text = format!(
        r#"
[modem]
port = "{modem}"
[gpio]
backend = "sim"
[outputs.siren]
line = 22
[inputs.door]
line = 27
debounce_ms = 0
[store]
path = "{db}"
[mqtt]
enabled = false
[alarm]
exit_delay_s = 10
siren = "siren"
siren_s = 60
{extra}
[alarm.zones.door]
modes = ["away", "home"]
entry_delay_s = 10
"#,
        modem = dir.join("no-modem").display(),
        db = dir.join("gsmgw.db").display(),
    );
    Config::from_toml(&text, "test.toml").expect("test config is valid")
}

/// The alarm task over simulated GPIO and a store in a temp dir; it can be restarted on the
/// same store.
struct Rig {
    cfg: Config,
    bus: Bus,
    events: mpsc::UnboundedReceiver<Event>,
    gpio: GpioHandle,
    sim: SimGpio,
    store: StoreHandle,
    alarm: AlarmHandle,
    alarm_stop: watch::Sender<bool>,
    alarm_task: JoinHandle<()>,
    _clock: std::sync::mpsc::Sender<()>,
    _dir: tempfile::TempDir,
}

async fn stopped(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|stop| *stop).await;
}

async fn spawn_alarm(
    cfg: &Config,
    bus: &Bus,
    gpio: &GpioHandle,
    store: &StoreHandle,
) -> (AlarmHandle, watch::Sender<bool>, JoinHandle<()>) {
    let (stop, stop_rx) = watch::channel(false);
    let (handle, task) = alarm::spawn(
        &cfg.alarm,
        bus.clone(),
        gpio.clone(),
        store.clone(),
        stopped(stop_rx),
    )
    .await
    .expect("the alarm task starts");
    (handle, stop, task)
}

impl Rig {
    async fn start(extra: &str) -> Rig {
        let clock = hold_the_clock();
        let dir = tempfile::tempdir().expect("temp dir");
        let cfg = config(dir.path(), extra);
        let db = Store::open(&cfg.store.path, cfg.sms.clone()).expect("store opens");
        // The store's thread ends when the last handle is dropped with the rig.
        let (store, _thread) = store::spawn(db);
        let bus = Bus::new();
        let events = bus.subscribe();
        let (backend, sim) = gpio::sim_backend(&cfg);
        let (gpio, _gpio_task) = gpio::spawn(
            &cfg,
            backend,
            bus.clone(),
            HashMap::new(),
            None,
            std::future::pending(),
        )
        .expect("gpio starts");
        let (alarm, alarm_stop, alarm_task) = spawn_alarm(&cfg, &bus, &gpio, &store).await;
        let mut rig = Rig {
            cfg,
            bus,
            events,
            gpio,
            sim,
            store,
            alarm,
            alarm_stop,
            alarm_task,
            _clock: clock,
            _dir: dir,
        };
        assert_eq!(next_alarm(&mut rig.events).await.0, AlarmState::Disarmed);
        rig
    }

    /// Stops the alarm task and starts a new one on the same store, as a gateway restart does.
    async fn restart(&mut self) -> (AlarmState, Option<String>) {
        let _ = self.alarm_stop.send(true);
        within(10, "the alarm task to stop", &mut self.alarm_task)
            .await
            .expect("the alarm task ends cleanly");
        let (alarm, stop, task) = spawn_alarm(&self.cfg, &self.bus, &self.gpio, &self.store).await;
        (self.alarm, self.alarm_stop, self.alarm_task) = (alarm, stop, task);
        next_alarm(&mut self.events).await
    }

    async fn command(&self, action: AlarmAction) -> Result<AlarmState, AlarmError> {
        within(
            10,
            "the alarm to answer",
            self.alarm.command(action, &script(), OWNER, None),
        )
        .await
    }

    /// Arms away and lets the exit delay pass.
    async fn arm_away(&mut self) {
        assert_eq!(
            self.command(AlarmAction::ArmAway).await.expect("arming"),
            AlarmState::Arming
        );
        assert_eq!(next_alarm(&mut self.events).await.0, AlarmState::Arming);
        tokio::time::advance(Duration::from_secs(10)).await;
        assert_eq!(next_alarm(&mut self.events).await.0, AlarmState::ArmedAway);
    }
}

#[tokio::test(start_paused = true)]
async fn an_opened_door_sounds_the_siren_after_the_entry_delay_for_its_limit() {
    let mut rig = Rig::start("").await;
    rig.arm_away().await;

    rig.sim.set_input("door", true);
    assert_eq!(
        next_alarm(&mut rig.events).await,
        (AlarmState::Pending, Some("zone:door".into()))
    );
    tokio::time::advance(Duration::from_secs(9)).await;
    assert_eq!(rig.alarm.state(), AlarmState::Pending);
    tokio::time::advance(Duration::from_secs(1)).await;
    assert_eq!(
        next_alarm(&mut rig.events).await,
        (AlarmState::Triggered, Some("zone:door".into()))
    );
    assert!(next_siren(&mut rig.events).await, "the siren switches on");
    assert_eq!(rig.gpio.output("siren").await.ok(), Some(true));

    tokio::time::advance(Duration::from_secs(59)).await;
    assert_eq!(rig.gpio.output("siren").await.ok(), Some(true));
    tokio::time::advance(Duration::from_secs(1)).await;
    assert!(!next_siren(&mut rig.events).await, "the siren switches off");
    assert_eq!(rig.alarm.state(), AlarmState::Triggered);
}

#[tokio::test(start_paused = true)]
async fn disarming_while_pending_never_sounds_the_siren() {
    let mut rig = Rig::start("").await;
    rig.arm_away().await;
    rig.sim.set_input("door", true);
    assert_eq!(next_alarm(&mut rig.events).await.0, AlarmState::Pending);
    tokio::time::advance(Duration::from_secs(5)).await;
    assert_eq!(
        rig.command(AlarmAction::Disarm).await.ok(),
        Some(AlarmState::Disarmed)
    );
    tokio::time::advance(Duration::from_secs(30)).await;
    assert_eq!(rig.alarm.state(), AlarmState::Disarmed);
    assert_eq!(rig.gpio.output("siren").await.ok(), Some(false));
}

#[tokio::test(start_paused = true)]
async fn the_armed_state_survives_a_restart() {
    let mut rig = Rig::start("").await;
    rig.arm_away().await;
    assert_eq!(
        rig.restart().await,
        (AlarmState::ArmedAway, OWNER.map(String::from))
    );
    assert_eq!(rig.alarm.state(), AlarmState::ArmedAway);
    // Still guarding: the door starts the entry delay.
    rig.sim.set_input("door", true);
    assert_eq!(next_alarm(&mut rig.events).await.0, AlarmState::Pending);
}

#[tokio::test(start_paused = true)]
async fn a_restart_while_arming_runs_the_whole_exit_delay_again() {
    let mut rig = Rig::start("").await;
    rig.command(AlarmAction::ArmHome).await.expect("arming");
    assert_eq!(next_alarm(&mut rig.events).await.0, AlarmState::Arming);
    tokio::time::advance(Duration::from_secs(8)).await;
    assert_eq!(rig.restart().await.0, AlarmState::Arming);
    tokio::time::advance(Duration::from_secs(9)).await;
    assert_eq!(rig.alarm.state(), AlarmState::Arming);
    tokio::time::advance(Duration::from_secs(1)).await;
    assert_eq!(next_alarm(&mut rig.events).await.0, AlarmState::ArmedHome);
}

#[tokio::test(start_paused = true)]
async fn a_triggered_panel_restarts_triggered_with_the_siren_off() {
    let mut rig = Rig::start("").await;
    rig.command(AlarmAction::Trigger).await.expect("trigger");
    assert_eq!(next_alarm(&mut rig.events).await.0, AlarmState::Triggered);
    assert!(next_siren(&mut rig.events).await);
    assert_eq!(rig.restart().await.0, AlarmState::Triggered);
    // The old task switched the siren off on its way out; the new one does not sound it.
    tokio::time::advance(Duration::from_secs(1)).await;
    assert_eq!(rig.gpio.output("siren").await.ok(), Some(false));
    assert_eq!(rig.alarm.state(), AlarmState::Triggered);
    while let Ok(ev) = rig.events.try_recv() {
        assert!(
            !matches!(ev, Event::OutputChanged { ref name, on: true } if name == "siren"),
            "the siren sounded again after the restart"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn a_wrong_or_missing_code_is_refused_through_the_handle() {
    let mut rig = Rig::start("code = \"4321\"").await;
    let wrong = Secret("1234".into());
    let answer = |by: Option<&'static str>, code: Option<Secret>| {
        let alarm = rig.alarm.clone();
        async move {
            within(
                10,
                "the alarm to answer",
                alarm.command(
                    AlarmAction::ArmAway,
                    &AlarmSource::External,
                    by,
                    code.as_ref(),
                ),
            )
            .await
        }
    };
    assert!(matches!(
        answer(None, Some(wrong)).await,
        Err(AlarmError::WrongCode)
    ));
    assert!(matches!(
        answer(Some("mqtt"), None).await,
        Err(AlarmError::CodeRequired)
    ));
    assert_eq!(rig.alarm.state(), AlarmState::Disarmed);
    assert_eq!(
        answer(None, Some(Secret("4321".into()))).await.ok(),
        Some(AlarmState::Arming)
    );
    assert_eq!(next_alarm(&mut rig.events).await.0, AlarmState::Arming);
}

#[tokio::test(start_paused = true)]
async fn arming_with_the_door_open_is_refused() {
    let mut rig = Rig::start("").await;
    rig.sim.set_input("door", true);
    within(10, "the door to open", async {
        loop {
            if let Some(Event::InputChanged { on: true, .. }) = rig.events.recv().await {
                return;
            }
        }
    })
    .await;
    let err = rig.command(AlarmAction::ArmAway).await.unwrap_err();
    assert!(
        matches!(err, AlarmError::ZoneOpen { ref zone } if zone == "door"),
        "{err}"
    );
    assert_eq!(rig.alarm.state(), AlarmState::Disarmed);
}

#[tokio::test(start_paused = true)]
async fn through_the_gateway_an_armed_alarm_sounds_the_siren_when_the_door_opens() {
    let _clock = hold_the_clock();
    let dir = tempfile::tempdir().expect("temp dir");
    let cfg = config(dir.path(), "");
    let (backend, sim) = gpio::sim_backend(&cfg);
    let gateway = app::start(
        cfg,
        RunOptions {
            gpio_backend: Some(backend),
            ..Default::default()
        },
    )
    .await
    .expect("gateway starts");
    let h = gateway.handles.clone();
    let mut events = h.bus.subscribe();

    app::execute(
        &h,
        Command::Alarm {
            action: AlarmAction::ArmAway,
            source: script(),
            by: None,
            code: None,
            reply: None,
        },
    )
    .await;
    assert_eq!(next_alarm(&mut events).await.0, AlarmState::Arming);
    tokio::time::advance(Duration::from_secs(10)).await;
    assert_eq!(next_alarm(&mut events).await.0, AlarmState::ArmedAway);

    sim.set_input("door", true);
    assert_eq!(next_alarm(&mut events).await.0, AlarmState::Pending);
    tokio::time::advance(Duration::from_secs(10)).await;
    assert_eq!(next_alarm(&mut events).await.0, AlarmState::Triggered);
    assert!(next_siren(&mut events).await);
    assert_eq!(
        sim.output_level("siren"),
        Some(true),
        "the siren's line is high"
    );

    within(20, "the gateway to stop", gateway.stop()).await;
}

#[tokio::test(start_paused = true)]
async fn idle_reports_the_exit_delay_end_and_then_no_timer() {
    let mut rig = Rig::start("").await;
    let idle = within(10, "the panel to be idle", rig.alarm.idle()).await;
    assert_eq!(idle.ok(), Some(None), "disarmed: no timer");

    let armed_at = tokio::time::Instant::now();
    rig.command(AlarmAction::ArmAway).await.expect("arming");
    let idle = within(10, "the panel to be idle", rig.alarm.idle()).await;
    assert_eq!(idle.ok(), Some(Some(armed_at + Duration::from_secs(10))));

    tokio::time::advance(Duration::from_secs(10)).await;
    assert_eq!(next_alarm(&mut rig.events).await.0, AlarmState::Arming);
    assert_eq!(next_alarm(&mut rig.events).await.0, AlarmState::ArmedAway);
    let idle = within(10, "the panel to be idle", rig.alarm.idle()).await;
    assert_eq!(idle.ok(), Some(None), "armed: no timer left");
}
