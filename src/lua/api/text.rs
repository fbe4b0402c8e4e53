//! `gw.text`: the text helpers dialect plugins parse commands with, in Rust so that every one
//! costs time linear in its input (a Lua pattern such as `^%s*(.-)%s*$` is quadratic on a long
//! run of spaces, and one C call is one VM instruction to the budget).
//!
//! Lua strings are bytes. Valid UTF-8 (every SMS text) is handled as Unicode; other bytes are
//! handled as bytes, with ASCII white space only, so nothing here fails on odd input.

use mlua::{IntoLuaMulti, String as LuaString};
use unicode_normalization::char::is_combining_mark;
use unicode_normalization::UnicodeNormalization;

use super::*;

/// `gw.text`: trim, split, fold, parse.
pub(crate) fn register(lua: &Lua, ctx: &ApiContext) -> mlua::Result<()> {
    let m = module(lua, "text")?;
    m.set(
        "trim",
        lua.create_function(|lua, s: LuaString| lua.create_string(trim(&s.as_bytes())))?,
    )?;
    m.set(
        "split",
        lua.create_function(
            |lua, (s, sep, opts): (LuaString, LuaString, Option<Table>)| {
                let opts = SplitOptions::from_lua(opts)?;
                let sep = sep.as_bytes();
                if sep.is_empty() {
                    return Err(lua_error(lua, "gw.text.split: the separator is empty"));
                }
                let s = s.as_bytes();
                let parts = split(&s, &sep, &opts);
                let t = lua.create_table_with_capacity(parts.len(), 0)?;
                for (i, part) in parts.into_iter().enumerate() {
                    t.raw_set(i + 1, lua.create_string(part)?)?;
                }
                Ok(t)
            },
        )?,
    )?;
    m.set(
        "fold",
        lua.create_function(|lua, s: LuaString| {
            lua.create_string(map_str(&s.as_bytes(), fold, |b| b.to_ascii_lowercase()))
        })?,
    )?;
    m.set(
        "lower",
        lua.create_function(|lua, s: LuaString| {
            lua.create_string(map_str(&s.as_bytes(), str::to_lowercase, |b| {
                b.to_ascii_lowercase()
            }))
        })?,
    )?;
    m.set(
        "upper",
        lua.create_function(|lua, s: LuaString| {
            lua.create_string(map_str(&s.as_bytes(), str::to_uppercase, |b| {
                b.to_ascii_uppercase()
            }))
        })?,
    )?;
    m.set(
        "starts_with",
        lua.create_function(
            |lua, (s, prefix, folded): (LuaString, LuaString, Option<bool>)| {
                let (s, prefix) = (s.as_bytes(), prefix.as_bytes());
                match starts_with(&s, &prefix, folded.unwrap_or(false)) {
                    Some(rest) => (true, lua.create_string(rest)?).into_lua_multi(lua),
                    None => false.into_lua_multi(lua),
                }
            },
        )?,
    )?;
    m.set(
        "find",
        lua.create_function(
            |lua, (s, needle, init): (LuaString, LuaString, Option<i64>)| match find(
                &s.as_bytes(),
                &needle.as_bytes(),
                init.unwrap_or(1),
            ) {
                Some((start, end)) => (start, end).into_lua_multi(lua),
                None => Value::Nil.into_lua_multi(lua),
            },
        )?,
    )?;
    m.set(
        "int",
        lua.create_function(
            |_, (s, min, max): (Option<LuaString>, Option<i64>, Option<i64>)| {
                Ok(s.and_then(|s| int(&s.as_bytes()))
                    .filter(|n| min.map_or(true, |min| *n >= min))
                    .filter(|n| max.map_or(true, |max| *n <= max)))
            },
        )?,
    )?;
    m.set(
        "number",
        lua.create_function(|_, s: Option<LuaString>| {
            Ok(match s.and_then(|s| number(&s.as_bytes())) {
                Some(Number::Int(n)) => Value::Integer(n),
                Some(Number::Float(x)) => Value::Number(x),
                None => Value::Nil,
            })
        })?,
    )?;
    m.set(
        "duration",
        lua.create_function(|_, s: Option<LuaString>| {
            Ok(s.and_then(|s| duration_seconds(&s.as_bytes())))
        })?,
    )?;
    let c = ctx.clone();
    m.set(
        "phone",
        lua.create_function(move |_, s: Option<LuaString>| {
            let Some(s) = s else { return Ok(None) };
            let s = s.as_bytes();
            let Some(plausible) = std::str::from_utf8(&s).ok().filter(|s| is_phone(s)) else {
                return Ok(None);
            };
            let cc = c.shared().country_code.clone();
            Ok(Some(crate::phone::normalise(plausible, cc.as_deref())))
        })?,
    )?;
    Ok(())
}

