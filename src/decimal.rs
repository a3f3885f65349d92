//! Exact decimal strings to fixed-point integers and back.
//!
//! A price from a feed (`"61837.63000000"`) becomes a mantissa and a number of
//! decimals fixed per symbol: `6183763000000` at 8 decimals. Nothing on this
//! path goes through `f64`, so the digits a venue sent are the digits a client
//! gets back. A value that cannot be held exactly at the symbol's scale is an
//! error, never a rounding.

use std::fmt;

/// Decimals used for a symbol unless its first value needs more. Eight is
/// what Binance and Coinbase print for sizes, and leaves room for prices up
/// to 92 billion in an `i64`.
pub const DEFAULT_DECIMALS: u8 = 8;

/// The most decimals a symbol may have; 10^18 is the largest power of ten in
/// an `i64`.
pub const MAX_DECIMALS: u8 = 18;

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DecimalError {
    #[error("not a decimal number")]
    Syntax,
    #[error("more significant decimals than the symbol's scale of {0}")]
    Precision(u8),
    #[error("does not fit in 64 bits at the symbol's scale")]
    Overflow,
}

/// The number of decimals a string is written with, trailing zeros excluded
/// (`"1.2500"` has 2). Used to pick a symbol's scale from its first value.
pub fn significant_decimals(s: &[u8]) -> Result<u8, DecimalError> {
    let (int, frac) = split(s)?;
    let _ = int;
    let trimmed = trim_trailing_zeros(frac);
    u8::try_from(trimmed.len())
        .ok()
        .filter(|&d| d <= MAX_DECIMALS)
        .ok_or(DecimalError::Precision(MAX_DECIMALS))
}

/// Parses `s` as an exact multiple of `10^-decimals`.
///
/// ```
/// use tickwire::decimal::parse_scaled;
/// assert_eq!(parse_scaled(b"61837.63000000", 8), Ok(6_183_763_000_000));
/// assert_eq!(parse_scaled(b"-0.5", 2), Ok(-50));
/// assert!(parse_scaled(b"0.001", 2).is_err());
/// ```
pub fn parse_scaled(s: &[u8], decimals: u8) -> Result<i64, DecimalError> {
    debug_assert!(decimals <= MAX_DECIMALS);
    let negative = s.first() == Some(&b'-');
    let body = if negative || s.first() == Some(&b'+') {
        &s[1..]
    } else {
        s
    };
    let (int, frac) = split(body)?;
    let frac = trim_trailing_zeros(frac);
    if frac.len() > usize::from(decimals) {
        return Err(DecimalError::Precision(decimals));
    }
    // Accumulate as a negative number so that i64::MIN is reachable and the
    // overflow checks are the same for both signs.
    let mut acc: i64 = 0;
    let digits = int.iter().chain(frac.iter()).chain(std::iter::repeat_n(
        &b'0',
        usize::from(decimals) - frac.len(),
    ));
    for &d in digits {
        acc = acc
            .checked_mul(10)
            .and_then(|a| a.checked_sub(i64::from(d - b'0')))
            .ok_or(DecimalError::Overflow)?;
    }
    if negative {
        Ok(acc)
    } else {
        acc.checked_neg().ok_or(DecimalError::Overflow)
    }
}

/// Splits an unsigned decimal into integer and fraction digits, checking
/// that both are plain ASCII digits and that there is at least one digit.
fn split(s: &[u8]) -> Result<(&[u8], &[u8]), DecimalError> {
    let (int, frac) = match s.iter().position(|&b| b == b'.') {
        Some(dot) => (&s[..dot], &s[dot + 1..]),
        None => (s, &s[s.len()..]),
    };
    let all_digits = |p: &[u8]| p.iter().all(u8::is_ascii_digit);
    if (int.is_empty() && frac.is_empty()) || !all_digits(int) || !all_digits(frac) {
        return Err(DecimalError::Syntax);
    }
    Ok((int, frac))
}

fn trim_trailing_zeros(frac: &[u8]) -> &[u8] {
    let end = frac.iter().rposition(|&b| b != b'0').map_or(0, |i| i + 1);
    &frac[..end]
}

/// A fixed-point value with its scale, displayed with exactly `decimals`
/// fraction digits (`Fixed { mantissa: 6183763000000, decimals: 8 }` shows as
/// `61837.63000000`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fixed {
    pub mantissa: i64,
    pub decimals: u8,
}

impl fmt::Display for Fixed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut buf = Vec::with_capacity(24);
        write_fixed(&mut buf, self.mantissa, self.decimals);
        // write_fixed only emits ASCII digits, '-' and '.'.
        f.write_str(std::str::from_utf8(&buf).map_err(|_| fmt::Error)?)
    }
}

/// [`Fixed`] with a 128-bit mantissa: a sum of sizes (a candle's volume).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WideFixed {
    pub mantissa: i128,
    pub decimals: u8,
}

impl fmt::Display for WideFixed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut buf = Vec::with_capacity(48);
        write_fixed_wide(&mut buf, self.mantissa, self.decimals);
        f.write_str(std::str::from_utf8(&buf).map_err(|_| fmt::Error)?)
    }
}

/// Appends `mantissa × 10^-decimals` to `out` as a decimal string with
/// exactly `decimals` fraction digits.
pub fn write_fixed(out: &mut Vec<u8>, mantissa: i64, decimals: u8) {
    let mut digits = [0u8; 20];
    let mut n = mantissa.unsigned_abs();
    let mut len = 0;
    loop {
        digits[len] = b'0' + (n % 10) as u8;
        n /= 10;
        len += 1;
        if n == 0 {
            break;
        }
    }
    put_digits(out, mantissa < 0, &digits[..len], decimals);
}

