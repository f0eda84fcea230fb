//! A small JSON reader for the evaluation context (accepts NaN, Infinity, -Infinity as
//! Python's json.dumps emits them) and a JSON writer for flag values.
pub use crate::error::JsonError;
use crate::value::{Context, Value};
use std::collections::BTreeMap;
use std::fmt::Write;

const MAX_DEPTH: usize = 128;

struct Parser<'a> {
    b: &'a [u8],
    i: usize,
}

impl<'a> Parser<'a> {
    fn err<T>(&self, problem: &'static str) -> Result<T, JsonError> {
        Err(JsonError { at: self.i, problem })
    }

    fn ws(&mut self) {
        while self.i < self.b.len() && matches!(self.b[self.i], b' ' | b'\t' | b'\n' | b'\r') {
            self.i += 1;
        }
    }

    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    fn eat_lit(&mut self, lit: &[u8]) -> bool {
        if self.b.len() >= self.i + lit.len() && &self.b[self.i..self.i + lit.len()] == lit {
            self.i += lit.len();
            true
        } else {
            false
        }
    }

    fn value(&mut self, depth: usize) -> Result<Value, JsonError> {
        if depth > MAX_DEPTH {
            return self.err("nesting too deep");
        }
        self.ws();
        match self.peek() {
            None => self.err("unexpected end"),
            Some(b'{') => self.object(depth).map(Value::Struct),
            Some(b'[') => {
                self.i += 1;
                let mut items = Vec::new();
                self.ws();
                if self.peek() == Some(b']') {
                    self.i += 1;
                    return Ok(Value::List(items));
                }
                loop {
                    items.push(self.value(depth + 1)?);
                    self.ws();
                    match self.peek() {
                        Some(b',') => self.i += 1,
                        Some(b']') => {
                            self.i += 1;
                            return Ok(Value::List(items));
                        }
                        _ => return self.err("expected ',' or ']'"),
                    }
                }
            }
            Some(b'"') => self.string().map(Value::String),
            Some(b't') if self.eat_lit(b"true") => Ok(Value::Bool(true)),
            Some(b'f') if self.eat_lit(b"false") => Ok(Value::Bool(false)),
            Some(b'n') if self.eat_lit(b"null") => Ok(Value::Null),
            Some(b'N') if self.eat_lit(b"NaN") => Ok(Value::Number(f64::NAN)),
            Some(b'I') if self.eat_lit(b"Infinity") => Ok(Value::Number(f64::INFINITY)),
            Some(b'-') if self.eat_lit(b"-Infinity") => Ok(Value::Number(f64::NEG_INFINITY)),
            Some(c) if c == b'-' || c.is_ascii_digit() => self.number(),
            Some(_) => self.err("unexpected character"),
        }
    }

    fn object(&mut self, depth: usize) -> Result<BTreeMap<String, Value>, JsonError> {
        // at '{'
        self.i += 1;
        let mut m = BTreeMap::new();
        self.ws();
        if self.peek() == Some(b'}') {
            self.i += 1;
            return Ok(m);
        }
        loop {
            self.ws();
            if self.peek() != Some(b'"') {
                return self.err("expected a string key");
            }
            let k = self.string()?;
            self.ws();
            if self.peek() != Some(b':') {
                return self.err("expected ':'");
            }
            self.i += 1;
            let v = self.value(depth + 1)?;
            m.insert(k, v); // duplicate keys: the last one wins
            self.ws();
            match self.peek() {
                Some(b',') => self.i += 1,
                Some(b'}') => {
                    self.i += 1;
                    return Ok(m);
                }
                _ => return self.err("expected ',' or '}'"),
            }
        }
    }

