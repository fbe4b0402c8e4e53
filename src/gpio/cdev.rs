//! The Linux GPIO character device (`/dev/gpiochipN`) through `gpiocdev`: any board.
//!
//! `active_low` and debounce are handed to the kernel, so the levels and edges read here are
//! already logical and debounced. Each line is its own request, so an error names one line.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use gpiocdev::line::{EdgeDetection, EdgeKind, Value};
use gpiocdev::request::Config as RequestConfig;
use gpiocdev::tokio::AsyncRequest;
use gpiocdev::Request;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::{GpioBackend, GpioError, InputEdge};
use crate::config::{Bias, InputConfig, LineId, OutputConfig};

/// What the kernel shows as the owner of our lines (`gpioinfo`).
const CONSUMER: &str = "gsmgw";

/// Lines on GPIO character devices. Lines given by offset are on the configured chip; lines
/// given by name are looked up on every chip.
pub struct CdevBackend {
    chip: PathBuf,
    outputs: HashMap<String, OutputLine>,
    inputs: HashMap<String, InputLine>,
    watchers: Vec<JoinHandle<()>>,
}

struct OutputLine {
    request: Request,
    offset: u32,
    line: String,
}

struct InputLine {
    offset: u32,
    line: String,
    /// The request before [`GpioBackend::watch_inputs`] moves it into the runtime.
    plain: Option<Request>,
    watched: Option<Arc<AsyncRequest>>,
}

impl InputLine {
    fn request(&self) -> Option<&Request> {
        match (&self.watched, &self.plain) {
            (Some(watched), _) => Some(watched.as_ref().as_ref()),
            (None, plain) => plain.as_ref(),
        }
    }
}

/// The offset of a line given by number (`17` or `"17"`); `None` for a line name.
pub(crate) fn offset_of(line: &LineId) -> Option<u32> {
    match line {
        LineId::Offset(n) => Some(*n),
        LineId::Name(s) => s.trim().parse().ok(),
    }
}

/// The request configuration for an output at `offset` on `chip`, driven to logical `on`.
pub(crate) fn output_request(
    chip: &Path,
    offset: u32,
    cfg: &OutputConfig,
    on: bool,
) -> RequestConfig {
    let mut request = RequestConfig::default();
    request
        .on_chip(chip)
        .with_line(offset)
        .as_output(Value::from(on));
    if cfg.active_low {
        request.as_active_low();
    }
    request
}

/// The request configuration for an input at `offset` on `chip`: both edges, the configured
/// bias, and the kernel's debounce.
pub(crate) fn input_request(chip: &Path, offset: u32, cfg: &InputConfig) -> RequestConfig {
    let mut request = RequestConfig::default();
    request
        .on_chip(chip)
        .with_line(offset)
        .as_input()
        .with_bias(match cfg.bias {
            Bias::Disabled => gpiocdev::line::Bias::Disabled,
            Bias::PullUp => gpiocdev::line::Bias::PullUp,
            Bias::PullDown => gpiocdev::line::Bias::PullDown,
        })
        .with_edge_detection(EdgeDetection::BothEdges);
    if cfg.active_low {
        request.as_active_low();
    }
    if cfg.debounce_ms > 0 {
        request.with_debounce_period(Duration::from_millis(cfg.debounce_ms));
    }
    request
}

/// The kernel's error, with a hint when the chip itself is missing (the usual mistake: a
/// `chip` from another board).
fn request_error(chip: &Path, e: gpiocdev::Error) -> Box<dyn std::error::Error + Send + Sync> {
    if chip.exists() {
        Box::new(e)
    } else {
        format!("{e} (help: there is no such chip; `gpiodetect` lists them; set `chip` in [gpio])")
            .into()
    }
}

/// Where `line` is on this machine, for `gsmgw check`: `Ok("/dev/gpiochip0 line 17 \"GPIO17\"")`
/// (with `, in use by <consumer>` when another program holds it), or what is wrong. Reads
/// the chip's line info only: no line is requested, so nothing is driven or reconfigured.
pub fn resolve(chip: &Path, line: &LineId) -> Result<String, String> {
    let (chip, info) = match offset_of(line) {
        Some(offset) => {
            let opened = gpiocdev::chip::Chip::from_path(chip).map_err(|e| {
                format!(
                    "cannot open {}: {e} (help: `gpiodetect` lists the chips; set `chip` in [gpio])",
                    chip.display()
                )
            })?;
            let info = opened.line_info(offset).map_err(|e| {
                format!(
                    "{} has no line {offset}: {e} (help: `gpioinfo` lists its lines)",
                    chip.display()
                )
            })?;
            (chip.to_path_buf(), info)
        }
        None => {
            let name = line.to_string();
            let found = gpiocdev::find_named_line(&name).ok_or_else(|| {
                format!(
                    "no GPIO line is named {name:?} on any chip (help: `gpioinfo` lists line names)"
                )
            })?;
            (found.chip, found.info)
        }
    };
    let mut text = format!("{} line {}", chip.display(), info.offset);
    if !info.name.is_empty() {
        text.push_str(&format!(" {:?}", info.name));
    }
    if info.used {
        let by = if info.consumer.is_empty() {
            "another program"
        } else {
            info.consumer.as_str()
        };
        text.push_str(&format!(", in use by {by}"));
    }
    Ok(text)
}

