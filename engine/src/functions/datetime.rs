//! ksqlDB's date and time functions that take Java `DateTimeFormatter` patterns
//! (`yyyy-MM-dd'T'HH:mm:ss.SSSX`): FORMAT_TIMESTAMP, PARSE_TIMESTAMP, FORMAT_DATE, PARSE_DATE,
//! and the older TIMESTAMPTOSTRING, STRINGTOTIMESTAMP, DATETOSTRING, STRINGTODATE that work
//! on epoch numbers. Patterns are translated once into chrono's format items; an optional
//! time zone argument is an IANA name (`America/Los_Angeles`) or an offset (`+02:00`), UTC
//! when absent. A value that does not parse is a per-row error (the processing log's).

use std::sync::Arc;

use chrono::format::{parse, Parsed, StrftimeItems};
use chrono::{DateTime, FixedOffset, NaiveDate, NaiveTime, Offset, TimeZone, Utc};
use datafusion::arrow::array::{
    Array, ArrayRef, Date32Array, Int32Array, Int64Array, StringArray, TimestampMillisecondArray,
};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, TimeUnit};
use datafusion::common::{exec_err, plan_err, DataFusionError, Result};
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, TypeSignature,
    Volatility,
};

/// What a function reads and returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Kind {
    /// TIMESTAMP (or epoch-millisecond BIGINT) -> STRING.
    FormatTimestamp { epoch: bool },
    /// STRING -> TIMESTAMP (or epoch-millisecond BIGINT).
    ParseTimestamp { epoch: bool },
    /// DATE (or days-since-epoch INT) -> STRING.
    FormatDate { epoch: bool },
    /// STRING -> DATE (or days-since-epoch INT).
    ParseDate { epoch: bool },
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct DateTimeFunction {
    name: &'static str,
    kind: Kind,
    signature: Signature,
}

/// The functions, to register with a session.
pub(crate) fn udfs() -> Vec<ScalarUDF> {
    use Kind::*;
    [
        ("format_timestamp", FormatTimestamp { epoch: false }),
        ("timestamptostring", FormatTimestamp { epoch: true }),
        ("parse_timestamp", ParseTimestamp { epoch: false }),
        ("stringtotimestamp", ParseTimestamp { epoch: true }),
        ("format_date", FormatDate { epoch: false }),
        ("datetostring", FormatDate { epoch: true }),
        ("parse_date", ParseDate { epoch: false }),
        ("stringtodate", ParseDate { epoch: true }),
    ]
    .into_iter()
    .map(|(name, kind)| {
        ScalarUDF::new_from_impl(DateTimeFunction {
            name,
            kind,
            signature: Signature::variadic_any(Volatility::Immutable),
        })
    })
    .chain([ScalarUDF::new_from_impl(UnixTimestamp {
        signature: Signature::one_of(
            vec![TypeSignature::Nullary, TypeSignature::Any(1)],
            Volatility::Volatile,
        ),
    })])
    .collect()
}

/// UNIX_TIMESTAMP([timestamp]): a TIMESTAMP's epoch milliseconds (BIGINT), or the current
/// time's without an argument.
#[derive(Debug, PartialEq, Eq, Hash)]
struct UnixTimestamp {
    signature: Signature,
}

impl ScalarUDFImpl for UnixTimestamp {
    fn name(&self) -> &str {
        "unix_timestamp"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, arguments: &[DataType]) -> Result<DataType> {
        match arguments {
            [] | [DataType::Timestamp(..) | DataType::Null] => Ok(DataType::Int64),
            _ => plan_err!("UNIX_TIMESTAMP takes a TIMESTAMP or no argument, got {arguments:?}"),
        }
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let Some(argument) = args.args.first() else {
            let now = Utc::now().timestamp_millis();
            return Ok(ColumnarValue::Scalar(now.into()));
        };
        let millis = cast(
            &argument.to_array(args.number_rows)?,
            &DataType::Timestamp(TimeUnit::Millisecond, None),
        )?;
        Ok(ColumnarValue::Array(cast(&millis, &DataType::Int64)?))
    }
}

