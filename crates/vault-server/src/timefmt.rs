//! The `updated_after` forms clients send: ISO 8601 (Python, the spec), and the JavaScript
//! `Date.prototype.toString()` form the Node SDK sends when given a `Date`
//! (`Tue Jan 02 2024 03:04:05 GMT+0000 (Coordinated Universal Time)`).

use vault_objects::Timestamp;

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// Parses either form; `None` if it is neither.
pub(crate) fn parse_updated_after(s: &str) -> Option<Timestamp> {
    if let Ok(t) = Timestamp::parse_rfc3339(s, "updated_after") {
        return Some(t);
    }
    parse_js_date(s)
}

fn parse_js_date(s: &str) -> Option<Timestamp> {
    let mut parts = s.split_whitespace();
    let _weekday = parts.next()?;
    let month_name = parts.next()?;
    let month = MONTHS.iter().position(|m| *m == month_name)? + 1;
    let day: u32 = parts.next()?.parse().ok()?;
    let year: u32 = parts.next()?.parse().ok()?;
    let time = parts.next()?;
    let zone = parts.next()?.strip_prefix("GMT")?;
    // Lengths are in bytes: only ASCII may be sliced by them (a fuzzed zone once was not).
    if time.len() != 8
        || zone.len() != 5
        || !zone.is_ascii()
        || !time.is_ascii()
        || !(1..=31).contains(&day)
        || year > 9999
    {
        return None;
    }
    let (sign, hhmm) = zone.split_at(1);
    if !matches!(sign, "+" | "-") || !hhmm.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let iso = format!(
        "{year:04}-{month:02}-{day:02}T{time}{sign}{}:{}",
        &hhmm[..2],
        &hhmm[2..]
    );
    Timestamp::parse_rfc3339(&iso, "updated_after").ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_forms_give_the_same_instant() {
        let iso = parse_updated_after("2024-01-02T03:04:05.000Z").unwrap();
        let js =
            parse_updated_after("Tue Jan 02 2024 03:04:05 GMT+0000 (Coordinated Universal Time)")
                .unwrap();
        assert_eq!(iso, js);
        let shifted =
            parse_updated_after("Tue Jan 02 2024 05:04:05 GMT+0200 (Eastern European Time)")
                .unwrap();
        assert_eq!(shifted, iso);
        for bad in [
            "",
            "yesterday",
            "Tue Foo 02 2024 03:04:05 GMT+0000",
            "2024-13-01T00:00:00Z",
        ] {
            assert_eq!(parse_updated_after(bad), None, "{bad}");
        }
    }
}
