-- David dialect: the SMS and dial-in language of the Jablotron GD-04 "David" GSM
-- communicator. Spec: shared/dialects/david.md; where it disagrees with its seed excerpt, the
-- excerpt wins. User manual, with every shape that carries the access code:
-- docs/dialects/david.md.
--
-- Config (`[plugins.david]`), all optional:
--   relay_x = "relay"        -- the gateway output driven as relay X
--   relay_y = "relay_y"      -- the gateway output driven as relay Y
--   input_a = "door"         -- gateway inputs read as inputs A..D (input_b, input_c, input_d)
--   access_code = "PC"       -- factory access code (2 to 8 characters), until changed by NPC
--   status_text = "STATUS"   -- factory status text, until changed by STS
--   credit_check_at = "10:00" -- local time of the daily credit check (CRE)
--
-- Two kinds of SMS:
--   programming: `<access code>,<INSTR>,<args>,...`; replies `PROGRAM OK` /
--     `PROGRAM ERROR <rest from the bad instruction>`.
--   operational: texts programmed with ARX/DRX/ARY/DRY and the status text, from any phone,
--     several per SMS separated by commas.
-- Both may come wrapped as `...%instructions%%...`: only the text inside is read.
--
-- Security (issue 11), the reasons behind the structure below:
--   * The access code field: in the text as sent (or, when its first field has a `%` or is
--     not code-shaped, after unwrapping), a first comma-separated field of 2 to 8
--     characters (spaces ignored) followed by a comma, unless that field is a programmed
--     operational text. Whatever follows, such a message either carries the right code (a
--     programming SMS) or counts one gw.auth.fail for its sender and is then treated exactly
--     like a message nobody knows: no reply, no state change. So the right code is the only
--     thing that answers, and a sender gets at most a handful of guesses.
--   * The code is stored as a salted hash (gw.auth.hash) and checked with gw.auth.verify; the
--     given code and any new one are marked with gw.sms.secret, so they are masked in logs,
--     MQTT and the inbox, and the message is never forwarded.
--   * A locked sender (gw.auth.locked) is ignored before anything else.
--   * DIP a/c forwarding happens only in `unhandled`, which the host calls after dispatch for
--     a message nobody handled and nobody found a credential in: other dialects' commands and
--     David's own programming SMS are never forwarded.
--   * Every change of a number list (ADX/ADY, LDX/LDY, EDX/EDY, STN) is a gw.auth.grant or
--     gw.auth.revoke, so it is audited; a number the host will not grant (alphanumeric, short
--     code) is a PROGRAM ERROR.
--   * CRE takes only balance codes (`*NNN#`, `#NNN#`); anything else (an airtime transfer
--     `*123*number*amount#`) is a PROGRAM ERROR and a stored one is never sent.
--   * Text is parsed with gw.text (linear in its length); repeated operational instructions
--     act once, so one SMS cannot ask for more than five answers.
--
-- Chosen behaviours where the manual is silent:
--   * An operational SMS is ours only when EVERY comma-separated instruction in it matches a
--     programmed text; anything else is left to other plugins (return false).
--   * Relays X and Y go off after every programming SMS with the right code, errors included.
--   * ARX switches X on for TMX seconds when TMX > 0 (permanently when 0), like a dial-in.
--   * A text that is both ARX and ARY (or a relay text and the status text) does both.
--   * DIP f reports each relay instruction as `<text as sent> OK`; a status request is
--     answered by the status itself, without an extra `OK`.
--   * DIP c ("forward all") forwards every message nobody handled, like DIP a: a message a
--     plugin handled is never forwarded (issue 11: forwarding forwards only what nobody
--     handled).
--   * DIP d counts every SMS this plugin sends; the 15-minute window is kept in memory, so a
--     reload or restart starts it afresh. Messages over the limit are dropped and logged.
--   * DIP b (call the service number every 24 h) is stored but has no effect: the gateway
--     cannot place calls. DIP g (wireless) is stored and ignored.
--   * Numbers are compared in full after normalisation. ADX of a limited number makes it
--     unlimited, LDX of a listed number sets its limit; EDX of an absent number is OK.
--     More than 50 numbers on a relay, a 3rd STN number, a text over 30 characters, or a
--     value out of range is a PROGRAM ERROR at that instruction.
--   * `PROGRAM ERROR` echoes at most 100 characters of the rest of the message.
--   * `STS` needs a text (a status SMS cannot be switched off); `CRE,` (empty code) erases the
--     credit check. The balance is the first number in the USSD answer, `,` or `.` decimal.
--   * Unmapped inputs report 0 in the status; an unknown signal reports `GSM 0%`.

