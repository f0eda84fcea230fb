//! The resolver's error type: what can fail a call, and the numeric kind that crosses the
//! ABI after the ERROR status byte (`../README.md`, "The ABI").
//!
//! Invariants: every `Error` maps to exactly one `ErrorKind`; a kind's code never changes
//! meaning within an ABI version (`confidence/_abi.py` holds the same table); no message
//! contains a client secret (an unknown secret is carried masked).
use std::fmt;

/// The kind of an error, as its ABI code (the byte after the ERROR status).
///
/// The host decides what to do from the kind alone; the message is for people.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum ErrorKind {
    /// The request is malformed: a length outside the input buffer, a message that does
    /// not decode, an unknown enum value. A host bug, never the user's input.
    InvalidRequest = 1,
    /// `cr_resolve` before any successful `cr_set_state`.
    NoState = 2,
    /// `cr_set_state` rejected the state (undecodable, a bad or unsupported bitset); the
    /// previous state stays.
    InvalidState = 3,
    /// The client secret is not in the state.
    UnknownClientSecret = 4,
    /// The evaluation context is not a JSON object the resolver reads (syntax, nesting
    /// deeper than it allows, invalid UTF-8).
    InvalidContext = 5,
    /// The request selects more flags than one resolve may answer.
    TooManyFlags = 6,
    /// A selected flag's definition cannot be resolved (a rule assigns a variant the flag
    /// lacks, a bucket count of zero); the state is inconsistent.
    InvalidFlag = 7,
    /// The resolve would write the same materialization record twice.
    DuplicateMaterializationWrite = 8,
}

impl ErrorKind {
    /// Every kind, in code order (tests and the host's table).
    pub const ALL: [ErrorKind; 8] = [
        ErrorKind::InvalidRequest,
        ErrorKind::NoState,
        ErrorKind::InvalidState,
        ErrorKind::UnknownClientSecret,
        ErrorKind::InvalidContext,
        ErrorKind::TooManyFlags,
        ErrorKind::InvalidFlag,
        ErrorKind::DuplicateMaterializationWrite,
    ];

    /// The code sent after the ERROR status byte.
    pub fn code(self) -> u8 {
        self as u8
    }
}

/// Why a gzip bitset did not inflate (resolve.md §1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GzipError {
    NotGzip,
    UnsupportedMethod,
    ReservedFlags,
    TruncatedHeader,
    Truncated,
    /// The deflate body is corrupt or inflates beyond the limit (miniz_oxide's status).
    BadData(miniz_oxide::inflate::TINFLStatus),
    ChecksumMismatch,
}

impl fmt::Display for GzipError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GzipError::NotGzip => f.write_str("not a gzip stream"),
            GzipError::UnsupportedMethod => f.write_str("unsupported gzip compression method"),
            GzipError::ReservedFlags => f.write_str("reserved gzip flags set"),
            GzipError::TruncatedHeader => f.write_str("truncated gzip header"),
            GzipError::Truncated => f.write_str("truncated gzip stream"),
            GzipError::BadData(status) => write!(f, "bad gzip data: {:?}", status),
            GzipError::ChecksumMismatch => f.write_str("gzip checksum mismatch"),
        }
    }
}

impl std::error::Error for GzipError {}

/// Why a `ResolverState` was rejected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StateError {
    Decode(prost::DecodeError),
    Bitset { segment: String, error: GzipError },
    UnsupportedBitset { segment: String },
}

impl fmt::Display for StateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StateError::Decode(e) => write!(f, "invalid resolver state: {}", e),
            StateError::Bitset { segment, error } => {
                write!(f, "invalid resolver state: bitset of {}: {}", segment, error)
            }
            StateError::UnsupportedBitset { segment } => {
                write!(f, "invalid resolver state: unsupported bitset for {}", segment)
            }
        }
    }
}

/// Why the evaluation context did not parse: the byte offset and what was wrong there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JsonError {
    pub at: usize,
    pub problem: &'static str,
}

impl fmt::Display for JsonError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid context JSON at byte {}: {}", self.at, self.problem)
    }
}

impl std::error::Error for JsonError {}

/// An error that fails a whole call. The instance stays healthy (only a trap poisons it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// `len` is outside the input buffer (`capacity` bytes).
    InputLength {
        len: i32,
        capacity: usize,
    },
    /// The input is not a valid `message`.
    Decode {
        message: &'static str,
        error: prost::DecodeError,
    },
    UnknownMaterializationMode(i32),
    NoState,
    InvalidState(StateError),
    /// `masked` is the secret's mask (`resolve::mask_secret`), never the secret.
    UnknownClientSecret {
        masked: String,
    },
    InvalidContext(JsonError),
    TooManyFlags {
        count: usize,
        max: usize,
    },
    UnknownVariant {
        flag: String,
        rule: String,
        variant: String,
    },
    InvalidBucketCount {
        rule: String,
        bucket_count: i32,
    },
    DuplicateMaterializationWrite {
        rule: String,
        materialization: String,
    },
}

