//! A replay's times (`from`, `to`, a `seek`'s `to`): nanoseconds since the
//! epoch, or an RFC 3339 time (`2024-08-08T23:54:15Z`,
//! `2024-08-08T23:54:15.250+02:00`).

/// Nanoseconds since the Unix epoch of `text`, or `None` if it is neither
/// an integer nor an RFC 3339 date-time (with a `T` or a space, seconds,
/// an optional fraction of up to 9 digits, and `Z` or an offset).
pub fn parse_time(text: &str) -> Option<u64> {
    let text = text.trim();
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        return text.parse().ok();
    }
    let b = text.as_bytes();
    let num = |from: usize, len: usize| -> Option<i64> {
        let s = b.get(from..from + len)?;
        s.iter()
            .all(u8::is_ascii_digit)
            .then(|| std::str::from_utf8(s).ok()?.parse().ok())?
    };
    let sep = |at: usize, c: &[u8]| b.get(at).is_some_and(|x| c.contains(x));
    if !(sep(4, b"-") && sep(7, b"-") && sep(10, b"Tt ") && sep(13, b":") && sep(16, b":")) {
        return None;
    }
    let (year, month, day) = (num(0, 4)?, num(5, 2)?, num(8, 2)?);
    let (hour, minute, second) = (num(11, 2)?, num(14, 2)?, num(17, 2)?);
    if !(1..=12).contains(&month) || !(1..=days_in(year, month)).contains(&day) {
        return None;
    }
    if hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    let mut at = 19;
    let mut nanos = 0i64;
    if b.get(at) == Some(&b'.') {
        let digits = b[at + 1..]
            .iter()
            .take_while(|c| c.is_ascii_digit())
            .count();
        if digits == 0 || digits > 9 {
            return None;
        }
        nanos = num(at + 1, digits)? * 10i64.pow(9 - digits as u32);
        at += 1 + digits;
    }
    let offset = match &b[at..] {
        [b'Z' | b'z'] => 0,
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] => {
            let two = |a: u8, b: u8| -> Option<i64> {
                (a.is_ascii_digit() && b.is_ascii_digit())
                    .then(|| i64::from(a - b'0') * 10 + i64::from(b - b'0'))
            };
            let (h, m) = (two(*h1, *h2)?, two(*m1, *m2)?);
            if h > 23 || m > 59 {
                return None;
            }
            let secs = h * 3600 + m * 60;
            if *sign == b'+' {
                secs
            } else {
                -secs
            }
        }
        _ => return None,
    };
    let days = days_from_civil(year, month, day);
    let secs = days * 86_400 + hour * 3600 + minute * 60 + second - offset;
    u64::try_from(secs.checked_mul(1_000_000_000)?.checked_add(nanos)?).ok()
}

fn days_in(year: i64, month: i64) -> i64 {
    match month {
        2 if year % 4 == 0 && (year % 100 != 0 || year % 400 == 0) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days from 1970-01-01 to the date (Howard Hinnant's `days_from_civil`).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::parse_time;

    #[test]
    fn rfc3339_and_nanoseconds() {
        let t = 1_723_161_255_000_000_000;
        assert_eq!(parse_time("1723161255000000000"), Some(t));
        assert_eq!(parse_time("2024-08-08T23:54:15Z"), Some(t));
        assert_eq!(parse_time("2024-08-08 23:54:15z"), Some(t));
        assert_eq!(parse_time("2024-08-09T01:54:15+02:00"), Some(t));
        assert_eq!(parse_time("2024-08-08T22:54:15-01:00"), Some(t));
        assert_eq!(parse_time("2024-08-08T23:54:15.25Z"), Some(t + 250_000_000));
        assert_eq!(parse_time("2024-08-08T23:54:15.000000001Z"), Some(t + 1));
        assert_eq!(parse_time("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(
            parse_time("2000-02-29T00:00:00Z"),
            Some(951_782_400_000_000_000)
        );
        for bad in [
            "",
            "2024-08-08",
            "2024-08-08T23:54:15",
            "2024-13-08T23:54:15Z",
            "2023-02-29T00:00:00Z",
            "2024-08-08T24:00:00Z",
            "2024-08-08T23:54:15.Z",
            "2024-08-08T23:54:15.1234567890Z",
            "2024-08-08T23:54:15+2:00",
            "1969-12-31T23:59:59Z",
            "-5",
            "99999999999999999999",
            "2024-08-08T23:54:15ZZ",
        ] {
            assert_eq!(parse_time(bad), None, "{bad:?}");
        }
    }
}
