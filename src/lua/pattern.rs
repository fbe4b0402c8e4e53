//! Lua 5.4 pattern matching (`string.find`, `match`, `gmatch`, `gsub`) with a step counter.
//!
//! The C library's matcher is one VM instruction however long it backtracks: `.-.-.-.-x` on
//! 40 000 characters runs for hours, and the instruction hook never sees it. This is a port of
//! `lstrlib.c`'s matcher that charges every step (one attempt of the pattern at a position, one
//! character tried by a repetition) to the call's [`Budget`], so a pathological pattern ends
//! with the same "instruction limit exceeded" error as a runaway loop, and the wall-clock
//! deadline is checked while it runs. Semantics follow the reference manual (§6.4.1) and the C
//! code it replaces, error messages included.

use std::sync::Arc;

use mlua::{Function, Lua, MultiValue, Table, Value};

use super::sandbox::Budget;

/// Captures per match, as in Lua (`LUA_MAXCAPTURES`).
const MAX_CAPTURES: usize = 32;
/// Nesting of the matcher's recursion, as in Lua (`MAXCCALLS`): "pattern too complex" beyond.
const MAX_DEPTH: u32 = 200;
/// Steps are charged to the budget in batches of this many.
const STEPS_PER_CHARGE: u64 = 256;
/// Bytes of `gsub` output charged as one instruction, like `string.rep`.
const BYTES_PER_STEP: u64 = 16;

const SPECIALS: &[u8] = b"^$*+?.([%-";

#[derive(Clone, Copy)]
enum CapLen {
    Unfinished,
    Position,
    Len(usize),
}

#[derive(Clone, Copy)]
struct Capture {
    init: usize,
    len: CapLen,
}

/// Why a match stopped early.
enum Stop {
    Budget,
    Error(String),
}

type MatchResult = Result<Option<usize>, Stop>;

struct MatchState<'a> {
    src: &'a [u8],
    pat: &'a [u8],
    depth: u32,
    level: usize,
    capture: [Capture; MAX_CAPTURES],
    budget: &'a Budget,
    /// Steps not yet charged to the budget.
    pending: u64,
}

fn at(bytes: &[u8], i: usize) -> u8 {
    // Lua strings end with a NUL the C matcher reads past the end; 0 stands in for it.
    bytes.get(i).copied().unwrap_or(0)
}

fn class_matches(c: u8, class: u8) -> bool {
    let res = match class.to_ascii_lowercase() {
        b'a' => c.is_ascii_alphabetic(),
        b'c' => c.is_ascii_control(),
        b'd' => c.is_ascii_digit(),
        b'g' => c.is_ascii_graphic(),
        b'l' => c.is_ascii_lowercase(),
        b'p' => c.is_ascii_punctuation(),
        // C's isspace: also vertical tab, which Rust's ASCII whitespace leaves out.
        b's' => c.is_ascii_whitespace() || c == 0x0b,
        b'u' => c.is_ascii_uppercase(),
        b'w' => c.is_ascii_alphanumeric(),
        b'x' => c.is_ascii_hexdigit(),
        _ => return class == c,
    };
    if class.is_ascii_uppercase() {
        !res
    } else {
        res
    }
}

impl<'a> MatchState<'a> {
    fn new(src: &'a [u8], pat: &'a [u8], budget: &'a Budget) -> Self {
        Self {
            src,
            pat,
            depth: MAX_DEPTH,
            level: 0,
            capture: [Capture {
                init: 0,
                len: CapLen::Unfinished,
            }; MAX_CAPTURES],
            budget,
            pending: 0,
        }
    }

    fn reprep(&mut self) {
        self.level = 0;
        self.depth = MAX_DEPTH;
    }

    fn step(&mut self) -> Result<(), Stop> {
        self.pending += 1;
        if self.pending >= STEPS_PER_CHARGE {
            self.flush()?;
        }
        Ok(())
    }

    /// Charges the steps not charged yet; `Stop::Budget` when the call is out of budget.
    fn flush(&mut self) -> Result<(), Stop> {
        let steps = std::mem::take(&mut self.pending);
        if self.budget.charge(steps) {
            return Err(Stop::Budget);
        }
        Ok(())
    }

