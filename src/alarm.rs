//! The alarm panel: disarmed, arming (exit delay), armed away / home, pending (entry delay),
//! triggered. Zones are inputs; a siren is an output. (Being built.)

use crate::bus::{AlarmAction, AlarmState, Secret};

/// Why the panel refused a request.
#[derive(Debug, thiserror::Error)]
pub enum AlarmError {
    /// The code given does not match the panel's code.
    #[error("wrong alarm code")]
    WrongCode,
    /// The alarm task has ended.
    #[error("the alarm task has stopped")]
    Stopped,
}

/// A cloneable handle to the alarm task.
#[derive(Clone, Default)]
pub struct AlarmHandle {}

impl AlarmHandle {
    /// Asks the panel to arm, disarm or trigger; returns its new state.
    pub async fn command(
        &self,
        action: AlarmAction,
        by: Option<&str>,
        code: Option<&Secret>,
    ) -> Result<AlarmState, AlarmError> {
        let _ = (action, by, code);
        Ok(AlarmState::Disarmed)
    }

    /// The current state.
    pub fn state(&self) -> AlarmState {
        AlarmState::Disarmed
    }
}