local MAX_NUMBERS = 50
local MAX_SERVICE_NUMBERS = 2
local MAX_TEXT = 30
local MAX_ON_SECONDS = 36000
local MIN_CODE = 2
local MAX_CODE = 8
local MAX_ECHO = 100
local RATE_LIMIT_COUNT = 10
local RATE_LIMIT_SECONDS = 15 * 60
-- The modem's signal range (AT+CSQ 0..31 = -113..-51 dBm), for the status percentage.
local SIGNAL_MIN_DBM = -113
local SIGNAL_MAX_DBM = -51

local text = gw.text
local cfg = gw.config or {}
local RELAYS = {
  X = cfg.relay_x or "relay",
  Y = cfg.relay_y or "relay_y",
}
local INPUT_LETTERS = { "A", "B", "C", "D" }
local INPUTS = {
  A = cfg.input_a,
  B = cfg.input_b,
  C = cfg.input_c,
  D = cfg.input_d,
}
local CREDIT_CHECK_AT = cfg.credit_check_at or "10:00"
-- Roles granted for the number lists (audited by the host).
local DIAL_ROLE = { X = "dial_x", Y = "dial_y" }
local SERVICE_ROLE = "service"

-- Text ---------------------------------------------------------------------------------------

-- Spaces are ignored in programming SMS (excerpt rule 4). One character class, so linear.
local function strip_spaces(s)
  return (string.gsub(s, "%s+", ""))
end

local function length(s)
  return utf8.len(s) or #s
end

-- Every field between commas, untrimmed, empty ones kept (`ARX,,` erases).
local function split_commas(s)
  return text.split(s, ",", { trim = false })
end

-- At most `limit` characters (whole UTF-8 characters when it is valid UTF-8).
local function clip(s, limit)
  if #s <= limit then
    return s
  end
  local cut = utf8.offset(s, limit + 1)
  if cut == nil or utf8.len(s) == nil then
    return string.sub(s, 1, limit)
  end
  return string.sub(s, 1, cut - 1)
end

-- Settings -----------------------------------------------------------------------------------

local DEFAULTS = {
  sts = tostring(cfg.status_text or "STATUS"),
  tmx = 0,
  tmy = 0,
  dip = "0000000",
  ata = "A1",
  atb = "B1",
  atc = "C1",
  atd = "D1",
  dta = "A0",
  dtb = "B0",
  dtc = "C0",
  dtd = "D0",
}

-- The factory code, compared upper case with its spaces removed like a given one.
local FACTORY_CODE = text.upper(strip_spaces(tostring(cfg.access_code or "PC")))
if length(FACTORY_CODE) < MIN_CODE or length(FACTORY_CODE) > MAX_CODE then
  -- A code of another length could never be told from ordinary text without giving free
  -- guesses, so the plugin refuses to run with one.
  error("access_code must have 2 to 8 characters; the configured one does not (***)")
end

-- While a programming SMS runs, its changes collect here (key → value, `false` for erased) and
-- are written once at the end: one store write per setting however often an SMS repeats it,
-- which keeps a long SMS under the host's cap on commands per call.
local pending = nil

-- Read through to the store on every use, so that a reload or restart sees the same settings.
local function stored(key)
  if pending ~= nil and pending[key] ~= nil then
    return pending[key] or nil
  end
  return gw.store.get(key)
end

local function setting(key)
  local value = stored(key)
  if value == nil then
    return DEFAULTS[key]
  end
  return value
end

local function set_setting(key, value)
  if pending ~= nil then
    if value == nil then
      pending[key] = false
    else
      pending[key] = value
    end
  else
    gw.store.set(key, value)
  end