    fn err<T>(msg: impl Into<String>) -> Result<T, Stop> {
        Err(Stop::Error(msg.into()))
    }

    fn class_end(&self, mut p: usize) -> Result<usize, Stop> {
        let c = at(self.pat, p);
        p += 1;
        if c == b'%' {
            if p >= self.pat.len() {
                return Self::err("malformed pattern (ends with '%')");
            }
            return Ok(p + 1);
        }
        if c == b'[' {
            if at(self.pat, p) == b'^' {
                p += 1;
            }
            // The first character after `[` (or `[^`) is part of the set, even a `]`.
            loop {
                if p >= self.pat.len() {
                    return Self::err("malformed pattern (missing ']')");
                }
                let c = self.pat[p];
                p += 1;
                if c == b'%' && p < self.pat.len() {
                    p += 1;
                }
                if at(self.pat, p) == b']' && p < self.pat.len() {
                    break;
                }
            }
            return Ok(p + 1);
        }
        Ok(p)
    }

    /// `p` is at `[`, `ec` at the closing `]`.
    fn bracket_class(&self, c: u8, mut p: usize, ec: usize) -> bool {
        let mut sig = true;
        if at(self.pat, p + 1) == b'^' {
            sig = false;
            p += 1;
        }
        loop {
            p += 1;
            if p >= ec {
                break;
            }
            let pc = self.pat[p];
            if pc == b'%' {
                p += 1;
                if class_matches(c, at(self.pat, p)) {
                    return sig;
                }
            } else if at(self.pat, p + 1) == b'-' && p + 2 < ec {
                p += 2;
                if pc <= c && c <= self.pat[p] {
                    return sig;
                }
            } else if pc == c {
                return sig;
            }
        }
        !sig
    }

    fn single_match(&self, s: usize, p: usize, ep: usize) -> bool {
        if s >= self.src.len() {
            return false;
        }
        let c = self.src[s];
        match self.pat[p] {
            b'.' => true,
            b'%' => class_matches(c, at(self.pat, p + 1)),
            b'[' => self.bracket_class(c, p, ep - 1),
            pc => pc == c,
        }
    }

    fn match_balance(&mut self, s: usize, p: usize) -> MatchResult {
        if p + 1 >= self.pat.len() {
            return Self::err("malformed pattern (missing arguments to '%b')");
        }
        if s >= self.src.len() || self.src[s] != self.pat[p] {
            return Ok(None);
        }
        let (b, e) = (self.pat[p], self.pat[p + 1]);
        let mut cont = 1;
        let mut s = s + 1;
        while s < self.src.len() {
            self.step()?;
            let c = self.src[s];
            if c == e {
                cont -= 1;
                if cont == 0 {
                    return Ok(Some(s + 1));
                }
            } else if c == b {
                cont += 1;
            }
            s += 1;
        }
        Ok(None)
    }

    fn max_expand(&mut self, s: usize, p: usize, ep: usize) -> MatchResult {
        let mut i = 0;
        while self.single_match(s + i, p, ep) {
            self.step()?;
            i += 1;
        }
        loop {
            if let Some(res) = self.do_match(s + i, ep + 1)? {
                return Ok(Some(res));
            }
            if i == 0 {
                return Ok(None);
            }
            i -= 1;
        }
    }

    fn min_expand(&mut self, mut s: usize, p: usize, ep: usize) -> MatchResult {
        loop {
            if let Some(res) = self.do_match(s, ep + 1)? {
                return Ok(Some(res));
            }
            if self.single_match(s, p, ep) {
                s += 1;
            } else {
                return Ok(None);
            }
        }
    }

    fn start_capture(&mut self, s: usize, p: usize, len: CapLen) -> MatchResult {
        let level = self.level;
        if level >= MAX_CAPTURES {
            return Self::err("too many captures");
        }
        self.capture[level] = Capture { init: s, len };
        self.level = level + 1;
        let res = self.do_match(s, p)?;
        if res.is_none() {
            self.level -= 1;
        }
        Ok(res)
    }

