//! ksqlDB's date and time arithmetic and conversions, computed row by row: DATEADD, DATESUB,
//! TIMEADD, TIMESUB (a TIME wraps around midnight), TIMESTAMPADD, TIMESTAMPSUB (the unit is
//! written as a word, `TIMESTAMPADD(SECONDS, 5, ts)`, which the planner passes as text),
//! FROM_DAYS, UNIX_DATE, CONVERT_TZ, FORMAT_TIME and PARSE_TIME (Java patterns, as in
//! [`super::datetime`]).

use chrono::{NaiveTime, Timelike};
use datafusion::arrow::datatypes::{DataType, TimeUnit};
use datafusion::common::{exec_err, Result, ScalarValue};
use datafusion::logical_expr::ScalarUDF;

use super::datetime::{formatted, parse_with, zone, Cache};
use super::rowwise::{self, integer, is_text, refuse, text};

const DAY_MILLIS: i64 = 86_400_000;

pub(crate) fn udfs() -> Vec<ScalarUDF> {
    vec![
        rowwise::udf("dateadd", shift_type, add),
        rowwise::udf("datesub", shift_type, subtract),
        rowwise::udf("timeadd", shift_type, add),
        rowwise::udf("timesub", shift_type, subtract),
        rowwise::udf("timestampadd", shift_type, add),
        rowwise::udf("timestampsub", shift_type, subtract),
        rowwise::udf("from_days", from_days_type, from_days),
        rowwise::volatile_udf("unix_date", unix_date_type, unix_date),
        rowwise::udf("convert_tz", convert_tz_type, convert_tz),
        rowwise::udf("format_time", format_time_type, format_time),
        rowwise::udf("parse_time", parse_time_type, parse_time),
    ]
}

/// The functions' names for the time units ksqlDB's arithmetic takes.
pub(crate) const UNITS: &[&str] = &[
    "NANOSECONDS",
    "MICROSECONDS",
    "MILLISECONDS",
    "SECONDS",
    "MINUTES",
    "HOURS",
    "DAYS",
];

/// Milliseconds in `count` of a unit (truncated for units below a millisecond).
fn millis(unit: &str, count: i64) -> Result<i64> {
    let (per, below) = match unit.to_ascii_uppercase().as_str() {
        "NANOSECONDS" => (1, 1_000_000),
        "MICROSECONDS" => (1, 1_000),
        "MILLISECONDS" => (1, 1),
        "SECONDS" => (1_000, 1),
        "MINUTES" => (60_000, 1),
        "HOURS" => (3_600_000, 1),
        "DAYS" => (DAY_MILLIS, 1),
        other => return exec_err!("unknown time unit {other}: one of {}", UNITS.join(", ")),
    };
    match count.checked_mul(per) {
        Some(ms) => Ok(ms / below),
        None => exec_err!("{count} {unit} is out of range"),
    }
}

/// The type shifted by each of the arithmetic functions.
fn shifted(name: &str) -> DataType {
    match name {
        "dateadd" | "datesub" => DataType::Date32,
        "timeadd" | "timesub" => DataType::Time32(TimeUnit::Millisecond),
        _ => DataType::Timestamp(TimeUnit::Millisecond, None),
    }
}

fn shift_type(name: &str, arguments: &[DataType]) -> Result<DataType> {
    let target = shifted(name);
    let same = |t: &DataType| match (t, &target) {
        (DataType::Timestamp(..), DataType::Timestamp(..)) => true,
        (t, target) => t == target || *t == DataType::Null,
    };
    match arguments {
        [unit, count, value]
            if is_text(unit) && (count.is_integer() || *count == DataType::Null) && same(value) =>
        {
            Ok(target)
        }
        _ => refuse(name, arguments),
    }
}

fn add(values: &[ScalarValue], returns: &DataType) -> Result<ScalarValue> {
    shift(values, returns, 1)
}

fn subtract(values: &[ScalarValue], returns: &DataType) -> Result<ScalarValue> {
    shift(values, returns, -1)
}

/// The value moved by `count` units, forward (`sign` 1) or back (-1): a DATE by whole days, a
/// TIME around the clock, a TIMESTAMP by milliseconds.
fn shift(values: &[ScalarValue], returns: &DataType, sign: i64) -> Result<ScalarValue> {
    let (Some(unit), Some(count)) = (text(&values[0]), integer(&values[1])) else {
        return ScalarValue::try_from(returns);
    };
    let delta = sign * millis(unit, count)?;
    Ok(match &values[2] {
        ScalarValue::Date32(day) => {
            let days = i32::try_from(delta / DAY_MILLIS).unwrap_or(i32::MAX);
            ScalarValue::Date32(day.and_then(|d| d.checked_add(days)))
        }
        ScalarValue::Time32Millisecond(ms) => ScalarValue::Time32Millisecond(
            ms.map(|ms| (i64::from(ms) + delta).rem_euclid(DAY_MILLIS) as i32),
        ),
        ScalarValue::TimestampMillisecond(ms, zone) => {
            ScalarValue::TimestampMillisecond(ms.and_then(|ms| ms.checked_add(delta)), zone.clone())
        }
        _ => ScalarValue::try_from(returns)?,
    })
}

