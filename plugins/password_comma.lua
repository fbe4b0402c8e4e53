-- password-comma dialect: the SMS language of the TELL ECOLINE PRO / Pager4 family,
-- `<password>,<command>#`. Spec: shared/dialects/password-comma.md; where it disagrees with
-- its seed excerpt, the excerpt wins. User manual: docs/dialects/password-comma.md.
--
-- Config (`[plugins.password_comma]`):
--   relay1 = "relay"      -- the gateway output that `r1=…` drives; relay2 … relay8 likewise
--   input1 = "door"       -- the gateway input STATUS reports as IN1; input2 … input8 likewise
--   password = "1234"     -- factory superadmin password (a `pwd=` SMS overrides it)
--   installer_password = "…"  -- optional; unset = only the superadmin password works
--   known = ["+447700900123"] -- senders told `Wrong password` instead of silence
--   link = "cellular"     -- how the gateway reaches the broker: "cellular" needs `apn`;
--   apn = "internet"      --   anything else (default "ethernet") needs nothing
--   connect_seconds = 600 -- how long `connect#` keeps the on-demand broker session
--
-- Which messages carry a credential (issue 11, "no free guesses"): the shape alone decides,
-- never whether the password is right, so the answer to a guess tells nothing:
--   * `<field>,<command>#` with exactly one comma carries the password `<field>`. A wrong
--     (or empty) one is a failure for the sender (gw.auth.fail) whatever the command is,
--     handled in silence (`Wrong password` for the `known` numbers), and changes nothing.
--   * `<command>#` without a comma carries no credential: a command word of ours is handled
--     in silence (`Wrong password` for `known`), anything else is left to other dialects.
--   * Everything else (no `#` at the end, two or more commas: `PC,CRE,*100#`) is not this
--     dialect and is left alone whatever it holds.
--
-- Chosen behaviours where the manuals are silent:
--   * `pwd=<new>` (4–16 characters, no `,` `#` or white space) changes the password that was
--     used (superadmin or installer); stored as a salted hash; reply `Password changed`.
--   * `connect#`: `Connecting…` is not sent when the broker answers at once (the `always`
--     mode, already connected: the host calls back within `connect_for`).
--   * `arm#`/`disarm#` answer from the panel's answer: `Armed` / `Disarmed`, or the manual's
--     `Arming failed` / `Disarming failed` when it refuses (zone open, code, busy).
--   * STATUS: relays as `R<n>:ON|OFF`, inputs as `IN<n>:HIGH|LOW` (input ON = HIGH, like the
--     CALL/REJECT/CONN dialect), `GSM:?` when the signal is unknown, `MQTT:ON|OFF` from
--     gw.mqtt.status() (OFF also when MQTT is disabled).
--   * `rN=onT` takes 1–3600 s; `r1=on0`, `r1=on3601` and unconfigured relays are
--     `SYNTAX ERROR!`.
--
-- Parsing uses gw.text only (linear in the text), never a Lua pattern.

local MAX_RELAYS = 8
local MIN_ON_SECONDS = 1
local MAX_ON_SECONDS = 3600
local DEFAULT_CONNECT_SECONDS = 600
local MIN_PASSWORD, MAX_PASSWORD = 4, 16
local SYNTAX_ERROR = "SYNTAX ERROR!"

local cfg = gw.config or {}

local function numbered(prefix)
  local names = {}
  for n = 1, MAX_RELAYS do
    local name = cfg[prefix .. n]
    if type(name) == "string" and name ~= "" then
      names[n] = name
    end
  end
  return names
end

local RELAYS = numbered("relay")
local INPUTS = numbered("input")
local CONNECT_SECONDS = tonumber(cfg.connect_seconds) or DEFAULT_CONNECT_SECONDS

local function known_sender(number)
  if type(cfg.known) ~= "table" then
    return false
  end
  for _, known in ipairs(cfg.known) do
    if gw.phone.same(number, tostring(known)) then
      return true
    end
  end
  return false
end

-- Unsigned decimal digits within min..max (gw.text.int also takes a sign).
local function digits_in(text, min, max)
  local first = string.byte(text, 1)
  if first == nil or first < 48 or first > 57 then
    return nil
  end
  return gw.text.int(text, min, max)