    fn end_capture(&mut self, s: usize, p: usize) -> MatchResult {
        let Some(l) = (0..self.level)
            .rev()
            .find(|&l| matches!(self.capture[l].len, CapLen::Unfinished))
        else {
            return Self::err("invalid pattern capture");
        };
        self.capture[l].len = CapLen::Len(s - self.capture[l].init);
        let res = self.do_match(s, p)?;
        if res.is_none() {
            self.capture[l].len = CapLen::Unfinished;
        }
        Ok(res)
    }

    fn check_capture(&self, l: u8) -> Result<usize, Stop> {
        let l = usize::from(l).wrapping_sub(usize::from(b'1'));
        if l >= self.level || matches!(self.capture[l].len, CapLen::Unfinished) {
            return Self::err(format!(
                "invalid capture index %{}",
                l.wrapping_add(1) as isize
            ));
        }
        Ok(l)
    }

    fn match_capture(&mut self, s: usize, l: u8) -> MatchResult {
        let l = self.check_capture(l)?;
        let cap = self.capture[l];
        let len = match cap.len {
            CapLen::Len(n) => n,
            _ => 0,
        };
        // Comparing is work too: one step per 16 bytes.
        for _ in 0..len as u64 / BYTES_PER_STEP {
            self.step()?;
        }
        if self.src.len() - s >= len && self.src[cap.init..cap.init + len] == self.src[s..s + len] {
            Ok(Some(s + len))
        } else {
            Ok(None)
        }
    }

    fn do_match(&mut self, s: usize, p: usize) -> MatchResult {
        if self.depth == 0 {
            return Self::err("pattern too complex");
        }
        self.depth -= 1;
        let res = self.match_here(s, p);
        self.depth += 1;
        res
    }

    fn match_here(&mut self, mut s: usize, mut p: usize) -> MatchResult {
        loop {
            self.step()?;
            if p >= self.pat.len() {
                return Ok(Some(s));
            }
            match self.pat[p] {
                b'(' => {
                    return if at(self.pat, p + 1) == b')' {
                        self.start_capture(s, p + 2, CapLen::Position)
                    } else {
                        self.start_capture(s, p + 1, CapLen::Unfinished)
                    };
                }
                b')' => return self.end_capture(s, p + 1),
                b'$' if p + 1 == self.pat.len() => {
                    return Ok((s == self.src.len()).then_some(s));
                }
                b'%' if at(self.pat, p + 1) == b'b' => match self.match_balance(s, p + 2)? {
                    Some(next) => {
                        s = next;
                        p += 4;
                        continue;
                    }
                    None => return Ok(None),
                },
                b'%' if at(self.pat, p + 1) == b'f' => {
                    p += 2;
                    if at(self.pat, p) != b'[' {
                        return Self::err("missing '[' after '%f' in pattern");
                    }
                    let ep = self.class_end(p)?;
                    let previous = if s == 0 { 0 } else { self.src[s - 1] };
                    let current = at(self.src, s);
                    if !self.bracket_class(previous, p, ep - 1)
                        && self.bracket_class(current, p, ep - 1)
                    {
                        p = ep;
                        continue;
                    }
                    return Ok(None);
                }
                b'%' if at(self.pat, p + 1).is_ascii_digit() => {
                    match self.match_capture(s, at(self.pat, p + 1))? {
                        Some(next) => {
                            s = next;
                            p += 2;
                            continue;
                        }
                        None => return Ok(None),
                    }
                }
                _ => {
                    let ep = self.class_end(p)?;
                    let suffix = at(self.pat, ep);
                    let suffix = if ep < self.pat.len() { suffix } else { 0 };
                    if !self.single_match(s, p, ep) {
                        if matches!(suffix, b'*' | b'?' | b'-') {
                            p = ep + 1;
                            continue;
                        }
                        return Ok(None);
                    }
                    match suffix {
                        b'?' => {
                            if let Some(res) = self.do_match(s + 1, ep + 1)? {
                                return Ok(Some(res));
                            }
                            p = ep + 1;
                        }
                        b'+' => return self.max_expand(s + 1, p, ep),
                        b'*' => return self.max_expand(s, p, ep),
                        b'-' => return self.min_expand(s, p, ep),
                        _ => {
                            s += 1;
                            p = ep;
                        }
                    }
                }
            }
        }
    }