impl CdevBackend {
    /// A backend for lines on `chip` (and named lines anywhere). Opens nothing yet.
    pub fn new(chip: PathBuf) -> Self {
        Self {
            chip,
            outputs: HashMap::new(),
            inputs: HashMap::new(),
            watchers: Vec::new(),
        }
    }

    /// Where `line` is: its chip, offset, and a description for errors.
    fn locate(&self, what: &str, line: &LineId) -> Result<(PathBuf, u32, String), GpioError> {
        if let Some(offset) = offset_of(line) {
            return Ok((
                self.chip.clone(),
                offset,
                format!("{} line {offset}", self.chip.display()),
            ));
        }
        let name = line.to_string();
        match gpiocdev::find_named_line(&name) {
            Some(found) => {
                let desc = format!(
                    "line {name:?} ({} line {})",
                    found.chip.display(),
                    found.info.offset
                );
                Ok((found.chip, found.info.offset, desc))
            }
            None => Err(GpioError::line(
                what,
                format!("line {name:?}"),
                "no GPIO line has this name on any chip (help: `gpioinfo` lists line names; \
                 or give the line's offset on the chip)",
            )),
        }
    }
}

impl GpioBackend for CdevBackend {
    fn describe(&self) -> String {
        format!("cdev {}", self.chip.display())
    }

    fn request_output(
        &mut self,
        name: &str,
        cfg: &OutputConfig,
        on: bool,
    ) -> Result<(), GpioError> {
        let what = format!("output {name}");
        let (chip, offset, line) = self.locate(&what, &cfg.line)?;
        let request = Request::from_config(output_request(&chip, offset, cfg, on))
            .with_consumer(CONSUMER)
            .request()
            .map_err(|e| GpioError::line(&what, &line, request_error(&chip, e)))?;
        self.outputs.insert(
            name.into(),
            OutputLine {
                request,
                offset,
                line,
            },
        );
        Ok(())
    }

    fn request_input(&mut self, name: &str, cfg: &InputConfig) -> Result<(), GpioError> {
        let what = format!("input {name}");
        let (chip, offset, line) = self.locate(&what, &cfg.line)?;
        let request = Request::from_config(input_request(&chip, offset, cfg))
            .with_consumer(CONSUMER)
            .request()
            .map_err(|e| GpioError::line(&what, &line, request_error(&chip, e)))?;
        self.inputs.insert(
            name.into(),
            InputLine {
                offset,
                line,
                plain: Some(request),
                watched: None,
            },
        );
        Ok(())
    }

    fn set_output(&mut self, name: &str, on: bool) -> Result<(), GpioError> {
        let out = self
            .outputs
            .get(name)
            .ok_or_else(|| GpioError::UnknownOutput(name.into()))?;
        out.request
            .set_value(out.offset, Value::from(on))
            .map_err(|e| GpioError::line(format!("output {name}"), &out.line, e))
    }

    fn read_input(&mut self, name: &str) -> Result<bool, GpioError> {
        let input = self
            .inputs
            .get(name)
            .ok_or_else(|| GpioError::UnknownInput(name.into()))?;
        let request = input
            .request()
            .ok_or_else(|| GpioError::UnknownInput(name.into()))?;
        request
            .value(input.offset)
            .map(bool::from)
            .map_err(|e| GpioError::line(format!("input {name}"), &input.line, e))
    }

    fn watch_inputs(&mut self, edges: mpsc::Sender<InputEdge>) -> Result<(), GpioError> {
        // AsyncRequest registers with the tokio reactor and would panic outside a runtime.
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(GpioError::Backend(
                "cdev inputs must be watched inside the tokio runtime".into(),
            ));
        }
        for (name, input) in &mut self.inputs {
            let Some(plain) = input.plain.take() else {
                continue;
            };
            let watched = Arc::new(AsyncRequest::new(plain));
            input.watched = Some(watched.clone());
            let (name, line, edges) = (name.clone(), input.line.clone(), edges.clone());
            self.watchers.push(tokio::spawn(async move {
                loop {
                    match watched.read_edge_event().await {
                        Ok(event) => {
                            let edge = InputEdge { name: name.clone(), on: event.kind == EdgeKind::Rising };
                            if let Err(e) = edges.try_send(edge) {
                                if matches!(e, mpsc::error::TrySendError::Closed(_)) {
                                    break;
                                }
                                tracing::warn!(input = %name, "gpio: edge queue full, edge dropped");
                            }
                        }
                        Err(e) => {
                            tracing::error!(input = %name, %line, error = %e, "gpio: cannot read edges; input no longer watched");
                            break;
                        }
                    }
                }
            }));
        }
        Ok(())
    }

    fn debounces(&self) -> bool {
        true
    }
}