impl ScalarUDFImpl for DateTimeFunction {
    fn name(&self) -> &str {
        self.name
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, arguments: &[DataType]) -> Result<DataType> {
        let takes_zone = matches!(
            self.kind,
            Kind::FormatTimestamp { .. } | Kind::ParseTimestamp { .. }
        );
        let most = if takes_zone { 3 } else { 2 };
        if arguments.len() < 2 || arguments.len() > most {
            return plan_err!(
                "{} takes a value and a pattern{}",
                self.name.to_uppercase(),
                if takes_zone { " (and a time zone)" } else { "" }
            );
        }
        Ok(match self.kind {
            Kind::FormatTimestamp { .. } | Kind::FormatDate { .. } => DataType::Utf8,
            Kind::ParseTimestamp { epoch: true } => DataType::Int64,
            Kind::ParseTimestamp { epoch: false } => {
                DataType::Timestamp(TimeUnit::Millisecond, None)
            }
            Kind::ParseDate { epoch: true } => DataType::Int32,
            Kind::ParseDate { epoch: false } => DataType::Date32,
        })
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let rows = args.number_rows;
        let arrays = ColumnarValue::values_to_arrays(&args.args)?;
        let text = |i: usize| -> Result<Option<ArrayRef>> {
            arrays
                .get(i)
                .map(|a| cast(a, &DataType::Utf8).map_err(DataFusionError::from))
                .transpose()
        };
        let patterns = text(1)?.expect("two arguments at least");
        let patterns = strings(&patterns);
        let zones = text(2)?;
        let zones = zones.as_ref().map(|z| strings(z));
        let mut cache = Cache::default();
        let out: ArrayRef = match self.kind {
            Kind::FormatTimestamp { .. } => {
                let millis = cast(&arrays[0], &DataType::Int64)?;
                let millis = millis.as_any().downcast_ref::<Int64Array>().expect("Int64");
                let mut out = Vec::with_capacity(rows);
                for row in 0..rows {
                    let (Some(ms), Some(pattern)) = (value(millis, row), patterns.value(row))
                    else {
                        out.push(None);
                        continue;
                    };
                    let zone = zone(zones.as_ref().and_then(|z| z.value(row)))?;
                    let format = cache.pattern(pattern)?;
                    let Some(time) = DateTime::<Utc>::from_timestamp_millis(ms) else {
                        return exec_err!("timestamp {ms} is out of range");
                    };
                    // A named zone prints its abbreviation for 'z' (PDT), an offset itself.
                    let text = match zone {
                        Zone::Named(tz) => formatted(
                            time.with_timezone(&tz).format_with_items(format.iter()),
                            pattern,
                        )?,
                        Zone::Fixed(_) => formatted(
                            time.with_timezone(&zone).format_with_items(format.iter()),
                            pattern,
                        )?,
                    };
                    out.push(Some(text));
                }
                Arc::new(StringArray::from(out))
            }
            Kind::FormatDate { .. } => {
                let days = cast(&arrays[0], &DataType::Int32)?;
                let days = days.as_any().downcast_ref::<Int32Array>().expect("Int32");
                let mut out = Vec::with_capacity(rows);
                for row in 0..rows {
                    let (Some(day), Some(pattern)) = (value(days, row), patterns.value(row)) else {
                        out.push(None);
                        continue;
                    };
                    let format = cache.pattern(pattern)?;
                    let date = epoch_date()
                        .checked_add_signed(chrono::Duration::days(i64::from(day)))
                        .ok_or_else(|| {
                            DataFusionError::Execution(format!("date {day} out of range"))
                        })?;
                    let text = formatted(date.format_with_items(format.iter()), pattern)?;
                    out.push(Some(text));
                }
                Arc::new(StringArray::from(out))
            }
            Kind::ParseTimestamp { epoch } => {
                let input = text(0)?.expect("one argument at least");
                let input = strings(&input);
                let mut out = Vec::with_capacity(rows);
                for row in 0..rows {
                    let (Some(text), Some(pattern)) = (input.value(row), patterns.value(row))
                    else {
                        out.push(None);
                        continue;
                    };
                    let zone = zone(zones.as_ref().and_then(|z| z.value(row)))?;
                    let parsed = parse_with(text, pattern, &mut cache)?;
                    out.push(Some(timestamp_millis(&parsed, &zone, text, pattern)?));
                }
                match epoch {
                    true => Arc::new(Int64Array::from(out)),
                    false => Arc::new(TimestampMillisecondArray::from(out)),
                }
            }
            Kind::ParseDate { epoch } => {
                let input = text(0)?.expect("one argument at least");
                let input = strings(&input);
                let mut out = Vec::with_capacity(rows);
                for row in 0..rows {
                    let (Some(text), Some(pattern)) = (input.value(row), patterns.value(row))
                    else {
                        out.push(None);
                        continue;
                    };
                    let parsed = parse_with(text, pattern, &mut cache)?;
                    let date = parsed
                        .to_naive_date()
                        .map_err(|e| unparsable(text, pattern, e))?;
                    let days = date.signed_duration_since(epoch_date()).num_days();
                    out.push(Some(i32::try_from(days).map_err(|_| {
                        DataFusionError::Execution(format!("date {text} out of range"))
                    })?));
                }
                match epoch {
                    true => Arc::new(Int32Array::from(out)),
                    false => Arc::new(Date32Array::from(out)),
                }
            }
        };
        Ok(ColumnarValue::Array(out))
    }
}

