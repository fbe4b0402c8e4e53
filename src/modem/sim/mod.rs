//! A simulated GSM modem on a pseudo-terminal, for `gsmgw demo`, tests and users without
//! hardware.
//!
//! [`SimModem::start`] opens a pty and answers AT commands on it the way the module of its
//! [`Profile`] does (see [`crate::modem::profiles`]: `AT+CNMI=?` and `AT+CPMS=?` answers,
//! values it rejects, power-on `+CNMI`, boot URCs, identity), with verbose result codes, echo
//! on until `ATE0`, PDU mode only. The gateway opens
//! [`SimHandle::path`] with `tokio-serial` like any serial device and cannot tell the
//! difference. The [`SimHandle`] plays the outside world (incoming SMS and calls, a hung
//! modem, lost URCs) and the [`SimEvent`] receiver reports what the gateway did.
//!
//! Behaviour worth knowing when writing tests:
//! - `AT+CMEE` starts at 0 as on real modems, so errors are a plain `ERROR` until the gateway
//!   sends `AT+CMEE=1` (numeric `+CME ERROR: n` / `+CMS ERROR: n`).
//! - `+CLIP` lines follow `RING` only after `AT+CLIP=1`.
//! - New SMS follow `AT+CNMI`'s `<mt>`: 0 store silently, 1 store and send
//!   `+CMTI: "SM",<index>`, 2 or 3 send `+CMT: ,<len>` with the PDU and do not store. The
//!   power-on value is the profile's; a value outside the profile's `AT+CNMI=?` answer is
//!   rejected with the profile's `+CMS ERROR` and changes nothing.
//! - SIM full: a message that finds no free slot is held back, as a service centre retries
//!   delivery, and `+CIEV: "SMSFULL",1` is sent once; held messages are stored (with
//!   `+CMTI`) after the `OK` of the `AT+CMGD` that frees room. [`SimHandle::waiting_sms`]
//!   counts them.
//! - Storage indexes are 1-based. `AT+CMGR` of an empty slot answers just `OK`; an index
//!   outside the storage gives `+CMS ERROR: 321`.
//! - `AT+CMGS=<len>` checks `<len>` against the PDU; a mismatch or a PDU that is not an
//!   SMS-SUBMIT gives `+CMS ERROR: 304`. Each `AT+CMGS` is one [`SimEvent::SmsSent`], so a
//!   concatenated message gives one event per part.
//! - An SMS-SUBMIT that asks for a delivery report (TP-SRR) gets one at once, "delivered",
//!   as `AT+CNMI`'s `<ds>` says: 1 sends `+CDS: <len>` and the PDU, 2 stores it and sends
//!   `+CDSI: <mem>,<index>`, 0 drops it. `<mem>` is "SM" (listed by `AT+CMGL` like an SMS)
//!   or, on profiles that keep reports apart (EC25, SIM7600), "SR", read only after
//!   `AT+CPMS="SR"`.
//! - `AT+CFUN=1,1` answers `OK`, then at once sends the profile's boot URCs, with settings
//!   back to power-on values (echo on, `+CLIP` off, `+CNMI` as shipped).
//!   [`SimHandle::reboot`] does the same unasked, as a module that browns out.

mod codec;
mod modem;
#[cfg(test)]
mod tests;

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use nix::fcntl::{fcntl, FcntlArg, FdFlag, OFlag};
use nix::libc;
use nix::sys::termios::{cfmakeraw, tcgetattr, tcsetattr, SetArg};
use tokio::sync::mpsc;

use crate::modem::profiles::{self, Profile};
use modem::SimulatedModem;

/// How long the loop waits for I/O before it looks at the stop flag again. Stop requests also
/// wake it at once; this bounds the wait if a wake-up byte is ever lost.
const POLL_INTERVAL_MS: i32 = 50;
/// Bytes kept for a gateway that does not read (port closed); older ones are dropped, like a
/// UART whose receiver nobody empties.
const MAX_UNREAD_OUTPUT: usize = 64 * 1024;

