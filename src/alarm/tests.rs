//! The panel's state machine on a fake clock: every `now` is `t0 + seconds`.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use super::*;
use crate::config::{AlarmMode, ZoneConfig};

const OWNER: Option<&str> = Some("JOHN");

/// A dialect plugin: trusted by the host, out of band.
fn script() -> AlarmSource {
    AlarmSource::Script("plugin:pword_installer".into())
}

fn zone(modes: &[AlarmMode], entry_delay_s: Option<u64>, instant: bool) -> ZoneConfig {
    ZoneConfig {
        modes: modes.to_vec(),
        entry_delay_s,
        instant,
    }
}

/// Door (away + home, 10 s entry), window (away + home, instant), motion (away only, 20 s);
/// exit delay 10 s, siren limited to 60 s.
fn config() -> AlarmConfig {
    AlarmConfig {
        exit_delay_s: 10,
        entry_delay_s: 20,
        siren: Some("siren".into()),
        siren_s: 60,
        code: None,
        refuse_open_zones: true,
        zones: BTreeMap::from([
            (
                "door".to_string(),
                zone(&[AlarmMode::Away, AlarmMode::Home], Some(10), false),
            ),
            (
                "window".to_string(),
                zone(&[AlarmMode::Away, AlarmMode::Home], None, true),
            ),
            ("motion".to_string(), zone(&[AlarmMode::Away], None, false)),
        ]),
    }
}

struct Clock(Instant);

impl Clock {
    fn at(&self, s: u64) -> Instant {
        self.0 + Duration::from_secs(s)
    }
}

fn panel(cfg: &AlarmConfig) -> (AlarmPanel, Clock) {
    (
        AlarmPanel::new(cfg, &BTreeMap::new()),
        Clock(Instant::now()),
    )
}

fn states(effects: &[Effect]) -> Vec<AlarmState> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::State { state, .. } => Some(*state),
            Effect::Siren(_) => None,
        })
        .collect()
}

/// Arms away at t=0 and lets the exit delay end at t=10.
fn armed_away(cfg: &AlarmConfig) -> (AlarmPanel, Clock) {
    let (mut p, c) = panel(cfg);
    p.handle(AlarmAction::ArmAway, &script(), OWNER, None, c.at(0))
        .expect("arming is allowed");
    p.handle_timeout(c.at(10));
    assert_eq!(p.state(), AlarmState::ArmedAway);
    (p, c)
}

#[test]
fn arming_waits_for_the_exit_delay() {
    let (mut p, c) = panel(&config());
    let effects = p
        .handle(AlarmAction::ArmAway, &script(), OWNER, None, c.at(0))
        .unwrap();
    assert_eq!(
        effects,
        vec![Effect::State {
            state: AlarmState::Arming,
            by: OWNER.map(String::from)
        }]
    );
    assert_eq!(p.poll_timeout(), Some(c.at(10)));
    assert!(p.handle_timeout(c.at(9)).is_empty());
    assert_eq!(p.state(), AlarmState::Arming);
    let effects = p.handle_timeout(c.at(10));
    assert_eq!(
        effects,
        vec![Effect::State {
            state: AlarmState::ArmedAway,
            by: OWNER.map(String::from)
        }]
    );
    assert_eq!(p.poll_timeout(), None);
}

#[test]
fn no_exit_delay_arms_at_once() {
    let mut cfg = config();
    cfg.exit_delay_s = 0;
    let (mut p, c) = panel(&cfg);
    let effects = p
        .handle(AlarmAction::ArmHome, &script(), OWNER, None, c.at(0))
        .unwrap();
    assert_eq!(states(&effects), vec![AlarmState::ArmedHome]);
}

#[test]
fn a_zone_opening_during_the_exit_delay_does_nothing() {
    let (mut p, c) = panel(&config());
    p.handle(AlarmAction::ArmAway, &script(), OWNER, None, c.at(0))
        .unwrap();
    assert!(p.handle_input("door", true, c.at(3)).is_empty());
    assert!(p.handle_input("door", false, c.at(4)).is_empty());
    assert_eq!(
        states(&p.handle_timeout(c.at(10))),
        vec![AlarmState::ArmedAway]
    );
}