    fn number(&mut self) -> Result<Value, JsonError> {
        let start = self.i;
        if self.peek() == Some(b'-') {
            self.i += 1;
        }
        let int_start = self.i;
        while matches!(self.peek(), Some(c) if c.is_ascii_digit()) {
            self.i += 1;
        }
        if self.i == int_start {
            return self.err("expected digits");
        }
        if self.peek() == Some(b'.') {
            self.i += 1;
            let s = self.i;
            while matches!(self.peek(), Some(c) if c.is_ascii_digit()) {
                self.i += 1;
            }
            if self.i == s {
                return self.err("expected fraction digits");
            }
        }
        if matches!(self.peek(), Some(b'e') | Some(b'E')) {
            self.i += 1;
            if matches!(self.peek(), Some(b'+') | Some(b'-')) {
                self.i += 1;
            }
            let s = self.i;
            while matches!(self.peek(), Some(c) if c.is_ascii_digit()) {
                self.i += 1;
            }
            if self.i == s {
                return self.err("expected exponent digits");
            }
        }
        let text = match std::str::from_utf8(&self.b[start..self.i]) {
            Ok(text) => text,
            Err(_) => return self.err("bad number"),
        };
        match text.parse::<f64>() {
            Ok(n) => Ok(Value::Number(n)),
            Err(_) => self.err("bad number"),
        }
    }

    fn hex4(&mut self) -> Result<u32, JsonError> {
        if self.i + 4 > self.b.len() {
            return self.err("truncated \\u escape");
        }
        let mut v = 0u32;
        for k in 0..4 {
            let c = self.b[self.i + k];
            let d = match c {
                b'0'..=b'9' => c - b'0',
                b'a'..=b'f' => c - b'a' + 10,
                b'A'..=b'F' => c - b'A' + 10,
                _ => return self.err("bad \\u escape"),
            };
            v = v * 16 + d as u32;
        }
        self.i += 4;
        Ok(v)
    }

    fn string(&mut self) -> Result<String, JsonError> {
        // at '"'
        self.i += 1;
        // Fast path: most strings have no escapes; copy them in one go instead of byte by
        // byte into a growing buffer.
        let start = self.i;
        let mut j = start;
        while let Some(&c) = self.b.get(j) {
            if c == b'"' {
                self.i = j + 1;
                return match std::str::from_utf8(&self.b[start..j]) {
                    Ok(text) => Ok(text.to_owned()),
                    Err(_) => self.err("invalid UTF-8 in string"),
                };
            }
            if c == b'\\' || c < 0x20 {
                break;
            }
            j += 1;
        }
        let mut out: Vec<u8> = Vec::with_capacity(j - start + 8);
        out.extend_from_slice(&self.b[start..j]);
        self.i = j;
        loop {
            let c = match self.peek() {
                None => return self.err("unterminated string"),
                Some(c) => c,
            };
            match c {
                b'"' => {
                    self.i += 1;
                    break;
                }
                b'\\' => {
                    self.i += 1;
                    let e = match self.peek() {
                        None => return self.err("unterminated escape"),
                        Some(e) => e,
                    };
                    self.i += 1;
                    match e {
                        b'"' => out.push(b'"'),
                        b'\\' => out.push(b'\\'),
                        b'/' => out.push(b'/'),
                        b'b' => out.push(8),
                        b'f' => out.push(12),
                        b'n' => out.push(b'\n'),
                        b'r' => out.push(b'\r'),
                        b't' => out.push(b'\t'),
                        b'u' => {
                            let hi = self.hex4()?;
                            let cp = if (0xD800..0xDC00).contains(&hi) {
                                // a surrogate pair, or a lone high surrogate
                                if self.b.get(self.i) == Some(&b'\\') && self.b.get(self.i + 1) == Some(&b'u') {
                                    let save = self.i;
                                    self.i += 2;
                                    let lo = self.hex4()?;
                                    if (0xDC00..0xE000).contains(&lo) {
                                        0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00)
                                    } else {
                                        self.i = save;
                                        0xFFFD
                                    }
                                } else {
                                    0xFFFD
                                }
                            } else if (0xDC00..0xE000).contains(&hi) {
                                0xFFFD
                            } else {
                                hi
                            };
                            let ch = char::from_u32(cp).unwrap_or('\u{FFFD}');
                            let mut buf = [0u8; 4];
                            out.extend_from_slice(ch.encode_utf8(&mut buf).as_bytes());
                        }
                        _ => return self.err("bad escape"),
                    }
                }
                0..=0x1f => return self.err("control character in string"),
                _ => {
                    out.push(c);
                    self.i += 1;
                }
            }
        }
        match String::from_utf8(out) {
            Ok(text) => Ok(text),
            Err(_) => self.err("invalid UTF-8 in string"),
        }
    }
}

