//! The MQTT bridge: publishes gateway state and events under `<prefix>/<device_id>` and turns
//! commands from the broker into [`Command`]s (see DESIGN.md, "MQTT").
//!
//! [`spawn`] starts it; the [`MqttHandle`] it returns publishes on behalf of others (scripts,
//! the app). One task owns the connection, as everywhere in gsmgw; state is kept while the
//! broker is away and re-published when it returns.

mod bridge;
pub mod cli;
mod messages;
mod topics;

#[cfg(feature = "embedded-broker")]
pub mod broker;

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rumqttc::{AsyncClient, LastWill, MqttOptions, QoS, Transport};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::bus::{Bus, Command};
use crate::config::{MqttConfig, MqttMode};

pub use bridge::EVENT_QUEUE_LIMIT;
pub use messages::{
    parse_output_command, parse_sms_request, Outgoing, SmsRejection, SmsRequest, MAX_SMS_TEXT_CHARS,
};
pub use topics::{check_suffix, CommandTopic, Topics};

/// Large enough for any command we accept and then some: an oversized message (a 1 MB
/// payload on a command topic) must be read and refused, not break the connection.
pub const MAX_PACKET_BYTES: usize = 2 * 1024 * 1024;
/// Requests from handles waiting for the publisher.
const HANDLE_QUEUE: usize = 64;
/// Requests waiting for the event loop (rumqttc's channel).
const CLIENT_QUEUE: usize = 128;

/// Errors of the MQTT bridge.
#[derive(Debug, thiserror::Error)]
pub enum MqttError {
    /// `mqtt.url` is not `mqtt://host[:port]` or `mqtts://host[:port]`.
    #[error("mqtt.url {url:?}: {reason} (help: write it as mqtt://host:1883)")]
    InvalidUrl { url: String, reason: String },
    /// Another MQTT setting cannot be used.
    #[error("mqtt.{key}: {reason}")]
    InvalidConfig { key: &'static str, reason: String },
    /// The connection mode is not built yet.
    #[error("mqtt.mode = {0:?} is not supported yet (help: use \"always\")")]
    UnsupportedMode(MqttMode),
    /// A topic given to [`MqttHandle::publish`] cannot be published to.
    #[error("MQTT topic: {0}")]
    InvalidTopic(String),
    /// A feature that is not built yet.
    #[error("{0} is not supported yet")]
    NotBuilt(&'static str),
    /// The bridge has stopped, so nothing more can be published.
    #[error("the MQTT bridge has stopped")]
    Stopped,
    /// The embedded broker could not be started.
    #[error("embedded MQTT broker: {0}")]
    Broker(String),
}

/// Marker for the bridge as a component; the live parts are the [`MqttHandle`] and the task
/// returned by [`spawn`].
pub struct MqttBridge;

/// A cloneable handle to the running bridge.
#[derive(Clone)]
pub struct MqttHandle {
    topics: Topics,
    requests: mpsc::Sender<Outgoing>,
    connected: Arc<AtomicBool>,
}

impl MqttHandle {
    /// True while connected to the broker (and the state has been re-published).
    pub fn connected(&self) -> bool {
        self.connected.load(Ordering::Relaxed)
    }

    /// The topics of this gateway.
    pub fn topics(&self) -> &Topics {
        &self.topics
    }

    /// Publishes `payload` on `<p>/<topic_suffix>` (QoS 1). Retained messages are state: kept
    /// and re-published on every reconnect (the latest wins). Others are events: queued while
    /// the broker is away. Returns once the bridge has taken the message.
    pub async fn publish(
        &self,
        topic_suffix: &str,
        payload: Vec<u8>,
        retain: bool,
    ) -> Result<(), MqttError> {
        check_suffix(topic_suffix).map_err(MqttError::InvalidTopic)?;
        let out = Outgoing {
            topic: self.topics.under(topic_suffix),
            payload,
            retain,
        };
        self.requests
            .send(out)
            .await
            .map_err(|_| MqttError::Stopped)
    }

    /// On-demand mode: connects (if not connected) and keeps the session for `seconds` after
    /// the last use; returns `host:port ID=<client id>`. (Not built yet.)
    pub async fn connect_for(&self, seconds: u64) -> Result<String, MqttError> {
        let _ = seconds;
        Err(MqttError::NotBuilt("on-demand MQTT"))
    }

    /// Delivers messages on `<p>/<topic_suffix>` to the bus as `Event::Mqtt`. (Not built yet.)
    pub async fn subscribe(&self, topic_suffix: &str) -> Result<(), MqttError> {
        check_suffix(topic_suffix).map_err(MqttError::InvalidTopic)?;
        Err(MqttError::NotBuilt("script MQTT subscriptions"))
    }
}

/// Where to connect, from `mqtt.url`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerAddress {
    /// A host name or IP address (IPv6 without brackets).
    pub host: String,
    pub port: u16,
    /// `mqtts://`: TLS with the system's root certificates.
    pub tls: bool,
}

/// Parses `mqtt://host[:port]` (default 1883) or `mqtts://host[:port]` (default 8883); IPv6
/// hosts in brackets.
pub fn parse_url(url: &str) -> Result<BrokerAddress, MqttError> {
    let invalid = |reason: &str| MqttError::InvalidUrl {
        url: url.to_string(),
        reason: reason.to_string(),
    };
    let (scheme, rest) = url
        .trim()
        .split_once("://")
        .ok_or_else(|| invalid("no scheme"))?;
    let (tls, default_port) = match scheme.to_ascii_lowercase().as_str() {
        "mqtt" | "tcp" => (false, 1883),
        "mqtts" | "ssl" => (true, 8883),
        _ => return Err(invalid("the scheme must be mqtt or mqtts")),
    };
    let authority = rest.trim_end_matches('/');
    if authority.contains(['/', '@', '?']) {
        return Err(invalid(
            "only host and port are allowed (credentials go in mqtt.username/password)",
        ));
    }
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (host, after) = v6.split_once(']').ok_or_else(|| invalid("unclosed ["))?;
        match after {
            "" => (host, None),
            _ => (
                host,
                Some(
                    after
                        .strip_prefix(':')
                        .ok_or_else(|| invalid("junk after ]"))?,
                ),
            ),
        }
    } else {
        match authority.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        }
    };
    if host.is_empty() {
        return Err(invalid("no host"));
    }
    let port = match port {
        None => default_port,
        Some(p) => p
            .parse::<u16>()
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| invalid("bad port"))?,
    };
    Ok(BrokerAddress {
        host: host.to_string(),
        port,
        tls,
    })
}

