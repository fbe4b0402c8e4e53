//! Phone numbers: one function normalises, one compares.
//!
//! Dialects match numbers differently (whole number, or the last 8 digits), and users type
//! them in every format (`07700 900123`, `+44 7700 900123`, `0044…`). Everything that stores or
//! compares a number goes through here.

/// Normalises `number`: strips spaces, dashes, dots and brackets; `00` becomes `+`; a national
/// number with a leading `0` becomes E.164 when `country_code` (digits, e.g. `"44"`) is known.
/// Alphanumeric senders (`VODAFONE`) are returned trimmed and otherwise unchanged.
pub fn normalise(number: &str, country_code: Option<&str>) -> String {
    let trimmed = number.trim();
    let compact: String = trimmed
        .chars()
        .filter(|c| !matches!(c, ' ' | '-' | '.' | '(' | ')' | '/'))
        .collect();
    let (plus, digits) = match compact.strip_prefix('+') {
        Some(rest) => (true, rest),
        None => (false, compact.as_str()),
    };
    if digits.is_empty() || !digits.chars().all(|c| c.is_ascii_digit()) {
        return trimmed.to_string();
    }
    if plus {
        return format!("+{digits}");
    }
    if let Some(rest) = digits.strip_prefix("00") {
        return format!("+{rest}");
    }
    match (country_code, digits.strip_prefix('0')) {
        (Some(cc), Some(national)) if !cc.is_empty() && !national.is_empty() => {
            format!("+{cc}{national}")
        }
        _ => digits.to_string(),
    }
}

/// True when `address` is written as a phone number: an optional `+`, then digits and the
/// separators [`normalise`] strips. Alphanumeric sender IDs (`VODAFONE`, `Bank1234`) are not.
pub fn is_number(address: &str) -> bool {
    let trimmed = address.trim();
    let rest = trimmed.strip_prefix('+').unwrap_or(trimmed);
    let mut any_digit = false;
    for c in rest.chars() {
        match c {
            '0'..='9' => any_digit = true,
            ' ' | '-' | '.' | '(' | ')' | '/' => {}
            _ => return false,
        }
    }
    any_digit
}

/// The key a sender's credential failures are counted under: the normalised number, or an
/// alphanumeric ID case-folded (so `BANK` and `Bank` are one sender). `None` for an empty one.
pub fn sender_key(address: &str, country_code: Option<&str>) -> Option<String> {
    let trimmed = address.trim();
    if trimmed.is_empty() {
        return None;
    }
    if is_number(trimmed) {
        return Some(normalise(trimmed, country_code));
    }
    Some(trimmed.to_lowercase())
}

/// The digits of a number, in order (what comparisons work on).
pub fn digits(number: &str) -> String {
    number.chars().filter(char::is_ascii_digit).collect()
}

/// True when `a` and `b` are the same number: after normalisation, or on their last
/// `last_digits` digits when given (both must have at least that many digits, so that a short
/// code never matches a long number by accident). Empty, digit-less and alphanumeric
/// addresses never match: `Bank00900123` is not the number ending in 00900123.
pub fn same(a: &str, b: &str, country_code: Option<&str>, last_digits: Option<usize>) -> bool {
    if !is_number(a) || !is_number(b) {
        return false;
    }
    match last_digits {
        Some(n) => {
            let (da, db) = (digits(a), digits(b));
            n > 0 && da.len() >= n && db.len() >= n && da[da.len() - n..] == db[db.len() - n..]
        }
        None => {
            let (na, nb) = (normalise(a, country_code), normalise(b, country_code));
            !digits(&na).is_empty() && na == nb
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn national_numbers_become_e164_when_the_country_is_known() {
        assert_eq!(normalise("07700 900123", Some("44")), "+447700900123");
        assert_eq!(normalise("07700900123", None), "07700900123");
        assert_eq!(normalise("0044 7700-900123", Some("44")), "+447700900123");
        assert_eq!(normalise("+44 (7700) 900123", None), "+447700900123");
    }

    #[test]
    fn alphanumeric_senders_are_kept() {
        assert_eq!(normalise(" VODAFONE ", Some("44")), "VODAFONE");
        assert_eq!(normalise("", Some("44")), "");
    }

    #[test]
    fn last_digit_matching_needs_enough_digits_on_both_sides() {
        assert!(same("07700900123", "+447700900123", None, Some(8)));
        assert!(!same("900123", "+447700900123", None, Some(8)));
        assert!(!same("", "", None, Some(8)));
        assert!(same("07700900123", "+447700900123", Some("44"), None));
        assert!(!same("07700900123", "+447700900124", Some("44"), None));
        assert!(!same("", "", None, None));
    }

    #[test]
    fn alphanumeric_senders_never_match_a_number_even_with_its_digits() {
        assert!(!same("Bank00900123", "+447700900123", None, Some(8)));
        assert!(!same("+44770090012X", "+447700900123", None, Some(8)));
        assert!(!same("VODAFONE", "VODAFONE", None, None));
        assert!(is_number("+44 (7700) 900-123"));
        assert!(!is_number("+"));
    }

    #[test]
    fn sender_keys_fold_names_and_normalise_numbers() {
        assert_eq!(sender_key(" BanK ", None).as_deref(), Some("bank"));
        assert_eq!(
            sender_key("07700 900123", Some("44")).as_deref(),
            Some("+447700900123")
        );
        assert_eq!(sender_key("12345", None).as_deref(), Some("12345"));
        assert_eq!(sender_key("  ", None), None);
    }
}
