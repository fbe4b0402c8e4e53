-- heating: the cottage's heating by SMS from the family's phones.
--
--   HEATING ON        on until HEATING OFF
--   HEATING ON 3h     on for 3 hours (also 90m, 2d), then off
--   HEATING OFF       off
--   HEATING?          "HEATING ON" / "HEATING OFF", and the frost alarm's state
--
-- Config (`[rules.heating]`):
--   numbers = ["+447700900123"]  -- who may use it (required; without it nobody can)
--   output  = "heating"          -- the relay that enables the boiler (default "heating")
--   frost   = "frost"            -- optional input: a frost thermostat, ON = too cold
--
-- Authority is the caller ID alone (spoofable): fine for heating, not for a door lock.

local numbers = gw.config.numbers or {}
local output = gw.config.output or "heating"
local frost = gw.config.frost

local UNITS = { m = 60, h = 3600, d = 86400 }

local function state_text()
  local text = "HEATING " .. (gw.output.get(output) and "ON" or "OFF")
  if frost then
    text = text .. (gw.input.get(frost) and ", FROST ALARM" or ", no frost")
  end
  return text
end

return {
  on = { sms = { from = numbers, pattern = "^%s*[Hh][Ee][Aa][Tt][Ii][Nn][Gg]" } },
  execute = function(gw, ev)
    local text = ev.text:upper()
    if text:match("^%s*HEATING%s*%?%s*$") then
      gw.sms.reply(state_text())
      return
    end
    local word, amount, unit = text:match("^%s*HEATING%s+(%a+)%s*(%d*)%s*(%a?)%s*$")
    if word == "ON" and amount ~= "" then
      local seconds = tonumber(amount) * (UNITS[unit:lower()] or 3600)
      gw.output.on(output, seconds)
      gw.sms.reply(("HEATING ON for %s%s"):format(amount, unit ~= "" and unit:lower() or "h"))
    elseif word == "ON" then
      gw.output.on(output)
      gw.sms.reply("HEATING ON")
    elseif word == "OFF" then
      gw.output.off(output)
      gw.sms.reply("HEATING OFF")
    else
      gw.sms.reply("HEATING ON [3h] / HEATING OFF / HEATING?")
    end
  end,
}
