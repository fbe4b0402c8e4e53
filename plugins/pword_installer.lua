-- P-Word/installer dialect: the SMS language of the Climax VST-2745 / VST-2752 alarm panels,
-- `<P-Word> <Code> <COMMAND>:<p1>,<p2>,...`. Spec: shared/dialects/pword-installer.md; where
-- it disagrees with its seed excerpt, the excerpt wins. User manual:
-- docs/dialects/pword-installer.md.
--
-- Config (`[plugins.pword_installer]`), factory defaults that an SMS may change:
--   pword = "PROG"           -- the P-Word (PWRD changes it)
--   installer_code = "7982"  -- the installer code (INST changes it)
--
-- Which messages carry a credential (issue 11, "no free guesses"): the shape alone decides,
-- never whether the P-Word or code is right. A message is ours when it is
-- `<P-Word> <Code> <CMD>:<params>`: three fields separated by single spaces, the code all
-- digits, the third field holding a `:` with a command word before it that has no space.
-- Every such message carries the P-Word and the code; if either is wrong, that is one failure
-- for the sender (gw.auth.fail) whatever the command, handled in silence, changing nothing.
-- Any other text is left to other dialects whatever it holds (with the right P-Word and code
-- it would get no answer either).
--
-- Chosen behaviours where the manuals are silent:
--   * The P-Word is a keyword: compared without regard to case (`prog 7982 mode:d` works).
--     Codes and PINs are compared exactly, in constant time (gw.auth.verify).
--   * P-Word, installer code, user PINs and the APN password set by SMS are stored as
--     salted hashes (gw.auth.hash); the config's factory values are clear.
--   * No user PINs by factory default; PIN? and every programming command need the
--     installer code. A user PIN on a programming command gets `<CMD>:ERROR`.
--   * USRS takes 2 to 4 parameters (the excerpt's `USRS:1,1234,JOHN` succeeds): a missing
--     or blank PIN or latch means "no change", a blank name clears it, a missing name keeps
--     it. A new user needs a PIN. A PIN may not equal the installer code or another user's
--     PIN (the code alone says who is acting). INST may not equal a user PIN either.
--   * USRD of a user that is not set is OK. RPEX: a blank number clears the slot, a blank
--     level keeps the slot's level (0 for a new slot); the number must be a real phone
--     number (gw.auth.grant accepts it), else RPEX:ERROR. GAPN: each blank field is cleared.
--   * Authority changes are audited (gw.auth.grant/revoke): an RPEX number is granted
--     "report" (revoked when its slot is cleared or changed); USRS grants "user <n>" to the
--     number that set the PIN (a PIN user has no number of its own; revoked by USRD);
--     INST and PWRD grant "installer" to the number that sent them.
--   * MODE replies from the panel's answer: `MODE:OK` once it accepted, `MODE:ERROR` when it
--     refused (zone open, code required, busy) — the manual's only failure wording.
--   * MOD? answers `MODE?A` for armed away and for arming, pending and triggered.
--   * PIN? lists all ten users as `(n,name,latch)`, PINs never.
--   * Alarm reports (the `alarm` hook): when the panel triggers, RPEX numbers of level 0
--     or 1 get `ALARM ZONE <zone>`; when a user with latch report on arms or disarms by
--     SMS, RPEX numbers of level 0 or 2 get `ARMED AWAY BY <name>` (or `ARMED HOME`,
--     `DISARMED`; the name is `USER<n>` when the user has none).
--
-- Parsing uses gw.text only (linear in the text), never a Lua pattern.

local USERS = 10
local RPEX_SLOTS = 8
local MAX_NAME = 10
local MAX_PWORD = 15
local MAX_APN_FIELD = 63
local BY_PREFIX = "pword_installer user "

local cfg = gw.config or {}

-- Text helpers (no Lua patterns) ------------------------------------------------------------

local function all_digits(text)
  if text == nil or text == "" then
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

local function integer_in(text, low, high)
  if not all_digits(text) then
    return nil
  end
  return gw.text.int(text, low, high)
end

local function valid_code(text)
  return all_digits(text) and #text >= 4 and #text <= 6
end

local function is_hash(stored)
  return (gw.text.starts_with(stored, "$argon2"))
end

-- Settings ----------------------------------------------------------------------------------

-- The P-Word to verify an upper-cased guess against: the stored hash of the upper-cased
-- P-Word, or the config's (or an older clear stored one) upper-cased.
local function pword_secret()
  local stored = gw.store.get("pword")
  if type(stored) == "string" then
    return is_hash(stored) and stored or gw.text.upper(stored)
  end
  return gw.text.upper(tostring(cfg.pword or "PROG"))
end

local function installer_code()
  local stored = gw.store.get("installer_code")
  if type(stored) == "string" then
    return stored
  end
  return tostring(cfg.installer_code or "7982")
end

-- Tables keyed by the number as a string ("1" … "10"), so the store keeps them as objects.
local function table_setting(key)
  local value = gw.store.get(key)
  if type(value) ~= "table" then
    return {}
  end
  return value
end

local function users()
  return table_setting("users")
end

local function rpex()
  return table_setting("rpex")
end

-- Authority ---------------------------------------------------------------------------------

-- "installer", the user number, or nil. Each comparison is constant-time; it stops at the
-- first match because every stored code set by SMS is an argon2 hash (tens of milliseconds
-- each on a Pi), and a call has lua.call_deadline_ms.
local function authority(code)
  if gw.auth.verify(code, installer_code()) then
    return "installer"
  end
  for n, user in pairs(users()) do
    if type(user.pin) == "string" and gw.auth.verify(code, user.pin) then
      return tonumber(n)
    end
  end
  return nil
end

local function by_of(who)
  if who == "installer" then
    return "pword_installer installer"
  end
  return BY_PREFIX .. who
end

-- Parameters --------------------------------------------------------------------------------

-- Splits on every comma, keeping blanks: "1,,3" → {"1", "", "3"}; "" → {}.
local function split_params(text)
  if text == "" then
    return {}
  end
  return gw.text.split(text, ",", { trim = false })
end

-- True when `pin` is the installer code or the PIN of a user other than `except_user`.
local function pin_taken(pin, except_user)
  local taken = gw.auth.verify(pin, installer_code())
  for n, user in pairs(users()) do
    if tonumber(n) ~= except_user and type(user.pin) == "string" and gw.auth.verify(pin, user.pin) then
      taken = true
    end
  end
  return taken
end

-- Commands ----------------------------------------------------------------------------------
-- Each gets (params, who, sender) and returns true (OK), false (ERROR), a reply text of its
-- own, or the function that replies later (from the alarm panel's answer).

local function mode(params, who, sender)
  if #params ~= 1 then
    return false
  end
  local letter = gw.text.upper(params[1])
  local opts = { by = by_of(who) }
  local function answered(ok, reason)
    if not ok then
      gw.log.info("MODE:" .. letter .. " refused by the panel: " .. tostring(reason))
    end
    gw.sms.send(sender, ok and "MODE:OK" or "MODE:ERROR")
  end
  if letter == "A" then
    gw.alarm.arm("away", opts, answered)
  elseif letter == "H" then
    gw.alarm.arm("home", opts, answered)
  elseif letter == "D" then
    gw.alarm.disarm(opts, answered)
  else
    return false
  end
  return answered
end

local MODE_LETTERS = {
  disarmed = "D",
  armed_home = "H",
  armed_away = "A",
  arming = "A",
  pending = "A",
  triggered = "A",
}

local function mode_query(params)
  if #params > 1 or (params[1] ~= nil and params[1] ~= "") then
    return false
  end
  return "MODE?" .. (MODE_LETTERS[tostring(gw.alarm.state())] or "D")
end

local function set_user(params, _, sender)
  if #params < 2 or #params > 4 then
    return false
  end
  local n = integer_in(params[1], 1, USERS)
  if n == nil then
    return false
  end
  local list = users()
  local user = list[tostring(n)] or { name = "", latch = 0 }
  local pin, name, latch = params[2], params[3], params[4]
  if pin ~= "" then
    gw.sms.secret(pin)
    if not valid_code(pin) or pin_taken(pin, n) then
      return false
    end
  elseif user.pin == nil then
    return false
  end
  if name ~= nil then
    local length = utf8.len(name)
    if length == nil or length > MAX_NAME then
      return false
    end
    user.name = name
  end
  if latch ~= nil and latch ~= "" then
    if latch ~= "0" and latch ~= "1" then
      return false
    end
    user.latch = tonumber(latch)
  end
  if pin ~= "" then
    user.pin = gw.auth.hash(pin)
    local role = "user " .. n
    if user.granted_by ~= nil and not gw.phone.same(user.granted_by, sender) then
      gw.auth.revoke(user.granted_by, role)
    end
    if gw.auth.grant(sender, role) then
      user.granted_by = sender
    else
      user.granted_by = nil
    end
  end
  list[tostring(n)] = user
  gw.store.set("users", list)
  gw.log.info("user " .. n .. " set: name '" .. user.name .. "', latch " .. string.format("%d", user.latch))
  return true
end

local function delete_user(params)
  local n = #params == 1 and integer_in(params[1], 2, USERS)
  if not n then
    return false
  end
  local list = users()
  local user = list[tostring(n)]
  if user ~= nil then
    if user.granted_by ~= nil then
      gw.auth.revoke(user.granted_by, "user " .. n)
    end
    list[tostring(n)] = nil
    gw.store.set("users", list)
  end
  return true
end

local function list_users(params)
  if #params > 1 or (params[1] ~= nil and params[1] ~= "") then
    return false
  end
  local list = users()
  local parts = {}
  for n = 1, USERS do
    local user = list[tostring(n)] or {}
    table.insert(parts, "(" .. n .. "," .. (user.name or "") .. "," .. string.format("%d", user.latch or 0) .. ")")
  end
  return table.concat(parts, ",")
end

-- True when `number` is in an RPEX slot other than `except`.
local function reported_elsewhere(list, number, except)
  for slot, entry in pairs(list) do
    if slot ~= except and entry.number == number then
      return true
    end
  end
  return false
end

local function set_report(params)
  if #params ~= 3 then
    return false
  end
  local slot = integer_in(params[1], 1, RPEX_SLOTS)
  if slot == nil then
    return false
  end
  local key = tostring(slot)
  local list = rpex()
  local entry = list[key] or { level = 0 }
  local old = entry.number
  if params[2] ~= "" then
    local level = integer_in(params[2], 0, 2)
    if level == nil then
      return false
    end
    entry.level = level
  end
  local number = params[3]
  if number == "" then
    list[key] = nil
  else
    local normalised = gw.text.phone(number)
    -- A report number is authority to hear about the alarm: only a real number gets it.
    if normalised == nil or not gw.auth.grant(normalised, "report") then
      return false
    end
    entry.number = normalised
    list[key] = entry
  end
  local now_reported = list[key] and list[key].number
  if old ~= nil and old ~= now_reported and not reported_elsewhere(list, old, key) then
    gw.auth.revoke(old, "report")
  end
  gw.store.set("rpex", list)
  return true
end

local function set_apn(params)
  if #params < 1 or #params > 3 then
    return false
  end
  local apn, user, pass = params[1], params[2] or "", params[3] or ""
  if pass ~= "" then
    gw.sms.secret(pass)
  end
  if #apn > MAX_APN_FIELD or #user > MAX_APN_FIELD or #pass > MAX_APN_FIELD then
    return false
  end
  -- Nothing here logs in with it: the hash keeps it out of the database.
  gw.store.set("apn", { apn = apn, user = user, pass = pass ~= "" and gw.auth.hash(pass) or "" })
  gw.log.info("APN set to '" .. apn .. "' (user and password not logged)")
  return true
end

local function set_pword(params, _, sender)
  local new = params[1]
  if #params ~= 1 then
    return false
  end
  gw.sms.secret(new)
  local length = utf8.len(new)
  if length == nil or length < 1 or length > MAX_PWORD then
    return false
  end
  for _, code in utf8.codes(new) do
    local char = utf8.char(code)
    if char == ":" or char == "," or gw.text.trim(char) == "" then
      return false
    end
  end
  gw.store.set("pword", gw.auth.hash(gw.text.upper(new)))
  gw.auth.grant(sender, "installer")
  gw.log.info("P-Word changed by SMS")
  return true
end

local function set_installer_code(params, _, sender)
  local new = params[1]
  if #params ~= 1 then
    return false
  end
  gw.sms.secret(new)
  if not valid_code(new) or pin_taken(new, nil) then
    return false
  end
  gw.store.set("installer_code", gw.auth.hash(new))
  gw.auth.grant(sender, "installer")
  gw.log.info("installer code changed by SMS")
  return true
end

local function echo(params)
  return #params == 0 or (#params == 1 and params[1] == "")
end

-- `user = true`: a user PIN is enough; otherwise only the installer code.
local COMMANDS = {
  ["MODE"] = { run = mode, user = true },
  ["MOD?"] = { run = mode_query, user = true },
  ["ECHO"] = { run = echo, user = true },
  ["USRS"] = { run = set_user },
  ["USRD"] = { run = delete_user },
  ["PIN?"] = { run = list_users },
  ["RPEX"] = { run = set_report },
  ["GAPN"] = { run = set_apn },
  ["PWRD"] = { run = set_pword },
  ["INST"] = { run = set_installer_code },
}

-- `P-Word Code CMD:params` → P-Word, code, command word, parameter text; nil when the text
-- does not have this shape (see the top of the file).
local function parse(text)
  local fields = gw.text.split(text, " ", { trim = false, max = 3 })
  local given_pword, code, rest = fields[1], fields[2], fields[3]
  if rest == nil or given_pword == "" or not all_digits(code) then
    return nil
  end
  local colon = gw.text.find(rest, ":")
  if colon == nil or colon == 1 then
    return nil
  end
  local word = string.sub(rest, 1, colon - 1)
  if gw.text.find(word, " ") then
    return nil
  end
  return given_pword, code, word, string.sub(rest, colon + 1)
end

local function on_sms(msg)
  local given_pword, code, word, param_text = parse(msg.text)
  if given_pword == nil then
    return false
  end
  gw.sms.secret(given_pword)
  gw.sms.secret(code)
  -- A locked-out sender (or one the gateway-wide failure budget shuts out) gets nothing,
  -- and its P-Word and code are not even checked.
  if gw.auth.locked(msg.from) then
    return true
  end
  local pword_ok = gw.auth.verify(gw.text.upper(given_pword), pword_secret())
  -- The code is checked only after a right P-Word: a guess costs no hashing of PINs.
  local who = pword_ok and authority(code) or nil
  if not pword_ok or who == nil then
    gw.auth.fail(msg.from)
    gw.log.info("P-Word SMS with a wrong P-Word or code from " .. msg.from .. ", ignored")
    return true
  end
  word = gw.text.upper(word)
  local command = COMMANDS[word]
  local result = false
  if command ~= nil and (command.user or who == "installer") then
    result = command.run(split_params(param_text), who, msg.from)
  end
  if type(result) == "function" then
    return true -- the reply comes with the panel's answer
  elseif type(result) == "string" then
    gw.sms.reply(result)
  else
    gw.sms.reply(word .. (result and ":OK" or ":ERROR"))
  end
  return true
end

-- Alarm reports -----------------------------------------------------------------------------

local function report(levels, text)
  for _, entry in pairs(rpex()) do
    if levels[entry.level] and type(entry.number) == "string" then
      gw.sms.send(entry.number, text)
    end
  end
end

local STATE_WORDS = {
  armed_away = "ARMED AWAY",
  armed_home = "ARMED HOME",
  disarmed = "DISARMED",
}

local function on_alarm(ev)
  if ev.state == "triggered" then
    report({ [0] = true, [1] = true }, "ALARM ZONE " .. tostring(ev.by or "?"))
    return
  end
  local words = STATE_WORDS[ev.state]
  local by_user, number = gw.text.starts_with(tostring(ev.by or ""), BY_PREFIX)
  local n = by_user and integer_in(number, 1, USERS)
  if words == nil or not n then
    return
  end
  local user = users()[tostring(n)]
  if user == nil or user.latch ~= 1 then
    return
  end
  local name = (user.name ~= nil and user.name ~= "") and user.name or ("USER" .. n)
  report({ [0] = true, [2] = true }, words .. " BY " .. name)
end

return {
  sms = on_sms,
  alarm = on_alarm,
}
