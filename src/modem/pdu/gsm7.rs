//! The GSM 7-bit default alphabet (3GPP TS 23.038 §6.2.1) with its extension table, and the
//! packing of septets into octets.

/// The escape septet that switches the next septet to the extension table.
pub const ESCAPE: u8 = 0x1B;

/// The basic table, indexed by septet; `ESCAPE` (0x1B) is a placeholder that is never produced.
const BASIC: [char; 128] = [
    '@', '£', '$', '¥', 'è', 'é', 'ù', 'ì', 'ò', 'Ç', '\n', 'Ø', 'ø', '\r', 'Å', 'å', //
    'Δ', '_', 'Φ', 'Γ', 'Λ', 'Ω', 'Π', 'Ψ', 'Σ', 'Θ', 'Ξ', '\u{1B}', 'Æ', 'æ', 'ß', 'É', //
    ' ', '!', '"', '#', '¤', '%', '&', '\'', '(', ')', '*', '+', ',', '-', '.', '/', //
    '0', '1', '2', '3', '4', '5', '6', '7', '8', '9', ':', ';', '<', '=', '>', '?', //
    '¡', 'A', 'B', 'C', 'D', 'E', 'F', 'G', 'H', 'I', 'J', 'K', 'L', 'M', 'N', 'O', //
    'P', 'Q', 'R', 'S', 'T', 'U', 'V', 'W', 'X', 'Y', 'Z', 'Ä', 'Ö', 'Ñ', 'Ü', '§', //
    '¿', 'a', 'b', 'c', 'd', 'e', 'f', 'g', 'h', 'i', 'j', 'k', 'l', 'm', 'n', 'o', //
    'p', 'q', 'r', 's', 't', 'u', 'v', 'w', 'x', 'y', 'z', 'ä', 'ö', 'ñ', 'ü', 'à', //
];

/// The extension table: (septet after `ESCAPE`, character).
const EXTENSION: [(u8, char); 10] = [
    (0x0A, '\u{0C}'),
    (0x14, '^'),
    (0x28, '{'),
    (0x29, '}'),
    (0x2F, '\\'),
    (0x3C, '['),
    (0x3D, '~'),
    (0x3E, ']'),
    (0x40, '|'),
    (0x65, '€'),
];

/// The septets for `c`: one from the basic table, or `ESCAPE` + one from the extension table.
pub fn char_to_septets(c: char) -> Option<Septets> {
    if c != '\u{1B}' {
        if let Some(pos) = BASIC.iter().position(|&b| b == c) {
            return u8::try_from(pos).ok().map(Septets::One);
        }
    }
    EXTENSION
        .iter()
        .find(|(_, e)| *e == c)
        .map(|(code, _)| Septets::Two(*code))
}

/// One character's encoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Septets {
    /// A basic-table septet.
    One(u8),
    /// An extension-table septet, sent after `ESCAPE`.
    Two(u8),
}

impl Septets {
    /// How many septets the character takes.
    pub fn len(self) -> usize {
        match self {
            Septets::One(_) => 1,
            Septets::Two(_) => 2,
        }
    }

    /// Appends the septets to `out`.
    pub fn push_to(self, out: &mut Vec<u8>) {
        match self {
            Septets::One(s) => out.push(s),
            Septets::Two(s) => {
                out.push(ESCAPE);
                out.push(s);
            }
        }
    }
}

/// Septets for the whole `text`, or `None` if a character is outside the alphabet.
pub fn encode(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len());
    for c in text.chars() {
        char_to_septets(c)?.push_to(&mut out);
    }
    Some(out)
}

/// Text for `septets`. An escape before a septet the extension table does not define yields the
/// basic-table character, as TS 23.038 asks of receivers; a dangling final escape yields a space.
pub fn decode(septets: &[u8]) -> String {
    let mut out = String::with_capacity(septets.len());
    let mut iter = septets.iter().map(|s| s & 0x7F);
    while let Some(s) = iter.next() {
        if s == ESCAPE {
            match iter.next() {
                Some(ext) => out.push(
                    EXTENSION
                        .iter()
                        .find(|(code, _)| *code == ext)
                        .map_or_else(|| basic_char(ext), |(_, c)| *c),
                ),
                None => out.push(' '),
            }
        } else {
            out.push(basic_char(s));
        }
    }
    out
}