fn mqtt_options(
    cfg: &MqttConfig,
    device_id: &str,
    topics: &Topics,
) -> Result<MqttOptions, MqttError> {
    let address = parse_url(&cfg.url)?;
    let client_id = match cfg.client_id.trim() {
        "" => format!("gsmgw-{device_id}"),
        id => id.to_string(),
    };
    // rumqttc sends keep-alive as u16 seconds.
    if cfg.keep_alive_s > u64::from(u16::MAX) {
        return Err(MqttError::InvalidConfig {
            key: "keep_alive_s",
            reason: "at most 65535".into(),
        });
    }
    let mut options = MqttOptions::new(client_id, address.host, address.port);
    options
        .set_keep_alive(Duration::from_secs(cfg.keep_alive_s))
        .set_clean_session(true)
        .set_max_packet_size(MAX_PACKET_BYTES, MAX_PACKET_BYTES)
        .set_last_will(LastWill::new(
            topics.status(),
            "offline",
            QoS::AtLeastOnce,
            true,
        ));
    match (&cfg.username, &cfg.password) {
        (Some(user), password) => {
            options.set_credentials(user.clone(), password.clone().unwrap_or_default());
        }
        (None, Some(_)) => {
            return Err(MqttError::InvalidConfig {
                key: "password",
                reason: "a password needs a username".into(),
            })
        }
        (None, None) => {}
    }
    if address.tls {
        options.set_transport(Transport::tls_with_default_config());
    }
    Ok(options)
}

/// Starts the bridge. It subscribes to `bus` before returning (no event is missed), publishes
/// state and events, forwards commands from the broker to `commands`, and runs until
/// `shutdown` resolves: then it publishes `offline` and disconnects. Aborting the returned task
/// drops the connection without a goodbye, so the broker publishes the will.
pub fn spawn(
    cfg: &MqttConfig,
    device_id: &str,
    bus: &Bus,
    commands: mpsc::Sender<Command>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(MqttHandle, JoinHandle<()>), MqttError> {
    match cfg.mode {
        MqttMode::Always => {}
        // The seam for on-demand: a connection task that polls only while a request is live.
        mode @ MqttMode::OnDemand => return Err(MqttError::UnsupportedMode(mode)),
    }
    let topics = Topics::new(cfg.topic_prefix(device_id));
    let options = mqtt_options(cfg, device_id, &topics)?;
    let (client, eventloop) = AsyncClient::new(options, CLIENT_QUEUE);
    let (requests_tx, requests_rx) = mpsc::channel(HANDLE_QUEUE);
    let connected = Arc::new(AtomicBool::new(false));
    let handle = MqttHandle {
        topics: topics.clone(),
        requests: requests_tx.clone(),
        connected: connected.clone(),
    };
    let parts = bridge::Parts {
        client,
        eventloop,
        topics,
        bus_rx: bus.subscribe(),
        requests_rx,
        requests_tx,
        commands,
        connected,
    };
    let task = tokio::spawn(bridge::run(parts, shutdown));
    Ok((handle, task))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_give_host_port_and_tls() {
        let addr = |host: &str, port, tls| BrokerAddress {
            host: host.into(),
            port,
            tls,
        };
        assert_eq!(
            parse_url("mqtt://broker:1884").ok(),
            Some(addr("broker", 1884, false))
        );
        assert_eq!(
            parse_url("mqtt://broker").ok(),
            Some(addr("broker", 1883, false))
        );
        assert_eq!(
            parse_url("mqtts://broker/").ok(),
            Some(addr("broker", 8883, true))
        );
        assert_eq!(
            parse_url("mqtt://[::1]:1999").ok(),
            Some(addr("::1", 1999, false))
        );
        for bad in [
            "broker:1883",
            "http://b",
            "mqtt://",
            "mqtt://b:0",
            "mqtt://b:x",
            "mqtt://u:p@b",
            "mqtt://[::1",
        ] {
            assert!(parse_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn on_demand_mode_is_refused_for_now() {
        let cfg = MqttConfig {
            mode: MqttMode::OnDemand,
            ..Default::default()
        };
        let (tx, _rx) = mpsc::channel(1);
        let spawned = spawn(&cfg, "gw", &Bus::new(), tx, std::future::pending());
        assert!(matches!(
            spawned,
            Err(MqttError::UnsupportedMode(MqttMode::OnDemand))
        ));
    }
}
