//! Version parsing for version-typed targeting (resolve.md §4.3).

/// Drops everything from the first `-`; 2, 3 or 4 dot-separated all-digit parts of at
/// most 10 digits; `a.b` -> (a,b,0,0); `a.b.c` -> (a,b,c,0) unless `c` has more than 3
/// digits -> (a,b,0,c); `a.b.c.d` -> (a,b,c,d); anything else -> (0,0,0,0).
pub fn parse_version(text: &str) -> (u64, u64, u64, u64) {
    try_parse(text).unwrap_or((0, 0, 0, 0))
}

fn part(p: &str) -> Option<u64> {
    if p.is_empty() || p.len() > 10 || !p.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    p.parse().ok()
}

pub fn try_parse(text: &str) -> Option<(u64, u64, u64, u64)> {
    let core = match text.find('-') {
        Some(i) => &text[..i],
        None => text,
    };
    let parts: Vec<&str> = core.split('.').collect();
    match parts.as_slice() {
        [a, b] => Some((part(a)?, part(b)?, 0, 0)),
        [a, b, c] => {
            let (a, b, cv) = (part(a)?, part(b)?, part(c)?);
            if c.len() > 3 {
                Some((a, b, 0, cv))
            } else {
                Some((a, b, cv, 0))
            }
        }
        [a, b, c, d] => Some((part(a)?, part(b)?, part(c)?, part(d)?)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses() {
        assert_eq!(parse_version("1.2"), (1, 2, 0, 0));
        assert_eq!(parse_version("1.2.3"), (1, 2, 3, 0));
        assert_eq!(parse_version("1.2.3-beta.1"), (1, 2, 3, 0));
        assert_eq!(parse_version("1.2.1234"), (1, 2, 0, 1234));
        assert_eq!(parse_version("1.2.3.4"), (1, 2, 3, 4));
        assert_eq!(parse_version("10.0.0"), (10, 0, 0, 0));
        assert_eq!(parse_version("9999999999.1"), (9_999_999_999, 1, 0, 0));
    }

    #[test]
    fn invalid_is_zero() {
        for bad in ["", "1", "1.2.3.4.5", "a.b", "1..2", "1.2.x", "12345678901.0", "-1.2", "1.2.3+build", " 1.2"] {
            assert_eq!(parse_version(bad), (0, 0, 0, 0), "{bad}");
        }
    }

    #[test]
    fn ordering() {
        assert!(parse_version("2.0.0") > parse_version("1.99.99"));
        assert!(parse_version("1.10.0") > parse_version("1.9.0"));
        assert!(parse_version("2.0.0-rc1") == parse_version("2.0.0"));
    }
}
