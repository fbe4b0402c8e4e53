-- frost_alert: texts the listed numbers when the frost thermostat trips and when it clears.
--
-- Config (`[rules.frost_alert]`):
--   notify = ["+447700900123"]  -- who gets the SMS (required)
--   input  = "frost"            -- the frost thermostat's input (default "frost"), ON = cold

local input = gw.config.input or "frost"

return {
  on = { input = input },
  execute = function(gw, ev)
    local text = ev.on and "FROST ALARM: the cottage is below the frost setting"
      or "Frost alarm cleared"
    for _, number in ipairs(gw.config.notify or {}) do
      gw.sms.send(number, text)
    end
  end,
}
