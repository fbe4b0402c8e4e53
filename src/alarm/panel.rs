//! The panel itself, sans-IO: requests, input changes and the clock go in (`now` is always
//! passed), [`Effect`]s come out. No tokio, no store, no GPIO: the task in `mod.rs` does those.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::AlarmError;
use crate::bus::{AlarmAction, AlarmSource, AlarmState, Secret};
use crate::config::{AlarmConfig, AlarmMode};

/// What the panel asks its driver to do, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// The state changed: save it, then publish `Event::Alarm`.
    State {
        state: AlarmState,
        by: Option<String>,
    },
    /// Switch the siren output on or off (only when a siren is configured).
    Siren(bool),
}

/// What is saved in the store (kv scope `alarm`, key `state`) on every change, as JSON.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedState {
    /// [`AlarmState::as_str`].
    pub state: String,
    /// The mode being armed, armed, or guarded while pending.
    #[serde(default)]
    pub mode: Option<AlarmMode>,
    /// The zone whose entry delay is running (pending).
    #[serde(default)]
    pub zone: Option<String>,
    /// Who made the last change.
    #[serde(default)]
    pub by: Option<String>,
}

struct Zone {
    modes: Vec<AlarmMode>,
    entry_delay: Duration,
    open: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Phase {
    Disarmed,
    Arming {
        mode: AlarmMode,
        until: Instant,
    },
    Armed {
        mode: AlarmMode,
    },
    Pending {
        mode: AlarmMode,
        until: Instant,
        zone: String,
    },
    Triggered,
}

/// The alarm panel's state machine.
///
/// - `disarmed` → arm → `arming` for the exit delay → `armed_away` / `armed_home` (no exit
///   delay configured: armed at once).
/// - armed, a zone guarding the mode opens → `pending` for the zone's entry delay →
///   `triggered`; an instant zone (entry delay 0) triggers at once. A second zone opening while
///   pending can only bring the trigger closer.
/// - `triggered` switches the siren on for at most `siren_s`, and stays triggered until
///   disarmed.
/// - disarm from any state → `disarmed`, siren off.
///
/// Zones are watched on the edge: a zone counts when it *opens*. A zone that is open when the
/// panel is armed is refused (`refuse_open_zones = true`, the default) or ignored until it has
/// closed once; one still open when the exit delay ends (the door left open) starts the entry
/// delay.
pub struct AlarmPanel {
    exit_delay: Duration,
    default_entry_delay: Duration,
    siren_limit: Option<Duration>,
    /// SHA-256 of the code: compared in constant time, and at a fixed length so a timing
    /// difference cannot tell the length either.
    code: Option<[u8; 32]>,
    refuse_open_zones: bool,
    zones: BTreeMap<String, Zone>,
    /// Zones open when the panel was armed, ignored until they close.
    bypassed: BTreeSet<String>,
    phase: Phase,
    siren_until: Option<Instant>,
    /// Who made the last change, reported again when the exit delay ends.
    by: Option<String>,
}

fn digest(s: &str) -> [u8; 32] {
    Sha256::digest(s.as_bytes()).into()
}

fn state_of(mode: AlarmMode) -> AlarmState {
    match mode {
        AlarmMode::Away => AlarmState::ArmedAway,
        AlarmMode::Home => AlarmState::ArmedHome,
    }
}

/// How a zone is named in `by` when it causes a change: `zone:<input>`.
fn zone_by(zone: &str) -> Option<String> {
    Some(format!("zone:{zone}"))
}

impl AlarmPanel {
    /// A disarmed panel for `cfg`; `inputs` holds the inputs' current levels (zones not in it
    /// start closed).
    pub fn new(cfg: &AlarmConfig, inputs: &BTreeMap<String, bool>) -> Self {
        let default_entry_delay = Duration::from_secs(cfg.entry_delay_s);
        let zones = cfg
            .zones
            .iter()
            .map(|(name, z)| {
                let entry_delay = if z.instant {
                    Duration::ZERO
                } else {
                    z.entry_delay_s
                        .map_or(default_entry_delay, Duration::from_secs)
                };
                let zone = Zone {
                    modes: z.modes.clone(),
                    entry_delay,
                    open: inputs.get(name).copied().unwrap_or(false),
                };
                (name.clone(), zone)
            })
            .collect();
        Self {
            exit_delay: Duration::from_secs(cfg.exit_delay_s),
            default_entry_delay,
            siren_limit: cfg.siren.as_ref().map(|_| Duration::from_secs(cfg.siren_s)),
            code: cfg.code.as_deref().map(digest),
            refuse_open_zones: cfg.refuse_open_zones,
            zones,
            bypassed: BTreeSet::new(),
            phase: Phase::Disarmed,
            siren_until: None,
            by: None,
        }
    }