    /// Capture `i` of the match `s..e` (the whole match when there are no captures).
    fn capture_value(&self, lua: &Lua, i: usize, s: usize, e: usize) -> mlua::Result<Value> {
        if i >= self.level {
            if i != 0 {
                return Err(runtime(format!("invalid capture index %{}", i + 1)));
            }
            return Ok(Value::String(lua.create_string(&self.src[s..e])?));
        }
        let cap = self.capture[i];
        match cap.len {
            CapLen::Unfinished => Err(runtime("unfinished capture")),
            CapLen::Position => Ok(Value::Integer(cap.init as i64 + 1)),
            CapLen::Len(len) => Ok(Value::String(
                lua.create_string(&self.src[cap.init..cap.init + len])?,
            )),
        }
    }

    /// Every capture (or the whole match) of `s..e`.
    fn captures(&self, lua: &Lua, s: usize, e: usize, whole: bool) -> mlua::Result<MultiValue> {
        let n = if self.level == 0 && whole {
            1
        } else {
            self.level
        };
        let mut values = MultiValue::with_capacity(n);
        for i in 0..n {
            values.push_back(self.capture_value(lua, i, s, e)?);
        }
        Ok(values)
    }
}

fn runtime(msg: impl Into<String>) -> mlua::Error {
    mlua::Error::RuntimeError(msg.into())
}

/// Lua's `posrelatI`: a 1-based start position, negative from the end, clamped to 1.
fn start_position(pos: i64, len: usize) -> usize {
    if pos > 0 {
        usize::try_from(pos).unwrap_or(usize::MAX)
    } else if pos == 0 || pos.unsigned_abs() > len as u64 {
        1
    } else {
        len - pos.unsigned_abs() as usize + 1
    }
}

/// What the pattern functions share: the budget they charge, and the messages they give.
#[derive(Clone)]
struct Matcher {
    budget: Arc<Budget>,
    /// Most bytes `gsub` may build outside the Lua state (the script's memory limit).
    max_output: usize,
}

impl Matcher {
    fn stop(&self, name: &str, stop: Stop) -> mlua::Error {
        match stop {
            Stop::Budget => runtime(format!("{name}: {}", self.budget.exceeded_message())),
            Stop::Error(msg) => runtime(format!("{name}: {msg}")),
        }
    }

    fn find_aux(
        &self,
        lua: &Lua,
        find: bool,
        (s, p, init, plain): (mlua::String, mlua::String, Option<i64>, Option<Value>),
    ) -> mlua::Result<MultiValue> {
        let name = if find { "string.find" } else { "string.match" };
        let (src_b, pat_b) = (s.as_bytes(), p.as_bytes());
        let (src, pat): (&[u8], &[u8]) = (&src_b, &pat_b);
        let init = start_position(init.unwrap_or(1), src.len()) - 1;
        if init > src.len() {
            return Ok(MultiValue::from_iter([Value::Nil]));
        }
        let plain = plain.is_some_and(|v| !matches!(v, Value::Nil | Value::Boolean(false)));
        if find && (plain || !pat.iter().any(|c| SPECIALS.contains(c))) {
            // Two-way search: linear whatever the needle, then charged by what it scanned.
            let found = memchr::memmem::find(&src[init..], pat);
            let scanned = found.map_or(src.len() - init, |at| at + pat.len());
            if self.budget.charge(scanned as u64 / BYTES_PER_STEP) {
                return Err(runtime(format!(
                    "{name}: {}",
                    self.budget.exceeded_message()
                )));
            }
            return Ok(match found {
                Some(at) => MultiValue::from_iter([
                    Value::Integer((init + at + 1) as i64),
                    Value::Integer((init + at + pat.len()) as i64),
                ]),
                None => MultiValue::from_iter([Value::Nil]),
            });
        }
        let (anchor, pat) = match pat.first() {
            Some(b'^') => (true, &pat[1..]),
            _ => (false, pat),
        };
        let mut ms = MatchState::new(src, pat, &self.budget);
        let mut s1 = init;
        loop {
            ms.reprep();
            match ms.do_match(s1, 0) {
                Ok(Some(e)) => {
                    ms.flush().map_err(|stop| self.stop(name, stop))?;
                    if find {
                        let mut out = MultiValue::from_iter([
                            Value::Integer(s1 as i64 + 1),
                            Value::Integer(e as i64),
                        ]);
                        out.extend(ms.captures(lua, 0, 0, false)?);
                        return Ok(out);
                    }
                    return ms.captures(lua, s1, e, true);
                }
                Ok(None) => {}
                Err(stop) => return Err(self.stop(name, stop)),
            }
            s1 += 1;
            if anchor || s1 > src.len() {
                break;
            }
        }
        ms.flush().map_err(|stop| self.stop(name, stop))?;
        Ok(MultiValue::from_iter([Value::Nil]))
    }

