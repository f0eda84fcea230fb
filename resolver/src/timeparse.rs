//! Timestamp text parsing (resolve.md §4.2).
//!
//! With a `T` or a space between date and time: RFC 3339 when the time part carries `Z`,
//! `+` or `-`; otherwise `YYYY-MM-DD[T| ]HH:MM:SS[.fraction]` as UTC. Without a separator:
//! `YYYY-MM-DD` at midnight UTC. Only the upper-case `T` and `Z` count (resolve.md §4.2, and
//! the reference resolver): `2022-11-17t15:16:17z` is not a timestamp.

/// Smallest and largest seconds of a protobuf Timestamp (0001-01-01 .. 9999-12-31).
pub const MIN_SECONDS: i64 = -62_135_596_800;
pub const MAX_SECONDS: i64 = 253_402_300_799;

fn digits(s: &[u8]) -> Option<i64> {
    if s.is_empty() || !s.iter().all(|c| c.is_ascii_digit()) {
        return None;
    }
    let mut v = 0i64;
    for c in s {
        v = v.checked_mul(10)?.checked_add((c - b'0') as i64)?;
    }
    Some(v)
}

fn is_leap(y: i64) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 => {
            if is_leap(y) {
                29
            } else {
                28
            }
        }
        _ => 0,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date.
pub fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = (if y >= 0 { y } else { y - 399 }) / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// `YYYY-MM-DD` -> days since the epoch.
fn parse_date(s: &[u8]) -> Option<i64> {
    if s.len() != 10 || s[4] != b'-' || s[7] != b'-' {
        return None;
    }
    let y = digits(&s[0..4])?;
    let m = digits(&s[5..7])?;
    let d = digits(&s[8..10])?;
    if !(1..=12).contains(&m) || d < 1 || d > days_in_month(y, m) {
        return None;
    }
    Some(days_from_civil(y, m, d))
}

/// `HH:MM:SS[.fraction]` -> (seconds of day, nanos).
fn parse_time(s: &[u8]) -> Option<(i64, i32)> {
    if s.len() < 8 || s[2] != b':' || s[5] != b':' {
        return None;
    }
    let h = digits(&s[0..2])?;
    let mi = digits(&s[3..5])?;
    let se = digits(&s[6..8])?;
    if h > 23 || mi > 59 || se > 59 {
        return None;
    }
    let mut nanos = 0i32;
    if s.len() > 8 {
        if s[8] != b'.' || s.len() == 9 {
            return None;
        }
        let frac = &s[9..];
        if !frac.iter().all(|c| c.is_ascii_digit()) {
            return None;
        }
        let mut scale = 100_000_000i32;
        for c in frac.iter().take(9) {
            nanos += (c - b'0') as i32 * scale;
            scale /= 10;
        }
    }
    Some((h * 3600 + mi * 60 + se, nanos))
}

fn in_range(secs: i64, nanos: i32) -> Option<(i64, i32)> {
    if (MIN_SECONDS..=MAX_SECONDS).contains(&secs) {
        Some((secs, nanos))
    } else {
        None
    }
}

/// Parses timestamp text into (epoch seconds, nanos).
pub fn parse_timestamp(text: &str) -> Option<(i64, i32)> {
    let b = text.as_bytes();
    let sep = b.iter().position(|c| *c == b'T' || *c == b' ');
    let sep = match sep {
        None => return in_range(parse_date(b)? * 86_400, 0),
        Some(p) => p,
    };
    let days = parse_date(&b[..sep])?;
    let time = &b[sep + 1..];
    let zone_at = time.iter().position(|c| matches!(*c, b'Z' | b'+' | b'-'));
    let (clock, offset_secs) = match zone_at {
        None => (time, 0i64),
        Some(z) => {
            let zone = &time[z..];
            let off = match zone {
                [b'Z'] => 0,
                [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] => {
                    let h = digits(&[*h1, *h2])?;
                    let m = digits(&[*m1, *m2])?;
                    if h > 23 || m > 59 {
                        return None;
                    }
                    let o = h * 3600 + m * 60;
                    if *sign == b'-' {
                        -o
                    } else {
                        o
                    }
                }
                _ => return None,
            };
            (&time[..z], off)
        }
    };
    let (tod, nanos) = parse_time(clock)?;
    in_range(days * 86_400 + tod - offset_secs, nanos)
}