    /// The current state.
    pub fn state(&self) -> AlarmState {
        match &self.phase {
            Phase::Disarmed => AlarmState::Disarmed,
            Phase::Arming { .. } => AlarmState::Arming,
            Phase::Armed { mode } => state_of(*mode),
            Phase::Pending { .. } => AlarmState::Pending,
            Phase::Triggered => AlarmState::Triggered,
        }
    }

    /// True while the siren is on.
    pub fn siren_on(&self) -> bool {
        self.siren_until.is_some()
    }

    /// What to save so that [`AlarmPanel::restore`] can carry on after a restart.
    pub fn saved(&self) -> SavedState {
        let (mode, zone) = match &self.phase {
            Phase::Arming { mode, .. } | Phase::Armed { mode } => (Some(*mode), None),
            Phase::Pending { mode, zone, .. } => (Some(*mode), Some(zone.clone())),
            Phase::Disarmed | Phase::Triggered => (None, None),
        };
        SavedState {
            state: self.state().as_str().to_string(),
            mode,
            zone,
            by: self.by.clone(),
        }
    }

    /// Takes up the state saved before a restart; returns the (re)started state to publish.
    ///
    /// Armed stays armed; arming and pending restart their delay in full (how much of it had
    /// passed is unknown, and a shorter delay could trap someone leaving or coming in).
    /// Zones that are open at restart are ignored until they close: nobody saw them open.
    /// Triggered stays triggered but the siren stays off: the trigger was reported when it
    /// happened, how long the siren already sounded is unknown, and a gateway that restarts
    /// over and over (a crash loop, a power fault) must not sound it again on every start
    /// past its limit. Disarming still needs a user, who sees that the alarm went off.
    ///
    /// A saved state that cannot be read is an error for the caller to log; the panel stays
    /// disarmed.
    pub fn restore(&mut self, saved: &SavedState, now: Instant) -> Vec<Effect> {
        self.by = saved.by.clone();
        let state = AlarmState::parse(&saved.state);
        let mode = saved.mode;
        self.phase = match (state, mode) {
            (Some(AlarmState::ArmedAway), _) => Phase::Armed {
                mode: AlarmMode::Away,
            },
            (Some(AlarmState::ArmedHome), _) => Phase::Armed {
                mode: AlarmMode::Home,
            },
            (Some(AlarmState::Arming), Some(mode)) => Phase::Arming {
                mode,
                until: now + self.exit_delay,
            },
            (Some(AlarmState::Pending), Some(mode)) => {
                let zone = saved.zone.clone().unwrap_or_default();
                let delay = self
                    .zones
                    .get(&zone)
                    .map_or(self.default_entry_delay, |z| z.entry_delay);
                Phase::Pending {
                    mode,
                    until: now + delay,
                    zone,
                }
            }
            (Some(AlarmState::Triggered), _) => Phase::Triggered,
            _ => Phase::Disarmed,
        };
        self.bypassed = self
            .zones
            .iter()
            .filter(|(_, z)| z.open)
            .map(|(name, _)| name.clone())
            .collect();
        vec![Effect::State {
            state: self.state(),
            by: self.by.clone(),
        }]
    }

    /// A request from `source`, labelled `by`. A code, when given, is always checked; without
    /// one, only a trusted source (a script, [`AlarmSource::trusted`]) is let through when the
    /// panel has a code. A request that changes nothing (arming the mode already armed)
    /// returns no effects.
    pub fn handle(
        &mut self,
        action: AlarmAction,
        source: &AlarmSource,
        by: Option<&str>,
        code: Option<&Secret>,
        now: Instant,
    ) -> Result<Vec<Effect>, AlarmError> {
        self.authorise(source, code)?;
        let by = by.map(str::to_string);
        let mut effects = Vec::new();
        match action {
            AlarmAction::Disarm => {
                if self.phase != Phase::Disarmed {
                    self.phase = Phase::Disarmed;
                    self.bypassed.clear();
                    self.set_state(by, &mut effects);
                    self.siren_off(&mut effects);
                }
            }
            AlarmAction::ArmAway => self.arm(AlarmMode::Away, by, now, &mut effects)?,
            AlarmAction::ArmHome => self.arm(AlarmMode::Home, by, now, &mut effects)?,
            AlarmAction::Trigger => {
                if self.phase != Phase::Triggered {
                    self.trigger(by, now, &mut effects);
                }
            }
        }
        Ok(effects)
    }

    /// An input changed; inputs that are not zones are ignored.
    pub fn handle_input(&mut self, name: &str, on: bool, now: Instant) -> Vec<Effect> {
        let mut effects = Vec::new();
        let Some(zone) = self.zones.get_mut(name) else {
            return effects;
        };
        let was_open = zone.open;
        zone.open = on;
        if !on {
            self.bypassed.remove(name);
        } else if !was_open {
            self.zone_opened(name, now, &mut effects);
        }
        effects
    }