impl Error {
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::InputLength { .. } | Error::Decode { .. } | Error::UnknownMaterializationMode(_) => {
                ErrorKind::InvalidRequest
            }
            Error::NoState => ErrorKind::NoState,
            Error::InvalidState(_) => ErrorKind::InvalidState,
            Error::UnknownClientSecret { .. } => ErrorKind::UnknownClientSecret,
            Error::InvalidContext(_) => ErrorKind::InvalidContext,
            Error::TooManyFlags { .. } => ErrorKind::TooManyFlags,
            Error::UnknownVariant { .. } | Error::InvalidBucketCount { .. } => ErrorKind::InvalidFlag,
            Error::DuplicateMaterializationWrite { .. } => ErrorKind::DuplicateMaterializationWrite,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::InputLength { len, capacity } => {
                write!(f, "input length {} out of range (buffer holds {})", len, capacity)
            }
            Error::Decode { message, error } => write!(f, "invalid {} message: {}", message, error),
            Error::UnknownMaterializationMode(mode) => write!(f, "unknown materialization mode {}", mode),
            Error::NoState => f.write_str("no resolver state loaded"),
            Error::InvalidState(e) => e.fmt(f),
            Error::UnknownClientSecret { masked } => write!(f, "client secret not found: {}", masked),
            Error::InvalidContext(e) => e.fmt(f),
            Error::TooManyFlags { count, max } => {
                write!(f, "too many flags in one request: {} (at most {})", count, max)
            }
            Error::UnknownVariant { flag, rule, variant } => {
                write!(f, "flag {} rule {} assigns unknown variant {}", flag, rule, variant)
            }
            Error::InvalidBucketCount { rule, bucket_count } => {
                write!(f, "rule {} has bucket count {}", rule, bucket_count)
            }
            Error::DuplicateMaterializationWrite { rule, materialization } => {
                write!(f, "duplicate materialization write for rule {} in {}", rule, materialization)
            }
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Decode { error, .. } | Error::InvalidState(StateError::Decode(error)) => Some(error),
            Error::InvalidState(StateError::Bitset { error, .. }) => Some(error),
            Error::InvalidContext(e) => Some(e),
            _ => None,
        }
    }
}

impl From<StateError> for Error {
    fn from(e: StateError) -> Self {
        Error::InvalidState(e)
    }
}

impl From<JsonError> for Error {
    fn from(e: JsonError) -> Self {
        Error::InvalidContext(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The codes are the ABI: changing one is an ABI version bump (and `_abi.py`'s table).
    #[test]
    fn codes_are_stable_and_distinct() {
        let codes: Vec<u8> = ErrorKind::ALL.iter().map(|k| k.code()).collect();
        assert_eq!(codes, vec![1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(ErrorKind::InvalidRequest.code(), 1);
        assert_eq!(ErrorKind::NoState.code(), 2);
        assert_eq!(ErrorKind::InvalidState.code(), 3);
        assert_eq!(ErrorKind::UnknownClientSecret.code(), 4);
        assert_eq!(ErrorKind::InvalidContext.code(), 5);
        assert_eq!(ErrorKind::TooManyFlags.code(), 6);
        assert_eq!(ErrorKind::InvalidFlag.code(), 7);
        assert_eq!(ErrorKind::DuplicateMaterializationWrite.code(), 8);
    }

    #[test]
    fn every_error_has_its_kind_and_message() {
        let decode = prost::DecodeError::new("boom");
        let cases: Vec<(Error, ErrorKind, &str)> = vec![
            (Error::InputLength { len: -1, capacity: 4 }, ErrorKind::InvalidRequest, "input length -1 out of range"),
            (
                Error::Decode { message: "SetState", error: decode.clone() },
                ErrorKind::InvalidRequest,
                "invalid SetState message",
            ),
            (Error::UnknownMaterializationMode(9), ErrorKind::InvalidRequest, "unknown materialization mode 9"),
            (Error::NoState, ErrorKind::NoState, "no resolver state loaded"),
            (StateError::Decode(decode).into(), ErrorKind::InvalidState, "invalid resolver state: "),
            (
                StateError::Bitset { segment: "segments/s".into(), error: GzipError::ChecksumMismatch }.into(),
                ErrorKind::InvalidState,
                "invalid resolver state: bitset of segments/s: gzip checksum mismatch",
            ),
            (
                StateError::UnsupportedBitset { segment: "segments/s".into() }.into(),
                ErrorKind::InvalidState,
                "unsupported bitset for segments/s",
            ),
            (
                Error::UnknownClientSecret { masked: "****".into() },
                ErrorKind::UnknownClientSecret,
                "client secret not found: ****",
            ),
            (
                JsonError { at: 3, problem: "nesting too deep" }.into(),
                ErrorKind::InvalidContext,
                "invalid context JSON at byte 3: nesting too deep",
            ),
            (
                Error::TooManyFlags { count: 1001, max: 1000 },
                ErrorKind::TooManyFlags,
                "too many flags in one request: 1001 (at most 1000)",
            ),
            (
                Error::UnknownVariant { flag: "flags/f".into(), rule: "r".into(), variant: "v".into() },
                ErrorKind::InvalidFlag,
                "flag flags/f rule r assigns unknown variant v",
            ),
            (
                Error::InvalidBucketCount { rule: "r".into(), bucket_count: 0 },
                ErrorKind::InvalidFlag,
                "rule r has bucket count 0",
            ),
            (
                Error::DuplicateMaterializationWrite { rule: "r".into(), materialization: "m".into() },
                ErrorKind::DuplicateMaterializationWrite,
                "duplicate materialization write for rule r in m",
            ),
        ];
        let mut seen = std::collections::HashSet::new();
        for (error, kind, text) in cases {
            assert_eq!(error.kind(), kind, "{}", error);
            assert!(error.to_string().contains(text), "{} !~ {}", error, text);
            seen.insert(kind);
        }
        assert_eq!(seen.len(), ErrorKind::ALL.len(), "a kind no error maps to");
    }
}