/// The character that `ESCAPE` followed by the septet of `c` (a basic-table character)
/// stands for: the extension-table one, or `c` itself when the extension table has none.
pub fn escaped(c: char) -> char {
    let Some(Septets::One(septet)) = char_to_septets(c) else {
        return c;
    };
    EXTENSION
        .iter()
        .find(|(code, _)| *code == septet)
        .map_or(c, |(_, e)| *e)
}

fn basic_char(septet: u8) -> char {
    match BASIC.get(usize::from(septet & 0x7F)) {
        // A double escape has no meaning; a space keeps the text readable.
        Some('\u{1B}') | None => ' ',
        Some(c) => *c,
    }
}

/// Packs septets LSB-first into octets, after `fill_bits` zero bits (the padding that aligns
/// text after a user data header to a septet boundary).
pub fn pack(septets: &[u8], fill_bits: usize) -> Vec<u8> {
    let total_bits = fill_bits + septets.len() * 7;
    let mut out = vec![0u8; total_bits.div_ceil(8)];
    let mut bit = fill_bits;
    for &s in septets {
        let value = u16::from(s & 0x7F) << (bit % 8);
        let idx = bit / 8;
        if let Some(o) = out.get_mut(idx) {
            *o |= (value & 0xFF) as u8;
        }
        if let Some(o) = out.get_mut(idx + 1) {
            *o |= (value >> 8) as u8;
        }
        bit += 7;
    }
    out
}

/// Unpacks `count` septets from `octets`, skipping `fill_bits` first; stops early (returning
/// fewer septets) if the octets run out, so callers check the length they asked for.
pub fn unpack(octets: &[u8], fill_bits: usize, count: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(count);
    let mut bit = fill_bits;
    while out.len() < count && bit + 7 <= octets.len() * 8 {
        let idx = bit / 8;
        let lo = u16::from(octets.get(idx).copied().unwrap_or(0));
        let hi = u16::from(octets.get(idx + 1).copied().unwrap_or(0));
        let word = lo | (hi << 8);
        out.push(((word >> (bit % 8)) & 0x7F) as u8);
        bit += 7;
    }
    out
}

/// Septets `text` needs in the GSM 7-bit alphabet (extension characters count two), or `None`
/// if a character is not in the alphabet.
pub fn septet_count(text: &str) -> Option<usize> {
    text.chars()
        .map(|c| char_to_septets(c).map(Septets::len))
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seven_septets_take_seven_octets_with_one_spare_bit() {
        let septets = encode("abcdefg").unwrap();
        let packed = pack(&septets, 0);
        assert_eq!(packed.len(), 7);
        assert_eq!(packed.last().map(|o| o >> 1), Some(0), "spare bit is zero");
        assert_eq!(unpack(&packed, 0, 7), septets);
    }

    #[test]
    fn eight_septets_fill_seven_octets_exactly() {
        let septets = encode("abcdefgh").unwrap();
        let packed = pack(&septets, 0);
        assert_eq!(packed.len(), 7);
        assert_eq!(decode(&unpack(&packed, 0, 8)), "abcdefgh");
    }

    #[test]
    fn hello_packs_like_the_reference_example() {
        assert_eq!(
            hex::encode_upper(pack(&encode("hellohello").unwrap(), 0)),
            "E8329BFD4697D9EC37"
        );
    }

    #[test]
    fn fill_bits_shift_the_septets() {
        let septets = encode("MBOX").unwrap();
        let packed = pack(&septets, 1);
        assert_eq!(packed.first().map(|o| o & 1), Some(0));
        assert_eq!(unpack(&packed, 1, 4), septets);
    }

    #[test]
    fn unpack_stops_when_the_octets_run_out() {
        assert_eq!(unpack(&[0xE8, 0x32], 0, 5).len(), 2);
    }

    #[test]
    fn extension_characters_take_an_escape_and_round_trip() {
        let text = "€[]{}^~|\\\u{0C}";
        let septets = encode(text).unwrap();
        assert_eq!(septets.len(), 20);
        assert!(septets.iter().step_by(2).all(|&s| s == ESCAPE));
        assert_eq!(decode(&septets), text);
        assert_eq!(septet_count(text), Some(20));
    }

    #[test]
    fn unknown_extension_septet_falls_back_to_the_basic_table() {
        assert_eq!(decode(&[ESCAPE, 0x41, ESCAPE]), "A ");
    }

    #[test]
    fn characters_outside_the_alphabet_have_no_septets() {
        assert_eq!(septet_count("ça"), None);
        assert_eq!(septet_count("😀"), None);
        assert_eq!(septet_count("Ça é"), Some(4));
        assert_eq!(char_to_septets('\u{1B}'), None, "a raw ESC is not text");
    }
}