/// What the simulated modem and its SIM look like.
#[derive(Clone)]
pub struct SimConfig {
    /// Answered to `AT+CGSN` / `AT+GSN`.
    pub imei: String,
    /// The network name in `AT+COPS?`.
    pub operator: String,
    /// The `<rssi>` of `AT+CSQ` (0..=31, 99 = unknown).
    pub csq: u8,
    /// The SIM PIN; `None` for a SIM without PIN lock.
    pub pin: Option<String>,
    /// Whether commands are echoed at power-on (real modems start with echo on).
    pub echo: bool,
    /// SMS the SIM can store.
    pub storage_slots: usize,
    /// The module it behaves as.
    pub profile: &'static Profile,
}

impl std::fmt::Debug for SimConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The PIN is a secret even in a simulation: configs end up in logs.
        f.debug_struct("SimConfig")
            .field("imei", &self.imei)
            .field("operator", &self.operator)
            .field("csq", &self.csq)
            .field("pin", &self.pin.as_ref().map(|_| "<redacted>"))
            .field("echo", &self.echo)
            .field("storage_slots", &self.storage_slots)
            .field("profile", &self.profile.id)
            .finish()
    }
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            imei: "356938035643809".to_owned(),
            operator: "Sim Mobile".to_owned(),
            csq: 20,
            pin: None,
            echo: true,
            storage_slots: 30,
            profile: &profiles::GENERIC,
        }
    }
}

/// What the gateway did to the simulated modem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SimEvent {
    /// A command line received, verbatim without its CR (also while unresponsive).
    Command(String),
    /// One `AT+CMGS`: the decoded recipient and text of the part, and its hex PDU.
    SmsSent {
        to: String,
        text: String,
        pdu: String,
    },
    /// `AT+CHUP` or `ATH` while a call was ringing.
    CallRejected,
    /// `ATA` while a call was ringing.
    CallAnswered,
    /// `AT+CHUP` or `ATH` during an answered call (a remote hang-up sends no event).
    CallEnded,
    /// `AT+CUSD=1,"<code>"`: the code.
    UssdSent(String),
}

/// Starts simulated modems.
pub struct SimModem;

impl SimModem {
    /// Opens a pty, starts answering on it and returns the handle and the event stream.
    ///
    /// The loop runs until [`SimHandle::stop`] or until the last handle is dropped; the event
    /// stream ends when it has stopped.
    pub fn start(cfg: SimConfig) -> io::Result<(SimHandle, mpsc::UnboundedReceiver<SimEvent>)> {
        let pty = nix::pty::openpty(None, None)?;
        // Raw mode before anybody opens the slave: no echo or CR/LF translation by the line
        // discipline may happen to bytes that arrive before the gateway sets the port up.
        let mut termios = tcgetattr(&pty.slave)?;
        cfmakeraw(&mut termios);
        tcsetattr(&pty.slave, SetArg::TCSANOW, &termios)?;
        let path = nix::unistd::ttyname(&pty.slave)?;
        for fd in [&pty.master, &pty.slave] {
            // Child processes (scripts, a shell in the demo) must not inherit the pty.
            fcntl(fd.as_raw_fd(), FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC))?;
        }
        fcntl(pty.master.as_raw_fd(), FcntlArg::F_SETFL(OFlag::O_NONBLOCK))?;

        let (wake_sender, wake_receiver) = UnixStream::pair()?;
        wake_sender.set_nonblocking(true)?;
        wake_receiver.set_nonblocking(true)?;
        let shared = Arc::new(Shared {
            modem: Mutex::new(SimulatedModem::new(cfg)),
            stop: AtomicBool::new(false),
            wake: wake_sender,
        });
        let (events, event_receiver) = mpsc::unbounded_channel();
        let pty_loop = PtyLoop {
            shared: Arc::clone(&shared),
            master: File::from(pty.master),
            _slave: pty.slave,
            wake: wake_receiver,
            events,
            unwritten: Vec::new(),
        };
        match tokio::runtime::Handle::try_current() {
            // Inside a runtime the loop is a blocking task, not a plain thread, for a reason:
            // while a spawn_blocking task runs, tokio's paused test clock does not auto-advance.
            // Tests with `start_paused = true` therefore move time only with
            // `tokio::time::advance`, and the pty I/O of this loop (real time) can never make
            // the gateway's timers fire early. The runtime waits for the task on shutdown,
            // which is why the loop stops promptly when the handles are dropped.
            Ok(runtime) => drop(runtime.spawn_blocking(move || pty_loop.run())),
            Err(_) => drop(
                std::thread::Builder::new()
                    .name("gsmgw-sim-modem".to_owned())
                    .spawn(move || pty_loop.run())?,
            ),
        }
        let handle = SimHandle {
            inner: Arc::new(HandleInner { shared, path }),
        };
        Ok((handle, event_receiver))
    }
}