impl Drop for CdevBackend {
    fn drop(&mut self) {
        for watcher in &self.watchers {
            watcher.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn relay(line: LineId, active_low: bool) -> OutputConfig {
        OutputConfig {
            line,
            active_low,
            initial: false,
            restore: false,
        }
    }

    fn door(active_low: bool, bias: Bias, debounce_ms: u64) -> InputConfig {
        InputConfig {
            line: LineId::Offset(4),
            active_low,
            bias,
            debounce_ms,
            device_class: None,
        }
    }

    #[test]
    fn active_low_output_request_sets_the_logical_value_and_the_flag() {
        let request = output_request(
            Path::new("/dev/gpiochip0"),
            17,
            &relay(LineId::Offset(17), true),
            true,
        );
        assert_eq!(request.chip(), Path::new("/dev/gpiochip0"));
        assert_eq!(request.lines(), &vec![17]);
        let line = request.line_config(17).cloned().unwrap_or_default();
        assert_eq!(line.direction, Some(gpiocdev::line::Direction::Output));
        assert_eq!(line.value, Some(Value::Active));
        assert!(line.active_low);
    }

    #[test]
    fn active_high_output_request_starts_inactive_when_off() {
        let request = output_request(
            Path::new("/dev/gpiochip1"),
            5,
            &relay(LineId::Offset(5), false),
            false,
        );
        let line = request.line_config(5).cloned().unwrap_or_default();
        assert_eq!(line.value, Some(Value::Inactive));
        assert!(!line.active_low);
    }

    #[test]
    fn input_request_asks_for_both_edges_bias_and_kernel_debounce() {
        let request = input_request(
            Path::new("/dev/gpiochip0"),
            4,
            &door(true, Bias::PullUp, 50),
        );
        let line = request.line_config(4).cloned().unwrap_or_default();
        assert_eq!(line.direction, Some(gpiocdev::line::Direction::Input));
        assert_eq!(line.edge_detection, Some(EdgeDetection::BothEdges));
        assert_eq!(line.bias, Some(gpiocdev::line::Bias::PullUp));
        assert_eq!(line.debounce_period, Some(Duration::from_millis(50)));
        assert!(line.active_low);
    }

    #[test]
    fn zero_debounce_asks_the_kernel_for_none() {
        let request = input_request(
            Path::new("/dev/gpiochip0"),
            4,
            &door(false, Bias::Disabled, 0),
        );
        let line = request.line_config(4).cloned().unwrap_or_default();
        assert_eq!(line.debounce_period, None);
        assert_eq!(line.bias, Some(gpiocdev::line::Bias::Disabled));
    }

    #[test]
    fn numeric_line_names_are_offsets() {
        assert_eq!(offset_of(&LineId::Name("17".into())), Some(17));
        assert_eq!(offset_of(&LineId::Name("GPIO17".into())), None);
    }

    #[test]
    fn missing_chip_error_names_the_output_chip_and_line() {
        let mut backend = CdevBackend::new(PathBuf::from("/nonexistent/gpiochip9"));
        let err = backend.request_output("relay", &relay(LineId::Offset(17), false), false);
        let message = err.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(message.contains("output relay"), "{message}");
        assert!(
            message.contains("/nonexistent/gpiochip9 line 17"),
            "{message}"
        );
    }

    #[test]
    fn missing_chip_error_names_the_input_chip_and_line() {
        let mut backend = CdevBackend::new(PathBuf::from("/nonexistent/gpiochip9"));
        let err = backend.request_input("door", &door(false, Bias::Disabled, 50));
        assert!(matches!(
            err,
            Err(GpioError::Line { ref name, ref line, .. })
                if name == "input door" && line == "/nonexistent/gpiochip9 line 4"
        ));
    }

    #[test]
    fn unknown_line_name_error_says_so_and_how_to_find_names() {
        let mut backend = CdevBackend::new(PathBuf::from("/dev/gpiochip0"));
        let line = LineId::Name("gsmgw-test-no-such-line".into());
        let message = backend
            .request_output("relay", &relay(line, false), false)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(message.contains("\"gsmgw-test-no-such-line\""), "{message}");
        assert!(message.contains("gpioinfo"), "{message}");
    }

    #[test]
    fn setting_an_output_that_was_never_requested_is_an_error() {
        let mut backend = CdevBackend::new(PathBuf::from("/dev/gpiochip0"));
        assert!(matches!(
            backend.set_output("relay", true),
            Err(GpioError::UnknownOutput(_))
        ));
    }
}