#[test]
fn an_opened_zone_starts_the_entry_delay_then_triggers_with_the_siren() {
    let (mut p, c) = armed_away(&config());
    let effects = p.handle_input("door", true, c.at(100));
    assert_eq!(
        effects,
        vec![Effect::State {
            state: AlarmState::Pending,
            by: Some("zone:door".into())
        }]
    );
    assert_eq!(p.poll_timeout(), Some(c.at(110)));
    assert!(p.handle_timeout(c.at(109)).is_empty());
    let effects = p.handle_timeout(c.at(110));
    assert_eq!(
        effects,
        vec![
            Effect::State {
                state: AlarmState::Triggered,
                by: Some("zone:door".into())
            },
            Effect::Siren(true)
        ]
    );
}

#[test]
fn a_zone_without_its_own_delay_uses_the_panels_entry_delay() {
    let (mut p, c) = armed_away(&config());
    p.handle_input("motion", true, c.at(100));
    assert_eq!(p.state(), AlarmState::Pending);
    assert_eq!(p.poll_timeout(), Some(c.at(120)));
}

#[test]
fn an_instant_zone_triggers_at_once() {
    let (mut p, c) = armed_away(&config());
    let effects = p.handle_input("window", true, c.at(100));
    assert_eq!(
        effects,
        vec![
            Effect::State {
                state: AlarmState::Triggered,
                by: Some("zone:window".into())
            },
            Effect::Siren(true)
        ]
    );
}

#[test]
fn an_instant_zone_during_the_entry_delay_triggers_at_once() {
    let (mut p, c) = armed_away(&config());
    p.handle_input("door", true, c.at(100));
    let effects = p.handle_input("window", true, c.at(102));
    assert_eq!(states(&effects), vec![AlarmState::Triggered]);
}

#[test]
fn a_second_zone_never_extends_the_entry_delay() {
    let (mut p, c) = armed_away(&config());
    p.handle_input("door", true, c.at(100));
    // motion's 20 s delay would end at 121, after the door's at 110.
    assert!(p.handle_input("motion", true, c.at(101)).is_empty());
    assert_eq!(p.poll_timeout(), Some(c.at(110)));
    assert_eq!(
        states(&p.handle_timeout(c.at(110))),
        vec![AlarmState::Triggered]
    );
}

#[test]
fn the_siren_stops_after_its_limit_and_the_panel_stays_triggered() {
    let (mut p, c) = armed_away(&config());
    p.handle_input("window", true, c.at(100));
    assert!(p.siren_on());
    assert_eq!(p.poll_timeout(), Some(c.at(160)));
    assert!(p.handle_timeout(c.at(159)).is_empty());
    assert_eq!(p.handle_timeout(c.at(160)), vec![Effect::Siren(false)]);
    assert!(!p.siren_on());
    assert_eq!(p.state(), AlarmState::Triggered);
    assert_eq!(p.poll_timeout(), None);
    // More zones opening do not sound it again.
    assert!(p.handle_input("door", true, c.at(200)).is_empty());
}

#[test]
fn no_siren_configured_means_no_siren_effects() {
    let mut cfg = config();
    cfg.siren = None;
    let (mut p, c) = armed_away(&cfg);
    let effects = p.handle_input("window", true, c.at(100));
    assert_eq!(effects.len(), 1);
    assert_eq!(p.poll_timeout(), None);
}

#[test]
fn disarming_during_the_entry_delay_stops_the_trigger() {
    let (mut p, c) = armed_away(&config());
    p.handle_input("door", true, c.at(100));
    let effects = p
        .handle(
            AlarmAction::Disarm,
            &script(),
            Some("plugin:p:JOHN"),
            None,
            c.at(105),
        )
        .unwrap();
    assert_eq!(
        effects,
        vec![Effect::State {
            state: AlarmState::Disarmed,
            by: Some("plugin:p:JOHN".into())
        }]
    );
    assert_eq!(p.poll_timeout(), None);
    assert!(p.handle_timeout(c.at(110)).is_empty());
    assert_eq!(p.state(), AlarmState::Disarmed);
}

