//! The MQTT bridge: publishes gateway state and events under `<prefix>/<device_id>` and turns
//! commands from the broker into [`Command`]s (see DESIGN.md, "MQTT").
//!
//! [`spawn`] starts it; the [`MqttHandle`] it returns publishes on behalf of others (scripts,
//! the app). One task owns the connection, as everywhere in gsmgw; state is kept while the
//! broker is away and re-published when it returns.

mod bridge;
pub mod cli;
pub mod discovery;
mod messages;
mod topics;

#[cfg(feature = "embedded-broker")]
pub mod broker;

use std::future::Future;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rumqttc::tokio_rustls::rustls::{ClientConfig, RootCertStore};
use rumqttc::{AsyncClient, LastWill, MqttOptions, QoS, TlsConfiguration, Transport};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::bus::{Bus, Command};
use crate::config::{Config, MqttConfig, MqttMode};
use bridge::{ConnectRequest, Request, Subscriptions};

pub use bridge::EVENT_QUEUE_LIMIT;
pub use discovery::Discovery;
pub use messages::{
    parse_alarm_command, parse_output_command, parse_sms_request, parse_text_request, AlarmRequest,
    Outgoing, SmsRejection, SmsRequest, MAX_SMS_TEXT_CHARS,
};
pub use topics::{check_filter_suffix, check_suffix, CommandTopic, Topics};

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
    /// A topic given to [`MqttHandle::publish`] cannot be published to.
    #[error("MQTT topic: {0}")]
    InvalidTopic(String),
    /// Connecting to the broker failed (the reason says why; a refused login names the
    /// settings to check).
    #[error("MQTT connection failed: {0}")]
    Connect(String),
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
    requests: mpsc::Sender<Request>,
    connects: mpsc::Sender<ConnectRequest>,
    subscriptions: Subscriptions,
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
            .send(Request::Publish(out))
            .await
            .map_err(|_| MqttError::Stopped)
    }

    /// Connects and keeps the session for `seconds` after the last message in or out (0: for
    /// `mqtt.idle_disconnect_s`); returns `host:port ID=<client id>` once connected, or why it
    /// could not connect. With `mode = "always"` it only reports (waiting for the next attempt
    /// when the broker is away).
    pub async fn connect_for(&self, seconds: u64) -> Result<String, MqttError> {
        let (reply, answer) = oneshot::channel();
        self.connects
            .send(ConnectRequest { seconds, reply })
            .await
            .map_err(|_| MqttError::Stopped)?;
        answer.await.map_err(|_| MqttError::Stopped)?
    }

    /// Delivers messages on `<p>/<topic_filter_suffix>` (`+` and `#` allowed as whole levels)
    /// to the bus as `Event::Mqtt` with the topic relative to `<p>`; renewed on every
    /// reconnect.
    pub async fn subscribe(&self, topic_filter_suffix: &str) -> Result<(), MqttError> {
        check_filter_suffix(topic_filter_suffix).map_err(MqttError::InvalidTopic)?;
        let filter = self.topics.under(topic_filter_suffix);
        let new = bridge::lock(&self.subscriptions).insert(filter.clone());
        if !new {
            return Ok(());
        }
        self.requests
            .send(Request::Subscribe(filter))
            .await
            .map_err(|_| MqttError::Stopped)
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
        // Never the credentials someone put in the URL.
        url: crate::config::redact_url(url),
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

/// The client id the bridge uses: `mqtt.client_id`, else `gsmgw-<device_id>`.
pub fn client_id(cfg: &MqttConfig, device_id: &str) -> String {
    match cfg.client_id.trim() {
        "" => format!("gsmgw-{device_id}"),
        id => id.to_string(),
    }
}

/// What a connect request answers once connected: `host:port ID=<client id>`.
pub fn session_name(cfg: &MqttConfig, device_id: &str) -> Result<String, MqttError> {
    let address = parse_url(&cfg.url)?;
    Ok(format!(
        "{}:{} ID={}",
        address.host,
        address.port,
        client_id(cfg, device_id)
    ))
}

/// Socket options: TCP_NODELAY, since every packet is small and waits for an answer (a
/// command's state, a PUBACK); with Nagle's algorithm a publish sat behind the unacknowledged
/// one before it for a delayed ACK (~40-90 ms per `output/<name>/set` round trip).
pub fn network_options() -> rumqttc::NetworkOptions {
    let mut options = rumqttc::NetworkOptions::new();
    options.set_tcp_nodelay(true);
    options
}

/// Options to reach the configured broker as `client_id`: address, keep-alive, credentials,
/// TLS. Shared by the bridge and `gsmgw send`.
pub fn connection_options(cfg: &MqttConfig, client_id: &str) -> Result<MqttOptions, MqttError> {
    let address = parse_url(&cfg.url)?;
    // rumqttc sends keep-alive as u16 seconds.
    if cfg.keep_alive_s > u64::from(u16::MAX) {
        return Err(MqttError::InvalidConfig {
            key: "keep_alive_s",
            reason: "at most 65535".into(),
        });
    }
    let mut options = MqttOptions::new(client_id, address.host, address.port);
    options
        .set_keep_alive(Duration::from_secs(cfg.keep_alive_s.max(5)))
        .set_clean_session(true)
        .set_max_packet_size(MAX_PACKET_BYTES, MAX_PACKET_BYTES);
    let password = match (&cfg.password, &cfg.password_file) {
        (Some(_), Some(_)) => {
            return Err(MqttError::InvalidConfig {
                key: "password_file",
                reason: "give password or password_file, not both".into(),
            })
        }
        (Some(p), None) => Some(p.clone()),
        (None, Some(path)) => Some(read_password(path)?),
        (None, None) => None,
    };
    match (&cfg.username, password) {
        (Some(user), password) => {
            options.set_credentials(user.clone(), password.unwrap_or_default());
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
        options.set_transport(tls_transport(cfg)?);
    } else if cfg.ca_file.is_some() || cfg.client_cert.is_some() {
        return Err(MqttError::InvalidConfig {
            key: "ca_file",
            reason: "TLS files need an mqtts:// url".into(),
        });
    }
    Ok(options)
}

/// The first line of `path`. The error names the file, never its content.
fn read_password(path: &Path) -> Result<String, MqttError> {
    let text = std::fs::read_to_string(path).map_err(|e| MqttError::InvalidConfig {
        key: "password_file",
        reason: format!("cannot read {}: {e}", path.display()),
    })?;
    Ok(text.lines().next().unwrap_or_default().to_string())
}

fn read_file(key: &'static str, path: &Path) -> Result<Vec<u8>, MqttError> {
    std::fs::read(path).map_err(|e| MqttError::InvalidConfig {
        key,
        reason: format!("cannot read {}: {e}", path.display()),
    })
}

/// TLS with `mqtt.ca_file` or the system's roots, and the client certificate when configured.
fn tls_transport(cfg: &MqttConfig) -> Result<Transport, MqttError> {
    let tls_error = |key: &'static str, reason: String| MqttError::InvalidConfig { key, reason };
    let mut roots = RootCertStore::empty();
    match &cfg.ca_file {
        Some(path) => {
            let pem = read_file("ca_file", path)?;
            for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
                let cert =
                    cert.map_err(|e| tls_error("ca_file", format!("{}: {e}", path.display())))?;
                roots
                    .add(cert)
                    .map_err(|e| tls_error("ca_file", format!("{}: {e}", path.display())))?;
            }
            if roots.is_empty() {
                return Err(tls_error(
                    "ca_file",
                    format!("{} holds no PEM certificate", path.display()),
                ));
            }
        }
        None => {
            let native = rustls_native_certs::load_native_certs().map_err(|e| {
                tls_error(
                    "ca_file",
                    format!(
                        "cannot read the system root certificates: {e} (help: set mqtt.ca_file)"
                    ),
                )
            })?;
            roots.add_parsable_certificates(native);
            if roots.is_empty() {
                return Err(tls_error(
                    "ca_file",
                    "the system has no root certificates (help: set mqtt.ca_file)".into(),
                ));
            }
        }
    }
    // The provider named, not taken from the process default, which rustls would have to
    // guess from crate features.
    let builder =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|e| tls_error("ca_file", e.to_string()))?
            .with_root_certificates(roots);
    let config = match (&cfg.client_cert, &cfg.client_key) {
        (None, None) => builder.with_no_client_auth(),
        (Some(cert_path), Some(key_path)) => {
            let pem = read_file("client_cert", cert_path)?;
            let certs = rustls_pemfile::certs(&mut pem.as_slice())
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| tls_error("client_cert", format!("{}: {e}", cert_path.display())))?;
            if certs.is_empty() {
                return Err(tls_error(
                    "client_cert",
                    format!("{} holds no PEM certificate", cert_path.display()),
                ));
            }
            let pem = read_file("client_key", key_path)?;
            // The key's bytes never reach an error message.
            let key = rustls_pemfile::private_key(&mut pem.as_slice())
                .ok()
                .flatten()
                .ok_or_else(|| {
                    tls_error(
                        "client_key",
                        format!("{} holds no PEM private key", key_path.display()),
                    )
                })?;
            builder
                .with_client_auth_cert(certs, key)
                .map_err(|e| tls_error("client_key", e.to_string()))?
        }
        _ => {
            return Err(tls_error(
                "client_cert",
                "client_cert and client_key go together".into(),
            ))
        }
    };
    Ok(Transport::tls_with_config(TlsConfiguration::Rustls(
        Arc::new(config),
    )))
}

