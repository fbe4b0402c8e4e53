//! The task that owns the serial port: initialises the modem, receives and sends SMS, reports
//! calls and carries out call commands, polls signal and registration, and recovers from a
//! modem that stops answering or a port that disappears.
//!
//! The AT protocol itself lives in the sans-IO [`AtEngine`]; this module only moves bytes
//! between it and the port, keeps time, and turns completions and URCs into store writes and
//! bus events. Nothing here knows whether the port is a real modem or [`super::sim`].

use std::collections::VecDeque;
use std::path::PathBuf;
use std::time::Duration;

use chrono::Utc;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;
use tokio_serial::{SerialPortBuilderExt, SerialStream};

use super::at::{AtCommand, AtEngine, AtError, AtEvent, Response, Urc};
use super::pdu::{self, Pdu, SubmitOptions};
use crate::bus::{Bus, Call, Event, IncomingSms, ModemStatus, SendStatus, SmsStatus};
use crate::config::ModemConfig;
use crate::phone;
use crate::store::{
    InboxInsert, NewInboxSms, NewPart, OutboxStatus, PartInsert, QueuedSms, StoreError, StoreHandle,
};

/// Commands that time out in a row before the modem counts as hung and is reset.
const UNANSWERED_BEFORE_RESET: u32 = 3;
/// How long to wait for `+CLIP` after the first `RING` before reporting a withheld number.
const CLIP_WAIT: Duration = Duration::from_millis(1500);
/// How long `AT+CMGS` may take: the network round trip, not just the modem.
const SEND_TIMEOUT: Duration = Duration::from_secs(60);
/// The longest back-off between attempts to open a vanished port or resend a failed SMS.
const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// How long the network may take to answer a USSD request.
const USSD_TIMEOUT: Duration = Duration::from_secs(30);
/// The shortest time between two presses of the power key: a press toggles the modem, so a
/// modem still booting from the last one must not be switched off again.
const POWER_KEY_MIN_INTERVAL: Duration = Duration::from_secs(60);
/// Sweeps in a row after the SIM reported full: each frees room for messages the network was
/// holding back, which arrive meanwhile.
const FULL_SIM_SWEEPS: usize = 3;
/// `+CMS ERROR: 322`: memory full.
const CMS_MEMORY_FULL: u16 = 322;

/// Presses the modem's power key (a pulse on the output wired to it).
pub type PowerKey = Box<dyn Fn() + Send + Sync>;

/// Why a request to the modem failed.
#[derive(Debug, thiserror::Error)]
pub enum ModemError {
    /// The outgoing SMS could not be queued (store failure, or a cap was reached).
    #[error("could not queue the SMS: {0}")]
    Queue(#[from] StoreError),
    /// The modem task has ended.
    #[error("the modem task has stopped")]
    Stopped,
    /// The modem refused or did not answer.
    #[error("the modem failed: {0}")]
    Modem(String),
    /// A USSD code may hold only digits, `*`, `#` and `+`.
    #[error("invalid USSD code {0:?} (help: use digits, * and #, like *100#)")]
    InvalidUssdCode(String),
    /// The network did not answer the USSD request in time.
    #[error("no USSD answer within {} s", USSD_TIMEOUT.as_secs())]
    UssdTimeout,
    /// The network ended the USSD session without an answer, or refused it.
    #[error("USSD failed: {0}")]
    Ussd(String),
}

enum Request {
    /// Look at the outbox now.
    Kick,
    Reject(u64),
    Answer(u64),
    HangUp(u64),
    Ussd {
        code: String,
        reply: oneshot::Sender<Result<String, ModemError>>,
    },
}

/// A cloneable handle to the modem task.
#[derive(Clone)]
pub struct ModemHandle {
    tx: mpsc::Sender<Request>,
    status: watch::Receiver<ModemStatus>,
    store: StoreHandle,
    bus: Bus,
}

impl ModemHandle {
    /// Puts an SMS in the outbox (committed before this returns) and wakes the sender.
    /// A capped message is recorded as failed and reported on the bus.
    pub async fn queue_sms(
        &self,
        to: &str,
        text: &str,
        request_id: Option<&str>,
        priority: bool,
    ) -> Result<i64, ModemError> {
        let sms = crate::store::NewOutboxSms {
            to: to.to_string(),
            text: text.to_string(),
            request_id: request_id.map(str::to_string),
            priority,
        };
        match self.store.outbox_queue(sms, Utc::now()).await {
            Ok(id) => {
                self.announce_queued(to, request_id, &QueuedSms { id, capped: None });
                self.kick();
                Ok(id)
            }
            Err(e) => {
                if let StoreError::Capped { id, reason } = &e {
                    let row = QueuedSms {
                        id: *id,
                        capped: Some(reason.clone()),
                    };
                    self.announce_queued(to, request_id, &row);
                }
                Err(e.into())
            }
        }
    }

    /// Publishes the status of an outbox row written by someone else (the app's
    /// [`crate::store::StoreHandle::commit_dispatch`]): queued, or failed because capped.
    pub fn announce_queued(&self, to: &str, request_id: Option<&str>, row: &QueuedSms) {
        let status = match &row.capped {
            None => SendStatus::Queued,
            Some(reason) => {
                tracing::warn!(to, %reason, outbox_id = row.id, "outgoing SMS not sent: cap reached");
                SendStatus::Failed(reason.clone())
            }
        };
        self.bus.publish(Event::SmsStatus(SmsStatus {
            outbox_id: row.id,
            to: to.to_string(),
            request_id: request_id.map(str::to_string),
            status,
        }));
    }

    /// Wakes the sender to look at the outbox now.
    pub fn kick(&self) {
        // A full channel already holds a wake-up, so a failed try_send loses nothing.
        let _ = self.tx.try_send(Request::Kick);
    }

    /// Rejects (hangs up) the ringing call `call_id`; a stale id is ignored.
    pub async fn reject_call(&self, call_id: u64) -> Result<(), ModemError> {
        self.request(Request::Reject(call_id)).await
    }

    /// Answers the ringing call `call_id`.
    pub async fn answer_call(&self, call_id: u64) -> Result<(), ModemError> {
        self.request(Request::Answer(call_id)).await
    }

    /// Ends the call `call_id`, answered or not.
    pub async fn hang_up(&self, call_id: u64) -> Result<(), ModemError> {
        self.request(Request::HangUp(call_id)).await
    }