/// Controls a running simulated modem. Cheap to clone; no method blocks on I/O, so all are
/// fine to call from async code. When the last clone is dropped the modem stops.
#[derive(Clone)]
pub struct SimHandle {
    inner: Arc<HandleInner>,
}

struct HandleInner {
    shared: Arc<Shared>,
    path: PathBuf,
}

impl Drop for HandleInner {
    fn drop(&mut self) {
        self.shared.request_stop();
    }
}

impl SimHandle {
    /// The pty slave to open as the serial port (`/dev/pts/N`).
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// An SMS from `from` arrives: stored as SMS-DELIVER PDU(s) (several parts if long) in the
    /// next free SIM slots, each announced with `+CMTI: "SM",<index>`.
    pub fn inject_sms(&self, from: &str, text: &str) {
        self.with_modem(|m| m.inject_sms(from, text));
    }

    /// A raw SMS-DELIVER PDU (hex, with SMSC field) arrives; it is stored as given, valid or not.
    pub fn inject_pdu(&self, hex: &str) {
        self.with_modem(|m| m.inject_pdu(hex));
    }

    /// One ring of an incoming call: `RING`, and `+CLIP` if enabled (`from: None` = withheld).
    /// The call rings until rejected, answered or [`remote_hang_up`](Self::remote_hang_up).
    pub fn ring(&self, from: Option<&str>) {
        self.with_modem(|m| m.ring(from));
    }

    /// The caller gives up (or hangs up an answered call): `NO CARRIER`.
    pub fn remote_hang_up(&self) {
        self.with_modem(|m| m.remote_hang_up());
    }

    /// The module restarts on its own with the port left open: settings back to the profile's
    /// power-on values, then its boot URCs.
    pub fn reboot(&self) {
        self.with_modem(|m| m.reboot());
    }

    /// The module restarts and its boot URCs are lost (sent while nobody listened): only its
    /// settings show it.
    pub fn reboot_silently(&self) {
        self.with_modem(|m| m.reboot_silently());
    }

    /// The `+CNMI` values in force.
    pub fn cnmi(&self) -> [u8; 5] {
        self.inner.shared.modem().cnmi()
    }

    /// Sends bytes to the gateway as they are (noise, vendor URCs).
    pub fn send_raw(&self, bytes: &[u8]) {
        self.with_modem(|m| m.send_raw(bytes));
    }

    /// `false`: the modem hangs, swallowing commands without echo or answer (URCs still come).
    pub fn set_responsive(&self, on: bool) {
        self.with_modem(|m| m.set_responsive(on));
    }

    /// `false`: new SMS are stored but never announced (a modem that loses `+CMTI`).
    pub fn set_new_sms_urcs(&self, on: bool) {
        self.with_modem(|m| m.set_new_sms_urcs(on));
    }

    /// Registration with the network; a change sends `+CREG: <stat>` if `AT+CREG` >= 1.
    pub fn set_registered(&self, registered: bool) {
        self.with_modem(|m| m.set_registered(registered));
    }

    /// The `<rssi>` that `AT+CSQ` reports from now on.
    pub fn set_csq(&self, csq: u8) {
        self.with_modem(|m| m.set_csq(csq));
    }

    /// Messages in SIM storage.
    pub fn stored_sms(&self) -> usize {
        self.inner.shared.modem().stored_sms()
    }

    /// Messages held back because the SIM was full.
    pub fn waiting_sms(&self) -> usize {
        self.inner.shared.modem().waiting_sms()
    }

    /// Stops the modem (all clones); the event stream ends once the loop has finished.
    pub fn stop(&self) {
        self.inner.shared.request_stop();
    }

    fn with_modem(&self, change: impl FnOnce(&mut SimulatedModem)) {
        change(&mut self.inner.shared.modem());
        self.inner.shared.wake_loop();
    }
}

/// What the handles and the loop share.
struct Shared {
    modem: Mutex<SimulatedModem>,
    stop: AtomicBool,
    /// A byte written here wakes the loop from `poll`.
    wake: UnixStream,
}