#[test]
fn disarming_while_triggered_silences_the_siren() {
    let (mut p, c) = armed_away(&config());
    p.handle_input("window", true, c.at(100));
    let effects = p
        .handle(AlarmAction::Disarm, &script(), OWNER, None, c.at(105))
        .unwrap();
    assert_eq!(states(&effects), vec![AlarmState::Disarmed]);
    assert!(effects.contains(&Effect::Siren(false)));
    assert_eq!(p.poll_timeout(), None);
}

#[test]
fn disarming_during_the_exit_delay_cancels_the_arming() {
    let (mut p, c) = panel(&config());
    p.handle(AlarmAction::ArmAway, &script(), OWNER, None, c.at(0))
        .unwrap();
    p.handle(AlarmAction::Disarm, &script(), OWNER, None, c.at(5))
        .unwrap();
    assert!(p.handle_timeout(c.at(10)).is_empty());
    assert_eq!(p.state(), AlarmState::Disarmed);
}

#[test]
fn a_zone_not_guarding_the_armed_mode_does_nothing() {
    let mut cfg = config();
    cfg.exit_delay_s = 0;
    let (mut p, c) = panel(&cfg);
    p.handle(AlarmAction::ArmHome, &script(), OWNER, None, c.at(0))
        .unwrap();
    assert!(p.handle_input("motion", true, c.at(50)).is_empty());
    assert_eq!(p.state(), AlarmState::ArmedHome);
    assert_eq!(p.poll_timeout(), None);
}

#[test]
fn inputs_that_are_not_zones_are_ignored() {
    let (mut p, c) = armed_away(&config());
    assert!(p.handle_input("doorbell", true, c.at(50)).is_empty());
    assert_eq!(p.state(), AlarmState::ArmedAway);
}

#[test]
fn arming_with_a_guarding_zone_open_is_refused_by_default() {
    let cfg = config();
    let inputs = BTreeMap::from([("door".to_string(), true)]);
    let mut p = AlarmPanel::new(&cfg, &inputs);
    let err = p
        .handle(AlarmAction::ArmAway, &script(), OWNER, None, Instant::now())
        .unwrap_err();
    assert!(
        matches!(err, AlarmError::ZoneOpen { ref zone } if zone == "door"),
        "{err}"
    );
    assert_eq!(p.state(), AlarmState::Disarmed);
}

#[test]
fn an_open_zone_that_does_not_guard_the_mode_does_not_block_arming() {
    let cfg = config();
    let inputs = BTreeMap::from([("motion".to_string(), true)]);
    let mut p = AlarmPanel::new(&cfg, &inputs);
    assert!(p
        .handle(AlarmAction::ArmHome, &script(), OWNER, None, Instant::now())
        .is_ok());
}

#[test]
fn when_allowed_an_open_zone_is_ignored_until_it_closes() {
    let mut cfg = config();
    cfg.refuse_open_zones = false;
    let inputs = BTreeMap::from([("door".to_string(), true)]);
    let mut p = AlarmPanel::new(&cfg, &inputs);
    let c = Clock(Instant::now());
    p.handle(AlarmAction::ArmAway, &script(), OWNER, None, c.at(0))
        .unwrap();
    // Still open when the exit delay ends: bypassed, so no entry delay.
    assert_eq!(
        states(&p.handle_timeout(c.at(10))),
        vec![AlarmState::ArmedAway]
    );
    assert!(p.handle_input("door", false, c.at(20)).is_empty());
    assert_eq!(
        states(&p.handle_input("door", true, c.at(30))),
        vec![AlarmState::Pending]
    );
}

#[test]
fn a_door_left_open_when_the_exit_delay_ends_starts_the_entry_delay() {
    let (mut p, c) = panel(&config());
    p.handle(AlarmAction::ArmAway, &script(), OWNER, None, c.at(0))
        .unwrap();
    p.handle_input("door", true, c.at(5));
    let effects = p.handle_timeout(c.at(10));
    assert_eq!(
        states(&effects),
        vec![AlarmState::ArmedAway, AlarmState::Pending]
    );
    assert_eq!(p.poll_timeout(), Some(c.at(20)));
}

