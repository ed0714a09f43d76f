//! Time: microseconds since the Unix epoch, RFC 3339 in and out, and the calendar maths
//! behind it.

// A parser of outside bytes: no index or arithmetic that can panic or wrap.
#![warn(clippy::indexing_slicing, clippy::arithmetic_side_effects)]

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::error::StoreError;

/// Microseconds since the Unix epoch, UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(pub i64);

impl Timestamp {
    /// The current time.
    pub fn now() -> Self {
        let d = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        Self(i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
    }

    /// RFC 3339 / ISO 8601 in UTC with microseconds: `2025-02-21T12:04:09.165291Z`.
    // Euclidean remainders of a time: bounded, and never a division by zero.
    #[allow(clippy::arithmetic_side_effects)]
    pub fn to_rfc3339(self) -> String {
        let secs = self.0.div_euclid(1_000_000);
        let micros = self.0.rem_euclid(1_000_000);
        let days = secs.div_euclid(86_400);
        let rem = secs.rem_euclid(86_400);
        let (y, m, d) = civil_from_days(days);
        format!(
            "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{micros:06}Z",
            rem / 3600,
            rem % 3600 / 60,
            rem % 60
        )
    }

    /// Parses RFC 3339 with `Z` or a numeric offset and 0 to 9 fractional digits.
    ///
    /// # Errors
    /// [`StoreError::InvalidQuery`] naming `field`.
    // Every number is at most 4 (year) or 9 (fraction) checked digits: no sum can overflow.
    #[allow(clippy::arithmetic_side_effects)]
    pub fn parse_rfc3339(s: &str, field: &'static str) -> Result<Self, StoreError> {
        let bad = || StoreError::invalid_query(field, "not an ISO 8601 timestamp");
        let at = |i: usize| s.as_bytes().get(i).copied();
        if s.len() < 20
            || at(4) != Some(b'-')
            || at(7) != Some(b'-')
            || !matches!(at(10), Some(b'T' | b't' | b' '))
            || at(13) != Some(b':')
            || at(16) != Some(b':')
        {
            return Err(bad());
        }
        let num = |r: std::ops::Range<usize>| -> Result<i64, StoreError> {
            let t = s.get(r).ok_or_else(bad)?;
            if !t.bytes().all(|c| c.is_ascii_digit()) {
                return Err(bad());
            }
            t.parse().map_err(|_| bad())
        };
        let (y, mo, d, h, mi, se) = (
            num(0..4)?,
            num(5..7)?,
            num(8..10)?,
            num(11..13)?,
            num(14..16)?,
            num(17..19)?,
        );
        if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || se > 60 {
            return Err(bad());
        }
        let mut rest = s.get(19..).ok_or_else(bad)?;
        let mut micros = 0i64;
        if let Some(frac) = rest.strip_prefix('.') {
            let digits = frac.bytes().take_while(u8::is_ascii_digit).count();
            if digits == 0 || digits > 9 {
                return Err(bad());
            }
            let mut value: i64 = frac
                .get(..digits)
                .ok_or_else(bad)?
                .parse()
                .map_err(|_| bad())?;
            for _ in digits..6 {
                value *= 10;
            }
            for _ in 6..digits {
                value /= 10;
            }
            micros = value;
            rest = frac.get(digits..).ok_or_else(bad)?;
        }
        let offset_secs = match rest {
            "Z" | "z" => 0,
            // Byte positions are only safe to slice in ASCII (a fuzzed `-01\u{a0}5` once panicked).
            o if o.len() == 6
                && (o.starts_with('+') || o.starts_with('-'))
                && o.as_bytes().get(3) == Some(&b':')
                && [1, 2, 4, 5]
                    .iter()
                    .all(|&i| o.as_bytes().get(i).is_some_and(u8::is_ascii_digit)) =>
            {
                let sign = if o.starts_with('-') { -1 } else { 1 };
                let oh: i64 = o.get(1..3).ok_or_else(bad)?.parse().map_err(|_| bad())?;
                let om: i64 = o.get(4..6).ok_or_else(bad)?.parse().map_err(|_| bad())?;
                sign * (oh * 3600 + om * 60)
            }
            _ => return Err(bad()),
        };
        let days = days_from_civil(y, mo, d);
        let secs = days * 86_400 + h * 3600 + mi * 60 + se - offset_secs;
        Ok(Self(secs * 1_000_000 + micros))
    }
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian (H. Hinnant's algorithm).
// Calendar maths on days of years 0 to 9999: far from overflowing.
#[allow(clippy::arithmetic_side_effects)]
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

// Calendar maths on days of years 0 to 9999: far from overflowing.
#[allow(clippy::arithmetic_side_effects)]
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_rfc3339())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_round_trip_through_rfc3339() {
        for t in [
            0i64,
            1_718_447_400_000_000,
            1_740_139_449_165_291,
            -1,
            951_782_400_123_456,
        ] {
            let text = Timestamp(t).to_rfc3339();
            assert_eq!(
                Timestamp::parse_rfc3339(&text, "t").unwrap(),
                Timestamp(t),
                "{text}"
            );
        }
        assert_eq!(
            Timestamp(1_740_139_449_165_291).to_rfc3339(),
            "2025-02-21T12:04:09.165291Z"
        );
        assert_eq!(
            Timestamp::parse_rfc3339("2024-06-15T12:30:00+02:00", "t").unwrap(),
            Timestamp::parse_rfc3339("2024-06-15T10:30:00.000Z", "t").unwrap()
        );
        for bad in [
            "",
            "2024-06-15",
            "2024-13-01T00:00:00Z",
            "2024-06-15T10:30:00",
            "x024-06-15T10:30:00Z",
            "2024-06-15T10:30:00.Z",
            "9999-12-31T23:59:59-01\u{a0}5",
            "2024-06-15T10:30:00++1:00",
            "2024-06-15T10:30:00-0é:00",
        ] {
            assert!(Timestamp::parse_rfc3339(bad, "t").is_err(), "{bad}");
        }
    }
}