    /// Sends a USSD code (`*100#`) and returns the network's answer, decoded. Waits at most
    /// 30 s for the network once the modem has the request.
    pub async fn ussd(&self, code: &str) -> Result<String, ModemError> {
        let code = code.trim();
        if code.is_empty()
            || !code
                .chars()
                .all(|c| c.is_ascii_digit() || matches!(c, '*' | '#' | '+'))
        {
            return Err(ModemError::InvalidUssdCode(code.to_string()));
        }
        let (reply, answer) = oneshot::channel();
        self.request(Request::Ussd {
            code: code.to_string(),
            reply,
        })
        .await?;
        answer.await.map_err(|_| ModemError::Stopped)?
    }

    /// The last known modem status.
    pub fn status(&self) -> ModemStatus {
        self.status.borrow().clone()
    }

    async fn request(&self, req: Request) -> Result<(), ModemError> {
        self.tx.send(req).await.map_err(|_| ModemError::Stopped)
    }
}

/// What the driver needs besides the modem section of the config.
pub struct DriverOptions {
    pub modem: ModemConfig,
    pub send_attempts: u32,
    pub country_code: Option<String>,
    /// Ask for a delivery report on every outgoing SMS (`sms.delivery_reports`).
    pub delivery_reports: bool,
    /// How long the parts of a concatenated SMS wait for the rest (`sms.concat_timeout_s`).
    pub concat_timeout: Duration,
    /// Presses the modem's power key (`modem.power_key`); `None` when none is wired.
    pub power_key: Option<PowerKey>,
}

impl DriverOptions {
    /// The options the config gives; no power key (the app wires it to GPIO).
    pub fn from_config(cfg: &crate::config::Config) -> Self {
        DriverOptions {
            modem: cfg.modem.clone(),
            send_attempts: cfg.sms.send_attempts,
            country_code: cfg.country_code().map(str::to_string),
            delivery_reports: cfg.sms.delivery_reports,
            concat_timeout: Duration::from_secs(cfg.sms.concat_timeout_s),
            power_key: None,
        }
    }
}

/// Starts the modem task. It runs until `shutdown` resolves; a port that cannot be opened is
/// retried with back-off, so the rest of the gateway keeps working without a modem.
pub fn spawn(
    opts: DriverOptions,
    store: StoreHandle,
    bus: Bus,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> (ModemHandle, tokio::task::JoinHandle<()>) {
    let (tx, rx) = mpsc::channel(64);
    let (status_tx, status_rx) = watch::channel(ModemStatus::default());
    let handle = ModemHandle {
        tx,
        status: status_rx,
        store: store.clone(),
        bus: bus.clone(),
    };
    let driver = Driver {
        port_path: opts.modem.port.clone(),
        cfg: opts.modem,
        send_attempts: opts.send_attempts,
        country_code: opts.country_code,
        delivery_reports: opts.delivery_reports,
        concat_timeout: opts.concat_timeout,
        power_key: opts.power_key,
        last_power_press: None,
        ussd: None,
        urc_engine: AtEngine::new(),
        urc_port: None,
        sweep_now: false,
        store,
        bus,
        rx,
        engine: AtEngine::new(),
        port: None,
        urcs: VecDeque::new(),
        call: None,
        next_call_id: 1,
        status: ModemStatus::default(),
        status_tx,
        unanswered: 0,
        send_retry_at: None,
        send_backoff: Duration::from_secs(5),
    };
    let task = tokio::spawn(driver.run(shutdown));
    (handle, task)
}

/// Why a session with the modem ended.
enum SessionEnd {
    Shutdown,
    PortLost(String),
    Unresponsive,
}

/// Why one command did not give a response.
#[derive(Debug)]
enum CmdError {
    /// The modem answered with an error, or did not answer this one command in time.
    At(AtError),
    /// The port failed: the session is over.
    Port(String),
    /// Too many commands went unanswered in a row: the modem must be reset.
    Unresponsive,
}

impl std::fmt::Display for CmdError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CmdError::At(e) => write!(f, "{e:?}"),
            CmdError::Port(e) => write!(f, "port: {e}"),
            CmdError::Unresponsive => f.write_str("modem not answering"),
        }
    }
}

struct ActiveCall {
    id: u64,
    from: Option<String>,
    announced: bool,
    answered: bool,
    started: Instant,
    last_ring: Instant,
}

/// A USSD request waiting for the network's `+CUSD`.
struct PendingUssd {
    reply: oneshot::Sender<Result<String, ModemError>>,
    deadline: Instant,
}

struct Driver {
    cfg: ModemConfig,
    port_path: PathBuf,
    send_attempts: u32,
    country_code: Option<String>,
    delivery_reports: bool,
    concat_timeout: Duration,
    power_key: Option<PowerKey>,
    last_power_press: Option<Instant>,
    ussd: Option<PendingUssd>,
    /// Parses the URC-only port: it never gets a command, so everything it reads is a URC.
    urc_engine: AtEngine,
    urc_port: Option<SerialStream>,
    /// The SIM is full: sweep before anything else.
    sweep_now: bool,
    store: StoreHandle,
    bus: Bus,
    rx: mpsc::Receiver<Request>,
    engine: AtEngine,
    port: Option<SerialStream>,
    /// URCs seen while a command was in flight, handled once it completes.
    urcs: VecDeque<Urc>,
    call: Option<ActiveCall>,
    next_call_id: u64,
    status: ModemStatus,
    status_tx: watch::Sender<ModemStatus>,
    /// Commands that timed out in a row.
    unanswered: u32,
    send_retry_at: Option<Instant>,
    send_backoff: Duration,
}

fn now_std() -> std::time::Instant {
    Instant::now().into_std()
}

/// The command as it may appear in logs: the PIN is a secret.
fn redact(text: &str) -> &str {
    if text.to_ascii_uppercase().starts_with("AT+CPIN=") {
        "AT+CPIN=***"
    } else {
        text
    }
}

