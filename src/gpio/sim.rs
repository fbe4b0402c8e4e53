//! Simulated lines: the backend half lives in the owning task, the [`SimGpio`] half lets tests
//! and the demo console flip inputs and look at the physical level of outputs.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::mpsc;

use super::{GpioBackend, GpioError, InputEdge};
use crate::config::{Bias, Config, InputConfig, OutputConfig};

/// One simulated line. Levels are physical, as a meter on the pin would read them.
#[derive(Debug, Clone)]
struct SimLine {
    /// The configured line, as written in the config (`17`, `GPIO17`).
    line: String,
    active_low: bool,
    high: bool,
    /// Requested by the backend (a line nobody requested does not report edges).
    requested: bool,
}

#[derive(Debug, Default)]
struct SimLines {
    outputs: BTreeMap<String, SimLine>,
    inputs: BTreeMap<String, SimLine>,
    edges: Option<mpsc::Sender<InputEdge>>,
}

type Shared = Arc<Mutex<SimLines>>;

fn lock(lines: &Shared) -> MutexGuard<'_, SimLines> {
    // Every update is a single field write, so a panic elsewhere cannot leave it half-done.
    lines.lock().unwrap_or_else(|e| e.into_inner())
}

/// The control side of the simulated backend, for tests and the demo console.
#[derive(Debug, Clone)]
pub struct SimGpio {
    lines: Shared,
}

/// The simulated backend. Lines exist for every configured output and input from the start;
/// inputs idle at the level their bias pulls them to.
struct SimBackend {
    lines: Shared,
}

/// A simulated backend for `cfg`'s lines and its control side.
pub fn sim_backend(cfg: &Config) -> (Box<dyn GpioBackend>, SimGpio) {
    let mut lines = SimLines::default();
    for (name, out) in &cfg.outputs {
        let line = SimLine {
            line: out.line.to_string(),
            active_low: out.active_low,
            high: false,
            requested: false,
        };
        lines.outputs.insert(name.clone(), line);
    }
    for (name, input) in &cfg.inputs {
        let line = SimLine {
            line: input.line.to_string(),
            active_low: input.active_low,
            high: input.bias == Bias::PullUp,
            requested: false,
        };
        lines.inputs.insert(name.clone(), line);
    }
    let shared = Arc::new(Mutex::new(lines));
    (
        Box::new(SimBackend {
            lines: shared.clone(),
        }),
        SimGpio { lines: shared },
    )
}

impl SimGpio {
    /// Drives the input called `name_or_line` (its name, or its line as configured: `"17"`,
    /// `"GPIO17"`) to logical `on`, and reports the edge if the level changed. Returns false
    /// when there is no such input.
    pub fn set_input(&self, name_or_line: &str, on: bool) -> bool {
        let mut lines = lock(&self.lines);
        let SimLines { inputs, edges, .. } = &mut *lines;
        let Some((name, line)) = find(inputs, name_or_line) else {
            return false;
        };
        let high = on != line.active_low;
        if line.high != high {
            line.high = high;
            if let (true, Some(edges)) = (line.requested, edges.as_ref()) {
                if edges
                    .try_send(InputEdge {
                        name: name.clone(),
                        on,
                    })
                    .is_err()
                {
                    tracing::warn!(input = %name, "sim gpio: edge queue full or closed, edge dropped");
                }
            }
        }
        true
    }

    /// The PHYSICAL level (true = high) of the output called `name_or_line`, or `None` when
    /// there is no such output.
    pub fn output_level(&self, name_or_line: &str) -> Option<bool> {
        let mut lines = lock(&self.lines);
        find(&mut lines.outputs, name_or_line).map(|(_, line)| line.high)
    }

    /// The PHYSICAL level (true = high) of the input called `name_or_line`.
    pub fn input_level(&self, name_or_line: &str) -> Option<bool> {
        let mut lines = lock(&self.lines);
        find(&mut lines.inputs, name_or_line).map(|(_, line)| line.high)
    }

    /// The configured output names, for the demo console.
    pub fn output_names(&self) -> Vec<String> {
        lock(&self.lines).outputs.keys().cloned().collect()
    }

    /// The configured input names, for the demo console.
    pub fn input_names(&self) -> Vec<String> {
        lock(&self.lines).inputs.keys().cloned().collect()
    }
}

