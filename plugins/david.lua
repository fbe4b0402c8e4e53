-- David dialect: the SMS and dial-in language of the Jablotron GD-04 "David" GSM
-- communicator. Spec: shared/dialects/david.md; where it disagrees with its seed excerpt, the
-- excerpt wins.
--
-- Config (`[plugins.david]`), all optional:
--   relay_x = "relay"        -- the gateway output driven as relay X
--   relay_y = "relay_y"      -- the gateway output driven as relay Y
--   input_a = "door"         -- gateway inputs read as inputs A..D (input_b, input_c, input_d)
--   access_code = "PC"       -- factory access code, until changed by NPC
--   status_text = "STATUS"   -- factory status text, until changed by STS
--   credit_check_at = "10:00" -- local time of the daily credit check (CRE)
--
-- Two kinds of SMS:
--   programming: `<access code>,<INSTR>,<args>,...` (the code compared case-insensitively and in
--     constant time); replies `PROGRAM OK` / `PROGRAM ERROR <rest from the bad instruction>`.
--   operational: texts programmed with ARX/DRX/ARY/DRY and the status text, from any phone,
--     several per SMS separated by commas, optionally wrapped as `...%instructions%%...`.
--
-- Chosen behaviours where the manual is silent:
--   * An operational SMS is ours only when EVERY comma-separated instruction in it matches a
--     programmed text; anything else is left to other plugins (return false), so "STATUS please"
--     or `1234,status#` never reach the wrong dialect. DIP a/c forwarding still happens for such
--     messages, but they stay unhandled.
--   * A wrong access code counts as a failed password (gw.auth.fail) only when the second field
--     is a David instruction word; the message is then treated as an operational SMS.
--   * Programming SMS (they carry the access code) are never forwarded, not even under DIP c.
--   * Relays X and Y go off after every programming SMS with the right code, errors included.
--   * ARX switches X on for TMX seconds when TMX > 0 (permanently when 0), like a dial-in.
--   * A text that is both ARX and ARY (or a relay text and the status text) does both.
--   * DIP f reports each relay instruction as `<text as sent> OK`; a status request is
--     answered by the status itself, without an extra `OK`.
--   * DIP d counts every SMS this plugin sends; the 15-minute window is kept in memory, so a
--     reload or restart starts it afresh. Messages over the limit are dropped and logged.
--   * DIP b (call the service number every 24 h) is stored but has no effect: the gateway
--     cannot place calls. DIP g (wireless) is stored and ignored.
--   * Numbers are compared in full after normalisation. ADX of a limited number makes it
--     unlimited, LDX of a listed number sets its limit; EDX of an absent number is OK.
--     More than 50 numbers on a relay, a 3rd STN number, a text over 30 characters, or a
--     value out of range is a PROGRAM ERROR at that instruction.
--   * `STS` needs a text (a status SMS cannot be switched off); `CRE,` (empty code) erases the
--     credit check. The balance is the first number in the USSD answer, `,` or `.` decimal.
--   * Unmapped inputs report 0 in the status; an unknown signal reports `GSM 0%`.

local MAX_NUMBERS = 50
local MAX_SERVICE_NUMBERS = 2
local MAX_TEXT = 30
local MAX_ON_SECONDS = 36000
local RATE_LIMIT_COUNT = 10
local RATE_LIMIT_SECONDS = 15 * 60
-- The modem's signal range (AT+CSQ 0..31 = -113..-51 dBm), for the status percentage.
local SIGNAL_MIN_DBM = -113
local SIGNAL_MAX_DBM = -51

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

-- Text ---------------------------------------------------------------------------------------

local function trim(text)
  return (string.gsub(text, "^%s*(.-)%s*$", "%1"))
end

local function strip_spaces(text)
  return (string.gsub(text, "%s", ""))
end