/// `$share/<group>/<prefix>/fleet/sms/send` and the topic it carries, when in a send group.
fn fleet(cfg: &MqttConfig) -> Result<Option<(String, String)>, MqttError> {
    let Some(group) = cfg.send_group.as_deref() else {
        return Ok(None);
    };
    if group.is_empty() || group.contains(['/', '+', '#', '\0']) {
        return Err(MqttError::InvalidConfig {
            key: "send_group",
            reason: format!("{group:?} must be a non-empty name without '/', '+' or '#'"),
        });
    }
    let topic = format!("{}/fleet/sms/send", cfg.prefix.trim_end_matches('/'));
    Ok(Some((format!("$share/{group}/{topic}"), topic)))
}

/// The topics of the gateway configured by `cfg`.
pub fn topics_for(cfg: &Config) -> Topics {
    Topics::new(cfg.mqtt.topic_prefix(&cfg.gateway.device_id))
}

/// Starts the bridge for the gateway configured by `cfg` (its `mqtt` section, device id,
/// outputs and inputs for discovery). It subscribes to `bus` before returning (no event is
/// missed), publishes state and events, forwards commands from the broker to `commands`, puts
/// messages for script subscriptions on `bus`, and runs until `shutdown` resolves: then it
/// publishes `offline` and disconnects. Aborting the returned task drops the connection without
/// a goodbye, so the broker publishes the will.
pub fn spawn(
    cfg: &Config,
    bus: &Bus,
    commands: mpsc::Sender<Command>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(MqttHandle, JoinHandle<()>), MqttError> {
    let mqtt = &cfg.mqtt;
    let device_id = &cfg.gateway.device_id;
    let mut topics = topics_for(cfg);
    let fleet = fleet(mqtt)?;
    if let Some((_, topic)) = &fleet {
        topics = topics.with_fleet(topic.clone());
    }
    let discovery = Discovery::new(topics.clone(), device_id, &mqtt.discovery_prefix);
    let discovery_messages = discovery.messages(cfg)?;
    let client_id = client_id(mqtt, device_id);
    let mut options = connection_options(mqtt, &client_id)?;
    options.set_last_will(LastWill::new(
        topics.status(),
        "offline",
        QoS::AtLeastOnce,
        true,
    ));
    let session_name = session_name(mqtt, device_id)?;
    let (client, mut eventloop) = AsyncClient::new(options, CLIENT_QUEUE);
    eventloop.set_network_options(network_options());
    let (requests_tx, requests_rx) = mpsc::channel(HANDLE_QUEUE);
    let (connects_tx, connect_rx) = mpsc::channel(HANDLE_QUEUE);
    let connected = Arc::new(AtomicBool::new(false));
    let subscriptions = Subscriptions::default();
    let handle = MqttHandle {
        topics: topics.clone(),
        requests: requests_tx.clone(),
        connects: connects_tx,
        subscriptions: subscriptions.clone(),
        connected: connected.clone(),
    };
    let parts = bridge::Parts {
        client,
        eventloop,
        topics,
        bus: bus.clone(),
        bus_rx: bus.subscribe(),
        requests_rx,
        requests_tx,
        connect_rx,
        commands,
        connected,
        subscriptions,
        extra_filters: fleet.into_iter().map(|(filter, _)| filter).collect(),
        ha_status: mqtt
            .discovery
            .then(|| format!("{}/status", mqtt.discovery_prefix.trim_end_matches('/'))),
        discovery,
        discovery_messages,
        publish_imei: mqtt.publish_imei,
        on_demand: match mqtt.mode {
            MqttMode::Always => None,
            MqttMode::OnDemand => Some(Duration::from_secs(mqtt.idle_disconnect_s.max(1))),
        },
        session_name,
        username: mqtt.username.clone(),
        protected: bridge::Protected::new(cfg),
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
    fn credentials_come_from_the_password_file_and_bad_tls_files_are_config_errors() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let file = dir.path().join("pw");
        std::fs::write(&file, "s3cret\nignored\n").unwrap_or_else(|e| panic!("{e}"));
        let cfg = MqttConfig {
            username: Some("gw".into()),
            password_file: Some(file.clone()),
            ..Default::default()
        };
        let options = connection_options(&cfg, "id").map(|o| o.credentials());
        assert_eq!(
            options.ok().flatten().map(|l| (l.username, l.password)),
            Some(("gw".to_string(), "s3cret".to_string()))
        );
        let both = MqttConfig {
            password: Some("x".into()),
            ..cfg.clone()
        };
        assert!(connection_options(&both, "id").is_err());
        let missing = MqttConfig {
            password_file: Some(dir.path().join("nope")),
            ..cfg.clone()
        };
        assert!(connection_options(&missing, "id").is_err());
        let not_pem = MqttConfig {
            url: "mqtts://broker".into(),
            ca_file: Some(file.clone()),
            ..cfg.clone()
        };
        let err = connection_options(&not_pem, "id")
            .err()
            .map(|e| e.to_string());
        assert!(
            err.as_deref()
                .is_some_and(|e| e.contains("ca_file") && !e.contains("s3cret")),
            "{err:?}"
        );
        let half = MqttConfig {
            url: "mqtts://broker".into(),
            client_cert: Some(file),
            ..cfg
        };
        assert!(connection_options(&half, "id").is_err());
    }

    #[test]
    fn a_send_group_adds_a_shared_subscription_and_a_bad_one_is_refused() {
        let cfg = MqttConfig {
            send_group: Some("sms".into()),
            ..Default::default()
        };
        assert_eq!(
            fleet(&cfg).ok().flatten(),
            Some((
                "$share/sms/gsmgw/fleet/sms/send".to_string(),
                "gsmgw/fleet/sms/send".to_string()
            ))
        );
        let bad = MqttConfig {
            send_group: Some("a/b".into()),
            ..Default::default()
        };
        assert!(fleet(&bad).is_err());
    }
}