fn find<'a>(
    lines: &'a mut BTreeMap<String, SimLine>,
    name_or_line: &str,
) -> Option<(&'a String, &'a mut SimLine)> {
    if lines.contains_key(name_or_line) {
        return lines
            .iter_mut()
            .find(|(name, _)| name.as_str() == name_or_line);
    }
    lines.iter_mut().find(|(_, line)| line.line == name_or_line)
}

impl GpioBackend for SimBackend {
    fn describe(&self) -> String {
        "sim".into()
    }

    fn request_output(&mut self, name: &str, _: &OutputConfig, on: bool) -> Result<(), GpioError> {
        let mut lines = lock(&self.lines);
        let line = lines
            .outputs
            .get_mut(name)
            .ok_or_else(|| GpioError::UnknownOutput(name.into()))?;
        line.requested = true;
        line.high = on != line.active_low;
        Ok(())
    }

    fn request_input(&mut self, name: &str, _: &InputConfig) -> Result<(), GpioError> {
        let mut lines = lock(&self.lines);
        let line = lines
            .inputs
            .get_mut(name)
            .ok_or_else(|| GpioError::UnknownInput(name.into()))?;
        line.requested = true;
        Ok(())
    }

    fn set_output(&mut self, name: &str, on: bool) -> Result<(), GpioError> {
        let mut lines = lock(&self.lines);
        match lines.outputs.get_mut(name) {
            Some(line) if line.requested => {
                line.high = on != line.active_low;
                Ok(())
            }
            _ => Err(GpioError::UnknownOutput(name.into())),
        }
    }

    fn read_input(&mut self, name: &str) -> Result<bool, GpioError> {
        let lines = lock(&self.lines);
        match lines.inputs.get(name) {
            Some(line) if line.requested => Ok(line.high != line.active_low),
            _ => Err(GpioError::UnknownInput(name.into())),
        }
    }

    fn watch_inputs(&mut self, edges: mpsc::Sender<InputEdge>) -> Result<(), GpioError> {
        lock(&self.lines).edges = Some(edges);
        Ok(())
    }

    fn debounces(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::LineId;

    fn config() -> Config {
        let mut cfg = Config::default();
        cfg.outputs.insert(
            "relay".into(),
            OutputConfig {
                line: LineId::Offset(17),
                active_low: true,
                initial: false,
                restore: false,
            },
        );
        cfg.inputs.insert(
            "door".into(),
            InputConfig {
                line: LineId::Name("GPIO4".into()),
                active_low: true,
                bias: Bias::PullUp,
                debounce_ms: 50,
                device_class: None,
            },
        );
        cfg
    }

    #[test]
    fn active_low_output_is_physically_low_when_on() {
        let cfg = config();
        let (mut backend, sim) = sim_backend(&cfg);
        let relay = &cfg.outputs["relay"];
        assert!(backend.request_output("relay", relay, false).is_ok());
        assert_eq!(sim.output_level("relay"), Some(true));
        assert!(backend.set_output("relay", true).is_ok());
        assert_eq!(sim.output_level("17"), Some(false));
    }

    #[test]
    fn pulled_up_active_low_input_idles_off_and_reports_edges_by_line_name() {
        let cfg = config();
        let (mut backend, sim) = sim_backend(&cfg);
        let (tx, mut rx) = mpsc::channel(8);
        assert!(backend.request_input("door", &cfg.inputs["door"]).is_ok());
        assert!(backend.watch_inputs(tx).is_ok());
        assert_eq!(backend.read_input("door").ok(), Some(false));
        assert!(sim.set_input("GPIO4", true));
        assert_eq!(sim.input_level("door"), Some(false));
        assert_eq!(
            rx.try_recv().ok(),
            Some(InputEdge {
                name: "door".into(),
                on: true
            })
        );
        assert!(!sim.set_input("window", true));
    }

    #[test]
    fn setting_an_input_to_its_current_level_reports_no_edge() {
        let cfg = config();
        let (mut backend, sim) = sim_backend(&cfg);
        let (tx, mut rx) = mpsc::channel(8);
        assert!(backend.request_input("door", &cfg.inputs["door"]).is_ok());
        assert!(backend.watch_inputs(tx).is_ok());
        assert!(sim.set_input("door", false));
        assert!(rx.try_recv().is_err());
    }
}