end

-- Runs `f` with writes collected, then writes each changed setting once, in key order. When
-- `f` fails (a script error), nothing of it is written.
local function batched(f)
  pending = {}
  local ok, result = pcall(f)
  local changes = pending
  pending = nil
  if not ok then
    error(result, 0)
  end
  local keys = {}
  for key in pairs(changes) do
    table.insert(keys, key)
  end
  table.sort(keys)
  for _, key in ipairs(keys) do
    gw.store.set(key, changes[key] or nil)
  end
  return result
end

-- `DIP,abcdefg`: switch number 1..7 (a..g).
local DIP_FORWARD_UNRECOGNISED = 1
local DIP_FORWARD_ALL = 3
local DIP_RATE_LIMIT = 4
local DIP_REPORT_DIAL_IN = 5
local DIP_REPORT_SMS = 6

local function dip(switch)
  return string.sub(setting("dip"), switch, switch) == "1"
end

local function service_numbers()
  local list = stored("stn")
  if type(list) ~= "table" then
    return {}
  end
  return list
end

-- Outgoing SMS -------------------------------------------------------------------------------

-- SMS sent in the last RATE_LIMIT_SECONDS while DIP d is on; each send schedules its own expiry.
local recent_sends = 0

local function may_send()
  if not dip(DIP_RATE_LIMIT) then
    return true
  end
  if recent_sends >= RATE_LIMIT_COUNT then
    gw.log.warn("DIP d: " .. RATE_LIMIT_COUNT .. " SMS in 15 minutes already sent, message dropped")
    return false
  end
  recent_sends = recent_sends + 1
  gw.timer.after(RATE_LIMIT_SECONDS, function()
    recent_sends = recent_sends - 1
  end)
  return true
end

local function send(to, message)
  if may_send() then
    gw.sms.send(to, message)
  end
end

local function reply(message)
  if may_send() then
    gw.sms.reply(message)
  end
end

local function tell_service(message)
  for _, number in ipairs(service_numbers()) do
    send(number, message)
  end
end

-- Relays and inputs --------------------------------------------------------------------------

local function relay_exists(letter)
  if gw.output.get(RELAYS[letter]) == nil then
    gw.log.error("relay " .. letter .. ": output '" .. tostring(RELAYS[letter]) .. "' does not exist")
    return false
  end
  return true
end

local function on_seconds(letter)
  return setting("tm" .. string.lower(letter))
end

local function relay_on(letter)
  if not relay_exists(letter) then
    return
  end
  local seconds = on_seconds(letter)
  if seconds > 0 then
    gw.output.on(RELAYS[letter], seconds)
  else
    gw.output.on(RELAYS[letter])
  end
end

local function relay_off(letter)
  if relay_exists(letter) then
    gw.output.off(RELAYS[letter])
  end
end

local function bit(on)
  return on and "1" or "0"
end

local function signal_percent()
  local dbm = gw.modem.signal()
  if dbm == nil then
    return 0
  end
  local share = (dbm - SIGNAL_MIN_DBM) / (SIGNAL_MAX_DBM - SIGNAL_MIN_DBM)
  return math.floor(math.max(0, math.min(1, share)) * 100 + 0.5)
end

local function status_text()
  local parts = {}
  for _, letter in ipairs(INPUT_LETTERS) do
    local name = INPUTS[letter]
    table.insert(parts, letter .. bit(name ~= nil and gw.input.get(name) == true))
  end
  for _, letter in ipairs({ "X", "Y" }) do
    table.insert(parts, letter .. bit(gw.output.get(RELAYS[letter]) == true))
  end
  table.insert(parts, "GSM " .. signal_percent() .. "%")
  return table.concat(parts, " ")
end

-- Numbers ------------------------------------------------------------------------------------

-- Entries of relay X's (Y's) list: `{n = "<normalised number>", calls = <left> or nil}`.
local function dial_list(letter)
  local list = stored("ad" .. string.lower(letter))
  if type(list) ~= "table" then
    return {}
  end
  return list
end

local function save_dial_list(letter, list)
  set_setting("ad" .. string.lower(letter), list)