/// [`write_fixed`] of a 128-bit mantissa (a candle's volume, a sum of
/// sizes). Apart from the hot path's: 128-bit division is a call.
pub fn write_fixed_wide(out: &mut Vec<u8>, mantissa: i128, decimals: u8) {
    let mut digits = [0u8; 39];
    let mut n = mantissa.unsigned_abs();
    let mut len = 0;
    loop {
        digits[len] = b'0' + (n % 10) as u8;
        n /= 10;
        len += 1;
        if n == 0 {
            break;
        }
    }
    put_digits(out, mantissa < 0, &digits[..len], decimals);
}

/// Appends the digits `rev` (least significant first) with the point
/// `decimals` from the right, and at least one integer digit.
fn put_digits(out: &mut Vec<u8>, negative: bool, rev: &[u8], decimals: u8) {
    if negative {
        out.push(b'-');
    }
    let d = usize::from(decimals);
    if rev.len() > d {
        out.extend(rev[d..].iter().rev());
    } else {
        out.push(b'0');
    }
    if d > 0 {
        out.push(b'.');
        for _ in rev.len()..d {
            out.push(b'0');
        }
        out.extend(rev[..d.min(rev.len())].iter().rev());
    }
}

/// Whether two decimal strings denote the same number (`"1.50"` and
/// `"1.5000"` do). Used by tests to compare a feed's text with the wire's.
pub fn same_number(a: &str, b: &str) -> bool {
    fn canon(s: &str) -> Option<(bool, String, String)> {
        let (neg, body) = match s.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, s),
        };
        let (int, frac) = split(body.as_bytes()).ok()?;
        let int = std::str::from_utf8(int).ok()?.trim_start_matches('0');
        let frac = std::str::from_utf8(trim_trailing_zeros(frac)).ok()?;
        let zero = int.is_empty() && frac.is_empty();
        Some((neg && !zero, int.to_owned(), frac.to_owned()))
    }
    matches!((canon(a), canon(b)), (Some(x), Some(y)) if x == y)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_table() {
        // TC0: Binance spot price at 8 decimals.
        assert_eq!(parse_scaled(b"61837.63000000", 8), Ok(6_183_763_000_000));
        // TC1: integer with no dot (COIN-M contract counts).
        assert_eq!(parse_scaled(b"35", 8), Ok(3_500_000_000));
        // TC2: leading dot and trailing dot.
        assert_eq!(parse_scaled(b".5", 1), Ok(5));
        assert_eq!(parse_scaled(b"5.", 0), Ok(5));
        // TC3: trailing zeros beyond the scale are not precision.
        assert_eq!(parse_scaled(b"1.2000000000", 2), Ok(120));
        // TC4: real precision beyond the scale is refused, not rounded.
        assert_eq!(parse_scaled(b"1.005", 2), Err(DecimalError::Precision(2)));
        // TC5: garbage.
        for bad in [&b""[..], b".", b"1.2.3", b"1e5", b"abc", b"-", b" 1"] {
            assert_eq!(parse_scaled(bad, 8), Err(DecimalError::Syntax), "{bad:?}");
        }
        // TC6: limits.
        assert_eq!(parse_scaled(b"9223372036854775807", 0), Ok(i64::MAX));
        assert_eq!(parse_scaled(b"-9223372036854775808", 0), Ok(i64::MIN));
        assert_eq!(
            parse_scaled(b"9223372036854775808", 0),
            Err(DecimalError::Overflow)
        );
        assert_eq!(
            parse_scaled(b"100000000000", 8),
            Err(DecimalError::Overflow)
        );
    }

    #[test]
    fn format_round_trips() {
        for (s, d) in [
            ("61837.63000000", 8),
            ("0.00000001", 8),
            ("-0.50", 2),
            ("0", 0),
            ("123", 0),
            ("0.000", 3),
        ] {
            let m = parse_scaled(s.as_bytes(), d).unwrap();
            assert_eq!(
                Fixed {
                    mantissa: m,
                    decimals: d
                }
                .to_string(),
                s
            );
        }
        assert_eq!(
            Fixed {
                mantissa: i64::MIN,
                decimals: 18
            }
            .to_string(),
            "-9.223372036854775808"
        );
        // The wide writer agrees on every i64, and goes past it.
        for (m, d) in [
            (0i64, 0u8),
            (5, 3),
            (-5, 3),
            (12345, 2),
            (i64::MIN, 18),
            (i64::MAX, 0),
        ] {
            let (mut a, mut b) = (Vec::new(), Vec::new());
            write_fixed(&mut a, m, d);
            write_fixed_wide(&mut b, i128::from(m), d);
            assert_eq!(a, b, "{m} {d}");
        }
        let mut wide = Vec::new();
        write_fixed_wide(&mut wide, 2 * i128::from(i64::MAX) + 2, 8);
        assert_eq!(wide, b"184467440737.09551616");
    }

    #[test]
    fn significant_decimals_ignores_trailing_zeros() {
        assert_eq!(significant_decimals(b"1.2500"), Ok(2));
        assert_eq!(significant_decimals(b"100"), Ok(0));
        assert_eq!(significant_decimals(b"0.0000000001"), Ok(10));
        assert!(significant_decimals(b"x").is_err());
    }

    #[test]
    fn same_number_compares_values() {
        assert!(same_number("1.50", "1.5000"));
        assert!(same_number("007", "7.0"));
        assert!(same_number("-0.0", "0"));
        assert!(!same_number("1.5", "1.05"));
        assert!(!same_number("1.5", "x"));
    }
}
