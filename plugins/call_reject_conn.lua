-- CALL/REJECT/CONN dialect: the SMS and dial-in language of the Advent Controls "Alpha" /
-- A3.02 GSM relay board. Spec: shared/dialects/call-reject-conn.md; where it disagrees with
-- its seed excerpt, the excerpt wins.
--
-- Config (`[plugins.call_reject_conn]`):
--   relay   = "relay"          -- the gateway output driven by the board's relay
--   input   = "door"           -- the gateway input read as the board's input (input A):
--                              -- input ON = "HIGH" (open), OFF = "LOW" (closed to ground)
--   input_b = "window"         -- optional second input B, same mapping (STATUS then says
--                              -- INPUTA / INPUTB)
--   master  = "+447700900123"  -- optional first master, so no `MASTER n,imei5` is needed;
--                              -- it is always a master and cannot be removed by SMS
--
-- Words, kept exactly as the vendor uses them:
--   relay "OPEN"   = not activated = gateway output OFF;  "CLOSED" = activated = output ON
--   input "LOW"    = closed to ground;                    "HIGH"   = open (+V)
-- The gateway input's logical state maps as: input ON = "HIGH", input OFF = "LOW". Wire (or
-- set active_low on) the input so that this holds for your contact.
--
-- Authority is the caller ID alone (spoofable, like the original board; docs/security.md).
-- Numbers are compared on their last 8 digits, as the manual demands; SMS from alphanumeric
-- sender IDs and short codes never match a number (msg.sender_kind). Every master and user
-- is granted through gw.auth.grant (audited on MQTT <p>/security) and revoked with it.
-- User manual: docs/dialects/call-reject-conn.md. Chosen behaviours where the manual is silent:
--   * Authorised senders are masters, and users (type U) when MUSER ENABLE is set. Users never
--     get MASTER, REMOVEM or MUSER: those would let a user make themselves a master.
--   * STATUS and LIST answer every authorised sender (so users too under MUSER); anyone else
--     gets no reply and changes nothing, but the message is still "handled" (it is ours).
--   * TEXTRES replies follow the setting after the command: TEXTRES ENABLE is answered,
--     TEXTRES DISABLE is not. CLEAR ALL never answers. OPEN/ON/CLOSE/OFF are relay commands,
--     confirmed by ACKNOWLEDGE (`RELAY CLOSED` / `RELAY OPEN`), not by TEXTRES.
--   * `MASTER n,imei5` is the only credential-bearing shape (anything after the comma is the
--     code). From a non-master it enrols the first master only while no master exists (the
--     seed's "first master"), silently; once a master exists every such attempt from a
--     non-master is a failure (gw.auth.fail) and changes nothing. A wrong code is a failure
--     from anyone. A master may leave the code out; a wrong one is "Operation Failed" to it.
--     Right or wrong, a non-master is told nothing: there is no oracle.
--   * `OPEN`/`ON` take an optional time (`ON 10s`, `ON 2 m`); any other argument means the
--     message is not ours (return false), so "OPEN THE GATE" is left to other plugins.
--   * A number needs at least 8 digits (the matching works on 8); at most 512 entries.
--   * Masters may dial in as well as users. Under CALL DIALER the same numbers (never a
--     withheld one) switch the input alerts; the setting survives restarts.
--   * REJECT OPEN applies its rule in every relay mode: a call that activates the relay is
--     connected (answered, then hung up after 5 s), one that deactivates it is rejected.
--     PULSE and RING always activate.
--   * Defaults: CALL LIST, REJECT NONE, CONN NO, RLYMODE PULSE, RLYTIME 3s, INPUT TEXT,
--     INLEVEL BOTH, ACKNOWLEDGE DIS, TEXTRES DISABLE, MUSER DISABLE, input alerts on.
--   * Input alerts are `INPUT HIGH` / `INPUT LOW` (`INPUTA …` / `INPUTB …` with two inputs).

local MAX_NUMBERS = 512
local MATCH_DIGITS = 8
local CONNECTED_CALL_SECONDS = 5
local SMS_MAX = 160
local OK_TEXT = "Operation Successful"
local FAILED_TEXT = "Operation Failed"

local DEFAULTS = {
  call = "LIST",
  reject = "NONE",
  conn = "NO",
  rlymode = "PULSE",
  rlytime = 3,
  input_mode = "TEXT",
  inlevel = "BOTH",
  ack = false,
  textres = false,
  muser = false,
  alerts_on = true,
}

local cfg = gw.config or {}
local RELAY = cfg.relay or "relay"
local INPUT_A = cfg.input or "door"
local INPUT_B = cfg.input_b

-- Hang-up timers of connected calls, by call id. A reload drops them (the host cancels an old
-- generation's timers), so such a call then lasts until the caller hangs up. The call that
-- holds the relay in RING mode is kept in the store instead ("ring_call"), so that a reload
-- while it rings still switches the relay off when it ends.
local hangup_timers = {}

-- Settings ---------------------------------------------------------------------------------

-- Read through to the store on every use, so that a reload or restart sees the same settings.
local function setting(key)
  local value = gw.store.get(key)
  if value == nil then
    return DEFAULTS[key]
  end
  return value
end

local function set_setting(key, value)
  gw.store.set(key, value)
end

-- Numbers ----------------------------------------------------------------------------------

-- Entries are `{t = "M"|"U"|"T"|"C", n = "<normalised number>"}`.
local function numbers()
  local list = gw.store.get("numbers")
  if type(list) ~= "table" then
    return {}
  end
  return list
end

local function save_numbers(list)
  gw.store.set("numbers", list)
end

-- Stored numbers are normalised (`+` and digits, or digits): their last characters are digits.
local function last8(number)
  return string.sub(number or "", -MATCH_DIGITS)
end

-- True when `text` is one or more ASCII digits and nothing else (a loop: linear, no pattern).
local function all_digits(text)
  if text == nil or #text == 0 then
    return false
  end
  for i = 1, #text do
    local b = string.byte(text, i)
    if b < 48 or b > 57 then
      return false
    end
  end
  return true
end

local function same_number(a, b)
  if a == nil or b == nil then
    return false
  end
  return gw.phone.same_last_digits(a, b, MATCH_DIGITS)
end

-- Accepts what the grammar allows for a number: an optional `+` then digits, no spaces.
local function valid_number(text)
  if text == nil then
    return nil
  end
  local digits = text
  if string.sub(text, 1, 1) == "+" then
    digits = string.sub(text, 2)
  end
  if not all_digits(digits) or #digits < MATCH_DIGITS or #digits > 20 then
    return nil
  end
  return gw.phone.normalise(text)
end

-- The master from the config, normalised; nil when none or not a usable number.
local CONFIG_MASTER = nil
if cfg.master ~= nil then
  CONFIG_MASTER = valid_number(gw.phone.normalise(tostring(cfg.master)))
end

local function has_type(number, kind)
  if number == nil then
    return false
  end
  if kind == "M" and CONFIG_MASTER and same_number(number, CONFIG_MASTER) then
    return true
  end
  for _, entry in ipairs(numbers()) do
    if entry.t == kind and same_number(entry.n, number) then
      return true
    end
  end
  return false
end

local function is_master(number)
  return has_type(number, "M")
end

local function is_user(number)
  return has_type(number, "U")
end

local function has_master()
  if CONFIG_MASTER then
    return true
  end
  for _, entry in ipairs(numbers()) do
    if entry.t == "M" then
      return true
    end
  end
  return false
end

-- Masters and users hold authority: the host records them (gw.auth.grant), publishes each
-- grant and protects them from lock-out campaigns. Text and call numbers only get alerts.
local ROLES = { M = "master", U = "user" }

local function grant(kind, number)
  local role = ROLES[kind]
  if role then
    gw.auth.grant(number, role)
  end
end

local function revoke(kind, number)
  local role = ROLES[kind]
  if role then
    gw.auth.revoke(number, role)
  end
end

local function add_number(kind, text)
  local number = valid_number(text)
  if number == nil then
    return false
  end
  local list = numbers()
  for _, entry in ipairs(list) do
    if entry.t == kind and same_number(entry.n, number) then
      return true
    end
  end
  if #list >= MAX_NUMBERS then
    gw.log.warn("number list full (" .. MAX_NUMBERS .. "), not adding")
    return false
  end
  table.insert(list, { t = kind, n = number })
  save_numbers(list)
  grant(kind, number)
  return true
end

local function remove_number(kind, text)
  local number = valid_number(text)
  if number == nil then
    return false
  end
  if kind == "M" and CONFIG_MASTER and same_number(number, CONFIG_MASTER) then
    -- The configured master comes back on every load, so removing it by SMS cannot work.
    return false
  end
  local kept, removed = {}, false
  for _, entry in ipairs(numbers()) do
    if entry.t == kind and same_number(entry.n, number) then
      removed = true
      revoke(kind, entry.n)
    else
      table.insert(kept, entry)
    end
  end
  if removed then
    save_numbers(kept)
  end
  return removed
end

local function clear_all()
  local kept = {}
  for _, entry in ipairs(numbers()) do
    if entry.t == "M" then
      table.insert(kept, entry)
    else
      revoke(entry.t, entry.n)
    end
  end
  save_numbers(kept)
end

local function list_tokens()
  local tokens = {}
  local configured = CONFIG_MASTER
  if configured then
    table.insert(tokens, "M" .. last8(configured))
  end
  for _, entry in ipairs(numbers()) do
    if not (entry.t == "M" and configured and same_number(entry.n, configured)) then
      table.insert(tokens, entry.t .. last8(entry.n))
    end
  end
  return tokens
end

-- Splits on token boundaries so that no SMS is longer than SMS_MAX characters.
local function split_messages(tokens)
  local messages, current = {}, ""
  for _, token in ipairs(tokens) do
    if current == "" then
      current = token
    elseif #current + 1 + #token <= SMS_MAX then
      current = current .. " " .. token
    else
      table.insert(messages, current)
      current = token
    end
  end
  if current ~= "" then
    table.insert(messages, current)
  end
  return messages
end

-- Relay and inputs -------------------------------------------------------------------------

local function relay_word(on)
  if on then
    return "CLOSED"
  end
  return "OPEN"
end

local function input_word(on)
  if on then
    return "HIGH"
  end
  return "LOW"
end

local function input_on(name)
  local on = gw.input.get(name)
  if on == nil then
    gw.log.warn("input '" .. tostring(name) .. "' is unknown, reported as LOW")
    return false
  end
  return on
end

local function status_text()
  local text = "RELAY " .. relay_word(gw.output.get(RELAY) == true)
  if INPUT_B then
    return text .. " INPUTA " .. input_word(input_on(INPUT_A)) .. " INPUTB " .. input_word(input_on(INPUT_B))
  end
  return text .. " INPUT " .. input_word(input_on(INPUT_A))
end

-- The count and unit of `n`, `ns`, `nm` (also `n s`, `n m`; `text` upper case), or nil.
local function duration_parts(text)
  if text == nil then
    return nil
  end
  local unit = string.sub(text, -1)
  local number = text
  if unit == "S" or unit == "M" then
    number = gw.text.trim(string.sub(text, 1, -2))
  else
    unit = "S"
  end
  if not all_digits(number) then
    return nil
  end
  return number, unit
end

-- `n`, `ns`, `nm` (also `n s`, `n m`), n in 1..999 → seconds, or nil. `text` is upper case.
local function parse_duration(text)
  local number, unit = duration_parts(text)
  if number == nil then
    return nil
  end
  local count = gw.text.int(number, 1, 999)
  if count == nil then
    return nil
  end
  if unit == "M" then
    return count * 60
  end
  return count
end

-- Commands ---------------------------------------------------------------------------------

-- Each handler gets (argument text in upper case, argument as sent, sender) and returns true
-- on success, false on failure; `reply = "textres"` handlers are confirmed when TEXTRES is on.
local function choice(key, allowed)
  return function(arg)
    local value = allowed[arg or ""]
    if value == nil then
      return false
    end
    set_setting(key, value)
    return true
  end
end

local function flag(key, on_word, off_word)
  return function(arg)
    if arg == on_word then
      set_setting(key, true)
    elseif arg == off_word then
      set_setting(key, false)
    else
      return false
    end
    return true
  end
end

local function number_command(action, kind)
  return function(_, raw)
    return action(kind, raw)
  end
end

local function acknowledge(on)
  if setting("ack") then
    gw.sms.reply("RELAY " .. relay_word(on))
  end
end

local function relay_on(arg)
  local seconds = nil
  if arg ~= nil then
    seconds = parse_duration(arg)
    if seconds == nil then
      return false
    end
  end
  gw.output.on(RELAY, seconds)
  acknowledge(true)
  return true
end

local function relay_off(arg)
  if arg ~= nil then
    return false
  end
  gw.output.off(RELAY)
  acknowledge(false)
  return true
end

-- `MASTER n[,code]`: returns true/false (added or not) for a master, nil when a non-master
-- is to be told nothing. Counts a failure for every code that is not accepted.
local function master_command(_, raw, sender)
  local parts = gw.text.split(raw or "", ",", { max = 2 })
  local number, code = parts[1], parts[2]
  local master = is_master(sender)
  if code == nil then
    -- No credential: only a master may add a master.
    if not master then
      return nil
    end
    return add_number("M", number)
  end
  -- The code is the IMEI's secret: masked in logs, MQTT and the stored inbox row.
  if code ~= "" then
    gw.sms.secret(code)
  end
  if not master and gw.auth.locked(sender) then
    -- Locked out, or the gateway-wide budget is spent: not even checked.
    return nil
  end
  local imei = gw.modem.imei()
  local expected = imei and #imei >= 5 and string.sub(imei, -5) or nil
  local right = expected ~= nil and gw.auth.check(code, expected)
  if not master and has_master() then
    -- The IMEI path enrols the first master only; once there is one, a stranger's attempt
    -- is a failure whatever the code (so that right and wrong look alike).
    gw.auth.fail(sender)
    gw.log.warn("MASTER with an IMEI code (***) from non-master " .. tostring(sender) .. " refused: masters exist")
    return nil
  end
  if not right then
    if expected == nil then
      gw.log.warn("MASTER with an IMEI code from " .. tostring(sender) .. " not checked: the modem has not reported its IMEI")
    else
      gw.auth.fail(sender)
      -- Neither the code nor the attempt's digits are logged.
      gw.log.warn("MASTER with a wrong IMEI code (***) from " .. tostring(sender))
    end
    if master then
      return false
    end
    return nil
  end
  local added = add_number("M", number)
  if added and not master then
    gw.log.warn("first master " .. tostring(valid_number(number)) .. " enrolled with the IMEI code by " .. tostring(sender))
  end
  if master then
    return added
  end
  return nil
end

-- `who`: "master" = masters only; "authorised" = masters, and users under MUSER;
-- `reply`: "textres" (confirmed when TEXTRES is on), "none", or "self" (answers itself).
local COMMANDS = {
  MASTER = { run = master_command, who = "imei", reply = "textres", arg = true },
  ADD = { run = number_command(add_number, "U"), who = "authorised", reply = "textres", arg = true },
  REMOVE = { run = number_command(remove_number, "U"), who = "authorised", reply = "textres", arg = true },
  REMOVEM = { run = number_command(remove_number, "M"), who = "master", reply = "textres", arg = true },
  REMOVET = { run = number_command(remove_number, "T"), who = "authorised", reply = "textres", arg = true },
  REMOVEC = { run = number_command(remove_number, "C"), who = "authorised", reply = "textres", arg = true },
  TEXTNUM = { run = number_command(add_number, "T"), who = "authorised", reply = "textres", arg = true },
  CALLNUM = { run = number_command(add_number, "C"), who = "authorised", reply = "textres", arg = true },
  CALL = {
    run = choice("call", { ANY = "ANY", LIST = "LIST", NONE = "NONE", DIALER = "DIALER" }),
    who = "authorised", reply = "textres", arg = true,
  },
  REJECT = {
    run = choice("reject", { ALL = "ALL", OPEN = "OPEN", NONE = "NONE" }),
    who = "authorised", reply = "textres", arg = true,
  },
  CONN = {
    run = choice("conn", { CL = "CL", OP = "OP", NO = "NO", NONE = "NO" }),
    who = "authorised", reply = "textres", arg = true,
  },
  RLYMODE = {
    run = choice("rlymode", { PULSE = "PULSE", TOGGLE = "TOGGLE", RING = "RING" }),
    who = "authorised", reply = "textres", arg = true,
  },
  RLYTIME = {
    run = function(arg)
      local seconds = parse_duration(arg)
      if seconds == nil then
        return false
      end
      set_setting("rlytime", seconds)
      return true
    end,
    who = "authorised", reply = "textres", arg = true,
  },
  INPUT = {
    run = choice("input_mode", { AUTO = "AUTO", TEXT = "TEXT", BOTH = "BOTH", DISABLE = "DISABLE" }),
    who = "authorised", reply = "textres", arg = true,
  },
  INLEVEL = {
    run = choice("inlevel", { CLOSED = "CLOSED", OPEN = "OPEN", BOTH = "BOTH" }),
    who = "authorised", reply = "textres", arg = true,
  },
  ACKNOWLEDGE = { run = flag("ack", "EN", "DIS"), who = "authorised", reply = "textres", arg = true },
  TEXTRES = { run = flag("textres", "ENABLE", "DISABLE"), who = "authorised", reply = "textres", arg = true },
  MUSER = { run = flag("muser", "ENABLE", "DISABLE"), who = "master", reply = "textres", arg = true },
  OPEN = { run = relay_on, who = "authorised", reply = "none", arg = "optional" },
  ON = { run = relay_on, who = "authorised", reply = "none", arg = "optional" },
  CLOSE = { run = relay_off, who = "authorised", reply = "none", arg = false },
  OFF = { run = relay_off, who = "authorised", reply = "none", arg = false },
  STATUS = {
    run = function()
      gw.sms.reply(status_text())
      return true
    end,
    who = "authorised", reply = "self", arg = false,
  },
  LIST = {
    run = function()
      local messages = split_messages(list_tokens())
      if #messages == 0 then
        gw.sms.reply("NO NUMBERS")
      end
      for _, text in ipairs(messages) do
        gw.sms.reply(text)
      end
      return true
    end,
    who = "authorised", reply = "self", arg = false,
  },
}

local REAL_NUMBER = { international = true, national = true }

-- Authority by caller ID needs a real number: an alphanumeric sender ID (free to choose at
-- a bulk-SMS service, digits included) or a short code is never a master or a user.
local function authorised(sender, who, kind)
  if kind ~= nil and not REAL_NUMBER[kind] then
    return false
  end
  if is_master(sender) then
    return true
  end
  return who == "authorised" and setting("muser") and is_user(sender)
end

-- Splits `text` into the command word and its argument (nil when there is none). Returns nil
-- when the text is not this dialect's grammar. gw.text only: linear in the text's length.
local function parse(text)
  local trimmed = gw.text.trim(text or "")
  if string.sub(trimmed, -1) == "." then
    trimmed = gw.text.trim(string.sub(trimmed, 1, -2))
  end
  local parts = gw.text.split(trimmed, " ", { max = 2, keep_empty = false })
  local word, rest = parts[1], parts[2]
  if word == nil then
    return nil
  end
  word = gw.text.upper(word)
  if word == "CLEAR" then
    if rest ~= nil and gw.text.upper(rest) == "ALL" then
      return "CLEAR ALL", nil, nil
    end
    return nil
  end
  local command = COMMANDS[word]
  if command == nil then
    return nil
  end
  if rest == "" then
    rest = nil
  end
  if command.arg == true and rest == nil then
    return nil
  end
  if command.arg == false and rest ~= nil then
    return nil
  end
  local upper = rest and gw.text.upper(rest)
  if command.arg == "optional" and upper ~= nil and duration_parts(upper) == nil then
    -- "OPEN THE GATE" is someone else's sentence, not a relay time.
    return nil
  end
  return word, upper, rest
end

local function on_sms(msg)
  local word, arg, raw = parse(msg.text)
  if word == nil then
    return false
  end
  local sender = msg.from
  local kind = msg.sender_kind
  if word == "CLEAR ALL" then
    if authorised(sender, "authorised", kind) then
      clear_all()
      gw.log.info("CLEAR ALL by " .. tostring(sender))
    end
    return true
  end
  local command = COMMANDS[word]
  local ok
  if command.who == "imei" then
    ok = command.run(arg, raw, sender)
    if ok == nil or not authorised(sender, "master", kind) then
      -- Whoever proves the IMEI may enrol the first master, but is told nothing.
      return true
    end
  elseif authorised(sender, command.who, kind) then
    ok = command.run(arg, raw, sender)
  else
    gw.log.info(word .. " from an unauthorised sender " .. tostring(sender) .. " ignored")
    return true
  end
  if not ok then
    gw.log.info(word .. " from " .. tostring(sender) .. " failed: bad argument or nothing to change")
  end
  if command.reply == "textres" and setting("textres") then
    gw.sms.reply(ok and OK_TEXT or FAILED_TEXT)
  end
  return true
end

-- Dial-in ----------------------------------------------------------------------------------

local function caller_allowed(from, mode)
  if mode == "ANY" then
    return true
  end
  if mode == "NONE" or from == nil then
    -- Withheld numbers are never authorised by caller ID, except with CALL ANY.
    return false
  end
  return is_master(from) or is_user(from)
end

local function connect(call)
  gw.call.answer(call.id)
  hangup_timers[call.id] = gw.timer.after(CONNECTED_CALL_SECONDS, function()
    hangup_timers[call.id] = nil
    gw.call.hangup(call.id)
  end)
end

-- Returns true when the call switches the relay on, false when it switches it off.
local function drive_relay(call)
  local mode = setting("rlymode")
  if mode == "TOGGLE" then
    local on = not (gw.output.get(RELAY) == true)
    gw.output.set(RELAY, on)
    return on
  elseif mode == "RING" then
    gw.store.set("ring_call", call.id)
    gw.output.on(RELAY)
    return true
  end
  gw.output.pulse(RELAY, setting("rlytime"))
  return true
end

local function dialer_call(call)
  local alerts_on = not setting("alerts_on")
  set_setting("alerts_on", alerts_on)
  gw.log.info("input alerts " .. (alerts_on and "enabled" or "disabled") .. " by a call")
  if not alerts_on then
    gw.call.reject(call.id)
  end
end

local function on_call(call)
  local mode = setting("call")
  if mode == "DIALER" then
    if not caller_allowed(call.from, "LIST") then
      return false
    end
    dialer_call(call)
    return true
  end
  if not caller_allowed(call.from, mode) then
    return false
  end
  local activated = drive_relay(call)
  local reject = setting("reject")
  if reject == "ALL" or (reject == "OPEN" and not activated) then
    gw.call.reject(call.id)
    return true
  end
  if reject == "OPEN" then
    connect(call)
    return true
  end
  local conn = setting("conn")
  local high = input_on(INPUT_A)
  if (conn == "CL" and high) or (conn == "OP" and not high) then
    connect(call)
  end
  return true
end

local function on_call_ended(call)
  local timer = hangup_timers[call.id]
  if timer ~= nil then
    gw.timer.cancel(timer)
    hangup_timers[call.id] = nil
  end
  if gw.store.get("ring_call") == call.id then
    gw.store.set("ring_call", nil)
    gw.output.off(RELAY)
  end
end

-- Input alerts -----------------------------------------------------------------------------

local function alert_text(name, on)
  local label = "INPUT"
  if INPUT_B then
    label = (name == INPUT_B) and "INPUTB" or "INPUTA"
  end
  return label .. " " .. input_word(on)
end

local function on_input(ev)
  if ev.name ~= INPUT_A and (INPUT_B == nil or ev.name ~= INPUT_B) then
    return
  end
  local level = setting("inlevel")
  -- INLEVEL names the contact: CLOSED = went LOW (input OFF), OPEN = went HIGH (input ON).
  if (level == "CLOSED" and ev.on) or (level == "OPEN" and not ev.on) then
    return
  end
  local mode = setting("input_mode")
  if mode == "DISABLE" or not setting("alerts_on") then
    return
  end
  local text = alert_text(ev.name, ev.on)
  for _, entry in ipairs(numbers()) do
    if entry.t == "T" and (mode == "TEXT" or mode == "BOTH") then
      gw.sms.send(entry.n, text)
    elseif entry.t == "C" and (mode == "AUTO" or mode == "BOTH") then
      -- The gateway has no outgoing-call API yet, so alert calls cannot be placed.
      gw.log.warn("alert call to " .. entry.n .. " skipped: outgoing calls are not supported")
    end
  end
end

-- Config mistakes show at load time rather than on the first call at the gate.
if gw.output.get(RELAY) == nil then
  gw.log.error("relay output '" .. tostring(RELAY) .. "' does not exist: set `relay` in the plugin config")
end
if gw.input.get(INPUT_A) == nil then
  gw.log.warn("input '" .. tostring(INPUT_A) .. "' does not exist: STATUS will report it LOW")
end
if cfg.master ~= nil and CONFIG_MASTER == nil then
  gw.log.error("config master '" .. tostring(cfg.master) .. "' is not a number with at least 8 digits, ignored")
end

-- Grants made before the host recorded them (an older version, the config master) are
-- recorded once at load; granting again is a no-op and is not published again.
local function init()
  if CONFIG_MASTER then
    gw.auth.grant(CONFIG_MASTER, "master")
  end
  for _, entry in ipairs(numbers()) do
    grant(entry.t, entry.n)
  end
end

return {
  init = init,
  sms = on_sms,
  call = on_call,
  call_ended = on_call_ended,
  input = on_input,
}