fn from_days_type(name: &str, arguments: &[DataType]) -> Result<DataType> {
    match arguments {
        [days] if days.is_integer() || *days == DataType::Null => Ok(DataType::Date32),
        _ => refuse(name, arguments),
    }
}

fn from_days(values: &[ScalarValue], _: &DataType) -> Result<ScalarValue> {
    Ok(ScalarValue::Date32(
        integer(&values[0]).and_then(|d| i32::try_from(d).ok()),
    ))
}

fn unix_date_type(name: &str, arguments: &[DataType]) -> Result<DataType> {
    match arguments {
        [] | [DataType::Date32 | DataType::Null] => Ok(DataType::Int32),
        _ => refuse(name, arguments),
    }
}

/// UNIX_DATE([date]): days since the epoch, of the date or of today (UTC).
fn unix_date(values: &[ScalarValue], _: &DataType) -> Result<ScalarValue> {
    Ok(ScalarValue::Int32(match values.first() {
        Some(ScalarValue::Date32(day)) => *day,
        Some(_) => None,
        None => Some((chrono::Utc::now().timestamp_millis().div_euclid(DAY_MILLIS)) as i32),
    }))
}

fn convert_tz_type(name: &str, arguments: &[DataType]) -> Result<DataType> {
    match arguments {
        [DataType::Timestamp(..) | DataType::Null, from, to] if is_text(from) && is_text(to) => {
            Ok(DataType::Timestamp(TimeUnit::Millisecond, None))
        }
        _ => refuse(name, arguments),
    }
}

/// CONVERT_TZ(ts, from, to): the timestamp moved by the difference between the two zones'
/// offsets at that instant.
fn convert_tz(values: &[ScalarValue], _: &DataType) -> Result<ScalarValue> {
    use chrono::{Offset, TimeZone};
    let (ScalarValue::TimestampMillisecond(Some(ms), _), Some(from), Some(to)) =
        (&values[0], text(&values[1]), text(&values[2]))
    else {
        return Ok(ScalarValue::TimestampMillisecond(None, None));
    };
    let Some(instant) = chrono::DateTime::<chrono::Utc>::from_timestamp_millis(*ms) else {
        return exec_err!("timestamp {ms} is out of range");
    };
    let offset = |name: &str| -> Result<i64> {
        let zone = zone(Some(name))?;
        let offset = zone.offset_from_utc_datetime(&instant.naive_utc()).fix();
        Ok(i64::from(offset.local_minus_utc()) * 1000)
    };
    let moved = ms + offset(to)? - offset(from)?;
    Ok(ScalarValue::TimestampMillisecond(Some(moved), None))
}

fn format_time_type(name: &str, arguments: &[DataType]) -> Result<DataType> {
    match arguments {
        [DataType::Time32(_) | DataType::Time64(_) | DataType::Null, pattern]
            if is_text(pattern) =>
        {
            Ok(DataType::Utf8)
        }
        _ => refuse(name, arguments),
    }
}

/// FORMAT_TIME(time, pattern): a TIME written with a Java pattern.
fn format_time(values: &[ScalarValue], _: &DataType) -> Result<ScalarValue> {
    let (ScalarValue::Time32Millisecond(Some(ms)), Some(pattern)) = (&values[0], text(&values[1]))
    else {
        return Ok(ScalarValue::Utf8(None));
    };
    let time = time_of(i64::from(*ms))?;
    let mut cache = Cache::default();
    let items = cache.pattern(pattern)?;
    Ok(ScalarValue::Utf8(Some(formatted(
        time.format_with_items(items.iter()),
        pattern,
    )?)))
}

fn time_of(ms: i64) -> Result<NaiveTime> {
    let ms = ms.rem_euclid(DAY_MILLIS);
    match NaiveTime::from_num_seconds_from_midnight_opt(
        (ms / 1000) as u32,
        ((ms % 1000) * 1_000_000) as u32,
    ) {
        Some(time) => Ok(time),
        None => exec_err!("time {ms} is out of range"),
    }
}

fn parse_time_type(name: &str, arguments: &[DataType]) -> Result<DataType> {
    match arguments {
        [input, pattern] if is_text(input) && is_text(pattern) => {
            Ok(DataType::Time32(TimeUnit::Millisecond))
        }
        _ => refuse(name, arguments),
    }
}

/// PARSE_TIME(text, pattern): a TIME read with a Java pattern.
fn parse_time(values: &[ScalarValue], _: &DataType) -> Result<ScalarValue> {
    let (Some(input), Some(pattern)) = (text(&values[0]), text(&values[1])) else {
        return Ok(ScalarValue::Time32Millisecond(None));
    };
    let mut cache = Cache::default();
    let parsed = parse_with(input, pattern, &mut cache)?;
    let time = match parsed.to_naive_time() {
        Ok(time) => time,
        Err(e) => return exec_err!("Text '{input}' could not be parsed as a time: {e}"),
    };
    let ms = time.num_seconds_from_midnight() * 1000 + time.nanosecond() / 1_000_000;
    Ok(ScalarValue::Time32Millisecond(Some(ms as i32)))
}
