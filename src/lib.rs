//! gsmgw — an SMS and dial-in GSM gateway for Linux boards.
//!
//! # Layout
//! - [`config`]: the TOML config, environment overrides and validation.
//! - [`deadline`]: instants from outside durations, saturating instead of panicking.
//! - [`bus`]: the [`bus::Event`]s every source publishes and the [`bus::Command`]s sinks act on.
//! - [`phone`]: normalising and comparing phone numbers.
//! - [`modem::at`]: the sans-IO AT engine (bytes in, lines, URCs and completions out).
//! - [`modem::pdu`]: the SMS PDU codec.
//! - [`modem::profiles`]: what each real modem module accepts, from its AT manual; probing.
//! - [`modem::driver`]: the task that owns the serial port.
//! - [`modem::sim`]: a simulated modem on a pty, for the demo and tests.
//! - [`gpio`]: named outputs and inputs over a backend (cdev, rppal, sim).
//! - [`store`]: the SQLite file: inbox, outbox, fragments, script data, output states.
//! - [`lua`]: the Lua host running dialect plugins and rules, sandboxed.
//! - [`mqtt`]: the MQTT bridge (and the broker embedded for the demo).
//! - [`alarm`]: the alarm panel state machine.
//! - [`app`]: wiring, start-up and graceful shutdown.
//! - [`service`]: systemd notifications and the watchdog.
//! - [`supervise`]: the owners' watchdog probes and the gateway's health on MQTT.
//! - [`tryrun`]: `gsmgw try`, conversations through the scripts with everything simulated.
//! - [`demo`]: `gsmgw demo`, everything simulated with a console.

pub mod alarm;
pub mod app;
pub mod bus;
pub mod config;
pub mod deadline;
pub mod demo;
pub mod gpio;
pub mod lua;
pub mod modem;
pub mod mqtt;
pub mod phone;
pub mod service;
pub mod store;
pub mod supervise;
pub mod tryrun;