/// White space as `str::trim` sees it (Unicode `White_Space`) for UTF-8, ASCII otherwise.
fn trim(s: &[u8]) -> &[u8] {
    match std::str::from_utf8(s) {
        Ok(t) => t.trim().as_bytes(),
        Err(_) => s.trim_ascii(),
    }
}

fn map_str(s: &[u8], text: impl Fn(&str) -> String, byte: impl Fn(u8) -> u8) -> Vec<u8> {
    match std::str::from_utf8(s) {
        Ok(t) => text(t).into_bytes(),
        Err(_) => s.iter().map(|b| byte(*b)).collect(),
    }
}

/// Lower case without accents: canonical decomposition with the combining marks dropped.
/// Folding char by char gives the same result as folding the whole string (reordering only
/// moves combining marks, which are dropped), which [`starts_with`] relies on.
fn fold(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        fold_char(c, &mut out);
    }
    out
}

fn fold_char(c: char, out: &mut String) {
    for d in std::iter::once(c).nfd().filter(|d| !is_combining_mark(*d)) {
        // Lower-casing can add a combining mark again ('İ' → "i̇").
        out.extend(d.to_lowercase().filter(|l| !is_combining_mark(*l)));
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct SplitOptions {
    trim: bool,
    max: Option<usize>,
    keep_empty: bool,
}

impl Default for SplitOptions {
    fn default() -> Self {
        Self {
            trim: true,
            max: None,
            keep_empty: true,
        }
    }
}

impl SplitOptions {
    fn from_lua(t: Option<Table>) -> mlua::Result<Self> {
        let mut o = Self::default();
        if let Some(t) = t {
            o.trim = t.get::<Option<bool>>("trim")?.unwrap_or(o.trim);
            o.keep_empty = t.get::<Option<bool>>("keep_empty")?.unwrap_or(o.keep_empty);
            o.max = t
                .get::<Option<i64>>("max")?
                .map(|n| usize::try_from(n.max(1)).unwrap_or(usize::MAX));
        }
        Ok(o)
    }
}

/// Splits on the plain separator `sep` (not empty). With `max`, the last part holds the rest
/// of the text, separators included; parts dropped as empty do not count towards `max`.
fn split<'a>(s: &'a [u8], sep: &[u8], opts: &SplitOptions) -> Vec<&'a [u8]> {
    let finder = memchr::memmem::Finder::new(sep);
    let tidy = |part: &'a [u8]| if opts.trim { trim(part) } else { part };
    let mut parts = Vec::new();
    let mut start = 0;
    loop {
        if opts.max.is_some_and(|max| parts.len() + 1 >= max) {
            let last = tidy(&s[start..]);
            if opts.keep_empty || !last.is_empty() {
                parts.push(last);
            }
            return parts;
        }
        let next = finder.find(&s[start..]).map(|i| start + i);
        let end = next.unwrap_or(s.len());
        let part = tidy(&s[start..end]);
        if opts.keep_empty || !part.is_empty() {
            parts.push(part);
        }
        match next {
            Some(i) => start = i + sep.len(),
            None => return parts,
        }
    }
}

