//! ksqlDB's string functions that DataFusion has under other rules or not at all: ELT and
//! FIELD, CHR (of a code point or a `\uXXXX` escape), INSTR with a start position (negative:
//! from the end) and an occurrence, INITCAP (words split at whitespace only), MD5, SPLIT over
//! STRING and BYTES (an empty delimiter splits into characters or bytes), SPLIT_TO_MAP and
//! REGEXP_SPLIT_TO_ARRAY.

use datafusion::arrow::datatypes::DataType;
use datafusion::common::{exec_err, Result, ScalarValue};
use datafusion::logical_expr::ScalarUDF;

use super::rowwise::{
    self, bytes, integer, is_bytes, is_text, list_type, list_value, map_type, map_value, refuse,
    text,
};

pub(crate) fn udfs() -> Vec<ScalarUDF> {
    vec![
        rowwise::udf("elt", elt_type, elt),
        rowwise::udf("field", field_type, field),
        rowwise::udf("chr", chr_type, chr),
        rowwise::udf("instr", instr_type, instr),
        rowwise::udf("initcap", string_type, initcap),
        rowwise::udf("md5", string_type, md5),
        rowwise::udf("split", split_type, split),
        rowwise::udf("split_to_map", split_to_map_type, split_to_map),
        rowwise::udf("regexp_split_to_array", regexp_split_type, regexp_split),
    ]
}

fn is_integer(data_type: &DataType) -> bool {
    data_type.is_integer() || *data_type == DataType::Null
}

fn elt_type(name: &str, arguments: &[DataType]) -> Result<DataType> {
    match arguments {
        [n, rest @ ..] if is_integer(n) && rest.iter().all(is_text) => Ok(DataType::Utf8),
        _ => refuse(name, arguments),
    }
}

/// ELT(n, a, b, ...): the n-th of the strings after n (1-based), null when there is none.
fn elt(values: &[ScalarValue], _: &DataType) -> Result<ScalarValue> {
    let chosen = integer(&values[0])
        .filter(|n| *n >= 1)
        .and_then(|n| values.get(n as usize))
        .and_then(text);
    Ok(ScalarValue::Utf8(chosen.map(str::to_string)))
}

fn field_type(name: &str, arguments: &[DataType]) -> Result<DataType> {
    match arguments {
        [_, ..] if arguments.iter().all(is_text) => Ok(DataType::Int32),
        _ => refuse(name, arguments),
    }
}

/// FIELD(s, a, b, ...): the 1-based position of `s` among the strings after it, 0 when it is
/// not there or null.
fn field(values: &[ScalarValue], _: &DataType) -> Result<ScalarValue> {
    let position = text(&values[0]).and_then(|wanted| {
        values[1..]
            .iter()
            .position(|v| text(v) == Some(wanted))
            .map(|i| i as i32 + 1)
    });
    Ok(ScalarValue::Int32(Some(position.unwrap_or(0))))
}

fn chr_type(name: &str, arguments: &[DataType]) -> Result<DataType> {
    match arguments {
        [code] if is_integer(code) || is_text(code) => Ok(DataType::Utf8),
        _ => refuse(name, arguments),
    }
}

/// CHR(code point) or CHR('\uXXXX'), a surrogate pair written as two escapes; null for what
/// is not a character.
fn chr(values: &[ScalarValue], _: &DataType) -> Result<ScalarValue> {
    let character = match &values[0] {
        value if text(value).is_some() => text(value).and_then(unicode_escapes),
        value => integer(value)
            .and_then(|code| u32::try_from(code).ok())
            .and_then(char::from_u32)
            .map(String::from),
    };
    Ok(ScalarValue::Utf8(character))
}

/// The text written as Java's `\uXXXX` escapes (and only those).
fn unicode_escapes(escaped: &str) -> Option<String> {
    let mut units = Vec::new();
    let mut rest = escaped;
    while !rest.is_empty() {
        let hex = rest.strip_prefix("\\u")?.get(..4)?;
        units.push(u16::from_str_radix(hex, 16).ok()?);
        rest = &rest[6..];
    }
    if units.is_empty() {
        return None;
    }
    String::from_utf16(&units).ok()
}

fn instr_type(name: &str, arguments: &[DataType]) -> Result<DataType> {
    match arguments {
        [s, sub, rest @ ..]
            if is_text(s) && is_text(sub) && rest.len() <= 2 && rest.iter().all(is_integer) =>
        {
            Ok(DataType::Int32)
        }
        _ => refuse(name, arguments),
    }
}