end

local function find_entry(list, number)
  for index, entry in ipairs(list) do
    if gw.phone.same(entry.n, number) then
      return index
    end
  end
  return nil
end

-- Grants `role` to each of `numbers` not in `already`; when the host refuses one (not a real
-- number), takes back the ones granted here and returns false.
local function grant_all(numbers, role, already)
  local granted = {}
  for _, number in ipairs(numbers) do
    if not already(number) then
      if not gw.auth.grant(number, role) then
        for _, done in ipairs(granted) do
          gw.auth.revoke(done, role)
        end
        return false
      end
      table.insert(granted, number)
    end
  end
  return true
end

-- Programming instructions -------------------------------------------------------------------

-- Each instruction takes the field lists and the index of its first argument, applies itself
-- and returns the index after its last argument, or nil when the arguments are wrong (nothing
-- of it is applied then). `raw` fields keep their spaces; `bare` ones have none.

-- A text that becomes a setting: spaces inside kept, the ends trimmed, at most 30 characters.
local function setting_text(raw)
  local s = text.trim(raw)
  if utf8.len(s) == nil or utf8.len(s) > MAX_TEXT then
    return nil
  end
  return s
end

-- A relay or input text; an empty one erases it (stored as "" so that a default stays erased).
local function text_instruction(key)
  return function(raw, _, at)
    if raw[at] == nil then
      return nil
    end
    local s = setting_text(raw[at])
    if s == nil then
      return nil
    end
    set_setting(key, s)
    return at + 1
  end
end

-- `n`, `ns`, `nm`, `nh` → seconds in 0..36000, or nil.
local function parse_on_time(s)
  local seconds = text.duration(text.lower(s))
  if seconds == nil or seconds < 0 or seconds > MAX_ON_SECONDS then
    return nil
  end
  return seconds
end

local function time_instruction(key)
  return function(_, bare, at)
    local seconds = bare[at] and parse_on_time(bare[at])
    if seconds == nil then
      return nil
    end
    set_setting(key, seconds)
    return at + 1
  end
end

-- The numbers from `at` on, up to the first field that is not a number, at most `limit` + 1 of
-- them (one more than allowed is enough to refuse the instruction).
local function take_numbers(bare, at, limit)
  local numbers = {}
  while bare[at] ~= nil and #numbers <= limit do
    local number = text.phone(bare[at])
    if number == nil then
      break
    end
    table.insert(numbers, number)
    at = at + 1
  end
  return numbers, at
end

local function add_instruction(letter)
  return function(_, bare, at)
    local numbers, next_at = take_numbers(bare, at, MAX_NUMBERS)
    if #numbers == 0 then
      return nil
    end
    local list = dial_list(letter)
    local listed = function(number)
      return find_entry(list, number) ~= nil
    end
    local fresh = 0
    for _, number in ipairs(numbers) do
      if not listed(number) then
        fresh = fresh + 1
      end
    end
    if #list + fresh > MAX_NUMBERS then
      return nil
    end
    if not grant_all(numbers, DIAL_ROLE[letter], listed) then
      return nil
    end
    for _, number in ipairs(numbers) do
      local index = find_entry(list, number)
      if index == nil then
        table.insert(list, { n = number })
      else
        list[index].calls = nil
      end
    end
    save_dial_list(letter, list)
    return next_at
  end
end

local function limited_instruction(letter)
  return function(_, bare, at)
    local number = bare[at] and text.phone(bare[at])
    local calls = bare[at + 1] and text.int(bare[at + 1], 1, 99)
    if number == nil or calls == nil then
      return nil
    end
    local list = dial_list(letter)
    local index = find_entry(list, number)
    if index == nil then
      if #list >= MAX_NUMBERS or not gw.auth.grant(number, DIAL_ROLE[letter]) then
        return nil
      end
      table.insert(list, { n = number, calls = calls })
    else
      list[index].calls = calls
    end
    save_dial_list(letter, list)
    return at + 2
  end
end