/// Parses the evaluation context: a JSON object (empty input = `{}`).
pub fn parse_context(bytes: &[u8]) -> Result<Context, JsonError> {
    let mut p = Parser { b: bytes, i: 0 };
    p.ws();
    if p.peek().is_none() {
        return Ok(Context::default());
    }
    if p.peek() != Some(b'{') {
        return p.err("the context must be a JSON object");
    }
    let fields = p.object(0)?;
    p.ws();
    if p.i != bytes.len() {
        return p.err("trailing characters");
    }
    Ok(Context { fields })
}

/// Parses any JSON value (tests).
#[cfg(test)]
pub fn parse_value(bytes: &[u8]) -> Result<Value, JsonError> {
    let mut p = Parser { b: bytes, i: 0 };
    let v = p.value(0)?;
    p.ws();
    if p.i != bytes.len() {
        return p.err("trailing characters");
    }
    Ok(v)
}

/// Shortest round-trip decimal text, never an exponent; whole numbers without ".0".
pub fn format_number(n: f64) -> String {
    if n.is_nan() {
        return "NaN".to_string();
    }
    if n.is_infinite() {
        return if n > 0.0 { "Infinity".to_string() } else { "-Infinity".to_string() };
    }
    if n == 0.0 {
        return "0".to_string(); // also -0.0
    }
    format!("{}", n)
}

/// Bytes that may need an escape: '"', '\\', the controls, and 0xE2 (the lead byte of
/// U+2028/U+2029). One table look-up per byte keeps the common run loop tight.
static MAY_ESCAPE: [bool; 256] = {
    let mut t = [false; 256];
    let mut i = 0;
    while i < 0x20 {
        t[i] = true;
        i += 1;
    }
    t[b'"' as usize] = true;
    t[b'\\' as usize] = true;
    t[0xe2] = true;
    t
};

pub fn write_string(out: &mut String, s: &str) {
    out.reserve(s.len() + 2);
    out.push('"');
    // Copy runs of characters that need no escape in one go (the common case is a
    // plain ASCII name: one push_str).
    let bytes = s.as_bytes();
    let mut run = 0;
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if !MAY_ESCAPE[b as usize]
            || (b == 0xe2
                && !(bytes[i..].starts_with(&[0xe2, 0x80]) && matches!(bytes.get(i + 2), Some(0xa8) | Some(0xa9))))
        {
            i += 1;
            continue;
        }
        out.push_str(&s[run..i]);
        let ch = s[i..].chars().next().unwrap_or('\u{0}');
        match ch {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
        }
        i += ch.len_utf8();
        run = i;
    }
    out.push_str(&s[run..]);
    out.push('"');
}

/// Writes a protobuf value as JSON (non-finite numbers as NaN/Infinity, which
/// Python's json.loads accepts).
pub fn write_proto_value(out: &mut String, v: &prost_types::Value) {
    use prost_types::value::Kind;
    match &v.kind {
        None | Some(Kind::NullValue(_)) => out.push_str("null"),
        Some(Kind::BoolValue(b)) => out.push_str(if *b { "true" } else { "false" }),
        Some(Kind::NumberValue(n)) => out.push_str(&format_number(*n)),
        Some(Kind::StringValue(s)) => write_string(out, s),
        Some(Kind::ListValue(l)) => {
            out.push('[');
            for (i, x) in l.values.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_proto_value(out, x);
            }
            out.push(']');
        }
        Some(Kind::StructValue(s)) => write_proto_struct(out, s),
    }
}

