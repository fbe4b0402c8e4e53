//! The Raspberry Pi's GPIO through `rppal`, with BCM pin numbers. `active_low` is applied here
//! and debounce is done in software by the owning task.

use std::collections::HashMap;

use rppal::gpio::{Gpio, InputPin, Level, OutputPin, Trigger};
use tokio::sync::mpsc;

use super::{GpioBackend, GpioError, InputEdge};
use crate::config::{Bias, InputConfig, LineId, OutputConfig};

/// The highest BCM GPIO number on any Raspberry Pi SoC.
const MAX_BCM_PIN: u32 = 53;

/// A line that is not a BCM GPIO number.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PinError {
    /// The name is not `17`, `GPIO17` or `BCM17`.
    #[error("{0:?} is not a BCM GPIO number (help: write 17 or \"GPIO17\")")]
    NotAPin(String),
    /// The number is larger than any Raspberry Pi has.
    #[error("GPIO{0} does not exist on a Raspberry Pi (BCM numbers go up to {MAX_BCM_PIN})")]
    OutOfRange(u32),
}

/// The BCM pin number of `line`: `17`, `"17"`, `"GPIO17"` or `"BCM17"` (any case) → 17.
pub fn bcm_pin(line: &LineId) -> Result<u8, PinError> {
    let number = match line {
        LineId::Offset(n) => *n,
        LineId::Name(name) => {
            let upper = name.trim().to_ascii_uppercase();
            let digits = upper
                .strip_prefix("GPIO")
                .or_else(|| upper.strip_prefix("BCM"))
                .unwrap_or(&upper);
            let all_digits = !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit());
            match digits.parse::<u32>() {
                Ok(n) if all_digits => n,
                _ => return Err(PinError::NotAPin(name.clone())),
            }
        }
    };
    match u8::try_from(number) {
        Ok(pin) if number <= MAX_BCM_PIN => Ok(pin),
        _ => Err(PinError::OutOfRange(number)),
    }
}

/// The physical level for logical `on`.
fn level(on: bool, active_low: bool) -> Level {
    if on != active_low {
        Level::High
    } else {
        Level::Low
    }
}

/// Pins on a Raspberry Pi.
pub struct RppalBackend {
    gpio: Gpio,
    outputs: HashMap<String, (OutputPin, bool)>,
    inputs: HashMap<String, (InputPin, bool)>,
}

impl RppalBackend {
    /// Opens the Pi's GPIO; fails on anything that is not a Raspberry Pi.
    pub fn open() -> Result<Self, GpioError> {
        let gpio = Gpio::new().map_err(|e| {
            GpioError::Backend(format!(
                "rppal cannot open the Raspberry Pi GPIO: {e} (help: on other boards use \
                 backend = \"cdev\")"
            ))
        })?;
        Ok(Self {
            gpio,
            outputs: HashMap::new(),
            inputs: HashMap::new(),
        })
    }

    fn pin(&self, what: &str, line: &LineId) -> Result<(rppal::gpio::Pin, String), GpioError> {
        let number = bcm_pin(line).map_err(|e| GpioError::line(what, format!("line {line}"), e))?;
        let desc = format!("BCM GPIO {number}");
        let pin = self
            .gpio
            .get(number)
            .map_err(|e| GpioError::line(what, &desc, e))?;
        Ok((pin, desc))
    }
}

impl GpioBackend for RppalBackend {
    fn describe(&self) -> String {
        "rppal".into()
    }

    fn request_output(
        &mut self,
        name: &str,
        cfg: &OutputConfig,
        on: bool,
    ) -> Result<(), GpioError> {
        let (pin, _) = self.pin(&format!("output {name}"), &cfg.line)?;
        // The level is set before the pin becomes an output, so a relay never blips.
        let mut out = match level(on, cfg.active_low) {
            Level::High => pin.into_output_high(),
            Level::Low => pin.into_output_low(),
        };
        // Outputs keep their level when the daemon stops (see `spawn`).
        out.set_reset_on_drop(false);
        self.outputs.insert(name.into(), (out, cfg.active_low));
        Ok(())
    }