/// A national language of 3GPP TS 23.038 §6.2.1.2.4, as the user data header names it
/// (information element 0x24 for the single shift table, 0x25 for the locking shift table).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Language {
    Turkish,
    Spanish,
    Portuguese,
}

impl Language {
    /// The language for a national language identifier; `None` for those without tables
    /// here (the default tables are used then).
    pub fn from_id(id: u8) -> Option<Self> {
        match id {
            1 => Some(Language::Turkish),
            2 => Some(Language::Spanish),
            3 => Some(Language::Portuguese),
            _ => None,
        }
    }
}

/// TS 23.038 Annex A.3.1, Turkish locking shift table: where it differs from the default.
const TURKISH_LOCKING: [(u8, char); 8] = [
    (0x04, '€'),
    (0x07, 'ı'),
    (0x0B, 'Ğ'),
    (0x0C, 'ğ'),
    (0x1C, 'Ş'),
    (0x1D, 'ş'),
    (0x40, 'İ'),
    (0x60, 'ç'),
];

/// TS 23.038 Annex A.3.3, Portuguese locking shift table: where it differs from the default.
const PORTUGUESE_LOCKING: [(u8, char); 31] = [
    (0x04, 'ê'),
    (0x06, 'ú'),
    (0x07, 'í'),
    (0x08, 'ó'),
    (0x09, 'ç'),
    (0x0B, 'Ô'),
    (0x0C, 'ô'),
    (0x0E, 'Á'),
    (0x0F, 'á'),
    (0x12, 'ª'),
    (0x13, 'Ç'),
    (0x14, 'À'),
    (0x15, '∞'),
    (0x16, '^'),
    (0x17, '\\'),
    (0x18, '€'),
    (0x19, 'Ó'),
    (0x1A, '|'),
    (0x1C, 'Â'),
    (0x1D, 'â'),
    (0x1E, 'Ê'),
    (0x24, 'º'),
    (0x40, 'Í'),
    (0x5B, 'Ã'),
    (0x5C, 'Õ'),
    (0x5D, 'Ú'),
    (0x60, '~'),
    (0x7B, 'ã'),
    (0x7C, 'õ'),
    (0x7D, '`'),
    (0x5E, 'Ü'),
];

/// TS 23.038 Annex A.2.1, Turkish single shift table: the default extension table plus these.
const TURKISH_SINGLE: [(u8, char); 8] = [
    (0x47, 'Ğ'),
    (0x49, 'İ'),
    (0x53, 'Ş'),
    (0x63, 'ç'),
    (0x67, 'ğ'),
    (0x69, 'ı'),
    (0x73, 'ş'),
    (0x65, '€'),
];

/// TS 23.038 Annex A.2.2, Spanish single shift table: the default extension table plus these.
const SPANISH_SINGLE: [(u8, char); 9] = [
    (0x09, 'ç'),
    (0x41, 'Á'),
    (0x49, 'Í'),
    (0x4F, 'Ó'),
    (0x55, 'Ú'),
    (0x61, 'á'),
    (0x69, 'í'),
    (0x6F, 'ó'),
    (0x75, 'ú'),
];