/// `Some(rest)` when `s` begins with `prefix`; with `folded`, compared after [`fold`]ing both.
fn starts_with<'a>(s: &'a [u8], prefix: &[u8], folded: bool) -> Option<&'a [u8]> {
    if !folded {
        return s.strip_prefix(prefix);
    }
    let (Ok(s), Ok(prefix)) = (std::str::from_utf8(s), std::str::from_utf8(prefix)) else {
        let n = prefix.len();
        return (s.len() >= n && s[..n].eq_ignore_ascii_case(prefix)).then(|| &s[n..]);
    };
    let want = fold(prefix);
    let mut got = String::with_capacity(want.len());
    let mut chars = s.char_indices();
    let mut end = 0;
    while got.len() < want.len() {
        let (i, c) = chars.next()?;
        fold_char(c, &mut got);
        end = i + c.len_utf8();
        if !want.starts_with(got.as_str()) {
            return None;
        }
    }
    if got != want {
        return None;
    }
    // Marks that belonged to the prefix's last letter ("e" + U+0301) are not the rest.
    let rest = &s[end..];
    let rest = rest.trim_start_matches(is_combining_mark);
    Some(rest.as_bytes())
}

/// The 1-based first and last byte of the first plain occurrence of `needle` at or after
/// `init` (negative: counted from the end, like `string.find`).
fn find(s: &[u8], needle: &[u8], init: i64) -> Option<(usize, usize)> {
    let len = s.len() as i64;
    let from = match init {
        i if i > 0 => i - 1,
        0 => 0,
        i => (len + i).max(0),
    };
    if from > len {
        return None;
    }
    let from = usize::try_from(from).ok()?;
    let at = memchr::memmem::find(&s[from..], needle)? + from;
    Some((at + 1, at + needle.len()))
}