    fn gmatch(
        &self,
        lua: &Lua,
        (s, p, init): (mlua::String, mlua::String, Option<i64>),
    ) -> mlua::Result<Function> {
        let len = s.as_bytes().len();
        let mut src = start_position(init.unwrap_or(1), len) - 1;
        if src > len {
            src = len + 1;
        }
        let mut lastmatch: Option<usize> = None;
        let this = self.clone();
        lua.create_function_mut(move |lua, ()| {
            let (subject_b, pat_b) = (s.as_bytes(), p.as_bytes());
            let (subject, pat): (&[u8], &[u8]) = (&subject_b, &pat_b);
            let mut ms = MatchState::new(subject, pat, &this.budget);
            while src <= subject.len() {
                ms.reprep();
                match ms.do_match(src, 0) {
                    Ok(Some(e)) if Some(e) != lastmatch => {
                        ms.flush()
                            .map_err(|stop| this.stop("string.gmatch", stop))?;
                        let start = src;
                        src = e;
                        lastmatch = Some(e);
                        return ms.captures(lua, start, e, true);
                    }
                    Ok(_) => src += 1,
                    Err(stop) => return Err(this.stop("string.gmatch", stop)),
                }
            }
            ms.flush()
                .map_err(|stop| this.stop("string.gmatch", stop))?;
            Ok(MultiValue::from_iter([Value::Nil]))
        })
    }

    fn gsub(
        &self,
        lua: &Lua,
        (s, p, repl, max_n): (mlua::String, mlua::String, Value, Option<i64>),
    ) -> mlua::Result<(Value, i64)> {
        const NAME: &str = "string.gsub";
        let (src_b, pat_b) = (s.as_bytes(), p.as_bytes());
        let (src, pat): (&[u8], &[u8]) = (&src_b, &pat_b);
        match repl {
            Value::String(_) | Value::Integer(_) | Value::Number(_) => {}
            Value::Table(_) | Value::Function(_) => {}
            ref other => {
                return Err(runtime(format!(
                    "bad argument #3 to 'gsub' (string/function/table expected, got {})",
                    other.type_name()
                )))
            }
        }
        let repl_text = match &repl {
            Value::Integer(_) | Value::Number(_) | Value::String(_) => Some(
                lua.coerce_string(repl.clone())?
                    .map(|s| s.as_bytes().to_vec()),
            ),
            _ => None,
        }
        .flatten();
        let max_n = max_n.unwrap_or(src.len() as i64 + 1);
        let (anchor, pat) = match pat.first() {
            Some(b'^') => (true, &pat[1..]),
            _ => (false, pat),
        };
        let mut ms = MatchState::new(src, pat, &self.budget);
        let mut out: Vec<u8> = Vec::new();
        let mut charged_out = 0usize;
        let mut pos = 0usize;
        let mut lastmatch: Option<usize> = None;
        let mut n = 0i64;
        let mut changed = false;
        while n < max_n {
            ms.reprep();
            let matched = ms.do_match(pos, 0).map_err(|stop| self.stop(NAME, stop))?;
            match matched {
                Some(e) if Some(e) != lastmatch => {
                    n += 1;
                    changed |= self.add_value(lua, &ms, &mut out, pos, e, &repl, &repl_text)?;
                    pos = e;
                    lastmatch = Some(e);
                }
                _ if pos < src.len() => {
                    out.push(src[pos]);
                    pos += 1;
                }
                _ => break,
            }
            // The result is built outside the Lua state: charge it and cap it like a string.
            if out.len() - charged_out >= 4096 {
                self.charge_output(&mut ms, &mut charged_out, out.len())?;
            }
            if anchor {
                break;
            }
        }
        self.charge_output(&mut ms, &mut charged_out, out.len())?;
        if !changed {
            return Ok((Value::String(s), n));
        }
        out.extend_from_slice(&src[pos..]);
        Ok((Value::String(lua.create_string(&out)?), n))
    }