/// A number as a timestamp: truncated; |n| >= 10^12 is epoch milliseconds, else seconds.
pub fn timestamp_from_number(n: f64) -> Option<(i64, i32)> {
    if !n.is_finite() {
        return None;
    }
    let t = n.trunc();
    if t.abs() >= 9.0e18 {
        return None;
    }
    let t = t as i64;
    if t.unsigned_abs() >= 1_000_000_000_000 {
        in_range(t.div_euclid(1000), (t.rem_euclid(1000) * 1_000_000) as i32)
    } else {
        in_range(t, 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339() {
        assert_eq!(parse_timestamp("1970-01-01T00:00:00Z"), Some((0, 0)));
        assert_eq!(parse_timestamp("2022-11-17T15:16:17.118Z"), Some((1_668_698_177, 118_000_000)));
        assert_eq!(parse_timestamp("2022-11-17T16:16:17+01:00"), Some((1_668_698_177, 0)));
        assert_eq!(parse_timestamp("2022-11-17T14:16:17.5-01:00"), Some((1_668_698_177, 500_000_000)));
        assert_eq!(parse_timestamp("2022-11-17 15:16:17Z"), Some((1_668_698_177, 0)));
        assert_eq!(parse_timestamp("2022-11-17T15:16:17.123456789123Z"), Some((1_668_698_177, 123_456_789)));
    }

    #[test]
    fn naive_forms_are_utc() {
        assert_eq!(parse_timestamp("2022-11-17T15:16:17"), Some((1_668_698_177, 0)));
        assert_eq!(parse_timestamp("2022-11-17 15:16:17.25"), Some((1_668_698_177, 250_000_000)));
        assert_eq!(parse_timestamp("2022-11-17"), Some((1_668_643_200, 0)));
        assert_eq!(parse_timestamp("2000-02-29"), Some((951_782_400, 0)));
    }

    #[test]
    fn rejects_bad_text() {
        for bad in [
            "",
            "2022",
            "2022-13-01",
            "2022-02-30",
            "2021-02-29",
            "2022-11-17T25:00:00Z",
            "2022-11-17T15:16Z",
            "2022-11-17T15:16:17+0100",
            "2022-11-17T15:16:17.Z",
            "hello",
            "2022-11-17T",
            "2022-11-17Tx",
            "22-11-17",
            "2022-11-17T15:16:17ZZ",
        ] {
            assert_eq!(parse_timestamp(bad), None, "{bad}");
        }
    }

    #[test]
    fn lower_case_t_and_z_are_not_timestamps() {
        // The reference resolver accepts only `T` and `Z`; such text compares as a string.
        for bad in [
            "2022-11-17t15:16:17.118z",
            "2022-11-17t15:16:17.118Z",
            "2022-11-17T15:16:17.118z",
            "2022-11-17 15:16:17z",
            "2022-11-17t15:16:17",
            "2022-11-17t15:16:17+01:00",
        ] {
            assert_eq!(parse_timestamp(bad), None, "{bad}");
        }
    }

    #[test]
    fn numbers() {
        assert_eq!(timestamp_from_number(1_668_698_178.9), Some((1_668_698_178, 0)));
        assert_eq!(timestamp_from_number(1_668_698_177_200.0), Some((1_668_698_177, 200_000_000)));
        assert_eq!(timestamp_from_number(-1_500.0), Some((-1_500, 0)));
        assert_eq!(timestamp_from_number(-1_000_000_000_500.0), Some((-1_000_000_001, 500_000_000)));
        assert_eq!(timestamp_from_number(f64::NAN), None);
        assert_eq!(timestamp_from_number(1e300), None);
        assert_eq!(timestamp_from_number(999_999_999_999.0), None); // seconds, beyond year 9999
    }
}
