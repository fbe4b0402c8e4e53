-- sms_to_mqtt: publishes every received SMS (also those a plugin handled) as JSON on
-- <prefix>/sms/forward, for Home Assistant automations.
--
-- Config (`[rules.sms_to_mqtt]`):
--   topic = "sms/forward"   -- under the gateway prefix (default sms/forward)
--   unhandled_only = false  -- true: only SMS no plugin handled
--
-- Payload: {"from":"+447700900123","text":"Hello","time":"2026-03-01T10:15:00Z",
--           "handled_by":"call_reject_conn"}  (time/handled_by absent when unknown/none)

return {
  on = { sms = { unhandled = gw.config.unhandled_only == true } },
  execute = function(gw, ev)
    gw.mqtt.publish(gw.config.topic or "sms/forward", {
      from = ev.from,
      text = ev.text,
      time = ev.time,
      handled_by = ev.handled_by,
    })
  end,
}
