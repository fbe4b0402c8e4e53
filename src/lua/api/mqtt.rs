//! `gw.mqtt`: publish and subscribe under the gateway's prefix, on-demand sessions.

use super::*;

/// `gw.mqtt`: publish and subscribe under the gateway's prefix, on-demand sessions.
pub(crate) fn register(lua: &Lua, ctx: &ApiContext) -> mlua::Result<()> {
    let m = module(lua, "mqtt")?;
    let c = ctx.clone();
    m.set(
        "publish",
        lua.create_function(
            move |lua, (topic, payload, retain): (String, Value, Option<bool>)| {
                check_topic(lua, "gw.mqtt.publish", &topic)?;
                let cap = c.limits.caps.mqtt_payload_bytes;
                let payload = match payload {
                    // Checked before copying: a 4 MiB string must not be copied out of the state.
                    Value::String(s) if s.as_bytes().len() > cap => {
                        return Err(lua_error(
                            lua,
                            format!(
                                "gw.mqtt.publish: payload of {} bytes is over lua.max_mqtt_payload_bytes ({cap})",
                                s.as_bytes().len()
                            ),
                        ))
                    }
                    Value::String(s) => s.as_bytes().to_vec(),
                    Value::Nil => Vec::new(),
                    Value::Table(_) | Value::Boolean(_) | Value::Integer(_) | Value::Number(_) => {
                        let json: serde_json::Value = lua
                            .from_value_with(payload, DeserializeOptions::new())
                            .map_err(|e| {
                                lua_error(
                                    lua,
                                    format!("gw.mqtt.publish: payload is not JSON-like: {e}"),
                                )
                            })?;
                        json.to_string().into_bytes()
                    }
                    other => {
                        return Err(lua_error(
                            lua,
                            format!(
                                "gw.mqtt.publish: a {} cannot be published",
                                other.type_name()
                            ),
                        ))
                    }
                };
                if payload.len() > cap {
                    return Err(lua_error(
                        lua,
                        format!(
                            "gw.mqtt.publish: payload of {} bytes is over lua.max_mqtt_payload_bytes ({cap})",
                            payload.len()
                        ),
                    ));
                }
                // Serialising was work outside the VM: charged by what it produced.
                c.charge_bytes(lua, "gw.mqtt.publish", payload.len())?;
                c.try_emit(
                    lua,
                    "gw.mqtt.publish",
                    Command::MqttPublish {
                        topic,
                        payload,
                        retain: retain.unwrap_or(false),
                    },
                )
            },
        )?,
    )?;
    let c = ctx.clone();
    m.set(
        "subscribe",
        lua.create_function(move |lua, topic: String| {
            check_topic(lua, "gw.mqtt.subscribe", &topic)?;
            c.try_emit(lua, "gw.mqtt.subscribe", Command::MqttSubscribe { topic })
        })?,
    )?;
    let c = ctx.clone();
    m.set(
        "connect_for",
        lua.create_function(move |lua, (seconds, f): (f64, Option<Function>)| {
            let seconds = c.duration(lua, "gw.mqtt.connect_for", seconds)?;
            if seconds.is_zero() {
                return Err(lua_error(lua, "gw.mqtt.connect_for: give seconds > 0"));
            }
            // Whole seconds, rounded up: asking for 0.5 s must not mean 0.
            let seconds = seconds.as_secs() + u64::from(seconds.subsec_nanos() > 0);
            let id = c.await_result(lua, f)?;
            c.try_emit(
                lua,
                "gw.mqtt.connect_for",
                Command::MqttConnect { id, seconds },
            )?;
            Ok(id)
        })?,
    )?;
    let c = ctx.clone();
    m.set(
        "status",
        lua.create_function(move |lua, ()| {
            let connected = c.shared().mqtt_connected;
            let t = lua.create_table()?;
            t.set("enabled", connected.is_some())?;
            t.set("connected", connected.unwrap_or(false))?;
            Ok(t)
        })?,
    )?;
    Ok(())
}

fn check_topic(lua: &Lua, function: &str, topic: &str) -> mlua::Result<()> {
    crate::mqtt::check_suffix(topic).map_err(|e| {
        lua_error(
            lua,
            format!(
                "{function}: {e} (give a topic under the gateway prefix, like \"sms/forward\")"
            ),
        )
    })
}