end

-- Passwords ---------------------------------------------------------------------------------

-- The password in force for `role`, as stored (a hash once changed by SMS) or from the
-- config (clear); nil when the role has none.
local function password(role)
  local stored = gw.store.get(role .. "_password")
  if type(stored) == "string" and stored ~= "" then
    return stored
  end
  if role == "superadmin" then
    return tostring(cfg.password or "1234")
  end
  if cfg.installer_password ~= nil and tostring(cfg.installer_password) ~= "" then
    return tostring(cfg.installer_password)
  end
  return nil
end

-- "superadmin", "installer" or nil. Both are verified whatever the first gives, so the time
-- taken does not tell which one was close.
local function role_of(given)
  if given == "" then
    return nil
  end
  local superadmin = gw.auth.verify(given, password("superadmin"))
  local installer_password = password("installer")
  local installer = installer_password ~= nil and gw.auth.verify(given, installer_password)
  if superadmin then
    return "superadmin"
  end
  if installer then
    return "installer"
  end
  return nil
end

-- Commands ----------------------------------------------------------------------------------

local function output_word(name)
  return gw.output.get(name) == true and "ON" or "OFF"
end

local function status_text()
  local parts = {}
  for n = 1, MAX_RELAYS do
    if RELAYS[n] then
      table.insert(parts, "R" .. n .. ":" .. output_word(RELAYS[n]))
    end
  end
  for n = 1, MAX_RELAYS do
    if INPUTS[n] then
      table.insert(parts, "IN" .. n .. ":" .. (gw.input.get(INPUTS[n]) == true and "HIGH" or "LOW"))
    end
  end
  table.insert(parts, "ARM:" .. gw.text.upper(tostring(gw.alarm.state())))
  local signal = gw.modem.signal()
  table.insert(parts, "GSM:" .. (signal and (signal .. "dBm") or "?"))
  -- Disabled counts as OFF: the broker is not connected either way.
  table.insert(parts, "MQTT:" .. (gw.mqtt.status().connected and "ON" or "OFF"))
  return table.concat(parts, " ")
end

local function apn_missing()
  if gw.text.lower(tostring(cfg.link or "ethernet")) ~= "cellular" then
    return false
  end
  return cfg.apn == nil or tostring(cfg.apn) == ""
end

local function connect(sender)
  if apn_missing() then
    gw.sms.reply("Missing APN")
    return
  end
  local answered = false
  gw.mqtt.connect_for(CONNECT_SECONDS, function(ok, detail)
    answered = true
    if ok then
      gw.sms.send(sender, "Connected to " .. tostring(detail))
    else
      -- Excerpt: no message about a successful connection means it failed.
      gw.log.warn("connect# from " .. sender .. " failed: " .. tostring(detail))
    end
  end)
  if not answered then
    gw.sms.reply("Connecting…")
  end
end

-- The reply says what the panel did, from its answer (never before it).
local function arm(on, sender)
  local by = { by = "password_comma " .. sender }
  local function answered(ok, reason)
    if ok then
      gw.sms.send(sender, on and "Armed" or "Disarmed")
    else
      gw.log.info((on and "arm" or "disarm") .. " refused by the panel: " .. tostring(reason))
      gw.sms.send(sender, on and "Arming failed" or "Disarming failed")
    end
  end
  if on then
    gw.alarm.arm("away", by, answered)
  else
    gw.alarm.disarm(by, answered)
  end
end

-- `rN=on`, `rN=onT`, `rN=off` (lower case); false when it is not a valid relay command.
local function relay_command(command)
  local is_relay, rest = gw.text.starts_with(command, "r")
  local eq = is_relay and gw.text.find(rest, "=")
  if not eq then
    return false
  end
  local n = digits_in(string.sub(rest, 1, eq - 1), 1, MAX_RELAYS)
  local action = string.sub(rest, eq + 1)
  local name = n and RELAYS[n]
  if not name or gw.output.get(name) == nil then
    return false
  end
  local label = "Relay" .. n
  if action == "off" then
    gw.output.off(name)
    gw.sms.reply(label .. " deactivated.")
  elseif action == "on" then
    gw.output.on(name)
    gw.sms.reply(label .. " activated: Permanent.")
  else
    local timed, digits = gw.text.starts_with(action, "on")
    local seconds = timed and digits_in(digits, MIN_ON_SECONDS, MAX_ON_SECONDS)
    if not seconds then
      return false
    end
    gw.output.on(name, seconds)
    gw.sms.reply(label .. " activated: " .. seconds .. " sec.")
  end
  return true