#[test]
fn arming_while_pending_or_triggered_is_refused() {
    let (mut p, c) = armed_away(&config());
    p.handle_input("door", true, c.at(100));
    let err = p
        .handle(AlarmAction::ArmHome, &script(), OWNER, None, c.at(101))
        .unwrap_err();
    assert!(
        matches!(
            err,
            AlarmError::NotNow {
                state: AlarmState::Pending
            }
        ),
        "{err}"
    );
}

#[test]
fn arming_the_mode_already_armed_changes_nothing() {
    let (mut p, c) = armed_away(&config());
    let effects = p
        .handle(AlarmAction::ArmAway, &script(), OWNER, None, c.at(50))
        .unwrap();
    assert!(effects.is_empty());
    assert_eq!(p.state(), AlarmState::ArmedAway);
}

#[test]
fn a_manual_trigger_sounds_the_siren() {
    let (mut p, c) = panel(&config());
    let effects = p
        .handle(
            AlarmAction::Trigger,
            &script(),
            Some("rule:panic"),
            None,
            c.at(0),
        )
        .unwrap();
    assert_eq!(states(&effects), vec![AlarmState::Triggered]);
    assert!(effects.contains(&Effect::Siren(true)));
}

fn with_code() -> AlarmConfig {
    AlarmConfig {
        code: Some("4321".into()),
        ..config()
    }
}

#[test]
fn a_wrong_code_is_refused_even_from_a_trusted_caller() {
    let (mut p, c) = panel(&with_code());
    for source in [AlarmSource::External, script()] {
        let err = p
            .handle(
                AlarmAction::ArmAway,
                &source,
                OWNER,
                Some(&Secret("1234".into())),
                c.at(0),
            )
            .unwrap_err();
        assert!(matches!(err, AlarmError::WrongCode), "{source:?}: {err}");
    }
    let err = p
        .handle(
            AlarmAction::ArmAway,
            &AlarmSource::External,
            None,
            Some(&Secret("43210".into())),
            c.at(0),
        )
        .unwrap_err();
    assert!(matches!(err, AlarmError::WrongCode), "{err}");
    assert_eq!(p.state(), AlarmState::Disarmed);
}

#[test]
fn the_right_code_is_accepted_from_anyone() {
    let (mut p, c) = panel(&with_code());
    let code = Secret("4321".into());
    p.handle(
        AlarmAction::ArmAway,
        &AlarmSource::External,
        None,
        Some(&code),
        c.at(0),
    )
    .unwrap();
    assert_eq!(p.state(), AlarmState::Arming);
}

#[test]
fn without_a_code_only_scripts_get_through_whatever_by_says() {
    let (mut p, c) = panel(&with_code());
    // `by` is a label: naming a plugin or rule in it grants nothing.
    for by in [
        None,
        Some("mqtt"),
        Some("JOHN"),
        Some("plugin:pword_installer"),
        Some("rule:night"),
    ] {
        for source in [AlarmSource::External, AlarmSource::Script(String::new())] {
            let err = p
                .handle(AlarmAction::Disarm, &source, by, None, c.at(0))
                .unwrap_err();
            assert!(matches!(err, AlarmError::CodeRequired), "{by:?}: {err}");
        }
    }
    for name in ["plugin:pword_installer", "rule:night"] {
        let source = AlarmSource::Script(name.into());
        assert!(p
            .handle(AlarmAction::ArmAway, &source, None, None, c.at(0))
            .is_ok());
        assert!(p
            .handle(AlarmAction::Disarm, &source, Some("mqtt"), None, c.at(1))
            .is_ok());
    }
}

