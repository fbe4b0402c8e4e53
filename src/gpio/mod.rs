//! Named outputs (relays) and inputs over a backend: `cdev` (the Linux GPIO character device,
//! any board), `rppal` (the Raspberry Pi) or `sim` (simulated lines for the demo and tests).
//!
//! # Layering
//! - A [`GpioBackend`] requests lines and speaks *logical* levels (`on` = relay energised /
//!   input active): `active_low` is applied at the line, inside the backend (cdev hands it to
//!   the kernel; rppal and sim invert it themselves). Backends report raw input edges.
//! - The owning task started by [`spawn`] holds the backend and every piece of state: current
//!   states, pulse timers, software debounce. Everyone else holds a [`GpioHandle`].
//!
//! Debounce is software (in the owning task) for sim and rppal, and the kernel's for cdev, where
//! [`GpioBackend::debounces`] says so.

use std::collections::HashMap;
use std::fmt;

use tokio::sync::mpsc;

use crate::config::{Bias, Config, GpioBackendKind, InputConfig, LineId, OutputConfig};

mod cdev;
pub use cdev::resolve as resolve_cdev_line;
mod controller;
mod rpi;
mod sim;

pub use cdev::CdevBackend;
pub use controller::{spawn, GpioHandle, GpioSnapshot, PersistFn};
pub use rpi::{bcm_pin, PinError, RppalBackend};
pub use sim::{sim_backend, SimGpio};

/// Everything that can go wrong with a named output or input.
#[derive(Debug, thiserror::Error)]
pub enum GpioError {
    /// No output of this name is configured.
    #[error("unknown output {0:?}")]
    UnknownOutput(String),
    /// No input of this name is configured.
    #[error("unknown input {0:?}")]
    UnknownInput(String),
    /// A line could not be requested, read or driven (missing chip or line, busy, no
    /// permission); `line` names where it was looked for.
    #[error("{name}: {line}: {source}")]
    Line {
        /// The output or input, e.g. `output relay`.
        name: String,
        /// The line as the backend addresses it, e.g. `/dev/gpiochip0 line 17`.
        line: String,
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The backend as a whole failed (not a Raspberry Pi, no runtime, …).
    #[error("gpio backend: {0}")]
    Backend(String),
    /// The task that owns the lines has ended.
    #[error("the gpio task has ended")]
    Closed,
}

impl GpioError {
    fn line(
        name: impl Into<String>,
        line: impl Into<String>,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        GpioError::Line {
            name: name.into(),
            line: line.into(),
            source: source.into(),
        }
    }
}

/// An input's logical level right after an edge, as the backend saw it. Before software
/// debounce this is only a hint that the line moved: the owning task re-reads the line once it
/// has been quiet for the debounce period.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputEdge {
    /// The configured input name.
    pub name: String,
    /// The logical level after the edge (active_low already applied).
    pub on: bool,
}

/// How many edges may wait for the owning task. Backends drop edges when it is full, which is
/// safe with software debounce (the line is re-read when it settles) and, with kernel debounce,
/// only happens if the task is stuck anyway.
pub const EDGE_QUEUE: usize = 256;

/// A source of GPIO lines. All levels are logical: the backend applies `active_low`.
///
/// The owning task calls `request_*` once per line at start, then [`watch_inputs`] once (inside
/// the tokio runtime), then `set_output`/`read_input` as it goes. Dropping the backend releases
/// the lines without changing their levels.
///
/// [`watch_inputs`]: GpioBackend::watch_inputs
pub trait GpioBackend: Send {
    /// What drives the lines, for logs: `cdev /dev/gpiochip0`, `rppal`, `sim`.
    fn describe(&self) -> String;

    /// Requests `name`'s line as an output, driven to logical `on` from the first moment.
    fn request_output(&mut self, name: &str, cfg: &OutputConfig, on: bool)
        -> Result<(), GpioError>;

    /// Requests `name`'s line as an input with its bias (and, if [`debounces`], its debounce).
    ///
    /// [`debounces`]: GpioBackend::debounces
    fn request_input(&mut self, name: &str, cfg: &InputConfig) -> Result<(), GpioError>;

    /// Drives a requested output to logical `on`.
    fn set_output(&mut self, name: &str, on: bool) -> Result<(), GpioError>;

    /// Reads a requested input's logical level now (not debounced).
    fn read_input(&mut self, name: &str) -> Result<bool, GpioError>;

    /// Starts reporting every requested input's edges to `edges` (with `try_send`: a full queue
    /// drops the edge, see [`EDGE_QUEUE`]).
    fn watch_inputs(&mut self, edges: mpsc::Sender<InputEdge>) -> Result<(), GpioError>;

    /// True when the reported edges are already debounced (kernel debounce), so the owning task
    /// takes them as they come.
    fn debounces(&self) -> bool;
}

/// Opens the backend `cfg.gpio.backend` names. Lines are requested later, by [`spawn`].
///
/// The `sim` backend opened here has no control side; use [`sim_backend`] to get one.
pub fn open_backend(cfg: &Config) -> Result<Box<dyn GpioBackend>, GpioError> {
    match cfg.gpio.backend {
        GpioBackendKind::Cdev => Ok(Box::new(CdevBackend::new(cfg.gpio.chip.clone()))),
        GpioBackendKind::Rppal => Ok(Box::new(RppalBackend::open()?)),
        GpioBackendKind::Sim => Ok(sim_backend(cfg).0),
    }
}