impl Shared {
    fn modem(&self) -> MutexGuard<'_, SimulatedModem> {
        // The modem's state stays consistent between calls even if a holder panicked.
        self.modem
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn request_stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
        self.wake_loop();
    }

    fn wake_loop(&self) {
        // A full socket buffer means a wake-up is already pending, so the error is harmless.
        let _ = (&self.wake).write(&[1]);
    }
}

/// The thread that moves bytes between the pty master and the simulated modem.
struct PtyLoop {
    shared: Arc<Shared>,
    master: File,
    /// Held open so that the master never reads EIO while the gateway closes and reopens the
    /// port.
    _slave: OwnedFd,
    wake: UnixStream,
    events: mpsc::UnboundedSender<SimEvent>,
    unwritten: Vec<u8>,
}

impl PtyLoop {
    fn run(mut self) {
        while !self.shared.stop.load(Ordering::SeqCst) {
            if let Err(e) = self.step() {
                tracing::error!("simulated modem stopped: {e}");
                break;
            }
        }
        tracing::debug!("simulated modem stopped");
    }

    fn step(&mut self) -> io::Result<()> {
        self.collect_output();
        let master_interest = if self.unwritten.is_empty() {
            libc::POLLIN
        } else {
            libc::POLLIN | libc::POLLOUT
        };
        let mut fds = [
            libc::pollfd {
                fd: self.master.as_raw_fd(),
                events: master_interest,
                revents: 0,
            },
            libc::pollfd {
                fd: self.wake.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        poll(&mut fds, POLL_INTERVAL_MS)?;
        let [master, wake] = fds;
        if wake.revents & libc::POLLIN != 0 {
            self.drain_wake_ups()?;
        }
        if master.revents & (libc::POLLIN | libc::POLLERR | libc::POLLHUP) != 0 {
            self.read_master()?;
        }
        if master.revents & libc::POLLOUT != 0 {
            self.write_master()?;
        }
        Ok(())
    }

    /// Moves the modem's output and events out of the shared state.
    fn collect_output(&mut self) {
        let (output, events) = {
            let mut modem = self.shared.modem();
            (modem.take_output(), modem.take_events())
        };
        self.unwritten.extend_from_slice(&output);
        if let Some(excess) = self.unwritten.len().checked_sub(MAX_UNREAD_OUTPUT) {
            tracing::warn!("simulated modem drops {excess} bytes nobody read");
            self.unwritten.drain(..excess);
        }
        for event in events {
            // Nobody listening is fine: the demo may not care about events.
            let _ = self.events.send(event);
        }
    }

    fn drain_wake_ups(&mut self) -> io::Result<()> {
        let mut buf = [0u8; 64];
        loop {
            match self.wake.read(&mut buf) {
                Ok(0) => return Ok(()),
                Ok(_) => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
    }

    fn read_master(&mut self) -> io::Result<()> {
        let mut buf = [0u8; 1024];
        match self.master.read(&mut buf) {
            Ok(n) => {
                let received = buf.get(..n).unwrap_or_default();
                self.shared.modem().receive(received);
                Ok(())
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                ) =>
            {
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    fn write_master(&mut self) -> io::Result<()> {
        match self.master.write(&self.unwritten) {
            Ok(n) => {
                self.unwritten.drain(..n.min(self.unwritten.len()));
                Ok(())
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                ) =>
            {
                Ok(())
            }
            Err(e) => Err(e),
        }
    }
}

/// Waits until one of `fds` is ready or `timeout_ms` passes.
///
/// `libc::poll` directly because nix's `poll` module needs the crate's `poll` feature, which
/// the workspace does not enable.
fn poll(fds: &mut [libc::pollfd], timeout_ms: i32) -> io::Result<()> {
    let count = libc::nfds_t::try_from(fds.len()).unwrap_or(libc::nfds_t::MAX);
    // SAFETY: `fds` is an exclusively borrowed slice of initialised `pollfd`s that outlives
    // the call, and `count` is at most its length; the fds stay open while it runs.
    let ready = unsafe { libc::poll(fds.as_mut_ptr(), count, timeout_ms) };
    if ready < 0 {
        let error = io::Error::last_os_error();
        if error.kind() != io::ErrorKind::Interrupted {
            return Err(error);
        }
    }
    Ok(())
}
