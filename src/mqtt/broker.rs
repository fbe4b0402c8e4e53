//! The MQTT broker embedded for `gsmgw demo` (rumqttd), so the demo needs nothing installed.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use rumqttd::{Broker, Config, ConnectionSettings, RouterConfig, ServerSettings};

use super::{MqttError, MAX_PACKET_BYTES};

/// Ports tried, upward from the first.
const PORT_ATTEMPTS: u16 = 20;
/// How long the broker may take to accept connections.
const READY_TIMEOUT: Duration = Duration::from_secs(5);

/// A running embedded broker on 127.0.0.1. rumqttd cannot be stopped: its threads run until
/// the process exits, which is what the demo needs.
#[derive(Debug)]
pub struct EmbeddedBroker {
    /// The port it listens on (127.0.0.1 only).
    pub port: u16,
}

impl EmbeddedBroker {
    /// `mqtt://127.0.0.1:<port>`, for `mqtt.url`.
    pub fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.port)
    }
}

fn config(listen: SocketAddr) -> Config {
    let connections = ConnectionSettings {
        connection_timeout_ms: 60_000,
        max_payload_size: MAX_PACKET_BYTES,
        max_inflight_count: 100,
        auth: None,
        external_auth: None,
        dynamic_filters: true,
    };
    let server = ServerSettings {
        name: "gsmgw-demo-v4".into(),
        listen,
        tls: None,
        next_connection_delay_ms: 1,
        connections,
    };
    Config {
        router: RouterConfig {
            max_connections: 100,
            max_outgoing_packet_count: 200,
            max_segment_size: 16 * 1024 * 1024,
            max_segment_count: 10,
            ..Default::default()
        },
        v4: Some(HashMap::from([("1".to_string(), server)])),
        ..Default::default()
    }
}

fn free_port(first_port: u16) -> Result<u16, MqttError> {
    (0..PORT_ATTEMPTS)
        .filter_map(|n| first_port.checked_add(n))
        // The listener is dropped at once: a small race with other programs, which the
        // readiness check below turns into a clear error.
        .find(|port| TcpListener::bind((Ipv4Addr::LOCALHOST, *port)).is_ok())
        .ok_or_else(|| {
            MqttError::Broker(format!(
                "no free port in {first_port}..{}",
                first_port.saturating_add(PORT_ATTEMPTS)
            ))
        })
}

/// Starts rumqttd on 127.0.0.1 on the first free port from `first_port` upward (MQTT 3.1.1,
/// as rumqttc speaks), on its own threads; returns once it accepts connections.
pub fn start(first_port: u16) -> Result<EmbeddedBroker, MqttError> {
    let port = free_port(first_port)?;
    let listen = SocketAddrV4::new(Ipv4Addr::LOCALHOST, port);
    let mut broker = Broker::new(config(listen.into()));
    std::thread::Builder::new()
        .name("mqtt-broker".into())
        .spawn(move || {
            if let Err(e) = broker.start() {
                tracing::error!(error = %e, "embedded MQTT broker stopped");
            }
        })
        .map_err(|e| MqttError::Broker(format!("cannot start its thread: {e}")))?;
    let deadline = Instant::now() + READY_TIMEOUT;
    // A bounded wait for the listener thread to bind: rumqttd gives no readiness signal.
    while TcpStream::connect_timeout(&listen.into(), Duration::from_millis(200)).is_err() {
        if Instant::now() >= deadline {
            return Err(MqttError::Broker(format!(
                "not listening on {listen} after {READY_TIMEOUT:?}"
            )));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    tracing::info!(%listen, "embedded MQTT broker started");
    Ok(EmbeddedBroker { port })
}