impl Driver {
    async fn run(mut self, shutdown: impl std::future::Future<Output = ()> + Send) {
        tokio::pin!(shutdown);
        let mut backoff = Duration::from_secs(1);
        loop {
            match tokio_serial::new(self.port_path.to_string_lossy(), self.cfg.baud)
                .open_native_async()
            {
                Ok(port) => {
                    tracing::info!(port = %self.port_path.display(), "modem port open");
                    self.port = Some(port);
                    self.open_urc_port();
                    self.engine.reset();
                    self.unanswered = 0;
                    backoff = Duration::from_secs(1);
                    let end = self.session(&mut shutdown).await;
                    self.port = None;
                    self.urc_port = None;
                    if let Some(p) = self.ussd.take() {
                        let _ = p
                            .reply
                            .send(Err(ModemError::Modem("the modem session ended".into())));
                    }
                    self.set_status(ModemStatus {
                        imei: self.status.imei.clone(),
                        ..Default::default()
                    });
                    self.end_call();
                    match end {
                        SessionEnd::Shutdown => return,
                        SessionEnd::PortLost(e) => {
                            tracing::warn!(port = %self.port_path.display(), error = %e, "modem port lost; reopening");
                        }
                        SessionEnd::Unresponsive => {
                            tracing::warn!(
                                "modem stopped answering; it was reset, re-initialising"
                            );
                        }
                    }
                }
                Err(e) => {
                    tracing::error!(
                        port = %self.port_path.display(),
                        error = %e,
                        retry_in_s = backoff.as_secs(),
                        "cannot open the modem port (help: check modem.port, the cable, and that the user is in the dialout group)"
                    );
                }
            }
            tokio::select! {
                _ = &mut shutdown => return,
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    /// One session on an open port: init, catch up, then serve until the port fails.
    async fn session(
        &mut self,
        shutdown: &mut std::pin::Pin<&mut impl std::future::Future<Output = ()>>,
    ) -> SessionEnd {
        match self.serve(shutdown).await {
            Ok(end) => end,
            Err(CmdError::Port(e)) => SessionEnd::PortLost(e),
            Err(CmdError::Unresponsive) => {
                if !self.reset_modem().await {
                    self.press_power_key();
                }
                SessionEnd::Unresponsive
            }
            Err(CmdError::At(e)) => SessionEnd::PortLost(format!("{e:?}")),
        }
    }

    async fn serve(
        &mut self,
        shutdown: &mut std::pin::Pin<&mut impl std::future::Future<Output = ()>>,
    ) -> Result<SessionEnd, CmdError> {
        self.init().await?;
        self.sweep().await?;
        // After the sweep: a missing part still on the SIM must join its group, not arrive
        // after the group was given up.
        self.expire_parts().await;
        self.send_pending().await?;
        let mut next_sweep = Instant::now() + Duration::from_secs(self.cfg.sweep_interval_s);
        let mut next_poll = Instant::now() + Duration::from_secs(self.cfg.poll_interval_s);
        let mut buf = [0u8; 1024];
        let mut urc_buf = [0u8; 1024];
        loop {
            while let Some(urc) = self.urcs.pop_front() {
                self.handle_urc(urc).await?;
            }
            if self.sweep_now {
                self.sweep_full_sim().await?;
                continue;
            }
            let deadline = [
                Some(next_sweep),
                Some(next_poll),
                self.send_retry_at,
                self.call_deadline(),
                self.ussd.as_ref().map(|u| u.deadline),
                self.engine.poll_timeout().map(Instant::from_std),
            ]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
            let Some(port) = self.port.as_mut() else {
                return Err(CmdError::Port("port closed".into()));
            };
            let urc_port = self.urc_port.as_mut();
            let urc_read = async {
                match urc_port {
                    Some(p) => p.read(&mut urc_buf).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = shutdown.as_mut() => return Ok(SessionEnd::Shutdown),
                req = self.rx.recv() => match req {
                    Some(req) => self.handle_request(req).await?,
                    // Every handle is gone: nobody can ask anything of us any more.
                    None => return Ok(SessionEnd::Shutdown),
                },
                read = port.read(&mut buf) => match read {
                    Ok(0) => return Err(CmdError::Port("end of file".into())),
                    Ok(n) => {
                        self.engine.handle_rx(&buf[..n], now_std());
                        self.drain_engine(None);
                    }
                    Err(e) => return Err(CmdError::Port(e.to_string())),
                },
                read = urc_read => self.urc_port_read(read, &urc_buf),
                _ = tokio::time::sleep_until(deadline) => {
                    let now = Instant::now();
                    self.engine.handle_timeout(now.into_std());
                    self.drain_engine(None);
                    if now >= next_sweep {
                        next_sweep = now + Duration::from_secs(self.cfg.sweep_interval_s);
                        self.sweep().await?;
                        self.expire_parts().await;
                    }
                    if self.ussd.as_ref().is_some_and(|u| now >= u.deadline) {
                        if let Some(p) = self.ussd.take() {
                            tracing::warn!("no USSD answer from the network");
                            let _ = p.reply.send(Err(ModemError::UssdTimeout));
                        }
                    }
                    if now >= next_poll {
                        next_poll = now + Duration::from_secs(self.cfg.poll_interval_s);
                        self.poll_status().await?;
                    }
                    if self.send_retry_at.is_some_and(|t| now >= t) {
                        self.send_retry_at = None;
                        self.send_pending().await?;
                    }
                    self.check_call_timers(now);
                }
            }
        }
    }

    /// Moves engine output to the port's queue of URCs; returns the completion of `waiting`.
    fn drain_engine(
        &mut self,
        waiting: Option<super::at::CommandId>,
    ) -> Option<Result<Response, AtError>> {
        let mut done = None;
        while let Some(ev) = self.engine.poll_event() {
            match ev {
                AtEvent::Urc(u) => self.urcs.push_back(u),
                AtEvent::Completed { id, result } if Some(id) == waiting => done = Some(result),
                AtEvent::Completed { id, result } => {
                    tracing::debug!(?id, ?result, "completion of an abandoned command");
                }
                AtEvent::Discarded { bytes } => {
                    tracing::warn!(bytes, "the modem sent an overlong line; dropped");
                }
            }
        }
        done
    }

    async fn flush_tx(&mut self) -> Result<(), CmdError> {
        while let Some(bytes) = self.engine.poll_transmit() {
            let port = self
                .port
                .as_mut()
                .ok_or_else(|| CmdError::Port("port closed".into()))?;
            port.write_all(&bytes)
                .await
                .map_err(|e| CmdError::Port(e.to_string()))?;
        }
        Ok(())
    }

    /// Runs one command to completion, collecting URCs that arrive meanwhile.
    async fn command(&mut self, cmd: AtCommand) -> Result<Response, CmdError> {
        tracing::debug!(command = redact(&cmd.text), "AT");
        let id = self.engine.submit(cmd, now_std());
        let mut buf = [0u8; 1024];
        loop {
            self.flush_tx().await?;
            if let Some(result) = self.drain_engine(Some(id)) {
                return match result {
                    Ok(resp) => {
                        self.unanswered = 0;
                        Ok(resp)
                    }
                    Err(AtError::Timeout) => {
                        self.unanswered += 1;
                        if self.unanswered >= UNANSWERED_BEFORE_RESET {
                            Err(CmdError::Unresponsive)
                        } else {
                            Err(CmdError::At(AtError::Timeout))
                        }
                    }
                    Err(e) => {
                        self.unanswered = 0;
                        if e == AtError::CmsError(CMS_MEMORY_FULL) {
                            tracing::warn!("the modem says its SMS memory is full; sweeping");
                            self.sweep_now = true;
                        }
                        Err(CmdError::At(e))
                    }
                };
            }
            let deadline = self
                .engine
                .poll_timeout()
                .map(Instant::from_std)
                .unwrap_or_else(|| Instant::now() + self.cfg.command_timeout());
            let port = self
                .port
                .as_mut()
                .ok_or_else(|| CmdError::Port("port closed".into()))?;
            tokio::select! {
                read = port.read(&mut buf) => match read {
                    Ok(0) => return Err(CmdError::Port("end of file".into())),
                    Ok(n) => self.engine.handle_rx(&buf[..n], now_std()),
                    Err(e) => return Err(CmdError::Port(e.to_string())),
                },
                _ = tokio::time::sleep_until(deadline) => self.engine.handle_timeout(now_std()),
            }
        }
    }

    async fn simple(&mut self, text: &str) -> Result<Response, CmdError> {
        self.command(AtCommand::new(text.to_string(), self.cfg.command_timeout()))
            .await
    }

    /// Closes an SMS prompt that a previous run left open when it died between `AT+CMGS` and
    /// the PDU: the modem takes every command as PDU text and looks hung. Only done when the
    /// first `AT` went unanswered, so a healthy start waits on no timer.
    /// Whatever the modem says in return is dropped once it has been quiet for a moment, so
    /// its `OK` cannot be taken for the answer to the next command. URCs dropped with it are
    /// caught by the start-up sweep.
    async fn cancel_open_prompt(&mut self) -> Result<(), CmdError> {
        const ESC: u8 = 0x1B;
        const QUIET: Duration = Duration::from_millis(100);
        const MAX_WAIT: Duration = Duration::from_secs(1);
        tracing::warn!("the modem does not answer; sending ESC in case an SMS prompt is open");
        let port = self
            .port
            .as_mut()
            .ok_or_else(|| CmdError::Port("port closed".into()))?;
        port.write_all(&[ESC])
            .await
            .map_err(|e| CmdError::Port(e.to_string()))?;
        let give_up = Instant::now() + MAX_WAIT;
        let mut buf = [0u8; 256];
        loop {
            let quiet_until = (Instant::now() + QUIET).min(give_up);
            tokio::select! {
                read = port.read(&mut buf) => match read {
                    Ok(0) => return Err(CmdError::Port("end of file".into())),
                    Ok(_) => {}
                    Err(e) => return Err(CmdError::Port(e.to_string())),
                },
                _ = tokio::time::sleep_until(quiet_until) => return Ok(()),
            }
            if Instant::now() >= give_up {
                return Ok(());
            }
        }
    }

    /// The init sequence. Failures of optional settings are logged, not fatal.
    async fn init(&mut self) -> Result<(), CmdError> {
        // Synchronise: a modem that just booted may drop the first command, and one left
        // waiting for a PDU by a run that died mid-send swallows everything until ESC.
        let mut synced = false;
        for attempt in 0..3 {
            match self
                .command(AtCommand::new("AT".to_string(), Duration::from_secs(2)))
                .await
            {
                Ok(_) => {
                    synced = true;
                    break;
                }
                Err(CmdError::At(_)) => {
                    if attempt == 0 {
                        self.cancel_open_prompt().await?;
                        self.engine.reset();
                    }
                }
                Err(e) => return Err(e),
            }
        }
        if !synced {
            return Err(CmdError::Unresponsive);
        }
        self.unanswered = 0;
        for cmd in ["ATE0", "AT+CMEE=1"] {
            if let Err(e) = self.simple(cmd).await {
                tracing::warn!(command = cmd, error = %e, "modem refused an init command");
            }
        }
        self.unlock_sim().await?;
        for (cmd, what) in [
            ("AT+CMGF=0", "PDU mode: SMS cannot be read or sent"),
            (
                "AT+CNMI=2,1,0,2,0",
                "new-SMS indications: relying on the periodic sweep",
            ),
            ("AT+CLIP=1", "caller ID: calls will look withheld"),
            ("AT+CREG=1", "registration reports"),
        ] {
            match self.simple(cmd).await {
                Ok(_) => {}
                Err(CmdError::At(e)) => {
                    tracing::warn!(command = cmd, error = ?e, "modem refused {what}")
                }
                Err(e) => return Err(e),
            }
        }
        match self.simple("AT+CGSN").await {
            Ok(resp) => {
                let imei = resp
                    .lines
                    .iter()
                    .map(|l| {
                        l.trim()
                            .trim_start_matches("+CGSN:")
                            .trim()
                            .trim_matches('"')
                    })
                    .find(|l| l.len() >= 14 && l.chars().all(|c| c.is_ascii_digit()))
                    .map(str::to_string);
                self.status.imei = imei;
            }
            Err(CmdError::At(e)) => tracing::warn!(error = ?e, "could not read the IMEI"),
            Err(e) => return Err(e),
        }
        self.poll_status().await?;
        let mut st = self.status.clone();
        st.ready = true;
        self.set_status(st);
        tracing::info!("modem ready");
        Ok(())
    }

    async fn unlock_sim(&mut self) -> Result<(), CmdError> {
        let resp = match self.simple("AT+CPIN?").await {
            Ok(r) => r,
            // Some modems answer +CPIN? without a final OK; the timeout is not a failure then.
            Err(CmdError::At(e)) => {
                tracing::warn!(error = ?e, "AT+CPIN? failed; assuming the SIM is ready");
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        let state = resp
            .lines
            .iter()
            .find_map(|l| l.strip_prefix("+CPIN:"))
            .map(str::trim);
        match state {
            Some("READY") | None => Ok(()),
            Some("SIM PIN") => {
                let Some(pin) = self.cfg.pin.clone() else {
                    tracing::error!(
                        "the SIM asks for a PIN (help: set modem.pin or GSMGW_MODEM__PIN)"
                    );
                    return Ok(());
                };
                match self.simple(&format!("AT+CPIN=\"{pin}\"")).await {
                    Ok(_) => {
                        tracing::info!("SIM unlocked");
                        Ok(())
                    }
                    Err(CmdError::At(e)) => {
                        // Never retried automatically: three wrong PINs lock the SIM.
                        tracing::error!(error = ?e, "the SIM refused the configured PIN (help: check modem.pin; it will not be retried)");
                        Ok(())
                    }
                    Err(e) => Err(e),
                }
            }
            Some(other) => {
                tracing::error!(
                    state = other,
                    "the SIM is not ready (help: a PUK may be needed; unlock it in a phone)"
                );
                Ok(())
            }
        }
    }

    async fn poll_status(&mut self) -> Result<(), CmdError> {
        let mut st = self.status.clone();
        match self.simple("AT+CSQ").await {
            Ok(resp) => st.signal_dbm = resp.lines.iter().find_map(|l| parse_csq(l)).flatten(),
            Err(CmdError::At(e)) => tracing::debug!(error = ?e, "AT+CSQ failed"),
            Err(e) => return Err(e),
        }
        match self.simple("AT+CREG?").await {
            Ok(resp) => {
                if let Some(stat) = resp.lines.iter().find_map(|l| parse_creg_query(l)) {
                    st.registered = stat == 1 || stat == 5;
                    st.roaming = stat == 5;
                }
            }
            Err(CmdError::At(e)) => tracing::debug!(error = ?e, "AT+CREG? failed"),
            Err(e) => return Err(e),
        }
        match self.simple("AT+COPS?").await {
            Ok(resp) => st.operator = resp.lines.iter().find_map(|l| parse_cops(l)),
            Err(CmdError::At(e)) => tracing::debug!(error = ?e, "AT+COPS? failed"),
            Err(e) => return Err(e),
        }
        self.set_status(st);
        Ok(())
    }

    fn set_status(&mut self, st: ModemStatus) {
        if st != self.status {
            self.status = st.clone();
            self.status_tx.send_replace(st.clone());
            self.bus.publish(Event::Modem(st));
        }
    }

    /// The soft reset; true when the modem acknowledged it.
    async fn reset_modem(&mut self) -> bool {
        tracing::warn!("resetting the modem (AT+CFUN=1,1)");
        self.engine.reset();
        self.unanswered = 0;
        let answered = self
            .command(AtCommand::new(
                "AT+CFUN=1,1".to_string(),
                self.cfg.command_timeout(),
            ))
            .await
            .is_ok();
        self.engine.reset();
        answered
    }

    /// The hard reset for a modem that ignores even `AT+CFUN=1,1`: a press of the power key,
    /// at most once per [`POWER_KEY_MIN_INTERVAL`].
    fn press_power_key(&mut self) {
        let Some(press) = self.power_key.as_ref() else {
            return;
        };
        let now = Instant::now();
        if self
            .last_power_press
            .is_some_and(|t| now < t + POWER_KEY_MIN_INTERVAL)
        {
            tracing::debug!("power key pressed recently; waiting for the modem to boot");
            return;
        }
        tracing::warn!("the modem ignores AT+CFUN=1,1; pressing its power key");
        self.last_power_press = Some(now);
        press();
    }

    /// Opens `modem.urc_port`, if configured. A failure is logged: URCs still come on the
    /// main port on most modems, and the periodic sweep catches missed SMS.
    fn open_urc_port(&mut self) {
        self.urc_engine.reset();
        let Some(path) = self.cfg.urc_port.clone() else {
            return;
        };
        match tokio_serial::new(path.to_string_lossy(), self.cfg.baud).open_native_async() {
            Ok(port) => {
                tracing::info!(port = %path.display(), "URC port open");
                self.urc_port = Some(port);
            }
            Err(e) => {
                tracing::warn!(port = %path.display(), error = %e, "cannot open the URC port (help: check modem.urc_port); it is retried when the modem port reopens")
            }
        }
    }

    /// Feeds bytes read from the URC port to its own engine and queues its URCs with the
    /// main port's.
    fn urc_port_read(&mut self, read: std::io::Result<usize>, buf: &[u8]) {
        let n = match read {
            Ok(0) => Err("end of file".to_string()),
            Ok(n) => Ok(n),
            Err(e) => Err(e.to_string()),
        };
        match n {
            Ok(n) => {
                self.urc_engine
                    .handle_rx(buf.get(..n).unwrap_or(buf), now_std());
                while let Some(ev) = self.urc_engine.poll_event() {
                    match ev {
                        AtEvent::Urc(u) => self.urcs.push_back(u),
                        other => tracing::debug!(event = ?other, "URC port"),
                    }
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "URC port lost; reopened with the modem port");
                self.urc_port = None;
            }
        }
    }

    async fn handle_request(&mut self, req: Request) -> Result<(), CmdError> {
        match req {
            Request::Kick => self.send_pending().await,
            Request::Reject(id) | Request::HangUp(id) => {
                if self.call.as_ref().map(|c| c.id) != Some(id) {
                    tracing::debug!(call = id, "hang-up for a call that has ended");
                    return Ok(());
                }
                match self.simple("AT+CHUP").await {
                    Ok(_) => {}
                    Err(CmdError::At(e)) => {
                        tracing::debug!(error = ?e, "AT+CHUP refused; trying ATH");
                        if let Err(CmdError::At(e)) = self.simple("ATH").await {
                            tracing::warn!(error = ?e, "could not hang up the call");
                        }
                    }
                    Err(e) => return Err(e),
                }
                self.end_call();
                Ok(())
            }
            Request::Ussd { code, reply } => self.start_ussd(code, reply).await,
            Request::Answer(id) => {
                if self.call.as_ref().map(|c| c.id) != Some(id) {
                    tracing::debug!(call = id, "answer for a call that has ended");
                    return Ok(());
                }
                match self.simple("ATA").await {
                    Ok(_) => {
                        if let Some(c) = self.call.as_mut() {
                            c.answered = true;
                        }
                        Ok(())
                    }
                    Err(CmdError::At(e)) => {
                        tracing::warn!(error = ?e, "could not answer the call");
                        Ok(())
                    }
                    Err(e) => Err(e),
                }
            }
        }
    }

    async fn handle_urc(&mut self, urc: Urc) -> Result<(), CmdError> {
        match urc {
            Urc::Cmti { index, .. } => self.read_sms(index).await?,
            Urc::Cmt { pdu, .. } => {
                // Direct delivery: the message is not on the SIM; the store is its only copy.
                if let Err(e) = self.receive_pdu(&pdu).await {
                    tracing::error!(error = %e, "could not store a directly delivered SMS");
                }
            }
            Urc::Ring | Urc::Cring { .. } => self.on_ring(None),
            Urc::Clip { number, .. } => self.on_ring(Some(number)),
            Urc::NoCarrier => self.end_call(),
            Urc::Creg { stat, .. } => {
                let mut st = self.status.clone();
                st.registered = stat == 1 || stat == 5;
                st.roaming = stat == 5;
                self.set_status(st);
            }
            // A report stored on the SIM is read and deleted like an SMS.
            Urc::Cdsi { index, .. } => self.read_sms(index).await?,
            Urc::Cds { pdu, .. } => {
                if let Err(e) = self.receive_pdu(&pdu).await {
                    tracing::error!(error = %e, "could not record a delivery report");
                }
            }
            Urc::Cusd { status, text, dcs } => self.finish_ussd(status, text, dcs),
            Urc::Ciev { .. } => {}
            // `+CIEV: "SMSFULL",1` (SIM800): its quoted indicator makes it a vendor line.
            Urc::Vendor(line) if is_sim_full(&line) => {
                tracing::warn!("the SIM is full; sweeping");
                self.sweep_now = true;
            }
            other => tracing::debug!(urc = ?other, "URC"),
        }
        Ok(())
    }

    async fn read_sms(&mut self, index: u32) -> Result<(), CmdError> {
        let resp = match self.simple(&format!("AT+CMGR={index}")).await {
            Ok(r) => r,
            Err(CmdError::At(e)) => {
                tracing::warn!(index, error = ?e, "could not read SMS; the sweep will retry");
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        let pdu = resp
            .lines
            .iter()
            .skip_while(|l| !l.starts_with("+CMGR:"))
            .nth(1)
            .cloned();
        let Some(pdu) = pdu else {
            tracing::debug!(index, "empty SMS slot");
            return Ok(());
        };
        self.store_then_delete(index, &pdu).await
    }

    /// Commits the PDU to the store and only then deletes it from the modem.
    async fn store_then_delete(&mut self, index: u32, pdu: &str) -> Result<(), CmdError> {
        match self.receive_pdu(pdu).await {
            Ok(()) => match self.simple(&format!("AT+CMGD={index}")).await {
                Ok(_) => Ok(()),
                Err(CmdError::At(e)) => {
                    // Stored already: deleting again later is harmless (dedupe by hash).
                    tracing::warn!(index, error = ?e, "could not delete SMS from the modem");
                    Ok(())
                }
                Err(e) => Err(e),
            },
            Err(e) => {
                tracing::error!(index, error = %e, "could not store SMS; it stays on the modem");
                Ok(())
            }
        }
    }

    /// Decodes and stores one received PDU; publishes it once it is a whole message.
    async fn receive_pdu(&mut self, hex: &str) -> Result<(), StoreError> {
        let hex = hex.trim();
        let pdu_hash = hex::encode(Sha256::digest(hex.to_ascii_uppercase().as_bytes()));
        let deliver = match pdu::decode(hex, true) {
            Ok(Pdu::Deliver(d)) => d,
            Ok(Pdu::StatusReport(r)) => {
                self.record_delivery_report(&r).await?;
                return Ok(());
            }
            Ok(Pdu::Submit(_)) => {
                tracing::debug!("an outgoing message stored on the SIM; ignored");
                return Ok(());
            }
            Err(e) => {
                // Never lost: kept in the inbox as raw hex, but not handed to plugins.
                tracing::warn!(error = %e, "undecodable SMS PDU kept in the inbox");
                let row = NewInboxSms {
                    pdu_hash,
                    from: String::new(),
                    text: format!("[undecodable PDU: {e}] {hex}"),
                    sent_at: None,
                    incomplete: true,
                };
                if let InboxInsert::New(id) = self.store.inbox_insert(&row).await? {
                    self.store.inbox_mark_delivered(id).await?;
                }
                return Ok(());
            }
        };
        // A name is kept as sent: normalising `00900123` would make it the number +900123.
        let from = if deliver.sender_kind == crate::bus::SenderKind::Alphanumeric {
            deliver.sender.trim().to_string()
        } else {
            phone::normalise(&deliver.sender, self.country_code.as_deref())
        };
        match deliver.concat {
            Some(c) if c.total > 1 => {
                let part = NewPart {
                    pdu_hash,
                    from,
                    reference: c.reference,
                    total: c.total,
                    seq: c.seq,
                    text: deliver.text,
                    sent_at: deliver.timestamp,
                };
                if let PartInsert::Complete(id) = self.store.part_insert(&part).await? {
                    // A crash between the two leaves the kind unrecorded: it is then judged
                    // from the sender's text at the next start.
                    self.store
                        .inbox_set_sender_kind(id, deliver.sender_kind)
                        .await?;
                    if let Some(row) = self.store.inbox_get(id).await? {
                        self.bus.publish(Event::SmsReceived(IncomingSms {
                            id,
                            // The part that completed the message carries the sender's type.
                            sender_kind: deliver.sender_kind,
                            from: row.from,
                            text: row.text,
                            time: row.sent_at,
                            incomplete: row.incomplete,
                        }));
                    }
                }
            }
            _ => {
                let row = NewInboxSms {
                    pdu_hash,
                    from: from.clone(),
                    text: deliver.text.clone(),
                    sent_at: deliver.timestamp,
                    incomplete: false,
                };
                match self
                    .store
                    .inbox_insert_kind(&row, deliver.sender_kind)
                    .await?
                {
                    InboxInsert::New(id) => self.bus.publish(Event::SmsReceived(IncomingSms {
                        id,
                        from,
                        text: deliver.text,
                        time: deliver.timestamp,
                        incomplete: false,
                        sender_kind: deliver.sender_kind,
                    })),
                    InboxInsert::Duplicate(id) => {
                        tracing::debug!(inbox_id = id, "SMS seen before (re-read after a restart)")
                    }
                }
            }
        }
        Ok(())
    }

    /// Records a delivery report against the outbox row it is about. Reports go to the store
    /// and the log only: the bus's [`SendStatus`] ends at "sent".
    async fn record_delivery_report(&mut self, r: &pdu::StatusReport) -> Result<(), StoreError> {
        let Some(id) = self
            .store
            .outbox_match_report(r.message_ref, &r.recipient)
            .await?
        else {
            tracing::info!(
                message_ref = r.message_ref,
                status = r.status,
                "delivery report for no known SMS"
            );
            return Ok(());
        };
        self.store.outbox_set_delivery(id, r.status).await?;
        let outcome = match r.status {
            0x00..=0x1F => "delivered",
            0x20..=0x3F => "not delivered yet; the network keeps trying",
            _ => "not delivered",
        };
        tracing::info!(
            outbox_id = id,
            status = r.status,
            "delivery report: {outcome}"
        );
        Ok(())
    }

    /// Sweeps until the SIM has room: after a full SIM, messages the network held back arrive
    /// as soon as a slot is free.
    async fn sweep_full_sim(&mut self) -> Result<(), CmdError> {
        self.sweep_now = false;
        for _ in 0..FULL_SIM_SWEEPS {
            if self.sweep().await? == 0 {
                break;
            }
        }
        Ok(())
    }

    /// Delivers, with markers, the concatenated messages whose missing parts did not come
    /// within `sms.concat_timeout_s`.
    async fn expire_parts(&mut self) {
        let timeout =
            chrono::TimeDelta::from_std(self.concat_timeout).unwrap_or(chrono::TimeDelta::MAX);
        let older_than = Utc::now()
            .checked_sub_signed(timeout)
            .unwrap_or(chrono::DateTime::<Utc>::MIN_UTC);
        let ids = match self.store.parts_expire(older_than).await {
            Ok(ids) => ids,
            Err(e) => {
                tracing::error!(error = %e, "could not expire incomplete messages");
                return;
            }
        };
        for id in ids {
            match self.store.inbox_get(id).await {
                Ok(Some(row)) => self.bus.publish(Event::SmsReceived(IncomingSms {
                    id,
                    sender_kind: row.kind(),
                    from: row.from,
                    text: row.text,
                    time: row.sent_at,
                    incomplete: row.incomplete,
                })),
                Ok(None) => {}
                // Stays undelivered in the inbox: offered at the next start.
                Err(e) => {
                    tracing::error!(inbox_id = id, error = %e, "could not read an expired message")
                }
            }
        }
    }

    /// Sends a USSD request; the answer comes as `+CUSD` before or after the `OK`.
    async fn start_ussd(
        &mut self,
        code: String,
        reply: oneshot::Sender<Result<String, ModemError>>,
    ) -> Result<(), CmdError> {
        if let Some(old) = self.ussd.take() {
            let _ = old
                .reply
                .send(Err(ModemError::Ussd("replaced by a newer request".into())));
        }
        match self.simple(&format!("AT+CUSD=1,\"{code}\",15")).await {
            // A `+CUSD` sent before the `OK` is a URC already queued: it is handled after this
            // returns, when the request is pending.
            Ok(_) => {
                self.ussd = Some(PendingUssd {
                    reply,
                    deadline: Instant::now() + USSD_TIMEOUT,
                });
                Ok(())
            }
            Err(CmdError::At(e)) => {
                let _ = reply.send(Err(ModemError::Modem(format!("AT+CUSD: {e:?}"))));
                Ok(())
            }
            Err(e) => {
                let _ = reply.send(Err(ModemError::Modem(e.to_string())));
                Err(e)
            }
        }
    }

    /// `+CUSD`: the answer to the pending request, or a network-initiated message (logged).
    fn finish_ussd(&mut self, status: u8, text: Option<String>, dcs: Option<u8>) {
        let text = text.map(|t| pdu::decode_ussd(&t, dcs));
        let Some(pending) = self.ussd.take() else {
            tracing::info!(
                status,
                text = text.as_deref().unwrap_or(""),
                "USSD from the network"
            );
            return;
        };
        let result = match (status, text) {
            (0 | 1, Some(text)) => Ok(text),
            (0 | 1, None) => Ok(String::new()),
            (2, _) => Err(ModemError::Ussd("the network ended the session".into())),
            (4, _) => Err(ModemError::Ussd("the network does not support it".into())),
            (5, _) => Err(ModemError::UssdTimeout),
            (other, _) => Err(ModemError::Ussd(format!("status {other}"))),
        };
        let _ = pending.reply.send(result);
    }

    /// Lists every message on the modem: catches what a lost `+CMTI` never announced.
    /// Returns how many it found.
    async fn sweep(&mut self) -> Result<usize, CmdError> {
        let resp = match self.simple("AT+CMGL=4").await {
            Ok(r) => r,
            Err(CmdError::At(e)) => {
                tracing::warn!(error = ?e, "SMS sweep (AT+CMGL=4) failed");
                return Ok(0);
            }
            Err(e) => return Err(e),
        };
        let mut found = Vec::new();
        let mut lines = resp.lines.iter();
        while let Some(line) = lines.next() {
            if let Some(rest) = line.strip_prefix("+CMGL:") {
                let index = rest
                    .split(',')
                    .next()
                    .and_then(|s| s.trim().parse::<u32>().ok());
                match (index, lines.next()) {
                    (Some(i), Some(pdu)) => found.push((i, pdu.clone())),
                    _ => tracing::warn!(line = %line, "unreadable +CMGL entry"),
                }
            }
        }
        let count = found.len();
        if count > 0 {
            tracing::info!(count, "messages found on the modem");
        }
        for (index, pdu) in found {
            self.store_then_delete(index, &pdu).await?;
        }
        Ok(count)
    }

    /// Sends every queued SMS in order, part by part, recording each part's reference.
    async fn send_pending(&mut self) -> Result<(), CmdError> {
        let rows = match self.store.outbox_pending().await {
            Ok(rows) => rows,
            Err(e) => {
                tracing::error!(error = %e, "cannot read the outbox");
                return Ok(());
            }
        };
        for row in rows {
            if !self.status.ready {
                return Ok(());
            }
            // The reference is derived from the row, so a resend after a crash reuses it and
            // the recipient's phone still joins the parts.
            let opts = SubmitOptions {
                reference: (row.id % 256) as u16,
                status_report: self.delivery_reports,
                ..Default::default()
            };
            let parts = match pdu::encode_submit(&row.to, &row.text, &opts) {
                Ok(p) => p,
                Err(e) => {
                    self.fail_permanently(row.id, &row.to, row.request_id.clone(), &e.to_string())
                        .await;
                    continue;
                }
            };
            let mut ok = true;
            for (i, part) in parts.iter().enumerate().skip(row.parts_sent.len()) {
                if row.attempts > 0 || !row.parts_sent.is_empty() {
                    tracing::info!(
                        outbox_id = row.id,
                        part = i + 1,
                        "resending a part that may have gone out before"
                    );
                }
                let cmd = AtCommand::new(format!("AT+CMGS={}", part.tpdu_len), SEND_TIMEOUT)
                    .with_payload(part.hex.clone().into_bytes());
                match self.command(cmd).await {
                    Ok(resp) => {
                        let mr = resp
                            .lines
                            .iter()
                            .find_map(|l| l.strip_prefix("+CMGS:"))
                            .and_then(|v| v.trim().parse::<u8>().ok())
                            .unwrap_or(0);
                        if let Err(e) = self.store.outbox_record_part(row.id, i, mr).await {
                            tracing::error!(error = %e, "could not record a sent part");
                        }
                    }
                    Err(CmdError::At(e)) => {
                        ok = false;
                        let reason = format!("{e:?}");
                        match self
                            .store
                            .outbox_attempt_failed(row.id, &reason, self.send_attempts)
                            .await
                        {
                            Ok(OutboxStatus::Failed) => {
                                tracing::warn!(outbox_id = row.id, error = %reason, "SMS failed");
                                self.publish_status(
                                    row.id,
                                    &row.to,
                                    row.request_id.clone(),
                                    SendStatus::Failed(reason),
                                );
                            }
                            Ok(_) => {
                                tracing::info!(outbox_id = row.id, error = %reason, retry_in_s = self.send_backoff.as_secs(), "SMS send failed; will retry");
                                self.send_retry_at = Some(Instant::now() + self.send_backoff);
                                self.send_backoff = (self.send_backoff * 2).min(MAX_BACKOFF);
                                return Ok(());
                            }
                            Err(e) => tracing::error!(error = %e, "could not record a failed send"),
                        }
                        break;
                    }
                    Err(e) => return Err(e),
                }
            }
            if ok {
                match self.store.outbox_mark_sent(row.id).await {
                    Ok(()) => {
                        self.send_backoff = Duration::from_secs(5);
                        self.publish_status(
                            row.id,
                            &row.to,
                            row.request_id.clone(),
                            SendStatus::Sent,
                        );
                    }
                    Err(e) => tracing::error!(error = %e, "could not mark an SMS sent"),
                }
            }
        }
        Ok(())
    }

    async fn fail_permanently(
        &mut self,
        id: i64,
        to: &str,
        request_id: Option<String>,
        reason: &str,
    ) {
        tracing::warn!(outbox_id = id, error = reason, "SMS cannot be sent");
        if let Err(e) = self.store.outbox_attempt_failed(id, reason, 0).await {
            tracing::error!(error = %e, "could not mark an SMS failed");
        }
        self.publish_status(id, to, request_id, SendStatus::Failed(reason.to_string()));
    }

    fn publish_status(
        &self,
        outbox_id: i64,
        to: &str,
        request_id: Option<String>,
        status: SendStatus,
    ) {
        self.bus.publish(Event::SmsStatus(SmsStatus {
            outbox_id,
            to: to.to_string(),
            request_id,
            status,
        }));
    }

    /// `RING`/`+CRING` (`clip` None) or `+CLIP` (`clip` Some): one event per call, with the
    /// caller ID when the modem gives it.
    fn on_ring(&mut self, clip: Option<Option<String>>) {
        let now = Instant::now();
        let call = self.call.get_or_insert_with(|| {
            let id = self.next_call_id;
            self.next_call_id += 1;
            ActiveCall {
                id,
                from: None,
                announced: false,
                answered: false,
                started: now,
                last_ring: now,
            }
        });
        call.last_ring = now;
        if let Some(number) = clip {
            if !call.announced {
                call.from = number
                    .filter(|n| !n.trim().is_empty())
                    .map(|n| phone::normalise(&n, self.country_code.as_deref()));
                self.announce_call();
            }
        }
    }

    fn announce_call(&mut self) {
        if let Some(c) = self.call.as_mut() {
            if !c.announced {
                c.announced = true;
                tracing::info!(
                    call = c.id,
                    from = c.from.as_deref().unwrap_or("withheld"),
                    "incoming call"
                );
                self.bus.publish(Event::CallRinging(Call {
                    id: c.id,
                    from: c.from.clone(),
                }));
            }
        }
    }

    fn end_call(&mut self) {
        if let Some(c) = self.call.take() {
            if c.announced {
                self.bus.publish(Event::CallEnded(Call {
                    id: c.id,
                    from: c.from,
                }));
            }
        }
    }

    fn call_deadline(&self) -> Option<Instant> {
        let c = self.call.as_ref()?;
        if !c.announced {
            Some(c.started + CLIP_WAIT)
        } else if !c.answered {
            Some(c.last_ring + Duration::from_secs(self.cfg.ring_timeout_s))
        } else {
            None
        }
    }

    fn check_call_timers(&mut self, now: Instant) {
        let Some(c) = self.call.as_ref() else { return };
        if !c.announced && now >= c.started + CLIP_WAIT {
            self.announce_call();
        } else if c.announced
            && !c.answered
            && now >= c.last_ring + Duration::from_secs(self.cfg.ring_timeout_s)
        {
            // The caller gave up without the modem saying NO CARRIER.
            self.end_call();
        }
    }
}

/// `+CIEV: "SMSFULL",1`: the SIM has no room for new messages.
fn is_sim_full(line: &str) -> bool {
    let line = line.to_ascii_uppercase();
    line.starts_with("+CIEV:") && line.contains("\"SMSFULL\"") && line.trim_end().ends_with(",1")
}

/// `+CSQ: <rssi>,<ber>` → dBm (`None` for 99, unknown).
fn parse_csq(line: &str) -> Option<Option<i32>> {
    let rssi: i32 = line
        .strip_prefix("+CSQ:")?
        .split(',')
        .next()?
        .trim()
        .parse()
        .ok()?;
    Some(match rssi {
        0..=31 => Some(-113 + 2 * rssi),
        _ => None,
    })
}

/// `+CREG: <n>,<stat>[,…]` (the query form) → stat.
fn parse_creg_query(line: &str) -> Option<u8> {
    let mut it = line.strip_prefix("+CREG:")?.split(',');
    let first = it.next()?.trim();
    match it.next() {
        Some(stat) => stat.trim().parse().ok(),
        None => first.parse().ok(),
    }
}

/// `+COPS: 0,0,"Operator"[,7]` → the operator name.
fn parse_cops(line: &str) -> Option<String> {
    let rest = line.strip_prefix("+COPS:")?;
    let start = rest.find('"')? + 1;
    let end = start + rest[start..].find('"')?;
    Some(rest[start..end].to_string()).filter(|s| !s.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signal_is_reported_in_dbm() {
        assert_eq!(parse_csq("+CSQ: 21,99"), Some(Some(-71)));
        assert_eq!(parse_csq("+CSQ: 99,99"), Some(None));
        assert_eq!(parse_csq("+CSQ: x"), None);
    }

    #[test]
    fn registration_and_operator_are_parsed_leniently() {
        assert_eq!(parse_creg_query("+CREG: 1,5"), Some(5));
        assert_eq!(parse_creg_query("+CREG: 1"), Some(1));
        assert_eq!(parse_cops("+COPS: 0,0,\"EE\",7"), Some("EE".into()));
        assert_eq!(parse_cops("+COPS: 0"), None);
        assert_eq!(parse_cops("+COPS: 0,0,\""), None);
    }

    #[test]
    fn the_pin_never_reaches_a_log_line() {
        assert_eq!(redact("AT+CPIN=\"1234\""), "AT+CPIN=***");
        assert_eq!(redact("at+cpin=\"1234\""), "AT+CPIN=***");
        assert_eq!(redact("AT+CSQ"), "AT+CSQ");
    }
}