/// INSTR(s, sub[, position[, occurrence]]): the 1-based position of the occurrence-th `sub`
/// in `s` searching forward from `position`, or backward from `position` counted from the end
/// when it is negative; 0 when there is none. Positions count characters.
fn instr(values: &[ScalarValue], _: &DataType) -> Result<ScalarValue> {
    let (Some(s), Some(sub)) = (text(&values[0]), text(&values[1])) else {
        return Ok(ScalarValue::Int32(None));
    };
    let position = values.get(2).map_or(Some(1), integer);
    let occurrence = values.get(3).map_or(Some(1), integer);
    let (Some(position), Some(occurrence)) = (position, occurrence) else {
        return Ok(ScalarValue::Int32(None));
    };
    let s: Vec<char> = s.chars().collect();
    let sub: Vec<char> = sub.chars().collect();
    let matches_at = |i: usize| s.get(i..i + sub.len()) == Some(&sub[..]);
    let len = s.len() as i64;
    let mut found = None;
    let mut remaining = occurrence.max(1);
    if position >= 0 {
        let mut from = (position - 1).max(0);
        while from <= len {
            match (from..=len).find(|&i| matches_at(i as usize)) {
                Some(i) => {
                    remaining -= 1;
                    if remaining == 0 {
                        found = Some(i);
                        break;
                    }
                    from = i + 1;
                }
                None => break,
            }
        }
    } else {
        let mut from = len + position;
        while from >= 0 {
            match (0..=from).rev().find(|&i| matches_at(i as usize)) {
                Some(i) => {
                    remaining -= 1;
                    if remaining == 0 {
                        found = Some(i);
                        break;
                    }
                    from = i - 1;
                }
                None => break,
            }
        }
    }
    Ok(ScalarValue::Int32(Some(found.map_or(0, |i| i as i32 + 1))))
}

fn string_type(name: &str, arguments: &[DataType]) -> Result<DataType> {
    match arguments {
        [s] if is_text(s) => Ok(DataType::Utf8),
        _ => refuse(name, arguments),
    }
}

/// INITCAP: each word's first letter in upper case and the rest in lower; words are split
/// at whitespace only.
fn initcap(values: &[ScalarValue], _: &DataType) -> Result<ScalarValue> {
    let capitalized = text(&values[0]).map(|s| {
        let mut out = String::with_capacity(s.len());
        let mut start = true;
        for c in s.chars() {
            if start {
                out.extend(c.to_uppercase());
            } else {
                out.extend(c.to_lowercase());
            }
            start = c.is_whitespace();
        }
        out
    });
    Ok(ScalarValue::Utf8(capitalized))
}

/// MD5 of a string's UTF-8 bytes, in lower-case hexadecimal.
fn md5(values: &[ScalarValue], _: &DataType) -> Result<ScalarValue> {
    use md5::Digest;
    let digest = text(&values[0]).map(|s| hex::encode(md5::Md5::digest(s.as_bytes())));
    Ok(ScalarValue::Utf8(digest))
}

fn split_type(name: &str, arguments: &[DataType]) -> Result<DataType> {
    match arguments {
        [s, d] if is_text(s) && is_text(d) => Ok(list_type(DataType::Utf8)),
        [s, d] if is_bytes(s) && is_bytes(d) => Ok(list_type(DataType::Binary)),
        _ => refuse(name, arguments),
    }
}

/// SPLIT(s, delimiter): the parts between delimiters, empty ones kept; an empty delimiter
/// gives each character (byte) alone.
fn split(values: &[ScalarValue], returns: &DataType) -> Result<ScalarValue> {
    if let (Some(s), Some(d)) = (text(&values[0]), text(&values[1])) {
        let parts: Vec<ScalarValue> = if d.is_empty() && !s.is_empty() {
            s.chars()
                .map(|c| ScalarValue::from(c.to_string()))
                .collect()
        } else if d.is_empty() {
            vec![ScalarValue::from("")]
        } else {
            s.split(d).map(ScalarValue::from).collect()
        };
        return list_value(Some(parts), returns);
    }
    if let (Some(s), Some(d)) = (bytes(&values[0]), bytes(&values[1])) {
        let binary = |b: &[u8]| ScalarValue::Binary(Some(b.to_vec()));
        let parts: Vec<ScalarValue> = if d.is_empty() && !s.is_empty() {
            s.chunks(1).map(binary).collect()
        } else if d.is_empty() {
            vec![binary(&[])]
        } else {
            let mut parts = Vec::new();
            let mut start = 0;
            let mut i = 0;
            while i + d.len() <= s.len() {
                if &s[i..i + d.len()] == d {
                    parts.push(binary(&s[start..i]));
                    i += d.len();
                    start = i;
                } else {
                    i += 1;
                }
            }
            parts.push(binary(&s[start..]));
            parts
        };
        return list_value(Some(parts), returns);
    }
    list_value(None, returns)
}

