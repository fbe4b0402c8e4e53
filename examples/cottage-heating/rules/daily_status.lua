-- daily_status: a status SMS every day at a fixed local time.
--
-- Config (`[rules.daily_status]`):
--   to = "+447700900123"   -- who gets it (required)
--   at = "08:00"           -- when, local 24-hour time (default 08:00)
--
-- Example text: "STATUS gate=OFF relay=ON door=ON alarm=disarmed signal=-71dBm"

local function on_off(v) return v and "ON" or "OFF" end

return {
  on = { timer = { "at " .. (gw.config.at or "08:00") } },
  execute = function(gw, ev)
    local to = gw.config.to
    if not to then
      gw.log.warn("daily_status: no 'to' number configured")
      return
    end
    local parts = { "STATUS" }
    for _, name in ipairs(gw.output.names()) do
      parts[#parts + 1] = name .. "=" .. on_off(gw.output.get(name))
    end
    for _, name in ipairs(gw.input.names()) do
      parts[#parts + 1] = name .. "=" .. on_off(gw.input.get(name))
    end
    parts[#parts + 1] = "alarm=" .. gw.alarm.state()
    local signal = gw.modem.signal()
    parts[#parts + 1] = "signal=" .. (signal and (signal .. "dBm") or "unknown")
    gw.sms.send(to, table.concat(parts, " "))
  end,
}