/// Decimal digits with an optional sign; nothing else, not even spaces.
fn int(s: &[u8]) -> Option<i64> {
    let digits = s.strip_prefix(b"+").or_else(|| s.strip_prefix(b"-"));
    let digits = digits.unwrap_or(s);
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(s).ok()?.parse().ok()
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Number {
    Int(i64),
    Float(f64),
}

/// An integer, or digits with one decimal point (`"2.5"`, `".5"`, `"-3."`); no exponent, no
/// `inf`/`nan`, no spaces.
fn number(s: &[u8]) -> Option<Number> {
    if let Some(n) = int(s) {
        return Some(Number::Int(n));
    }
    let body = s.strip_prefix(b"+").or_else(|| s.strip_prefix(b"-"));
    let body = body.unwrap_or(s);
    let mut dots = 0;
    let mut digits = 0;
    for b in body {
        match b {
            b'.' => dots += 1,
            b'0'..=b'9' => digits += 1,
            _ => return None,
        }
    }
    if dots > 1 || digits == 0 {
        return None;
    }
    let x: f64 = std::str::from_utf8(s).ok()?.parse().ok()?;
    x.is_finite().then_some(Number::Float(x))
}

/// `"90"` or `"90s"` seconds, `"10m"` minutes, `"2h"` hours, `"1d"` days; nil when negative,
/// malformed or too large for an integer.
fn duration_seconds(s: &[u8]) -> Option<i64> {
    let (digits, unit) = match s.last()? {
        b'0'..=b'9' => (s, 1),
        b's' | b'S' => (&s[..s.len() - 1], 1),
        b'm' | b'M' => (&s[..s.len() - 1], 60),
        b'h' | b'H' => (&s[..s.len() - 1], 3600),
        b'd' | b'D' => (&s[..s.len() - 1], 86_400),
        _ => return None,
    };
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n: i64 = std::str::from_utf8(digits).ok()?.parse().ok()?;
    n.checked_mul(unit)
}

/// An optional leading `+`, then 3 to 15 digits, with spaces and dashes between them.
fn is_phone(s: &str) -> bool {
    let body = s.strip_prefix('+').unwrap_or(s);
    let mut digits = 0;
    for c in body.chars() {
        match c {
            '0'..='9' => digits += 1,
            ' ' | '-' => {}
            _ => return false,
        }
    }
    (3..=15).contains(&digits) && body.starts_with(|c: char| c.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;

    const LONG: usize = 39_000;

    fn parts(s: &str, sep: &str, opts: SplitOptions) -> Vec<String> {
        split(s.as_bytes(), sep.as_bytes(), &opts)
            .into_iter()
            .map(|p| String::from_utf8_lossy(p).into_owned())
            .collect()
    }

    #[test]
    fn trim_removes_unicode_white_space_at_both_ends_only() {
        assert_eq!(trim(" \t\u{3000}ab c\u{a0}\n".as_bytes()), b"ab c");
        assert_eq!(trim(b"   "), b"");
        assert_eq!(trim(b"\xff  x \xfe "), b"\xff  x \xfe");
    }

    #[test]
    fn trim_of_39000_spaces_around_a_word_keeps_the_word() {
        let s = format!("{}x y{}", " ".repeat(LONG), " ".repeat(LONG));
        assert_eq!(trim(s.as_bytes()), b"x y");
    }

    #[test]
    fn split_trims_parts_and_keeps_empty_ones_by_default() {
        assert_eq!(
            parts("1234, on ,,off", ",", SplitOptions::default()),
            ["1234", "on", "", "off"]
        );
        assert_eq!(parts("", ",", SplitOptions::default()), [""]);
    }

    #[test]
    fn split_separator_is_plain_text_not_a_pattern() {
        assert_eq!(
            parts("a.%b.%c", ".%", SplitOptions::default()),
            ["a", "b", "c"]
        );
    }

    #[test]
    fn split_with_max_leaves_the_rest_in_the_last_part() {
        let opts = SplitOptions {
            max: Some(2),
            ..SplitOptions::default()
        };
        assert_eq!(
            parts("pw, SMS,hello, world", ",", opts),
            ["pw", "SMS,hello, world"]
        );
        let one = SplitOptions {
            max: Some(1),
            trim: false,
            ..SplitOptions::default()
        };
        assert_eq!(parts(" a,b ", ",", one), [" a,b "]);
    }

    #[test]
    fn split_can_drop_empty_parts_and_keep_spaces() {
        let opts = SplitOptions {
            keep_empty: false,
            trim: false,
            max: None,
        };
        assert_eq!(parts(",a,, b,", ",", opts), ["a", " b"]);
        let opts = SplitOptions {
            keep_empty: false,
            max: Some(2),
            ..SplitOptions::default()
        };
        assert_eq!(parts(",, a ,, b, c", ",", opts), ["a", ", b, c"]);
    }

    #[test]
    fn split_of_39000_separators_gives_every_empty_part() {
        let s = ",".repeat(LONG);
        assert_eq!(
            split(s.as_bytes(), b",", &SplitOptions::default()).len(),
            LONG + 1
        );
        let dropped = SplitOptions {
            keep_empty: false,
            ..SplitOptions::default()
        };
        assert!(split(s.as_bytes(), b",", &dropped).is_empty());
        let spaces = " ,".repeat(LONG / 2);
        assert_eq!(
            split(spaces.as_bytes(), b",", &SplitOptions::default()).len(),
            LONG / 2 + 1
        );
    }

    #[test]
    fn split_on_a_long_separator_over_a_near_miss_text() {
        // Every position almost matches: a naive search would compare LONG × 100 bytes.
        let s = "a".repeat(LONG);
        let sep = format!("{}b", "a".repeat(100));
        assert_eq!(
            split(s.as_bytes(), sep.as_bytes(), &SplitOptions::default()).len(),
            1
        );
    }

    #[test]
    fn fold_lowers_case_and_removes_accents() {
        assert_eq!(fold("ÉTAT Öffnen çà"), "etat offnen ca");
        assert_eq!(fold("İstanbul"), "istanbul");
        assert_eq!(fold("e\u{301}"), "e");
        assert_eq!(fold(&"É".repeat(LONG)), "e".repeat(LONG));
    }

    #[test]
    fn upper_and_lower_are_unicode_aware() {
        let up = map_str("straße é".as_bytes(), str::to_uppercase, |b| b);
        assert_eq!(up, "STRASSE É".as_bytes());
        let low = map_str("ÀB".as_bytes(), str::to_lowercase, |b| b);
        assert_eq!(low, "àb".as_bytes());
    }

    #[test]
    fn starts_with_gives_the_rest_after_the_prefix() {
        assert_eq!(starts_with(b"SET 5", b"SET ", false), Some(&b"5"[..]));
        assert_eq!(starts_with(b"set 5", b"SET ", false), None);
        assert_eq!(
            starts_with("État:armé".as_bytes(), b"ETAT", true),
            Some(":armé".as_bytes())
        );
        assert_eq!(
            starts_with("E\u{301}tat".as_bytes(), "é".as_bytes(), true),
            Some(&b"tat"[..])
        );
        assert_eq!(starts_with(b"ET", b"ETAT", true), None);
        assert_eq!(starts_with(b"\xffABc", b"\xffab", true), Some(&b"c"[..]));
    }

    #[test]
    fn starts_with_folded_on_39000_repeated_words_stops_at_the_prefix() {
        let s = "STATUS".repeat(LONG / 6);
        assert_eq!(
            starts_with(s.as_bytes(), b"status", true).map(<[u8]>::len),
            Some(s.len() - 6)
        );
        let prefix = "a".repeat(LONG);
        let text = format!("{}b", "A".repeat(LONG - 1));
        assert_eq!(starts_with(text.as_bytes(), prefix.as_bytes(), true), None);
    }

    #[test]
    fn find_is_plain_and_counts_from_one_like_string_find() {
        assert_eq!(find(b"a.b.c", b".", 1), Some((2, 2)));
        assert_eq!(find(b"a.b.c", b".", 3), Some((4, 4)));
        assert_eq!(find(b"a.b.c", b".", -2), Some((4, 4)));
        assert_eq!(find(b"a.b.c", b"%.", 1), None);
        assert_eq!(find(b"abc", b"", 4), Some((4, 3)));
        assert_eq!(find(b"abc", b"c", 10), None);
        let s = format!("{}#", " ".repeat(LONG));
        assert_eq!(find(s.as_bytes(), b"#", 1), Some((LONG + 1, LONG + 1)));
    }

    #[test]
    fn int_takes_digits_and_a_sign_only() {
        assert_eq!(int(b"42"), Some(42));
        assert_eq!(int(b"-7"), Some(-7));
        assert_eq!(int(b"+7"), Some(7));
        for bad in [
            &b""[..],
            b" 1",
            b"1 ",
            b"1.0",
            b"0x10",
            b"+",
            b"--1",
            b"99999999999999999999",
        ] {
            assert_eq!(int(bad), None, "{:?}", String::from_utf8_lossy(bad));
        }
        assert_eq!(int("9".repeat(LONG).as_bytes()), None);
    }

    #[test]
    fn number_takes_decimals_but_not_exponents_or_words() {
        assert_eq!(number(b"2.5"), Some(Number::Float(2.5)));
        assert_eq!(number(b"-3"), Some(Number::Int(-3)));
        assert_eq!(number(b".5"), Some(Number::Float(0.5)));
        for bad in [&b"1e3"[..], b"inf", b"nan", b"1.2.3", b".", b"1,5", b" 1"] {
            assert_eq!(number(bad), None, "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn duration_accepts_seconds_minutes_hours_days() {
        assert_eq!(duration_seconds(b"90"), Some(90));
        assert_eq!(duration_seconds(b"90s"), Some(90));
        assert_eq!(duration_seconds(b"10m"), Some(600));
        assert_eq!(duration_seconds(b"2h"), Some(7200));
        assert_eq!(duration_seconds(b"1d"), Some(86_400));
        for bad in [&b""[..], b"m", b"-5", b"5 m", b"5x", b"1.5h"] {
            assert_eq!(duration_seconds(bad), None);
        }
        assert_eq!(duration_seconds(b"9223372036854775807d"), None);
    }

    #[test]
    fn phone_accepts_plausible_numbers_only() {
        assert!(is_phone("+44 7700-900123"));
        assert!(is_phone("112"));
        assert!(!is_phone("12"));
        assert!(!is_phone("1234567890123456"));
        assert!(!is_phone("+44 abc"));
        assert!(!is_phone("+"));
        assert!(!is_phone(" 123"));
        assert!(!is_phone(&"1".repeat(LONG)));
    }
}

/// `gw.text`, `require` and the plugin text as scripts see them, through the host.
#[cfg(test)]
mod host_tests {
    use std::collections::BTreeMap;

    use crate::bus::{Command, ScriptKind};
    use crate::lua::tests::{send, Fixture};

    fn replies(d: &crate::lua::Dispatch) -> Vec<String> {
        d.commands
            .iter()
            .filter_map(|c| match c {
                Command::SendSms { text, .. } => Some(text.clone()),
                _ => None,
            })
            .collect()
    }

    fn write_lib(f: &Fixture, name: &str, source: &str) -> std::path::PathBuf {
        let dir = f.dir.path().join("lib");
        let path = dir.join(format!("{name}.lua"));
        let written = std::fs::create_dir_all(&dir).and_then(|()| std::fs::write(&path, source));
        assert!(written.is_ok(), "write lib {name}: {written:?}");
        path
    }

    #[test]
    fn scripts_call_gw_text_with_lua_values() {
        let mut f = Fixture::new();
        f.load(
            "p",
            r#"return { sms = function(m)
                local parts = gw.text.split(m.text, ",", { max = 3 })
                local ok, rest = gw.text.starts_with(parts[1], "état", true)
                local s, e = gw.text.find(m.text, "%")
                gw.sms.reply(table.concat({
                    #parts, parts[3], tostring(ok), rest, s .. "-" .. e,
                    gw.text.int("42", 1, 50), tostring(gw.text.int("42", 1, 10)),
                    gw.text.duration("10m"), gw.text.number("2.5"),
                    gw.text.phone("07700 900-123"), tostring(gw.text.phone("12")),
                    gw.text.upper("é"), gw.text.lower("É"), gw.text.fold("ÉTÉ"),
                    "[" .. gw.text.trim("  x  ") .. "]",
                }, "|"))
                return true
            end }"#,
        );
        let d = f.sms("+447700900123", "ETATX, b ,c,%d");
        assert_eq!(
            replies(&d),
            ["3|c,%d|true|X|13-13|42|nil|600|2.5|+447700900123|nil|É|é|ete|[x]"]
        );
    }

    #[test]
    fn split_with_an_empty_separator_is_an_error_naming_the_line() {
        let mut f = Fixture::new();
        f.load(
            "p",
            "return { sms = function(m)\n gw.text.split(m.text, '')\n return true end }",
        );
        let d = f.sms("+447700900123", "a,b");
        assert_eq!(d.errors.len(), 1, "{:?}", d.errors);
        assert!(d.errors[0].contains("p.lua:2:"), "{:?}", d.errors);
        assert!(d.errors[0].contains("separator is empty"), "{:?}", d.errors);
    }

    #[test]
    fn plugins_get_the_text_trimmed_and_capped_and_rules_get_all_of_it() {
        let mut f = Fixture::new();
        f.host.set_plugin_text_limit(5);
        f.load(
            "p",
            "return { sms = function(m) gw.sms.reply('[' .. m.text .. ']') end }",
        );
        let rule = f.write(
            "r",
            "return { on = { sms = {} }, execute = function(gw, ev) gw.sms.reply('{' .. ev.text .. '}') end }",
        );
        let status = f
            .host
            .load_rule("r", &rule, &serde_json::json!({}), BTreeMap::new(), f.t0);
        assert_eq!(status.error, None);
        let d = f.sms("+447700900123", "  \n Ab Cdéfgh  ");
        assert_eq!(replies(&d), ["[Ab Cd]", "{  \n Ab Cdéfgh  }"]);
        let d = f.sms("+447700900123", " éé ");
        assert_eq!(replies(&d), ["[éé]", "{ éé }"]);
    }

    #[test]
    fn the_default_text_limit_is_1600_characters() {
        let mut f = Fixture::new();
        f.load(
            "p",
            "return { sms = function(m) gw.sms.reply(tostring(utf8.len(m.text))) end }",
        );
        let d = f.sms(
            "+447700900123",
            &format!("{}{}", " ".repeat(39_000), "é".repeat(39_000)),
        );
        assert_eq!(replies(&d), ["1600"]);
    }

    #[test]
    fn require_runs_a_library_once_and_shares_its_value() {
        let mut f = Fixture::new();
        write_lib(
            &f,
            "words",
            "count = (count or 0) + 1\nreturn { hello = function() return 'hi ' .. count end }",
        );
        f.load(
            "p",
            r#"local a = require("words")
               local b = require("words")
               return { sms = function(m) gw.sms.reply(a.hello() .. tostring(a == b)) return true end }"#,
        );
        let d = f.sms("+447700900123", "x");
        assert_eq!(d.commands, [send("+447700900123", "hi 1true")]);
        let lib = f.dir.path().join("lib").join("words.lua");
        assert_eq!(
            f.host.dependents(&lib),
            [(ScriptKind::Plugin, "p".to_string())]
        );
        let other = f.dir.path().join("lib").join("other.lua");
        assert!(f.host.dependents(&other).is_empty());
    }

    #[test]
    fn require_refuses_paths_missing_files_and_cycles() {
        let mut f = Fixture::new();
        for (name, expected) in [
            ("../p", "is not a library name"),
            ("a.b", "is not a library name"),
            ("", "is not a library name"),
            ("missing", "cannot read lib/missing.lua"),
        ] {
            let status = f.try_load("p", &format!("require({name:?}) return {{}}"));
            let error = status.error.unwrap_or_default();
            assert!(error.contains(expected), "{name}: {error}");
        }
        write_lib(&f, "loop", "require('loop') return {}");
        let status = f.try_load("q", "require('loop') return {}");
        assert!(
            status.error.unwrap_or_default().contains("requires itself"),
            "a cycle is an error"
        );
    }

    #[test]
    fn a_library_runs_under_the_callers_instruction_budget() {
        let mut f = Fixture::new();
        write_lib(&f, "spin", "while true do end");
        let status = f.try_load("p", "require('spin') return {}");
        assert!(
            status
                .error
                .unwrap_or_default()
                .contains("instruction limit exceeded"),
            "the loop is stopped"
        );
        // Required lazily, inside a hook: the hook's call is stopped, the next one works.
        f.load(
            "q",
            "return { sms = function(m) if m.text == 'spin' then require('spin') end gw.sms.reply('ok') return true end }",
        );
        let d = f.sms("+447700900123", "spin");
        assert!(
            d.errors
                .iter()
                .any(|e| e.contains("instruction limit exceeded")),
            "{:?}",
            d.errors
        );
        let d = f.sms("+447700900123", "again");
        assert_eq!(d.commands, [send("+447700900123", "ok")]);
    }

    #[test]
    fn a_library_has_the_sandbox_of_its_script() {
        let mut f = Fixture::new();
        write_lib(
            &f,
            "probe",
            "return { io = io, os_exit = os.exit, gw = gw ~= nil }",
        );
        f.load(
            "p",
            "local p = require('probe') return { sms = function() gw.sms.reply(tostring(p.io) .. tostring(p.os_exit) .. tostring(p.gw)) return true end }",
        );
        let d = f.sms("+447700900123", "x");
        assert_eq!(d.commands, [send("+447700900123", "nilniltrue")]);
    }

    #[test]
    fn a_changed_library_takes_effect_when_its_dependents_reload() {
        let mut f = Fixture::new();
        let lib = write_lib(&f, "answer", "return 'one'");
        f.load("p", "local a = require('answer') return { sms = function() gw.sms.reply(a) return true end }");
        assert_eq!(f.host.dependents(&lib).len(), 1);
        write_lib(&f, "answer", "return 'two'");
        let path = f.dir.path().join("p.lua");
        for (kind, name) in f.host.dependents(&lib) {
            assert_eq!(kind, ScriptKind::Plugin);
            let status =
                f.host
                    .load_plugin(&name, &path, &serde_json::json!({}), BTreeMap::new(), f.t0);
            assert_eq!(status.error, None);
        }
        let d = f.sms("+447700900123", "x");
        assert_eq!(d.commands, [send("+447700900123", "two")]);
        // A broken library keeps the running version, like a broken script.
        write_lib(&f, "answer", "return (");
        let status = f
            .host
            .load_plugin("p", &path, &serde_json::json!({}), BTreeMap::new(), f.t0);
        assert!(status.error.unwrap_or_default().contains("lib/answer.lua"));
        let d = f.sms("+447700900123", "x");
        assert_eq!(d.commands, [send("+447700900123", "two")]);
    }
}