/// Epoch milliseconds of `text` written in the Java `pattern`, UTC unless it has an offset:
/// how TIMESTAMP_FORMAT columns are read.
pub(crate) fn epoch_millis(text: &str, pattern: &str, cache: &mut Cache) -> Result<i64, String> {
    let utc = Zone::Fixed(FixedOffset::east_opt(0).expect("UTC"));
    parse_with(text, pattern, cache)
        .and_then(|parsed| timestamp_millis(&parsed, &utc, text, pattern))
        .map_err(|e| e.to_string())
}

/// Epoch milliseconds of a text parsed with a pattern: its offset if it has one, else the
/// time zone's; midnight when the pattern has no time.
fn timestamp_millis(parsed: &Parsed, zone: &Zone, text: &str, pattern: &str) -> Result<i64> {
    let date = parsed
        .to_naive_date()
        .map_err(|e| unparsable(text, pattern, e))?;
    let time = parsed.to_naive_time().unwrap_or(NaiveTime::MIN);
    let local = date.and_time(time);
    let utc = match parsed.offset {
        Some(seconds) => FixedOffset::east_opt(seconds)
            .and_then(|offset| offset.from_local_datetime(&local).single())
            .map(|t| t.with_timezone(&Utc)),
        None => zone
            .from_local_datetime(&local)
            .earliest()
            .map(|t| t.with_timezone(&Utc)),
    };
    utc.map(|t| t.timestamp_millis())
        .ok_or_else(|| unparsable(text, pattern, "no such local time"))
}

/// Parses `text` with a Java pattern.
pub(crate) fn parse_with(text: &str, pattern: &str, cache: &mut Cache) -> Result<Parsed> {
    let items = cache.pattern(pattern)?;
    let mut parsed = Parsed::new();
    parse(&mut parsed, text, items.iter()).map_err(|e| unparsable(text, pattern, e))?;
    Ok(parsed)
}

fn unparsable(text: &str, pattern: &str, reason: impl std::fmt::Display) -> DataFusionError {
    DataFusionError::Execution(format!(
        "Text '{text}' could not be parsed with pattern '{pattern}': {reason}"
    ))
}

/// The last pattern translated, as chrono's format items (patterns are nearly always one
/// literal per query).
#[derive(Default)]
pub(crate) struct Cache {
    last: Option<(String, Vec<chrono::format::Item<'static>>)>,
}

impl Cache {
    pub(crate) fn pattern(&mut self, pattern: &str) -> Result<&[chrono::format::Item<'static>]> {
        if self.last.as_ref().map(|(p, _)| p.as_str()) != Some(pattern) {
            let strftime = strftime(pattern)?;
            let items = StrftimeItems::new(&strftime)
                .parse_to_owned()
                .map_err(|e| DataFusionError::Execution(format!("bad pattern '{pattern}': {e}")))?;
            self.last = Some((pattern.to_string(), items));
        }
        Ok(&self.last.as_ref().expect("just set").1)
    }
}

/// A time zone argument: an IANA name or a fixed offset.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Zone {
    Named(chrono_tz::Tz),
    Fixed(FixedOffset),
}

pub(crate) fn zone(name: Option<&str>) -> Result<Zone> {
    let Some(name) = name else {
        return Ok(Zone::Fixed(FixedOffset::east_opt(0).expect("UTC")));
    };
    if let Ok(tz) = name.parse::<chrono_tz::Tz>() {
        return Ok(Zone::Named(tz));
    }
    let mut parsed = Parsed::new();
    let offset = parse(&mut parsed, name, StrftimeItems::new("%#z"))
        .ok()
        .and_then(|_| parsed.offset)
        .and_then(FixedOffset::east_opt);
    offset
        .map(Zone::Fixed)
        .ok_or_else(|| DataFusionError::Execution(format!("Unknown time zone: {name}")))
}

