-- alarm_input_notify: texts the listed numbers when an input opens while the alarm is armed.
--
-- Config (`[rules.alarm_input_notify]`):
--   notify = ["+447700900123"]   -- who gets the SMS (required; nobody without it)
--   inputs = ["door", "window"]  -- which inputs to watch (default: every input)
--
-- "Opens" means the input turned ON (wire or set `active_low` so that open = ON). Only the
-- armed states count: during the exit delay ("arming") you are still walking out.

local ARMED = { armed_away = true, armed_home = true }

return {
  on = { input = gw.config.inputs or true },
  execute = function(gw, ev)
    if not ev.on or not ARMED[gw.alarm.state()] then return end
    local text = ("ALARM %s: %s opened"):format(gw.alarm.state(), ev.name)
    for _, number in ipairs(gw.config.notify or {}) do
      gw.sms.send(number, text)
    end
  end,
}