#[test]
fn refusals_name_their_reason_for_scripts() {
    let (mut p, c) = panel(&with_code());
    let open = p.handle_input("door", true, c.at(0));
    assert!(open.is_empty());
    let reason = |r: Result<Vec<Effect>, AlarmError>| r.unwrap_err().reason();
    assert_eq!(
        reason(p.handle(AlarmAction::ArmAway, &script(), None, None, c.at(1))),
        "zone_open:door"
    );
    assert_eq!(
        reason(p.handle(
            AlarmAction::ArmAway,
            &AlarmSource::External,
            None,
            None,
            c.at(1)
        )),
        "code_required"
    );
    assert_eq!(
        reason(p.handle(
            AlarmAction::ArmAway,
            &script(),
            None,
            Some(&Secret("0000".into())),
            c.at(1)
        )),
        "wrong_code"
    );
    assert_eq!(AlarmError::Stopped.reason(), "not_configured");
    let busy = AlarmError::NotNow {
        state: AlarmState::Triggered,
    };
    assert_eq!(busy.reason(), "busy");
}

#[test]
fn a_panel_without_a_code_takes_any_request() {
    let (mut p, c) = panel(&config());
    assert!(p
        .handle(
            AlarmAction::ArmAway,
            &script(),
            None,
            Some(&Secret("x".into())),
            c.at(0)
        )
        .is_ok());
}

#[test]
fn the_saved_state_restores_armed_and_restarts_delays() {
    let (mut p, c) = armed_away(&config());
    p.handle_input("door", true, c.at(100));
    let saved = p.saved();
    assert_eq!(saved.state, "pending");
    assert_eq!(saved.zone.as_deref(), Some("door"));

    let (mut restarted, c2) = panel(&config());
    let effects = restarted.restore(&saved, c2.at(0));
    assert_eq!(states(&effects), vec![AlarmState::Pending]);
    assert_eq!(restarted.poll_timeout(), Some(c2.at(10)));

    let arming = SavedState {
        state: "arming".into(),
        mode: Some(AlarmMode::Home),
        zone: None,
        by: None,
    };
    let (mut restarted, c3) = panel(&config());
    restarted.restore(&arming, c3.at(0));
    assert_eq!(restarted.poll_timeout(), Some(c3.at(10)));
    assert_eq!(
        states(&restarted.handle_timeout(c3.at(10))),
        vec![AlarmState::ArmedHome]
    );
}

#[test]
fn a_restored_triggered_panel_keeps_its_siren_off() {
    let saved = SavedState {
        state: "triggered".into(),
        mode: None,
        zone: None,
        by: Some("zone:door".into()),
    };
    let (mut p, c) = panel(&config());
    let effects = p.restore(&saved, c.at(0));
    assert_eq!(
        effects,
        vec![Effect::State {
            state: AlarmState::Triggered,
            by: Some("zone:door".into())
        }]
    );
    assert!(!p.siren_on());
    assert_eq!(p.poll_timeout(), None);
}

#[test]
fn an_unknown_saved_state_restores_disarmed() {
    let saved = SavedState {
        state: "on_fire".into(),
        mode: None,
        zone: None,
        by: None,
    };
    let (mut p, c) = panel(&config());
    assert_eq!(
        states(&p.restore(&saved, c.at(0))),
        vec![AlarmState::Disarmed]
    );
}

#[test]
fn a_zone_open_at_restart_is_ignored_until_it_closes() {
    let saved = SavedState {
        state: "armed_away".into(),
        mode: Some(AlarmMode::Away),
        zone: None,
        by: None,
    };
    let inputs = BTreeMap::from([("door".to_string(), true)]);
    let mut p = AlarmPanel::new(&config(), &inputs);
    let c = Clock(Instant::now());
    p.restore(&saved, c.at(0));
    assert!(p.handle_input("door", true, c.at(1)).is_empty());
    p.handle_input("door", false, c.at(2));
    assert_eq!(
        states(&p.handle_input("door", true, c.at(3))),
        vec![AlarmState::Pending]
    );
}

#[test]
fn the_code_never_shows_in_debug_output() {
    let cfg = with_code();
    assert!(!format!("{cfg:?}").contains("4321"));
}

#[test]
fn trusted_sources_are_named_scripts() {
    assert!(AlarmSource::Script("plugin:pword_installer".into()).trusted());
    assert!(AlarmSource::Script("rule:night".into()).trusted());
    assert!(!AlarmSource::Script(String::new()).trusted());
    assert!(!AlarmSource::External.trusted());
}