    fn charge_output(
        &self,
        ms: &mut MatchState,
        charged: &mut usize,
        len: usize,
    ) -> mlua::Result<()> {
        if len > self.max_output {
            return Err(runtime(format!(
                "string.gsub: result larger than the memory limit ({} KiB)",
                self.max_output / 1024
            )));
        }
        ms.pending += (len - *charged) as u64 / BYTES_PER_STEP;
        *charged = len;
        ms.flush().map_err(|stop| self.stop("string.gsub", stop))
    }

    /// Appends the replacement of match `s..e`; false when the match is kept as it was.
    #[allow(clippy::too_many_arguments)]
    fn add_value(
        &self,
        lua: &Lua,
        ms: &MatchState,
        out: &mut Vec<u8>,
        s: usize,
        e: usize,
        repl: &Value,
        repl_text: &Option<Vec<u8>>,
    ) -> mlua::Result<bool> {
        let value = match repl {
            Value::Function(f) => f.call::<Value>(ms.captures(lua, s, e, true)?)?,
            Value::Table(t) => t.get::<Value>(ms.capture_value(lua, 0, s, e)?)?,
            _ => {
                let text = repl_text.as_deref().unwrap_or_default();
                add_string(lua, ms, out, s, e, text)?;
                return Ok(true);
            }
        };
        match value {
            Value::Nil | Value::Boolean(false) => {
                out.extend_from_slice(&ms.src[s..e]);
                Ok(false)
            }
            Value::String(_) | Value::Integer(_) | Value::Number(_) => {
                let text = lua
                    .coerce_string(value)?
                    .map(|s| s.as_bytes().to_vec())
                    .unwrap_or_default();
                out.extend_from_slice(&text);
                Ok(true)
            }
            other => Err(runtime(format!(
                "invalid replacement value (a {})",
                other.type_name()
            ))),
        }
    }
}

/// A replacement string: `%0`–`%9` are captures, `%%` is `%`.
fn add_string(
    lua: &Lua,
    ms: &MatchState,
    out: &mut Vec<u8>,
    s: usize,
    e: usize,
    text: &[u8],
) -> mlua::Result<()> {
    let mut i = 0;
    while i < text.len() {
        let c = text[i];
        i += 1;
        if c != b'%' {
            out.push(c);
            continue;
        }
        let d = at(text, i);
        i += 1;
        if d == b'%' {
            out.push(b'%');
        } else if d == b'0' {
            out.extend_from_slice(&ms.src[s..e]);
        } else if d.is_ascii_digit() {
            let value = ms.capture_value(lua, usize::from(d - b'1'), s, e)?;
            match value {
                Value::String(v) => out.extend_from_slice(&v.as_bytes()),
                Value::Integer(n) => out.extend_from_slice(n.to_string().as_bytes()),
                _ => {}
            }
        } else {
            return Err(runtime("invalid use of '%' in replacement string"));
        }
    }
    Ok(())
}

/// Replaces `string.find`, `match`, `gmatch` and `gsub` with the step-counted matcher.
pub(super) fn install(lua: &Lua, budget: Arc<Budget>, max_output: usize) -> mlua::Result<()> {
    let string: Table = lua.globals().get("string")?;
    let m = Matcher { budget, max_output };
    let this = m.clone();
    string.set(
        "find",
        lua.create_function(move |lua, args| this.find_aux(lua, true, args))?,
    )?;
    let this = m.clone();
    string.set(
        "match",
        lua.create_function(move |lua, args| this.find_aux(lua, false, args))?,
    )?;
    let this = m.clone();
    string.set(
        "gmatch",
        lua.create_function(move |lua, args| this.gmatch(lua, args))?,
    )?;
    let this = m;
    string.set(
        "gsub",
        lua.create_function(move |lua, args| this.gsub(lua, args))?,
    )?;
    Ok(())
}