-- Upper case with Unicode case folding for the Latin-1, Latin Extended-A (Czech, Slovak,
-- Polish...), Greek and Cyrillic letters, so "žluté světlo" matches "ŽLUTÉ SVĚTLO". Text that
-- is not valid UTF-8 is folded as ASCII only.
local function fold(text)
  if utf8.len(text) == nil then
    return string.upper(text)
  end
  local out = {}
  for _, c in utf8.codes(text) do
    if c >= 0x61 and c <= 0x7A then
      c = c - 0x20
    elseif c >= 0xE0 and c <= 0xFE and c ~= 0xF7 then
      c = c - 0x20
    elseif c == 0xFF then
      c = 0x178
    elseif c >= 0x100 and c <= 0x17F then
      -- Pairs of upper (even) and lower (odd) case, except two runs where it is the reverse
      -- and a few letters with no partner in this block.
      if (c >= 0x139 and c <= 0x148) or (c >= 0x179 and c <= 0x17E) then
        if c % 2 == 0 then
          c = c - 1
        end
      elseif c % 2 == 1 and c ~= 0x131 and c ~= 0x149 and c ~= 0x17F then
        c = c - 1
      end
    elseif c >= 0x3B1 and c <= 0x3C9 then
      c = (c == 0x3C2) and 0x3A3 or c - 0x20
    elseif c >= 0x430 and c <= 0x44F then
      c = c - 0x20
    elseif c >= 0x450 and c <= 0x45F then
      c = c - 0x50
    end
    out[#out + 1] = utf8.char(c)
  end
  return table.concat(out)
end

-- Splits on every comma, keeping empty fields (`ARX,,` erases).
local function split_commas(text)
  local fields = {}
  for field in string.gmatch(text .. ",", "([^,]*),") do
    table.insert(fields, field)
  end
  return fields
end

-- Settings -----------------------------------------------------------------------------------

local DEFAULTS = {
  code = string.upper(strip_spaces(tostring(cfg.access_code or "PC"))),
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

-- `DIP,abcdefg`: switch number 1..7 (a..g).
local DIP_FORWARD_UNRECOGNISED = 1
local DIP_DAILY_CALL = 2
local DIP_FORWARD_ALL = 3
local DIP_RATE_LIMIT = 4
local DIP_REPORT_DIAL_IN = 5
local DIP_REPORT_SMS = 6

local function dip(switch)
  return string.sub(setting("dip"), switch, switch) == "1"
end

local function service_numbers()
  local list = gw.store.get("stn")
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

local function send(to, text)
  if may_send() then
    gw.sms.send(to, text)
  end
end

local function reply(text)
  if may_send() then
    gw.sms.reply(text)
  end
end

local function tell_service(text)
  for _, number in ipairs(service_numbers()) do
    send(number, text)
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

-- An optional `+` then 3..20 digits (spaces already removed); the normalised number or nil.
local function valid_number(text)
  if not string.match(text, "^%+?%d+$") then
    return nil
  end
  local digits = #string.gsub(text, "%D", "")
  if digits < 3 or digits > 20 then
    return nil
  end
  return gw.phone.normalise(text)
end

-- Entries of relay X's (Y's) list: `{n = "<normalised number>", calls = <left> or nil}`.
local function dial_list(letter)
  local list = gw.store.get("ad" .. string.lower(letter))
  if type(list) ~= "table" then
    return {}
  end
  return list
end

local function save_dial_list(letter, list)
  gw.store.set("ad" .. string.lower(letter), list)
end

local function find_entry(list, number)
  for index, entry in ipairs(list) do
    if gw.phone.same(entry.n, number) then
      return index
    end
  end
  return nil
end

-- Adds (or updates) `number` with `calls` left (nil = unlimited); false when the list is full.
local function put_number(letter, number, calls)
  local list = dial_list(letter)
  local index = find_entry(list, number)
  if index == nil then
    if #list >= MAX_NUMBERS then
      return false
    end
    table.insert(list, { n = number, calls = calls })
  else
    list[index].calls = calls
  end
  save_dial_list(letter, list)
  return true
end

local function remove_number(letter, number)
  local list = dial_list(letter)
  local index = find_entry(list, number)
  if index ~= nil then
    table.remove(list, index)
    save_dial_list(letter, list)
  end
end

-- Programming instructions -------------------------------------------------------------------

-- Each instruction takes the field list and the index of its first argument, applies itself
-- and returns the index after its last argument, or nil when the arguments are wrong (nothing
-- of it is applied then). `raw` fields keep their spaces; `bare` ones have none.

-- A text that becomes a setting: spaces inside kept, the ends trimmed, at most 30 characters.
local function setting_text(raw)
  local text = trim(raw)
  if utf8.len(text) == nil or utf8.len(text) > MAX_TEXT then
    return nil
  end
  return text
end

-- A relay or input text; an empty one erases it (stored as "" so that a default stays erased).
local function text_instruction(key)
  return function(raw, _, at)
    if raw[at] == nil then
      return nil
    end
    local text = setting_text(raw[at])
    if text == nil then
      return nil
    end
    set_setting(key, text)
    return at + 1
  end
end

-- `n`, `ns`, `nm`, `nh` → seconds in 0..36000, or nil.
local function parse_on_time(text)
  local count, unit = string.match(string.upper(text), "^(%d+)([SMH]?)$")
  count = tonumber(count)
  if count == nil then
    return nil
  end
  local seconds = count * (({ M = 60, H = 3600 })[unit] or 1)
  if seconds > MAX_ON_SECONDS then
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

-- The numbers from `at` on, up to the first field that is not a number.
local function take_numbers(bare, at)
  local numbers = {}
  while bare[at] ~= nil do
    local number = valid_number(bare[at])
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
    local numbers, next_at = take_numbers(bare, at)
    if #numbers == 0 then
      return nil
    end
    local list = dial_list(letter)
    local fresh = 0
    for _, number in ipairs(numbers) do
      if find_entry(list, number) == nil then
        fresh = fresh + 1
      end
    end
    if #list + fresh > MAX_NUMBERS then
      return nil
    end
    for _, number in ipairs(numbers) do
      put_number(letter, number, nil)
    end
    return next_at
  end
end

local function limited_instruction(letter)
  return function(_, bare, at)
    local number = bare[at] and valid_number(bare[at])
    local calls = bare[at + 1] and string.match(bare[at + 1], "^%d+$") and tonumber(bare[at + 1])
    if number == nil or calls == nil or calls < 1 or calls > 99 then
      return nil
    end
    if not put_number(letter, number, calls) then
      return nil
    end
    return at + 2
  end
end

local function erase_instruction(letter)
  return function(_, bare, at)
    local numbers, next_at = take_numbers(bare, at)
    if #numbers == 0 then
      return nil
    end
    for _, number in ipairs(numbers) do
      remove_number(letter, number)
    end
    return next_at
  end
end

local function new_code(_, bare, at)
  local code = bare[at]
  if code == nil or #code < 2 or #code > 8 then
    return nil
  end
  set_setting("code", string.upper(code))
  gw.log.info("access code changed (***)")
  return at + 1
end

local function status_request_text(raw, _, at)
  local text = raw[at] and setting_text(raw[at])
  if text == nil or text == "" then
    return nil
  end
  set_setting("sts", text)
  return at + 1
end

local function service_instruction(_, bare, at)
  if bare[at] == "" then
    -- `STN,` erases the service numbers.
    set_setting("stn", nil)
    return at + 1
  end
  local numbers, next_at = take_numbers(bare, at)
  if #numbers == 0 or #numbers > MAX_SERVICE_NUMBERS then
    return nil
  end
  set_setting("stn", numbers)
  return next_at
end

local function dip_instruction(_, bare, at)
  local switches = bare[at]
  if switches == nil or not string.match(switches, "^[01][01][01][01][01][01][01]$") then
    return nil
  end
  set_setting("dip", switches)
  return at + 1
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
  local limit = limit_text and string.match(limit_text, "^%d+%.?%d*$") and tonumber(limit_text)
  if code == nil or not string.match(code, "^[%*#%d]+$") or limit == nil then
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

local function code_matches(given)
  return gw.auth.check(string.upper(given), setting("code"))
end

-- Runs the instructions of a programming SMS (`fields` after the access code) up to the first
-- one that fails; returns nil on success, else the failing instruction and the rest as sent.
local function program(raw)
  local bare = {}
  for index, field in ipairs(raw) do
    bare[index] = strip_spaces(field)
  end
  local at = 1
  while at <= #raw do
    local word = string.upper(bare[at])
    if word == "" then
      -- Empty fields between instructions (a trailing comma) are harmless.
      at = at + 1
    else
      local instruction = INSTRUCTIONS[word]
      local next_at = instruction and instruction(raw, bare, at + 1)
      if next_at == nil then
        gw.log.info("programming stopped at instruction " .. word)
        return trim(table.concat(raw, ",", at))
      end
      at = next_at
    end
  end
  return nil
end

-- Operational instructions -------------------------------------------------------------------

-- `...%instructions%%...` → `instructions`; the text itself when there is no such wrapper.
local function unwrap(text)
  local first = string.find(text, "%", 1, true)
  if first ~= nil then
    local close = string.find(text, "%%", first + 1, true)
    if close ~= nil then
      return string.sub(text, first + 1, close - 1)
    end
  end
  return text
end

-- What a single instruction text does: a list of {kind = "on"|"off"|"status", relay = "X"}.
local function actions_for(instruction)
  local wanted = fold(instruction)
  local actions = {}
  for _, item in ipairs({
    { key = "arx", kind = "on", relay = "X" },
    { key = "drx", kind = "off", relay = "X" },
    { key = "ary", kind = "on", relay = "Y" },
    { key = "dry", kind = "off", relay = "Y" },
    { key = "sts", kind = "status" },
  }) do
    local text = setting(item.key)
    if text ~= nil and text ~= "" and fold(text) == wanted then
      table.insert(actions, item)
    end
  end
  return actions
end

-- The instructions of an operational SMS with their actions, or nil when any one of them is
-- not a programmed text (then the SMS is not ours).
local function parse_operational(text)
  local parsed = {}
  for _, field in ipairs(split_commas(unwrap(text))) do
    local instruction = trim(field)
    if instruction ~= "" then
      local actions = actions_for(instruction)
      if #actions == 0 then
        return nil
      end
      table.insert(parsed, { text = instruction, actions = actions })
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

local function forward(sender, text)
  tell_service(tostring(sender) .. ": " .. text)
end

-- Handlers -----------------------------------------------------------------------------------

-- The access code and the instruction fields when `text` is shaped like a programming SMS
-- (a first field, then a second one).
local function programming_fields(text)
  local fields = split_commas(text)
  if #fields < 2 then
    return nil
  end
  local code = strip_spaces(table.remove(fields, 1))
  if code == "" then
    return nil
  end
  return code, fields
end

local function on_sms(msg)
  local text = msg.text or ""
  local code, fields = programming_fields(text)
  if code ~= nil then
    if code_matches(code) then
      local failed = program(fields)
      if failed == nil then
        reply("PROGRAM OK")
      else
        reply("PROGRAM ERROR " .. failed)
      end
      relay_off("X")
      relay_off("Y")
      gw.log.info("programming SMS (code ***) from " .. tostring(msg.from))
      return true
    end
    if INSTRUCTIONS[string.upper(strip_spaces(fields[1]))] ~= nil then
      gw.log.warn("programming SMS with a wrong access code (***) from " .. tostring(msg.from))
      gw.auth.fail(msg.from)
    end
  end
  local parsed = parse_operational(text)
  if dip(DIP_FORWARD_ALL) or (parsed == nil and dip(DIP_FORWARD_UNRECOGNISED)) then
    forward(msg.from, text)
  end
  if parsed == nil then
    return false
  end
  perform(parsed)
  return true
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
      local text = setting(key)
      if text ~= nil and text ~= "" then
        tell_service(text)
      end
    end
  end
end

-- Credit check -------------------------------------------------------------------------------

-- The first number in a USSD answer, with `.` or `,` as the decimal mark.
local function balance_of(answer)
  local whole, fraction = string.match(answer, "^%D*(%d+)[%.,](%d+)")
  if whole ~= nil then
    return tonumber(whole .. "." .. fraction)
  end
  return tonumber(string.match(answer, "%d+"))
end

local function check_credit()
  local credit = gw.store.get("cre")
  if type(credit) ~= "table" then
    return
  end
  gw.modem.ussd(credit.code, function(ok, answer)
    if not ok then
      gw.log.warn("credit check " .. credit.code .. " failed: " .. tostring(answer))
      return
    end
    local balance = balance_of(answer or "")
    if balance == nil then
      gw.log.warn("credit check: no balance in the answer '" .. tostring(answer) .. "'")
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
  if type(gw.store.get("cre")) == "table" then
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
local default_code_length = #DEFAULTS.code
if default_code_length < 2 or default_code_length > 8 then
  gw.log.error("access_code must have 2 to 8 characters; the configured one does not (***)")
end

return {
  sms = on_sms,
  call = on_call,
  input = on_input,
  init = schedule_credit_check,
}