impl TimeZone for Zone {
    type Offset = FixedOffset;

    fn from_offset(offset: &FixedOffset) -> Zone {
        Zone::Fixed(*offset)
    }

    fn offset_from_local_date(&self, local: &NaiveDate) -> chrono::LocalResult<FixedOffset> {
        match self {
            Zone::Named(tz) => tz.offset_from_local_date(local).map(|o| o.fix()),
            Zone::Fixed(offset) => chrono::LocalResult::Single(*offset),
        }
    }

    fn offset_from_local_datetime(
        &self,
        local: &chrono::NaiveDateTime,
    ) -> chrono::LocalResult<FixedOffset> {
        match self {
            Zone::Named(tz) => tz.offset_from_local_datetime(local).map(|o| o.fix()),
            Zone::Fixed(offset) => chrono::LocalResult::Single(*offset),
        }
    }

    fn offset_from_utc_date(&self, utc: &NaiveDate) -> FixedOffset {
        match self {
            Zone::Named(tz) => tz.offset_from_utc_date(utc).fix(),
            Zone::Fixed(offset) => *offset,
        }
    }

    fn offset_from_utc_datetime(&self, utc: &chrono::NaiveDateTime) -> FixedOffset {
        match self {
            Zone::Named(tz) => tz.offset_from_utc_datetime(utc).fix(),
            Zone::Fixed(offset) => *offset,
        }
    }
}

pub(crate) fn epoch_date() -> NaiveDate {
    NaiveDate::from_ymd_opt(1970, 1, 1).expect("the epoch")
}

/// Row `row` of a string array, `None` when null.
struct Strings<'a>(&'a StringArray);

impl Strings<'_> {
    fn value(&self, row: usize) -> Option<&str> {
        (self.0.is_valid(row)).then(|| self.0.value(row))
    }
}

fn strings(array: &ArrayRef) -> Strings<'_> {
    Strings(
        array
            .as_any()
            .downcast_ref::<StringArray>()
            .expect("cast to Utf8"),
    )
}

fn value<T: datafusion::arrow::datatypes::ArrowPrimitiveType>(
    array: &datafusion::arrow::array::PrimitiveArray<T>,
    row: usize,
) -> Option<T::Native> {
    array.is_valid(row).then(|| array.value(row))
}

/// A Java `DateTimeFormatter` pattern as a chrono strftime string: letters repeat to set the
/// width ('yyyy', 'MM', 'SSS'), text in single quotes is literal ('' is a quote).
fn strftime(pattern: &str) -> Result<String> {
    let chars: Vec<char> = pattern.chars().collect();
    let mut out = String::with_capacity(pattern.len() * 2);
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '\'' {
            // Quoted text up to the closing quote; '' is one quote.
            if chars.get(i + 1) == Some(&'\'') {
                out.push('\'');
                i += 2;
                continue;
            }
            i += 1;
            while i < chars.len() {
                if chars[i] == '\'' {
                    if chars.get(i + 1) == Some(&'\'') {
                        out.push('\'');
                        i += 2;
                        continue;
                    }
                    break;
                }
                push_literal(&mut out, chars[i]);
                i += 1;
            }
            i += 1;
            continue;
        }
        if !c.is_ascii_alphabetic() {
            push_literal(&mut out, c);
            i += 1;
            continue;
        }
        let mut run = 1;
        while chars.get(i + run) == Some(&c) {
            run += 1;
        }
        let after_dot = out.ends_with('.');
        let item = match (c, run) {
            ('y' | 'u', 2) => "%y",
            ('y' | 'u', _) => "%Y",
            ('M', 1) => "%-m",
            ('M', 2) => "%m",
            ('M', 3) => "%b",
            ('M', _) => "%B",
            ('d', 1) => "%-d",
            ('d', _) => "%d",
            ('D', _) => "%j",
            ('H', 1) => "%-H",
            ('H', _) => "%H",
            ('h', 1) => "%-I",
            ('h', _) => "%I",
            ('m', 1) => "%-M",
            ('m', _) => "%M",
            ('s', 1) => "%-S",
            ('s', _) => "%S",
            ('S', n) => {
                // A fraction after a dot: chrono's `%.Nf` reads the dot too.
                if after_dot {
                    out.pop();
                }
                match (after_dot, n) {
                    (true, 3) => "%.3f",
                    (true, 6) => "%.6f",
                    (true, 9) => "%.9f",
                    (true, _) => "%.f",
                    (false, 6) => "%6f",
                    (false, 9) => "%9f",
                    (false, _) => "%3f",
                }
            }
            ('a', _) => "%p",
            ('E', 1..=3) => "%a",
            ('E', _) => "%A",
            ('X' | 'x', 1 | 2) => "%#z",
            ('X' | 'x', _) => "%:z",
            ('Z', 1..=3) => "%z",
            ('Z', _) => "%:z",
            ('z', _) | ('V', _) => "%Z",
            (other, _) => {
                return exec_err!("unknown pattern letter '{other}' in '{pattern}'");
            }
        };
        out.push_str(item);
        i += run;
    }
    Ok(out)
}

