-- password-comma dialect: the SMS language of the TELL ECOLINE PRO / Pager4 family,
-- `<password>,<command>[,<arg>...]#`. Spec: shared/dialects/password-comma.md; where it
-- disagrees with its seed excerpt, the excerpt wins.
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
-- Chosen behaviours where the manuals are silent:
--   * The grammar is claimed only when the text ends with `#` and either the password is
--     right (then anything unknown is `SYNTAX ERROR!`) or the command word is one of ours
--     (connect, status, arm, disarm, rN=…, pwd=…). So a wrong password with someone else's
--     command (`PC,CRE,*100#`, a David programming SMS) is left to the other dialects.
--   * A wrong, empty or missing password on one of our commands is handled silently, counts
--     towards the sender's lock-out (gw.auth.fail), and earns `Wrong password` only for the
--     `known` numbers.
--   * `pwd=<new>` (4–16 characters, no `,` `#` or spaces) changes the password that was used
--     (superadmin or installer), persisted; reply `Password changed`.
--   * `connect#`: `Connecting…` is not sent when the broker answers at once (the `always`
--     mode, already connected: the host calls back within `connect_for`).
--   * STATUS: relays as `R<n>:ON|OFF`, inputs as `IN<n>:HIGH|LOW` (input ON = HIGH, like the
--     CALL/REJECT/CONN dialect), `GSM:?` when the signal is unknown, `MQTT:ON|OFF` from
--     gw.mqtt.status() (OFF also when MQTT is disabled).
--   * `rN=onT` takes 1–3600 s; `r1=on0`, `r1=on3601` and unconfigured relays are
--     `SYNTAX ERROR!`.

local MAX_RELAYS = 8
local MIN_ON_SECONDS = 1
local MAX_ON_SECONDS = 3600
local DEFAULT_CONNECT_SECONDS = 600
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

-- Passwords ---------------------------------------------------------------------------------

-- The password in force for `role`: one changed by SMS wins over the config's.
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

-- "superadmin", "installer" or nil. Both comparisons always run, in constant time, so the
-- reply time does not tell which one was close.
local function role_of(given)
  if given == nil or given == "" then
    return nil
  end
  local superadmin = gw.auth.check(given, password("superadmin"))
  local installer_password = password("installer")
  local installer = false
  if installer_password ~= nil then
    installer = gw.auth.check(given, installer_password)
  end
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
  table.insert(parts, "ARM:" .. string.upper(tostring(gw.alarm.state())))
  local signal = gw.modem.signal()
  table.insert(parts, "GSM:" .. (signal and (signal .. "dBm") or "?"))
  -- Disabled counts as OFF: the broker is not connected either way.
  table.insert(parts, "MQTT:" .. (gw.mqtt.status().connected and "ON" or "OFF"))
  return table.concat(parts, " ")
end

local function apn_missing()
  if string.lower(tostring(cfg.link or "ethernet")) ~= "cellular" then
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

local function arm(on, sender)
  local ok
  if on then
    ok = gw.alarm.arm("away", "password_comma " .. sender)
  else
    ok = gw.alarm.disarm("password_comma " .. sender)
  end
  if ok == false then
    gw.sms.reply(on and "Arming failed" or "Disarming failed")
  else
    gw.sms.reply(on and "Armed" or "Disarmed")
  end
end

-- `rN=on`, `rN=onT`, `rN=off`; false when it is not a valid relay command.
local function relay_command(command)
  local n, action = string.match(command, "^r(%d+)=(.*)$")
  n = tonumber(n)
  local name = n and RELAYS[n]
  if name == nil or gw.output.get(name) == nil then
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
    local seconds = tonumber(string.match(action, "^on(%d+)$"))
    if seconds == nil or seconds < MIN_ON_SECONDS or seconds > MAX_ON_SECONDS then
      return false
    end
    gw.output.on(name, seconds)
    gw.sms.reply(label .. " activated: " .. seconds .. " sec.")
  end
  return true
end

local function change_password(role, new)
  if new == nil or #new < 4 or #new > 16 or string.find(new, "[,#%s]") then
    return false
  end
  gw.store.set(role .. "_password", new)
  gw.log.info(role .. " password changed to *** by SMS")
  gw.sms.reply("Password changed")
  return true
end

-- Parsing -----------------------------------------------------------------------------------

local OUR_WORDS = { connect = true, status = true, arm = true, disarm = true }

-- True when `command` (lower case) names one of this dialect's commands, even malformed.
local function ours(command)
  local word = string.match(command, "^[^,=]*")
  return OUR_WORDS[word] ~= nil or string.match(word, "^r%d+$") ~= nil or word == "pwd"
end

-- `"<password>,<command>#"` → password (nil when there is no comma), command text as sent;
-- nil when the text is not this grammar.
local function parse(text)
  local body = string.match(text or "", "^%s*(.-)#%s*$")
  if body == nil then
    return nil
  end
  local given, command = string.match(body, "^([^,]*),(.*)$")
  if given == nil then
    return nil, body
  end
  return given, command
end

local function on_sms(msg)
  local given, command = parse(msg.text)
  if command == nil then
    return false
  end
  local lower = string.lower(string.match(command, "^%s*(.-)%s*$"))
  local role = role_of(given)
  if role == nil then
    if not ours(lower) then
      return false
    end
    gw.auth.fail(msg.from)
    gw.log.info("password-comma command with a wrong or missing password (***) from " .. msg.from)
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
  elseif string.sub(lower, 1, 4) == "pwd=" then
    -- The new password keeps its case: only the command word is case-insensitive.
    done = change_password(role, string.match(command, "^%s*[pP][wW][dD]=(.-)%s*$"))
  else
    done = relay_command(lower)
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
