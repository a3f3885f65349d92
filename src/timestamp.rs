//! Exact timestamp parsing: capture prefixes, decimal epoch seconds and
//! RFC 3339, all to nanoseconds since the Unix epoch without going through
//! `f64` (an `f64` holds only ~16 significant digits, and a nanosecond epoch
//! needs 19).

/// Nanoseconds from an integer epoch whose unit is told by its size: 19
/// digits are ns, 16 are µs, 13 are ms, 10 are s (any date from 2001 to 2286
/// has exactly that many digits in each unit).
pub fn epoch_int_ns(digits: &[u8]) -> Option<u64> {
    let v = parse_u64(digits)?;
    let scale = match v {
        0..=99_999_999_999 => 1_000_000_000,
        100_000_000_000..=99_999_999_999_999 => 1_000_000,
        100_000_000_000_000..=99_999_999_999_999_999 => 1_000,
        _ => 1,
    };
    v.checked_mul(scale)
}

/// Nanoseconds from decimal epoch seconds such as `1786309548.6290078`.
/// Digits past the ninth fraction digit are truncated (they are below 1 ns).
pub fn decimal_secs_ns(text: &[u8]) -> Option<u64> {
    let (int, frac) = match text.iter().position(|&b| b == b'.') {
        Some(dot) => (&text[..dot], &text[dot + 1..]),
        None => (text, &text[text.len()..]),
    };
    if !frac.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let secs = parse_u64(int)?;
    let mut ns: u64 = 0;
    for i in 0..9 {
        ns = ns * 10 + frac.get(i).map_or(0, |d| u64::from(d - b'0'));
    }
    secs.checked_mul(1_000_000_000)?.checked_add(ns)
}

/// A time as a client gives one (a replay's `from`, `to`, a `seek`):
/// nanoseconds since the epoch as an integer, or an RFC 3339 time.
pub fn time_ns(text: &str) -> Option<u64> {
    let text = text.trim();
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        return parse_u64(text.as_bytes());
    }
    rfc3339_ns(text)
}

/// Nanoseconds from an RFC 3339 time such as `2026-08-09T21:05:48.228568804Z`
/// (up to 9 fraction digits; `Z` or a `±HH:MM` offset; `T`, `t` or a space
/// between date and time). Times before 1970 are `None`.
pub fn rfc3339_ns(s: &str) -> Option<u64> {
    let b = s.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    if b[13] != b':' || b[16] != b':' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| parse_u64(&b[r]).and_then(|v| i64::try_from(v).ok());
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, min, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || min > 59 || sec > 60 {
        return None;
    }
    let mut i = 19;
    let mut nanos: i64 = 0;
    if b.get(i) == Some(&b'.') {
        i += 1;
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        let frac = &b[start..i];
        if frac.is_empty() || frac.len() > 9 {
            return None;
        }
        for k in 0..9 {
            nanos = nanos * 10 + frac.get(k).map_or(0, |d| i64::from(d - b'0'));
        }
    }
    let offset_secs = match &b[i..] {
        [b'Z' | b'z'] => 0,
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] => {
            let hh = parse_u64(&[*h1, *h2])?;
            let mm = parse_u64(&[*m1, *m2])?;
            let off = i64::try_from(hh * 3600 + mm * 60).ok()?;
            if *sign == b'+' {
                off
            } else {
                -off
            }
        }
        _ => return None,
    };
    let days = days_from_civil(year, month, day);
    let secs = days * 86_400 + hour * 3600 + min * 60 + sec - offset_secs;
    let total = i128::from(secs) * 1_000_000_000 + i128::from(nanos);
    u64::try_from(total).ok()
}

/// Days since 1970-01-01 of a proleptic Gregorian date, from Howard Hinnant's
/// `days_from_civil` (<http://howardhinnant.github.io/date_algorithms.html>).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn parse_u64(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() || digits.len() > 20 {
        return None;
    }
    digits.iter().try_fold(0u64, |acc, &d| {
        if d.is_ascii_digit() {
            acc.checked_mul(10)?.checked_add(u64::from(d - b'0'))
        } else {
            None
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_clients_time_is_ns_or_rfc3339() {
        let t = 1_723_161_255_000_000_000;
        assert_eq!(time_ns("1723161255000000000"), Some(t));
        assert_eq!(time_ns(" 2024-08-08T23:54:15Z "), Some(t));
        assert_eq!(
            time_ns("2024-08-09T01:54:15.25+02:00"),
            Some(t + 250_000_000)
        );
        for bad in [
            "",
            "-5",
            "99999999999999999999999",
            "2024-08-08",
            "noon",
            "1e9",
        ] {
            assert_eq!(time_ns(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn rfc3339_table() {
        let cases: &[(&str, Option<u64>)] = &[
            // TC0: the epoch.
            ("1970-01-01T00:00:00Z", Some(0)),
            // TC1: Coinbase Advanced Trade, 9 fraction digits
            // (`date -ud @1786309548` = 2026-08-09 21:05:48).
            (
                "2026-08-09T21:05:48.228568804Z",
                Some(1_786_309_548_228_568_804),
            ),
            // TC2: Coinbase Exchange, 6 digits.
            (
                "2017-09-02T17:05:49.250000Z",
                Some(1_504_371_949_250_000_000),
            ),
            // TC3: short fraction, leap day, offsets.
            ("2024-02-29T00:00:00.5Z", Some(1_709_164_800_500_000_000)),
            ("2024-02-29T01:30:00+01:30", Some(1_709_164_800_000_000_000)),
            ("2024-02-28T23:00:00-01:00", Some(1_709_164_800_000_000_000)),
            // TC4: malformed.
            ("2024-02-29", None),
            ("2024-13-01T00:00:00Z", None),
            ("2024-02-29T00:00:00", None),
            ("2024-02-29T00:00:00.Z", None),
            ("2024-02-29T00:00:00.1234567891Z", None),
            ("1969-12-31T23:59:59Z", None),
        ];
        for (text, want) in cases {
            assert_eq!(rfc3339_ns(text), *want, "{text}");
        }
    }

    #[test]
    fn epoch_prefix_table() {
        // TC0: ns, µs, ms, s forms of the same instant.
        for text in [
            "1723161254087891268",
            "1723161254087891",
            "1723161254087",
            "1723161254",
        ] {
            let ns = epoch_int_ns(text.as_bytes()).unwrap();
            assert_eq!(ns / 1_000_000_000, 1_723_161_254, "{text}");
        }
        // TC1: not digits.
        assert_eq!(epoch_int_ns(b"17x"), None);
    }

    #[test]
    fn decimal_secs_table() {
        // TC0: cryptofeed `ts` with 7 fraction digits.
        assert_eq!(
            decimal_secs_ns(b"1786309548.6290078"),
            Some(1_786_309_548_629_007_800)
        );
        // TC1: more than 9 digits are truncated, none is whole seconds.
        assert_eq!(decimal_secs_ns(b"1.0000000019"), Some(1_000_000_001));
        assert_eq!(decimal_secs_ns(b"12"), Some(12_000_000_000));
        // TC2: garbage.
        assert_eq!(decimal_secs_ns(b"1.2e3"), None);
        assert_eq!(decimal_secs_ns(b".5"), None);
    }
}