/// Writes a formatted value, or says which pattern could not format it: chrono's formatting
/// fails (rather than writing) when a pattern asks for a field the value lacks, such as an
/// hour of a DATE, and `to_string()` would panic on that.
pub(crate) fn formatted(value: impl std::fmt::Display, pattern: &str) -> Result<String> {
    use std::fmt::Write;
    let mut out = String::new();
    write!(out, "{value}").map_err(|_| {
        DataFusionError::Execution(format!(
            "pattern '{pattern}' asks for a field this value does not have (an hour of a DATE, \
             a zone of a local time)"
        ))
    })?;
    Ok(out)
}

fn push_literal(out: &mut String, c: char) {
    if c == '%' {
        out.push_str("%%");
    } else {
        out.push(c);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn java_patterns_become_strftime() {
        assert_eq!(
            strftime("yyyy-MM-dd'T'HH:mm:ss.SSSX").unwrap(),
            "%Y-%m-%dT%H:%M:%S%.3f%#z"
        );
        assert_eq!(
            strftime("yy-MM-dd HH:mm:ssX").unwrap(),
            "%y-%m-%d %H:%M:%S%#z"
        );
        assert_eq!(strftime("'It''s' d MMM").unwrap(), "It's %-d %b");
        assert!(strftime("yyyy-qq").is_err());
    }

    /// FORMAT_DATE(d, 'HH:mm') once panicked the query task: chrono fails to format a
    /// field the value lacks, and `to_string()` panics on a failed Display.
    #[test]
    fn patterns_asking_for_fields_a_value_lacks_are_errors() {
        let mut cache = Cache::default();
        let date = epoch_date();
        let hours = cache.pattern("yyyy-MM-dd HH:mm").unwrap().to_vec();
        let error = formatted(date.format_with_items(hours.iter()), "yyyy-MM-dd HH:mm");
        assert!(error
            .unwrap_err()
            .to_string()
            .contains("'yyyy-MM-dd HH:mm'"));
        let day = cache.pattern("yyyy-MM-dd").unwrap().to_vec();
        let text = formatted(date.format_with_items(day.iter()), "yyyy-MM-dd").unwrap();
        assert_eq!(text, "1970-01-01");
    }

    #[test]
    fn parses_with_offsets_zones_and_dates_alone() {
        let mut cache = Cache::default();
        let utc = zone(None).unwrap();
        let millis = |text: &str, pattern: &str, zone: &Zone| {
            let mut cache = Cache::default();
            let parsed = parse_with(text, pattern, &mut cache).unwrap();
            timestamp_millis(&parsed, zone, text, pattern).unwrap()
        };
        assert_eq!(
            millis("2018-05-11T21:58:33Z", "yyyy-MM-dd'T'HH:mm:ssX", &utc),
            1_526_075_913_000
        );
        assert_eq!(
            millis(
                "2019-08-27T13:31:09.2+0000",
                "yyyy-MM-dd'T'HH:mm:ss.SX",
                &utc
            ),
            1_566_912_669_200
        );
        let paris = zone(Some("Europe/Paris")).unwrap();
        assert_eq!(millis("1970-01-01 01:00", "yyyy-MM-dd HH:mm", &paris), 0);
        assert_eq!(millis("1970-01-02", "yyyy-MM-dd", &utc), 86_400_000);
        assert!(parse_with("not a time", "yyyy-MM-dd", &mut cache).is_err());
    }
}
