//! MQTT bridge (in progress)
