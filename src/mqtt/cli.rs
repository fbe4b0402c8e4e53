//! The MQTT side of the command line: `gsmgw send`, `gsmgw discovery` and the running-gateway
//! half of `gsmgw unlock`.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use rumqttc::{AsyncClient, Event as MqttEvent, Packet, QoS};
use serde_json::{json, Value};

use super::{client_id, connection_options, parse_sms_request, topics_for, Discovery};
use crate::config::Config;

/// `gsmgw send N TEXT`: publishes to a running gateway's `sms/send` with a fresh id and waits
/// (at most `timeout_s`) for `sms/sent` with that id and a final status. Exit 0 when sent, 1
/// when failed or timed out.
pub async fn send(cfg: &Config, to: &str, text: &str, timeout_s: u64) -> anyhow::Result<ExitCode> {
    let id = format!("cli-{}-{:08x}", std::process::id(), rand::random::<u32>());
    let request = json!({ "to": to, "text": text, "id": id }).to_string();
    // Refused here already, rather than after a round trip to the gateway.
    if let Err(rejection) = parse_sms_request(request.as_bytes()) {
        println!("failed: {}", rejection.error);
        return Ok(ExitCode::FAILURE);
    }
    let topics = topics_for(cfg);
    let options = connection_options(
        &cfg.mqtt,
        &format!("{}-{id}", client_id(&cfg.mqtt, &cfg.gateway.device_id)),
    )
    .context("the [mqtt] settings")?;
    let (client, mut eventloop) = AsyncClient::new(options, 16);
    eventloop.set_network_options(super::network_options());
    let sent_topic = topics.sms_sent();
    let wait = async {
        loop {
            let event = eventloop.poll().await.with_context(|| {
                format!("connecting to {}", crate::config::redact_url(&cfg.mqtt.url))
            })?;
            match event {
                MqttEvent::Incoming(Packet::ConnAck(_)) => {
                    client
                        .subscribe(sent_topic.as_str(), QoS::AtLeastOnce)
                        .await?;
                }
                // Published only once the subscription stands, so the answer cannot be missed.
                MqttEvent::Incoming(Packet::SubAck(_)) => {
                    client
                        .publish(topics.sms_send(), QoS::AtLeastOnce, false, request.clone())
                        .await?;
                }
                MqttEvent::Incoming(Packet::Publish(p)) if p.topic == sent_topic => {
                    let reply: Value = serde_json::from_slice(&p.payload).unwrap_or(Value::Null);
                    if reply["id"].as_str() != Some(id.as_str()) {
                        continue;
                    }
                    match reply["status"].as_str() {
                        Some("sent") => return anyhow::Ok(Ok(())),
                        Some("failed") => {
                            let error = reply["error"].as_str().unwrap_or("no reason given");
                            return anyhow::Ok(Err(error.to_string()));
                        }
                        // `queued` and anything newer: keep waiting for the outcome.
                        _ => continue,
                    }
                }
                _ => {}
            }
        }
    };
    let outcome = tokio::time::timeout(Duration::from_secs(timeout_s), wait).await;
    let _ = client.try_disconnect();
    match outcome {
        Ok(Ok(Ok(()))) => {
            println!("sent to {to}");
            Ok(ExitCode::SUCCESS)
        }
        Ok(Ok(Err(error))) => {
            println!("failed: {error}");
            Ok(ExitCode::FAILURE)
        }
        Ok(Err(e)) => Err(e),
        Err(_) => {
            println!(
                "failed: no answer on {sent_topic} within {timeout_s} s (is the gateway running?)"
            );
            Ok(ExitCode::FAILURE)
        }
    }
}

/// Asks a running gateway to lift the lock-out of sender `key` over `<p>/security/unlock` and
/// waits (at most `timeout_s`) for its `unlocked` event on `<p>/security`. `Ok(false)` when no
/// gateway answered in time (it may be stopped: the store change then applies at its start).
pub async fn unlock(cfg: &Config, key: &str, timeout_s: u64) -> anyhow::Result<bool> {
    let topics = topics_for(cfg);
    let id = format!("cli-unlock-{}", std::process::id());
    let options = connection_options(
        &cfg.mqtt,
        &format!("{}-{id}", client_id(&cfg.mqtt, &cfg.gateway.device_id)),
    )
    .context("the [mqtt] settings")?;
    let (client, mut eventloop) = AsyncClient::new(options, 16);
    let security = topics.security();
    let request = json!({ "number": key }).to_string();
    let wait = async {
        loop {
            let event = eventloop
                .poll()
                .await
                .with_context(|| format!("connecting to {}", cfg.mqtt.url))?;
            match event {
                MqttEvent::Incoming(Packet::ConnAck(_)) => {
                    client
                        .subscribe(security.as_str(), QoS::AtLeastOnce)
                        .await?;
                }
                MqttEvent::Incoming(Packet::SubAck(_)) => {
                    client
                        .publish(
                            topics.security_unlock(),
                            QoS::AtLeastOnce,
                            false,
                            request.clone(),
                        )
                        .await?;
                }
                MqttEvent::Incoming(Packet::Publish(p)) if p.topic == security => {
                    let event: Value = serde_json::from_slice(&p.payload).unwrap_or(Value::Null);
                    if event["event_type"] == "unlocked" && event["number"] == key {
                        return anyhow::Ok(());
                    }
                }
                _ => {}
            }
        }
    };
    let outcome = tokio::time::timeout(Duration::from_secs(timeout_s), wait).await;
    let _ = client.try_disconnect();
    match outcome {
        Ok(Ok(())) => Ok(true),
        Ok(Err(e)) => Err(e),
        Err(_) => Ok(false),
    }
}

/// `gsmgw discovery`: the Home Assistant discovery topics, and with `print` each payload
/// (pretty JSON) under its topic.
pub fn discovery(cfg: &Config, print: bool) -> anyhow::Result<ExitCode> {
    let discovery = Discovery::new(
        topics_for(cfg),
        &cfg.gateway.device_id,
        &cfg.mqtt.discovery_prefix,
    );
    let messages = discovery.messages(cfg).context("the [mqtt] settings")?;
    if messages.is_empty() {
        println!("discovery is off (mqtt.discovery = false)");
        return Ok(ExitCode::SUCCESS);
    }
    let manifest = discovery.manifest(&messages);
    for out in messages.iter().chain([&manifest]) {
        println!("{}", out.topic);
        if print {
            let value: Value = serde_json::from_slice(&out.payload).unwrap_or(Value::Null);
            println!("{}\n", serde_json::to_string_pretty(&value)?);
        }
    }
    Ok(ExitCode::SUCCESS)
}