fn split_to_map_type(name: &str, arguments: &[DataType]) -> Result<DataType> {
    match arguments {
        [a, b, c] if is_text(a) && is_text(b) && is_text(c) => {
            Ok(map_type(DataType::Utf8, DataType::Utf8))
        }
        _ => refuse(name, arguments),
    }
}

/// SPLIT_TO_MAP(s, entry delimiter, key-value delimiter): entries without the key-value
/// delimiter are left out; null when a delimiter is empty or null.
fn split_to_map(values: &[ScalarValue], returns: &DataType) -> Result<ScalarValue> {
    let (Some(s), Some(entry), Some(kv)) = (text(&values[0]), text(&values[1]), text(&values[2]))
    else {
        return map_value(None, returns);
    };
    if entry.is_empty() || kv.is_empty() {
        return map_value(None, returns);
    }
    let mut entries: Vec<(ScalarValue, ScalarValue)> = Vec::new();
    for part in s.split(entry).filter(|p| !p.is_empty()) {
        let mut pieces = part.split(kv);
        let (Some(key), Some(value)) = (pieces.next(), pieces.next()) else {
            continue;
        };
        let key = ScalarValue::from(key);
        entries.retain(|(k, _)| *k != key);
        entries.push((key, ScalarValue::from(value)));
    }
    map_value(Some(entries), returns)
}

fn regexp_split_type(name: &str, arguments: &[DataType]) -> Result<DataType> {
    match arguments {
        [s, p] if is_text(s) && is_text(p) => Ok(list_type(DataType::Utf8)),
        _ => refuse(name, arguments),
    }
}

/// REGEXP_SPLIT_TO_ARRAY(s, pattern): the parts between matches, empty ones kept.
fn regexp_split(values: &[ScalarValue], returns: &DataType) -> Result<ScalarValue> {
    let (Some(s), Some(pattern)) = (text(&values[0]), text(&values[1])) else {
        return list_value(None, returns);
    };
    let regex = match regex::Regex::new(pattern) {
        Ok(regex) => regex,
        Err(e) => return exec_err!("{e}"),
    };
    let parts = regex.split(s).map(ScalarValue::from).collect();
    list_value(Some(parts), returns)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn instr_of(s: &str, sub: &str, position: i64, occurrence: i64) -> ScalarValue {
        let values = [
            ScalarValue::from(s),
            ScalarValue::from(sub),
            ScalarValue::Int64(Some(position)),
            ScalarValue::Int64(Some(occurrence)),
        ];
        instr(&values, &DataType::Int32).unwrap()
    }

    #[test]
    fn instr_searches_forward_and_backward() {
        let found = |n| ScalarValue::Int32(Some(n));
        assert_eq!(instr_of("corporate floor", "or", 1, 1), found(2));
        assert_eq!(instr_of("corporate floor", "or", 4, 1), found(5));
        assert_eq!(instr_of("corporate floor", "or", 4, 2), found(14));
        assert_eq!(instr_of("corporate floor", "or", -4, 1), found(5));
        assert_eq!(instr_of("corporate floor", "or", -4, 2), found(2));
        assert_eq!(instr_of("short", "or", -4, 2), found(0));
    }

    #[test]
    fn chr_reads_escapes_and_code_points() {
        assert_eq!(unicode_escapes("\\u004b").as_deref(), Some("K"));
        assert_eq!(
            unicode_escapes("\\ud820\\udeb8").as_deref(),
            Some("\u{182b8}")
        );
        assert_eq!(unicode_escapes("75"), None);
        let code = |n| chr(&[ScalarValue::Int32(Some(n))], &DataType::Utf8).unwrap();
        assert_eq!(code(75), ScalarValue::from("K"));
        assert_eq!(code(-1), ScalarValue::Utf8(None));
    }

    #[test]
    fn initcap_splits_words_at_whitespace() {
        let cap = |s: &str| initcap(&[ScalarValue::from(s)], &DataType::Utf8).unwrap();
        assert_eq!(cap("some_string"), ScalarValue::from("Some_string"));
        assert_eq!(
            cap("the   Quick br0wn fOx"),
            ScalarValue::from("The   Quick Br0wn Fox")
        );
    }
}