/// One line per configured output and input saying which backend line drives it, for
/// `gsmgw check`: `output relay: cdev /dev/gpiochip0 line 17, active-low`. A line that cannot
/// be addressed (a bad rppal pin name) says so instead of failing the whole list.
pub fn describe(cfg: &Config) -> Vec<String> {
    let mut lines = Vec::new();
    let backend = match cfg.gpio.backend {
        GpioBackendKind::Cdev => format!("gpio backend: cdev, chip {}", cfg.gpio.chip.display()),
        GpioBackendKind::Rppal => "gpio backend: rppal (Raspberry Pi, BCM numbering)".into(),
        GpioBackendKind::Sim => "gpio backend: sim (simulated lines)".into(),
    };
    lines.push(backend);
    for (name, out) in &cfg.outputs {
        let mut s = format!("output {name}: {}", describe_line(cfg, &out.line));
        if out.active_low {
            s.push_str(", active-low");
        }
        if out.initial {
            s.push_str(", initially on");
        }
        if out.restore {
            s.push_str(", restores its last state");
        }
        lines.push(s);
    }
    for (name, input) in &cfg.inputs {
        let mut s = format!("input {name}: {}", describe_line(cfg, &input.line));
        if input.active_low {
            s.push_str(", active-low");
        }
        match input.bias {
            Bias::Disabled => {}
            Bias::PullUp => s.push_str(", pull-up"),
            Bias::PullDown => s.push_str(", pull-down"),
        }
        let debouncer = match cfg.gpio.backend {
            GpioBackendKind::Cdev => "kernel",
            GpioBackendKind::Rppal | GpioBackendKind::Sim => "software",
        };
        s.push_str(&format!(
            ", debounce {} ms ({debouncer})",
            input.debounce_ms
        ));
        lines.push(s);
    }
    lines
}

fn describe_line(cfg: &Config, line: &LineId) -> String {
    match cfg.gpio.backend {
        GpioBackendKind::Cdev => match cdev::offset_of(line) {
            Some(offset) => format!("cdev {} line {offset}", cfg.gpio.chip.display()),
            None => format!("cdev line named {line:?} on any chip"),
        },
        GpioBackendKind::Rppal => match bcm_pin(line) {
            Ok(pin) => format!("rppal BCM GPIO {pin}"),
            Err(e) => format!("rppal: invalid line: {e}"),
        },
        GpioBackendKind::Sim => format!("sim line {line}"),
    }
}

impl fmt::Display for GpioSnapshot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let show = |on: bool| if on { "on" } else { "off" };
        for (name, on) in &self.outputs {
            writeln!(f, "output {name}: {}", show(*on))?;
        }
        for (name, on) in &self.inputs {
            writeln!(f, "input {name}: {}", show(*on))?;
        }
        Ok(())
    }
}

/// The resting state each output starts in: the restored one when it asks for restore and one
/// was saved, else its `initial`.
pub(crate) fn start_states(cfg: &Config, restored: &HashMap<String, bool>) -> Vec<(String, bool)> {
    cfg.outputs
        .iter()
        .map(|(name, out)| {
            let saved = if out.restore {
                restored.get(name).copied()
            } else {
                None
            };
            (name.clone(), saved.unwrap_or(out.initial))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::OutputConfig;

    fn output(line: LineId, active_low: bool) -> OutputConfig {
        OutputConfig {
            line,
            active_low,
            initial: false,
            restore: false,
        }
    }

    #[test]
    fn describe_names_backend_chip_line_and_active_low() {
        let mut cfg = Config::default();
        cfg.outputs
            .insert("relay".into(), output(LineId::Offset(17), true));
        let lines = describe(&cfg);
        assert!(lines.contains(&"output relay: cdev /dev/gpiochip0 line 17, active-low".into()));
    }

    #[test]
    fn describe_reports_a_bad_rppal_name_instead_of_failing() {
        let mut cfg = Config::default();
        cfg.gpio.backend = GpioBackendKind::Rppal;
        cfg.outputs
            .insert("relay".into(), output(LineId::Name("LED0".into()), false));
        let lines = describe(&cfg);
        let relay = lines
            .iter()
            .find(|l| l.starts_with("output relay"))
            .cloned();
        assert!(relay.is_some_and(|l| l.contains("invalid line") && l.contains("LED0")));
    }

    #[test]
    fn restored_state_wins_only_for_outputs_that_ask_for_restore() {
        let mut cfg = Config::default();
        cfg.outputs.insert(
            "heating".into(),
            OutputConfig {
                line: LineId::Offset(5),
                active_low: false,
                initial: false,
                restore: true,
            },
        );
        cfg.outputs.insert(
            "gate".into(),
            OutputConfig {
                line: LineId::Offset(6),
                active_low: false,
                initial: false,
                restore: false,
            },
        );
        let restored = HashMap::from([("heating".to_string(), true), ("gate".to_string(), true)]);
        let states = start_states(&cfg, &restored);
        assert_eq!(
            states,
            vec![("gate".to_string(), false), ("heating".to_string(), true)]
        );
    }
}