pub fn write_proto_struct(out: &mut String, s: &prost_types::Struct) {
    out.push('{');
    for (i, (k, v)) in s.fields.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        write_string(out, k);
        out.push(':');
        write_proto_value(out, v);
    }
    out.push('}');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(s: &str) -> Context {
        parse_context(s.as_bytes()).unwrap()
    }

    #[test]
    fn parses_basic_object() {
        let c = ctx(r#" {"a": 1, "b": "x", "c": [true, false, null], "d": {"e": -2.5e3}} "#);
        assert_eq!(c.fields["a"], Value::Number(1.0));
        assert_eq!(c.fields["b"], Value::String("x".into()));
        assert_eq!(c.fields["c"], Value::List(vec![Value::Bool(true), Value::Bool(false), Value::Null]));
        assert_eq!(c.lookup("d.e"), Some(&Value::Number(-2500.0)));
    }

    #[test]
    fn parses_nan_and_infinities() {
        let c = ctx(r#"{"a": NaN, "b": Infinity, "c": -Infinity, "d": [NaN]}"#);
        assert!(matches!(c.fields["a"], Value::Number(n) if n.is_nan()));
        assert_eq!(c.fields["b"], Value::Number(f64::INFINITY));
        assert_eq!(c.fields["c"], Value::Number(f64::NEG_INFINITY));
    }

    #[test]
    fn parses_escapes() {
        let c = ctx(r#"{"s": "a\"b\\c\/\n\t\u00e9\ud83d\ude00\ud800x"}"#);
        assert_eq!(c.fields["s"], Value::String("a\"b\\c/\n\té😀\u{FFFD}x".into()));
        let c = ctx("{\"u\": \"café\"}");
        assert_eq!(c.fields["u"], Value::String("café".into()));
    }

    #[test]
    fn empty_input_is_empty_context() {
        assert_eq!(ctx(""), Context::default());
        assert_eq!(ctx("  {}  "), Context::default());
    }

    #[test]
    fn rejects_garbage() {
        for bad in [
            "[]",
            "{",
            "{\"a\"}",
            "{\"a\":}",
            "{\"a\":1,}",
            "{\"a\":01x}",
            "{} x",
            "{\"a\":\"\x01\"}",
            "{\"a\": tru}",
            "{\"a\": -}",
            "{\"a\": 1.}",
            "{\"a\": 1e}",
            "{\"a\":\"\\u12\"}",
            "\"x\"",
            "nul",
        ] {
            assert!(parse_context(bad.as_bytes()).is_err(), "{bad}");
        }
        assert!(parse_context(&[b'{', b'"', 0xff, b'"', b':', b'1', b'}']).is_err());
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_crash() {
        let s = format!("{{\"a\":{}1{}}}", "[".repeat(10_000), "]".repeat(10_000));
        assert!(parse_context(s.as_bytes()).is_err());
    }

    #[test]
    fn duplicate_keys_last_wins() {
        assert_eq!(ctx(r#"{"a":1,"a":2}"#).fields["a"], Value::Number(2.0));
    }

    #[test]
    fn number_formatting() {
        assert_eq!(format_number(3.0), "3");
        assert_eq!(format_number(1.5), "1.5");
        assert_eq!(format_number(-0.0), "0");
        assert_eq!(format_number(0.1), "0.1");
        assert_eq!(format_number(1e21), "1000000000000000000000");
        assert_eq!(format_number(1e-7), "0.0000001");
        assert_eq!(format_number(f64::NAN), "NaN");
        assert_eq!(format_number(123456789012.0), "123456789012");
    }

    #[test]
    fn writes_values_round_trip() {
        use prost_types::value::Kind;
        let mut fields = BTreeMap::new();
        fields.insert("s".to_string(), prost_types::Value { kind: Some(Kind::StringValue("q\"\\\n\u{1}é".into())) });
        fields.insert("n".to_string(), prost_types::Value { kind: Some(Kind::NumberValue(2.0)) });
        fields.insert("z".to_string(), prost_types::Value { kind: None });
        fields.insert(
            "l".to_string(),
            prost_types::Value {
                kind: Some(Kind::ListValue(prost_types::ListValue {
                    values: vec![prost_types::Value { kind: Some(Kind::BoolValue(true)) }],
                })),
            },
        );
        let mut out = String::new();
        write_proto_struct(&mut out, &prost_types::Struct { fields });
        assert_eq!(out, r#"{"l":[true],"n":2,"s":"q\"\\\n\u0001é","z":null}"#);
        let back = parse_value(out.as_bytes()).unwrap();
        match back {
            Value::Struct(m) => assert_eq!(m["s"], Value::String("q\"\\\n\u{1}é".into())),
            _ => panic!(),
        }
    }
}