local function erase_instruction(letter)
  return function(_, bare, at)
    local numbers, next_at = take_numbers(bare, at, MAX_NUMBERS)
    if #numbers == 0 then
      return nil
    end
    local list = dial_list(letter)
    for _, number in ipairs(numbers) do
      local index = find_entry(list, number)
      if index ~= nil then
        gw.auth.revoke(list[index].n, DIAL_ROLE[letter])
        table.remove(list, index)
      end
    end
    save_dial_list(letter, list)
    return next_at
  end
end

local function new_code(_, bare, at)
  local code = bare[at]
  if code == nil or length(code) < MIN_CODE or length(code) > MAX_CODE then
    return nil
  end
  set_setting("code_hash", gw.auth.hash(text.upper(code)))
  gw.log.info("access code changed (***)")
  return at + 1
end

local function status_request_text(raw, _, at)
  local s = raw[at] and setting_text(raw[at])
  if s == nil or s == "" then
    return nil
  end
  set_setting("sts", s)
  return at + 1
end

-- Replaces the service numbers with `numbers`, granting and revoking so that the audit trail
-- says who may hear from the gateway; false (nothing changed) when one cannot be granted.
local function replace_service_numbers(numbers)
  local old = service_numbers()
  local was = function(number)
    return gw.phone.in_list(number, old)
  end
  if not grant_all(numbers, SERVICE_ROLE, was) then
    return false
  end
  for _, number in ipairs(old) do
    if not gw.phone.in_list(number, numbers) then
      gw.auth.revoke(number, SERVICE_ROLE)
    end
  end
  set_setting("stn", #numbers > 0 and numbers or nil)
  return true
end

local function service_instruction(_, bare, at)
  if bare[at] == "" then
    -- `STN,` erases the service numbers.
    replace_service_numbers({})
    return at + 1
  end
  local numbers, next_at = take_numbers(bare, at, MAX_SERVICE_NUMBERS)
  if #numbers == 0 or #numbers > MAX_SERVICE_NUMBERS then
    return nil
  end
  if not replace_service_numbers(numbers) then
    return nil
  end
  return next_at
end

local function dip_instruction(_, bare, at)
  local switches = bare[at]
  if switches == nil or #switches ~= 7 or string.find(switches, "[^01]") then
    return nil
  end
  set_setting("dip", switches)
  return at + 1
end

-- A balance enquiry: `*` or `#`, 1 to 4 digits, `#` (`*100#`, `#124#`), and on the gateway's
-- `sms.ussd_allow` list (the code is sent later from a timer, outside any SMS). Anything longer can
-- carry parameters, and an airtime transfer (`*123*<number>*<amount>#`) is one of those.
local function balance_code(code)
  if type(code) ~= "string" or #code < 3 or #code > 6 then
    return false
  end
  local first, last = string.sub(code, 1, 1), string.sub(code, -1)
  local digits = string.sub(code, 2, -2)
  return (first == "*" or first == "#") and last == "#" and not string.find(digits, "[^0-9]")
    and gw.modem.ussd_allowed(code)
end

local schedule_credit_check

local function credit_instruction(_, bare, at)
  local code = bare[at]
  if code == "" then
    set_setting("cre", nil)
    schedule_credit_check()
    return at + 1
  end
  local limit_text = bare[at + 1] and string.gsub(bare[at + 1], ",", ".")
  local limit = limit_text and text.number(limit_text)
  if not balance_code(code) or limit == nil or limit ~= limit or limit < 0 or limit == math.huge then
    return nil
  end
  set_setting("cre", { code = code, limit = limit })
  schedule_credit_check()
  return at + 2
end

local INSTRUCTIONS = {
  ARX = text_instruction("arx"),
  ARY = text_instruction("ary"),
  DRX = text_instruction("drx"),
  DRY = text_instruction("dry"),
  TMX = time_instruction("tmx"),
  TMY = time_instruction("tmy"),
  ADX = add_instruction("X"),
  ADY = add_instruction("Y"),
  LDX = limited_instruction("X"),
  LDY = limited_instruction("Y"),
  EDX = erase_instruction("X"),
  EDY = erase_instruction("Y"),
  NPC = new_code,
  STS = status_request_text,
  STN = service_instruction,
  DIP = dip_instruction,
  CRE = credit_instruction,
}
for _, letter in ipairs(INPUT_LETTERS) do
  local lower = string.lower(letter)
  INSTRUCTIONS["AT" .. letter] = text_instruction("at" .. lower)
  INSTRUCTIONS["DT" .. letter] = text_instruction("dt" .. lower)
end

-- Runs the instructions of a programming SMS (`raw` fields after the access code) up to the
-- first one that fails; returns nil on success, else the failing instruction and the rest.
local function program(raw)
  -- Computed when first read: a long run of empty fields costs a comparison each.
  local bare = setmetatable({}, {
    __index = function(t, i)
      local field = raw[i]
      if field == nil then
        return nil
      end
      local b = strip_spaces(field)
      rawset(t, i, b)
      return b
    end,
  })
  local at, count = 1, #raw
  while at <= count do
    local word = raw[at] ~= "" and text.upper(bare[at]) or ""
    if word == "" then
      -- Empty fields between instructions (a trailing comma) are harmless.
      at = at + 1
    else
      local instruction = INSTRUCTIONS[word]
      local next_at = instruction and instruction(raw, bare, at + 1)
      if next_at == nil then
        gw.log.info("programming stopped at instruction " .. clip(word, MAX_CODE))
        return text.trim(table.concat(raw, ",", at))
      end
      at = next_at
    end
  end
  return nil
end

-- Operational instructions -------------------------------------------------------------------

-- `...%instructions%%...` → `instructions`; the text itself when there is no such wrapper.
local function unwrap(s)
  local first = text.find(s, "%")
  if first ~= nil then
    local close = text.find(s, "%%", first + 1)
    if close ~= nil then
      return string.sub(s, first + 1, close - 1)
    end
  end
  return s
end

-- Programmed texts compare ignoring case only (spaces and accents matter).
local OPERATIONAL = {
  { key = "arx", kind = "on", relay = "X" },
  { key = "drx", kind = "off", relay = "X" },
  { key = "ary", kind = "on", relay = "Y" },
  { key = "dry", kind = "off", relay = "Y" },
  { key = "sts", kind = "status" },
}

-- The programmed texts, lower case, read once per message.
local function programmed_texts()
  local texts = {}
  for _, item in ipairs(OPERATIONAL) do
    local s = setting(item.key)
    if s ~= nil and s ~= "" then
      table.insert(texts, { item = item, lower = text.lower(s) })
    end
  end
  return texts
end

local function actions_for(instruction, texts)
  local wanted = text.lower(instruction)
  local actions = {}
  for _, t in ipairs(texts) do
    if t.lower == wanted then
      table.insert(actions, t.item)
    end
  end
  return actions
end

-- The instructions of an operational SMS with their actions, each distinct one once, or nil
-- when any one of them is not a programmed text (then the SMS is not ours).
local function parse_operational(fields, texts)
  local parsed, seen = {}, {}
  for _, field in ipairs(fields) do
    local instruction = field ~= "" and text.trim(field) or ""
    if instruction ~= "" then
      local actions = actions_for(instruction, texts)
      if #actions == 0 then
        return nil
      end
      local key = text.lower(instruction)
      if not seen[key] then
        seen[key] = true
        table.insert(parsed, { text = instruction, actions = actions })
      end
    end
  end
  if #parsed == 0 then
    return nil
  end
  return parsed
end

local function perform(parsed)
  for _, instruction in ipairs(parsed) do
    local relay_action = false
    for _, action in ipairs(instruction.actions) do
      if action.kind == "on" then
        relay_on(action.relay)
        relay_action = true
      elseif action.kind == "off" then
        relay_off(action.relay)
        relay_action = true
      else
        reply(status_text())
      end
    end
    if relay_action and dip(DIP_REPORT_SMS) then
      reply(instruction.text .. " OK")
    end
  end
end

-- The access code -----------------------------------------------------------------------------

local function code_matches(given)
  local hash = gw.store.get("code_hash")
  if type(hash) ~= "string" then
    hash = FACTORY_CODE
  end
  return gw.auth.verify(text.upper(given), hash)
end

local function is_programmed_text(field, texts)
  return #actions_for(text.trim(field), texts) > 0
end

-- The access code as given when `fields` has the shape of a programming SMS (see the header),
-- else nil.
local function code_field(fields)
  if #fields < 2 then
    return nil
  end
  local code = strip_spaces(fields[1])
  local n = length(code)
  if n < MIN_CODE or n > MAX_CODE then
    return nil
  end
  return code
end

-- Marks the given code and every NPC argument, as sent and without spaces, as secret.
local function mark_secrets(fields)
  local function mark(field)
    local trimmed = text.trim(field)
    if trimmed ~= "" then
      gw.sms.secret(trimmed)
      local bare = strip_spaces(trimmed)
      if bare ~= trimmed then
        gw.sms.secret(bare)
      end
    end
  end
  mark(fields[1])
  for index = 2, #fields - 1 do
    local field = fields[index]
    if #field >= 3 and text.upper(strip_spaces(field)) == "NPC" then
      mark(fields[index + 1])
    end
  end
end

-- Handlers -----------------------------------------------------------------------------------

local function on_sms(msg)
  if gw.auth.locked(msg.from) then
    return false
  end
  -- The code field is looked for in the text as sent first: a wrapper after a code-shaped
  -- first field (`PC,%x%%`) must not hide the code, or a guess would go uncounted and be
  -- forwarded. A first field with a `%` in it is a wrapper's prefix, not a code.
  local raw = msg.text or ""
  local fields = split_commas(raw)
  if fields[1] == nil or text.find(fields[1], "%") ~= nil or code_field(fields) == nil then
    fields = split_commas(unwrap(raw))
  end
  local texts = programmed_texts()
  local code = code_field(fields)
  if code ~= nil then
    local right = code_matches(code)
    if right or not is_programmed_text(fields[1], texts) then
      mark_secrets(fields)
      if not right then
        gw.log.warn("programming SMS with a wrong access code (***) from " .. tostring(msg.from))
        gw.auth.fail(msg.from)
        return false
      end
      table.remove(fields, 1)
      local failed = batched(function()
        return program(fields)
      end)
      if failed == nil then
        reply("PROGRAM OK")
      else
        reply("PROGRAM ERROR " .. clip(failed, MAX_ECHO))
      end
      relay_off("X")
      relay_off("Y")
      gw.log.info("programming SMS (code ***) from " .. tostring(msg.from))
      return true
    end
  end
  local parsed = parse_operational(fields, texts)
  if parsed == nil then
    return false
  end
  perform(parsed)
  return true
end

-- Called by the host after dispatch, only for a message nobody handled and nobody found a
-- credential in.
local function on_unhandled(msg)
  if not (dip(DIP_FORWARD_UNRECOGNISED) or dip(DIP_FORWARD_ALL)) then
    return
  end
  if gw.auth.locked(msg.from) then
    return
  end
  tell_service(tostring(msg.from) .. ": " .. (msg.text or ""))
end

local function on_call(call)
  if call.from == nil then
    return false
  end
  local driven = {}
  for _, letter in ipairs({ "X", "Y" }) do
    local list = dial_list(letter)
    local index = find_entry(list, call.from)
    if index ~= nil then
      table.insert(driven, letter)
      local entry = list[index]
      if entry.calls ~= nil then
        entry.calls = entry.calls - 1
        if entry.calls <= 0 then
          table.remove(list, index)
          gw.auth.revoke(entry.n, DIAL_ROLE[letter])
          tell_service(entry.n .. " call limit reached")
        end
        save_dial_list(letter, list)
      end
    end
  end
  if #driven == 0 then
    return false
  end
  gw.call.reject()
  for _, letter in ipairs(driven) do
    if relay_exists(letter) then
      if on_seconds(letter) > 0 then
        relay_on(letter)
      else
        gw.output.toggle(RELAYS[letter])
      end
      if dip(DIP_REPORT_DIAL_IN) then
        local state = gw.output.get(RELAYS[letter]) and "ON" or "OFF"
        tell_service(call.from .. " " .. letter .. " " .. state)
      end
    end
  end
  return true
end

local function on_input(ev)
  for _, letter in ipairs(INPUT_LETTERS) do
    if INPUTS[letter] ~= nil and INPUTS[letter] == ev.name then
      local key = (ev.on and "at" or "dt") .. string.lower(letter)
      local s = setting(key)
      if s ~= nil and s ~= "" then
        tell_service(s)
      end
    end
  end
end

-- Credit check -------------------------------------------------------------------------------

-- The first number in a USSD answer, with `.` or `,` as the decimal mark; one pass.
local function balance_of(answer)
  local start = nil
  for i = 1, #answer do
    local b = string.byte(answer, i)
    if b >= 48 and b <= 57 then
      start = i
      break
    end
  end
  if start == nil then
    return nil
  end
  local stop, seen_mark = start, false
  while stop < #answer do
    local b = string.byte(answer, stop + 1)
    if b >= 48 and b <= 57 then
      stop = stop + 1
    elseif (b == 44 or b == 46) and not seen_mark then
      local after = string.byte(answer, stop + 2)
      if after == nil or after < 48 or after > 57 then
        break
      end
      seen_mark = true
      stop = stop + 1
    else
      break
    end
  end
  return tonumber((string.gsub(string.sub(answer, start, stop), ",", ".")))
end

local function check_credit()
  local credit = gw.store.get("cre")
  if type(credit) ~= "table" then
    return
  end
  if not balance_code(credit.code) then
    -- Stored by an older version, which took any USSD string.
    gw.log.error("credit check: '" .. tostring(credit.code) .. "' is not a balance code; not sent (program CRE again)")
    return
  end
  gw.modem.ussd(credit.code, function(ok, answer)
    if not ok then
      gw.log.warn("credit check " .. credit.code .. " failed: " .. tostring(answer))
      return
    end
    local balance = balance_of(answer or "")
    if balance == nil then
      gw.log.warn("credit check: no balance in the answer '" .. clip(tostring(answer), 200) .. "'")
      return
    end
    if balance < credit.limit then
      tell_service(answer)
    end
  end)
end

local credit_timer = nil

schedule_credit_check = function()
  if credit_timer ~= nil then
    gw.timer.cancel(credit_timer)
    credit_timer = nil
  end
  if type(stored("cre")) == "table" then
    -- A bad `credit_check_at` must not stop the plugin from loading: only the check is lost.
    local ok, id = pcall(gw.timer.at, CREDIT_CHECK_AT, check_credit)
    if ok then
      credit_timer = id
    else
      gw.log.error("credit check not scheduled: " .. tostring(id))
    end
  end
end

-- Load time ----------------------------------------------------------------------------------

-- Data kept by older versions of this plugin: a clear access code becomes a hash, and the
-- numbers on its lists, which were never granted, are granted once so that they are audited
-- and enrolled like new ones.
local function upgrade_store()
  local clear = gw.store.get("code")
  if type(clear) == "string" then
    set_setting("code_hash", gw.auth.hash(clear))
    set_setting("code", nil)
  end
  if gw.store.get("granted") == nil then
    for _, letter in ipairs({ "X", "Y" }) do
      for _, entry in ipairs(dial_list(letter)) do
        gw.auth.grant(entry.n, DIAL_ROLE[letter])
      end
    end
    for _, number in ipairs(service_numbers()) do
      gw.auth.grant(number, SERVICE_ROLE)
    end
    set_setting("granted", true)
  end
end

for _, letter in ipairs({ "X", "Y" }) do
  if gw.output.get(RELAYS[letter]) == nil then
    gw.log.error("relay " .. letter .. ": output '" .. tostring(RELAYS[letter]) .. "' does not exist: set `relay_" .. string.lower(letter) .. "` in the plugin config")
  end
end
for _, letter in ipairs(INPUT_LETTERS) do
  local name = INPUTS[letter]
  if name ~= nil and gw.input.get(name) == nil then
    gw.log.warn("input " .. letter .. ": input '" .. tostring(name) .. "' does not exist: reported as 0")
  end
end

return {
  sms = on_sms,
  unhandled = on_unhandled,
  call = on_call,
  input = on_input,
  init = function()
    upgrade_store()
    schedule_credit_check()
  end,
}