    /// When [`AlarmPanel::handle_timeout`] must be called next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let phase = match &self.phase {
            Phase::Arming { until, .. } | Phase::Pending { until, .. } => Some(*until),
            Phase::Disarmed | Phase::Armed { .. } | Phase::Triggered => None,
        };
        match (phase, self.siren_until) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Ends the delays and the siren that are due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) -> Vec<Effect> {
        let mut effects = Vec::new();
        if self.siren_until.is_some_and(|t| t <= now) {
            self.siren_off(&mut effects);
        }
        match self.phase.clone() {
            Phase::Arming { mode, until } if until <= now => {
                self.phase = Phase::Armed { mode };
                self.set_state(self.by.clone(), &mut effects);
                // A zone still open when the delay ends (a door left open) is an entry.
                let open: Vec<String> = self
                    .zones
                    .iter()
                    .filter(|(name, z)| z.open && !self.bypassed.contains(*name))
                    .map(|(name, _)| name.clone())
                    .collect();
                for name in open {
                    self.zone_opened(&name, now, &mut effects);
                }
            }
            Phase::Pending { until, zone, .. } if until <= now => {
                self.trigger(zone_by(&zone), now, &mut effects);
            }
            _ => {}
        }
        effects
    }

    fn authorise(&self, source: &AlarmSource, code: Option<&Secret>) -> Result<(), AlarmError> {
        let Some(expected) = &self.code else {
            return Ok(());
        };
        match code {
            Some(given) if bool::from(expected.ct_eq(&digest(&given.0))) => Ok(()),
            Some(_) => Err(AlarmError::WrongCode),
            None if source.trusted() => Ok(()),
            None => Err(AlarmError::CodeRequired),
        }
    }

    fn arm(
        &mut self,
        mode: AlarmMode,
        by: Option<String>,
        now: Instant,
        effects: &mut Vec<Effect>,
    ) -> Result<(), AlarmError> {
        match &self.phase {
            Phase::Pending { .. } | Phase::Triggered => {
                return Err(AlarmError::NotNow {
                    state: self.state(),
                })
            }
            Phase::Armed { mode: m } | Phase::Arming { mode: m, .. } if *m == mode => return Ok(()),
            _ => {}
        }
        let open: BTreeSet<String> = self
            .zones
            .iter()
            .filter(|(_, z)| z.open && z.modes.contains(&mode))
            .map(|(name, _)| name.clone())
            .collect();
        if let Some(zone) = open.first().filter(|_| self.refuse_open_zones) {
            return Err(AlarmError::ZoneOpen { zone: zone.clone() });
        }
        self.bypassed = open;
        self.phase = if self.exit_delay.is_zero() {
            Phase::Armed { mode }
        } else {
            Phase::Arming {
                mode,
                until: now + self.exit_delay,
            }
        };
        self.set_state(by, effects);
        Ok(())
    }

    /// A zone opened (or was found open when the exit delay ended).
    fn zone_opened(&mut self, name: &str, now: Instant, effects: &mut Vec<Effect>) {
        if self.bypassed.contains(name) {
            return;
        }
        let Some(zone) = self.zones.get(name) else {
            return;
        };
        let delay = zone.entry_delay;
        let until = now + delay;
        let (mode, running) = match &self.phase {
            Phase::Armed { mode } => (*mode, None),
            Phase::Pending { mode, until, .. } => (*mode, Some(*until)),
            Phase::Disarmed | Phase::Arming { .. } | Phase::Triggered => return,
        };
        if !zone.modes.contains(&mode) || running.is_some_and(|r| r <= until) {
            // Not guarding this mode, or a running entry delay ends first anyway.
            return;
        }
        if delay.is_zero() {
            self.trigger(zone_by(name), now, effects);
            return;
        }
        self.phase = Phase::Pending {
            mode,
            until,
            zone: name.to_string(),
        };
        // A second zone only brings the end of a running delay closer: no new state to report.
        if running.is_none() {
            self.set_state(zone_by(name), effects);
        }
    }

    fn trigger(&mut self, by: Option<String>, now: Instant, effects: &mut Vec<Effect>) {
        self.phase = Phase::Triggered;
        self.set_state(by, effects);
        if let Some(limit) = self.siren_limit {
            self.siren_until = Some(now + limit);
            effects.push(Effect::Siren(true));
        }
    }

    fn siren_off(&mut self, effects: &mut Vec<Effect>) {
        if self.siren_until.take().is_some() {
            effects.push(Effect::Siren(false));
        }
    }

    fn set_state(&mut self, by: Option<String>, effects: &mut Vec<Effect>) {
        self.by = by.clone();
        effects.push(Effect::State {
            state: self.state(),
            by,
        });
    }
}