end

local function acceptable_password(new)
  local length = utf8.len(new)
  if length == nil or length < MIN_PASSWORD or length > MAX_PASSWORD then
    return false
  end
  for _, code in utf8.codes(new) do
    local char = utf8.char(code)
    -- `,` cannot occur (it would be a second field); `#` ends the message.
    if char == "#" or gw.text.trim(char) == "" then
      return false
    end
  end
  return true
end

local function change_password(role, new)
  gw.sms.secret(new)
  if not acceptable_password(new) then
    return false
  end
  gw.store.set(role .. "_password", gw.auth.hash(new))
  gw.log.info(role .. " password changed by SMS")
  gw.sms.reply("Password changed")
  return true
end

-- Parsing -----------------------------------------------------------------------------------

local OUR_WORDS = { connect = true, status = true, arm = true, disarm = true }

-- True when `word` (lower case, the text before any `=`) names one of our commands.
local function our_word(command)
  local eq = gw.text.find(command, "=")
  local word = eq and string.sub(command, 1, eq - 1) or command
  if OUR_WORDS[word] or word == "pwd" then
    return true
  end
  local is_relay, n = gw.text.starts_with(word, "r")
  return is_relay and digits_in(n, 0, 1000000000) ~= nil
end

-- The shape of a message (see the top of the file):
--   "password", given, command  -- `<given>,<command>#`
--   "bare", nil, command        -- `<command>#`
--   nil                         -- not this dialect
local function shape(text)
  if string.sub(text, -1) ~= "#" then
    return nil
  end
  local body = string.sub(text, 1, -2)
  local parts = gw.text.split(body, ",", { trim = false, max = 3 })
  if #parts == 1 then
    return "bare", nil, gw.text.trim(body)
  elseif #parts == 2 then
    return "password", parts[1], gw.text.trim(parts[2])
  end
  return nil
end

local function on_sms(msg)
  local kind, given, command = shape(msg.text)
  if kind == nil then
    return false
  end
  if given ~= nil and given ~= "" then
    gw.sms.secret(given)
  end
  local lower = gw.text.lower(command)
  if kind == "bare" and not our_word(lower) then
    return false
  end
  -- A locked-out sender (or one the gateway-wide failure budget shuts out) gets nothing,
  -- and its password is not even checked.
  if gw.auth.locked(msg.from) then
    return true
  end
  local role = kind == "password" and role_of(given) or nil
  if role == nil then
    if kind == "password" then
      gw.auth.fail(msg.from)
    end
    gw.log.info("password-comma command with a wrong or missing password from " .. msg.from)
    if known_sender(msg.from) then
      gw.sms.reply("Wrong password")
    end
    return true
  end
  local done = true
  if lower == "connect" then
    connect(msg.from)
  elseif lower == "status" then
    gw.sms.reply(status_text())
  elseif lower == "arm" or lower == "disarm" then
    arm(lower == "arm", msg.from)
  else
    local is_pwd, new = gw.text.starts_with(command, "pwd=", true)
    if is_pwd then
      -- The new password keeps its case: only the command word is case-insensitive.
      done = change_password(role, new)
    else
      done = relay_command(lower)
    end
  end
  if not done then
    gw.sms.reply(SYNTAX_ERROR)
  end
  return true
end

-- Config mistakes show at load time rather than on the first SMS.
for n, name in pairs(RELAYS) do
  if gw.output.get(name) == nil then
    gw.log.error("relay" .. n .. " = '" .. name .. "' is not a gateway output: r" .. n .. "= commands get SYNTAX ERROR!")
  end
end
for n, name in pairs(INPUTS) do
  if gw.input.get(name) == nil then
    gw.log.warn("input" .. n .. " = '" .. name .. "' is not a gateway input: STATUS reports it LOW")
  end
end

return {
  sms = on_sms,
}
