-- light_command: "LIGHT ON" / "LIGHT OFF" by SMS from a list of numbers switches an output
-- and confirms by SMS.
--
-- Config (`[rules.light_command]`):
--   numbers = ["+447700900123"]  -- who may switch (required; without it nobody can)
--   output  = "light"            -- the gateway output (default "light")
--
-- Case and surrounding spaces do not matter ("light on" works). Authority is the caller ID
-- alone, which can be spoofed: don't drive anything dangerous with it.

local numbers = gw.config.numbers or {}
local output = gw.config.output or "light"

return {
  -- An empty list matches nobody, so a missing config cannot open this to everyone.
  on = { sms = { from = numbers, pattern = "^%s*[Ll][Ii][Gg][Hh][Tt]%s" } },
  execute = function(gw, ev)
    local word = ev.text:upper():match("^%s*LIGHT%s+(%a+)%s*$")
    if word == "ON" or word == "OFF" then
      gw.output.set(output, word == "ON")
      gw.sms.reply("LIGHT " .. word)
    else
      gw.sms.reply("LIGHT ON or LIGHT OFF")
    end
  end,
}