/// TS 23.038 Annex A.2.3, Portuguese single shift table: the default extension table plus
/// these.
const PORTUGUESE_SINGLE: [(u8, char); 27] = [
    (0x05, 'ê'),
    (0x09, 'ç'),
    (0x0B, 'Ô'),
    (0x0C, 'ô'),
    (0x0E, 'Á'),
    (0x0F, 'á'),
    (0x12, 'Φ'),
    (0x13, 'Γ'),
    (0x15, 'Ω'),
    (0x16, 'Π'),
    (0x17, 'Ψ'),
    (0x18, 'Σ'),
    (0x19, 'Θ'),
    (0x1F, 'Ê'),
    (0x41, 'À'),
    (0x49, 'Í'),
    (0x4F, 'Ó'),
    (0x55, 'Ú'),
    (0x5B, 'Ã'),
    (0x5C, 'Õ'),
    (0x61, 'Â'),
    (0x69, 'í'),
    (0x6F, 'ó'),
    (0x75, 'ú'),
    (0x7B, 'ã'),
    (0x7C, 'õ'),
    (0x7F, 'â'),
];

/// The character of `septet` in the locking shift table of `language` (the default table
/// when `None`, or for Spanish, which has no locking shift table).
fn locking_char(language: Option<Language>, septet: u8) -> char {
    let table: &[(u8, char)] = match language {
        Some(Language::Turkish) => &TURKISH_LOCKING,
        Some(Language::Portuguese) => &PORTUGUESE_LOCKING,
        Some(Language::Spanish) | None => &[],
    };
    table
        .iter()
        .find(|(code, _)| *code == septet)
        .map_or_else(|| basic_char(septet), |(_, c)| *c)
}

/// The character of `septet` after an escape in the single shift table of `language`, if
/// the table has one there.
fn single_shift_char(language: Option<Language>, septet: u8) -> Option<char> {
    let national: &[(u8, char)] = match language {
        Some(Language::Turkish) => &TURKISH_SINGLE,
        Some(Language::Spanish) => &SPANISH_SINGLE,
        Some(Language::Portuguese) => &PORTUGUESE_SINGLE,
        None => &[],
    };
    national
        .iter()
        .chain(EXTENSION.iter())
        .find(|(code, _)| *code == septet)
        .map(|(_, c)| *c)
}

/// Text for `septets` with the national tables the user data header selected: `locking`
/// replaces the basic table, `single` extends the one after an escape. An escape before a
/// septet the single shift table does not define yields the locking-table character; a
/// dangling final escape yields a space, as in [`decode`].
pub fn decode_national(
    septets: &[u8],
    locking: Option<Language>,
    single: Option<Language>,
) -> String {
    let mut out = String::with_capacity(septets.len());
    let mut iter = septets.iter().map(|s| s & 0x7F);
    while let Some(s) = iter.next() {
        if s == ESCAPE {
            match iter.next() {
                Some(ext) => out.push(
                    single_shift_char(single, ext).unwrap_or_else(|| locking_char(locking, ext)),
                ),
                None => out.push(' '),
            }
        } else {
            out.push(locking_char(locking, s));
        }
    }
    out
}

impl Language {
    /// The national language identifier of TS 23.038 §6.2.1.2.4.
    pub fn id(self) -> u8 {
        match self {
            Language::Turkish => 1,
            Language::Spanish => 2,
            Language::Portuguese => 3,
        }
    }

    /// The language for a config value: its English name or ISO 639-1 code.
    pub fn from_name(name: &str) -> Option<Self> {
        match name.trim().to_ascii_lowercase().as_str() {
            "turkish" | "tr" => Some(Language::Turkish),
            "spanish" | "es" => Some(Language::Spanish),
            "portuguese" | "pt" => Some(Language::Portuguese),
            _ => None,
        }
    }

    /// Whether TS 23.038 defines a locking shift table for it (Spanish has none).
    pub fn has_locking_table(self) -> bool {
        self != Language::Spanish
    }
}

/// The septets for `c` with national tables: one from the locking table, or `ESCAPE` + one
/// from the single shift table.
pub fn char_to_septets_national(
    c: char,
    locking: Option<Language>,
    single: Option<Language>,
) -> Option<Septets> {
    if c != '\u{1B}' {
        if let Some(s) = (0u8..128).find(|&s| s != ESCAPE && locking_char(locking, s) == c) {
            return Some(Septets::One(s));
        }
    }
    (0u8..128)
        .filter(|&s| s != ESCAPE)
        .find(|&s| single_shift_char(single, s) == Some(c))
        .map(Septets::Two)
}
