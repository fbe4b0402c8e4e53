-- P-Word/installer dialect: the SMS language of the Climax VST-2745 / VST-2752 alarm panels,
-- `<P-Word> <Code> <COMMAND>:<p1>,<p2>,...`. Spec: shared/dialects/pword-installer.md; where
-- it disagrees with its seed excerpt, the excerpt wins.
--
-- Config (`[plugins.pword_installer]`), factory defaults that an SMS may change:
--   pword = "PROG"           -- the P-Word (PWRD changes it)
--   installer_code = "7982"  -- the installer code (INST changes it)
--
-- Chosen behaviours where the manuals are silent:
--   * The P-Word is a keyword: compared without regard to case (`prog 7982 mode:d` works).
--     Codes and PINs are compared exactly, in constant time.
--   * The message is ours when it has the shape `word digits CMD:…`; a wrong P-Word or code
--     is then handled silently and counts towards the sender's lock-out (gw.auth.fail).
--   * No user PINs by factory default; PIN? and every programming command need the
--     installer code. A user PIN on a programming command gets `<CMD>:ERROR`.
--   * USRS takes 2 to 4 parameters (the excerpt's `USRS:1,1234,JOHN` succeeds): a missing
--     or blank PIN or latch means "no change", a blank name clears it, a missing name keeps
--     it. A new user needs a PIN. A PIN may not equal the installer code or another user's
--     PIN (the code alone says who is acting). INST may not equal a user PIN either.
--   * USRD of a user that is not set is OK. RPEX: a blank number clears the slot, a blank
--     level keeps the slot's level (0 for a new slot). GAPN: each blank field is cleared.
--   * MOD? answers `MODE?A` for armed away and for arming, pending and triggered.
--   * PIN? lists all ten users as `(n,name,latch)`, PINs never.
--   * Alarm reports (the `alarm` hook): when the panel triggers, RPEX numbers of level 0
--     or 1 get `ALARM ZONE <zone>`; when a user with latch report on arms or disarms by
--     SMS, RPEX numbers of level 0 or 2 get `ARMED AWAY BY <name>` (or `ARMED HOME`,
--     `DISARMED`; the name is `USER<n>` when the user has none).

local USERS = 10
local RPEX_SLOTS = 8
local MAX_NAME = 10
local MAX_PWORD = 15
local BY_PREFIX = "pword_installer user "

local cfg = gw.config or {}

-- Settings ----------------------------------------------------------------------------------

local function pword()
  local stored = gw.store.get("pword")
  if type(stored) == "string" then
    return stored
  end
  return tostring(cfg.pword or "PROG")
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

-- "installer", the user number, or nil. Every stored code is compared, in constant time, so
-- the time taken does not tell which one was close.
local function authority(code)
  local found = nil
  if gw.auth.check(code, installer_code()) then
    found = "installer"
  end
  for n, user in pairs(users()) do
    if type(user.pin) == "string" and gw.auth.check(code, user.pin) and found == nil then
      found = tonumber(n)
    end
  end
  return found
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
  local params = {}
  if text == "" then
    return params
  end
  for field in string.gmatch(text .. ",", "([^,]*),") do
    table.insert(params, field)
  end
  return params
end

local function integer_in(text, low, high)
  if text == nil or not string.match(text, "^%d+$") then
    return nil
  end
  local n = tonumber(text)
  if n == nil or n < low or n > high then
    return nil
  end
  return n
end

local function valid_code(text)
  return text ~= nil and string.match(text, "^%d%d%d%d%d?%d?$") ~= nil
end

local function pin_taken(pin, except_user)
  if gw.auth.check(pin, installer_code()) then
    return true
  end
  for n, user in pairs(users()) do
    if tonumber(n) ~= except_user and user.pin == pin then
      return true
    end
  end
  return false
end

-- Commands ----------------------------------------------------------------------------------
-- Each returns true (OK), false (ERROR) or a reply text of its own.

local function mode(params, who)
  if #params ~= 1 then
    return false
  end
  local letter = string.upper(params[1])
  local ok
  if letter == "A" then
    ok = gw.alarm.arm("away", by_of(who))
  elseif letter == "H" then
    ok = gw.alarm.arm("home", by_of(who))
  elseif letter == "D" then
    ok = gw.alarm.disarm(by_of(who))
  else
    return false
  end
  return ok ~= false
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

local function set_user(params)
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
    if not valid_code(pin) or pin_taken(pin, n) then
      return false
    end
    user.pin = pin
  elseif user.pin == nil then
    return false
  end
  if name ~= nil then
    if utf8.len(name) == nil or utf8.len(name) > MAX_NAME then
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
  list[tostring(n)] = user
  gw.store.set("users", list)
  gw.log.info("user " .. n .. " set: PIN ***, name '" .. user.name .. "', latch " .. string.format("%d", user.latch))
  return true
end

local function delete_user(params)
  local n = #params == 1 and integer_in(params[1], 2, USERS)
  if not n then
    return false
  end
  local list = users()
  if list[tostring(n)] ~= nil then
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

local function set_report(params)
  if #params ~= 3 then
    return false
  end
  local slot = integer_in(params[1], 1, RPEX_SLOTS)
  if slot == nil then
    return false
  end
  local list = rpex()
  local entry = list[tostring(slot)] or { level = 0 }
  if params[2] ~= "" then
    local level = integer_in(params[2], 0, 2)
    if level == nil then
      return false
    end
    entry.level = level
  end
  local number = params[3]
  if number == "" then
    list[tostring(slot)] = nil
  else
    local digits = #string.gsub(number, "%D", "")
    if not string.match(number, "^%+?%d+$") or digits < 3 or digits > 20 then
      return false
    end
    entry.number = gw.phone.normalise(number)
    list[tostring(slot)] = entry
  end
  gw.store.set("rpex", list)
  return true
end

local function set_apn(params)
  if #params < 1 or #params > 3 then
    return false
  end
  local apn, user, pass = params[1], params[2] or "", params[3] or ""
  if #apn > 63 or #user > 63 or #pass > 63 then
    return false
  end
  gw.store.set("apn", { apn = apn, user = user, pass = pass })
  gw.log.info("APN set to '" .. apn .. "' (user and password ***)")
  return true
end

local function set_pword(params)
  local new = params[1]
  if #params ~= 1 or #new < 1 or #new > MAX_PWORD or string.find(new, "[%s:,]") then
    return false
  end
  gw.store.set("pword", new)
  gw.log.info("P-Word changed to *** by SMS")
  return true
end

local function set_installer_code(params)
  local new = params[1]
  if #params ~= 1 or not valid_code(new) then
    return false
  end
  for _, user in pairs(users()) do
    if user.pin == new then
      return false
    end
  end
  gw.store.set("installer_code", new)
  gw.log.info("installer code changed to *** by SMS")
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

-- `P-Word Code CMD:params` → the three parts and the parameter text; nil when the text is not
-- this grammar. Fields are separated by single spaces (excerpt); the code is digits.
local function parse(text)
  local trimmed = string.match(text or "", "^(.-)%s*$")
  return string.match(trimmed, "^(%S+) (%d+) ([%w%?]+):(.*)$")
end

local function on_sms(msg)
  local given_pword, code, word, param_text = parse(msg.text)
  if given_pword == nil then
    return false
  end
  local pword_ok = gw.auth.check(string.upper(given_pword), string.upper(pword()))
  local who = authority(code)
  if not pword_ok or who == nil then
    gw.auth.fail(msg.from)
    gw.log.info("P-Word SMS with a wrong P-Word or code (***) from " .. msg.from .. ", ignored")
    return true
  end
  word = string.upper(word)
  local command = COMMANDS[word]
  local result = false
  if command ~= nil and (command.user or who == "installer") then
    result = command.run(split_params(param_text), who)
  end
  if type(result) == "string" then
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
  local n = tonumber(string.match(tostring(ev.by or ""), "^" .. BY_PREFIX .. "(%d+)$"))
  if words == nil or n == nil then
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