    fn request_input(&mut self, name: &str, cfg: &InputConfig) -> Result<(), GpioError> {
        let (pin, _) = self.pin(&format!("input {name}"), &cfg.line)?;
        let input = match cfg.bias {
            Bias::Disabled => pin.into_input(),
            Bias::PullUp => pin.into_input_pullup(),
            Bias::PullDown => pin.into_input_pulldown(),
        };
        self.inputs.insert(name.into(), (input, cfg.active_low));
        Ok(())
    }

    fn set_output(&mut self, name: &str, on: bool) -> Result<(), GpioError> {
        let (out, active_low) = self
            .outputs
            .get_mut(name)
            .ok_or_else(|| GpioError::UnknownOutput(name.into()))?;
        out.write(level(on, *active_low));
        Ok(())
    }

    fn read_input(&mut self, name: &str) -> Result<bool, GpioError> {
        let (input, active_low) = self
            .inputs
            .get(name)
            .ok_or_else(|| GpioError::UnknownInput(name.into()))?;
        Ok(input.is_high() != *active_low)
    }

    fn watch_inputs(&mut self, edges: mpsc::Sender<InputEdge>) -> Result<(), GpioError> {
        for (name, (input, active_low)) in &mut self.inputs {
            let (edge_name, active_low, edges) = (name.clone(), *active_low, edges.clone());
            let desc = format!("BCM GPIO {}", input.pin());
            // rppal's own debounce is off: the owning task debounces, the same way as for sim.
            input
                .set_async_interrupt(Trigger::Both, None, move |event| {
                    let on = (event.trigger == Trigger::RisingEdge) != active_low;
                    let edge = InputEdge {
                        name: edge_name.clone(),
                        on,
                    };
                    if let Err(mpsc::error::TrySendError::Full(_)) = edges.try_send(edge) {
                        tracing::warn!(input = %edge_name, "gpio: edge queue full, edge dropped");
                    }
                })
                .map_err(|e| GpioError::line(format!("input {name}"), desc, e))?;
        }
        Ok(())
    }

    fn debounces(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gpio_names_and_numbers_are_bcm_pins() {
        assert_eq!(bcm_pin(&LineId::Name("GPIO17".into())), Ok(17));
        assert_eq!(bcm_pin(&LineId::Name("gpio4".into())), Ok(4));
        assert_eq!(bcm_pin(&LineId::Name("BCM27".into())), Ok(27));
        assert_eq!(bcm_pin(&LineId::Name("22".into())), Ok(22));
        assert_eq!(bcm_pin(&LineId::Offset(17)), Ok(17));
    }

    #[test]
    fn names_that_are_not_pins_are_errors() {
        for bad in ["LED0", "GPIO", "GPIO+1", "GPIO-1", "", "PIN11"] {
            let result = bcm_pin(&LineId::Name(bad.into()));
            assert_eq!(result, Err(PinError::NotAPin(bad.into())), "{bad:?}");
        }
    }

    #[test]
    fn pins_beyond_the_soc_are_errors() {
        assert_eq!(bcm_pin(&LineId::Offset(54)), Err(PinError::OutOfRange(54)));
        assert_eq!(
            bcm_pin(&LineId::Offset(4096)),
            Err(PinError::OutOfRange(4096))
        );
        assert_eq!(
            bcm_pin(&LineId::Name("GPIO99999999999".into())),
            Err(PinError::NotAPin("GPIO99999999999".into()))
        );
    }

    #[test]
    fn active_low_inverts_the_physical_level() {
        assert_eq!(level(true, false), Level::High);
        assert_eq!(level(true, true), Level::Low);
        assert_eq!(level(false, true), Level::High);
    }

    #[test]
    fn opening_rppal_off_a_pi_is_a_backend_error_with_help() {
        // Only meaningful off a Pi (CI, this machine); on a Pi the open succeeds.
        if let Err(e) = RppalBackend::open() {
            assert!(
                matches!(e, GpioError::Backend(ref m) if m.contains("cdev")),
                "{e}"
            );
        }
    }
}
