//! An exposure's wire form, written straight from a resolve's `FlagOutcome`: the
//! `FlagAssigned` event and its `AppliedFlag`s as protobuf bytes, with no message structs
//! and no string copies in between. This runs on every applied resolve (the provider's
//! hot path), where building and dropping the prost messages cost about a fifth of the
//! guest's instructions.
//!
//! Invariant: the bytes decode to exactly the `FlagAssigned` the prost messages would
//! encode (tests compare the two, message by message). An `AppliedFlag`'s fields 1-8,
//! everything but `apply_time`, are written first and apart: those bytes are the apply
//! dedup identity.
use crate::proto::api::{ResolveReason, Sdk};
use crate::proto::events::flag_assigned::default_assignment::DefaultAssignmentReason;
use crate::resolve::FlagOutcome;
use crate::state::ClientIdentity;
use prost::encoding::{encode_key, encode_varint, encoded_len_varint, key_len, message, WireType};

// FlagAssigned
const RESOLVE_ID: u32 = 10;
const CLIENT_INFO: u32 = 3;
const FLAGS: u32 = 15;
// ClientInfo
const CLIENT: u32 = 1;
const CREDENTIAL: u32 = 2;
const SDK: u32 = 3;
// AppliedFlag
const FLAG: u32 = 1;
const TARGETING_KEY: u32 = 2;
const SELECTOR: u32 = 3;
const ASSIGNMENT_INFO: u32 = 4;
const DEFAULT_ASSIGNMENT: u32 = 5;
const ASSIGNMENT_ID: u32 = 6;
const RULE: u32 = 7;
const FALLTHROUGH: u32 = 8;
const APPLY_TIME: u32 = 9;

/// A proto3 string field's encoded length (an empty string is not written).
fn str_len(tag: u32, s: &str) -> usize {
    if s.is_empty() {
        0
    } else {
        key_len(tag) + encoded_len_varint(s.len() as u64) + s.len()
    }
}

fn put_str(buf: &mut Vec<u8>, tag: u32, s: &str) {
    if !s.is_empty() {
        put_len(buf, tag, s.len());
        buf.extend_from_slice(s.as_bytes());
    }
}

/// The key and length of a length-delimited field.
fn put_len(buf: &mut Vec<u8>, tag: u32, len: usize) {
    encode_key(tag, WireType::LengthDelimited, buf);
    encode_varint(len as u64, buf);
}

fn put_varint(buf: &mut Vec<u8>, tag: u32, v: u64) {
    if v != 0 {
        encode_key(tag, WireType::Varint, buf);
        encode_varint(v, buf);
    }
}

fn varint_field_len(tag: u32, v: u64) -> usize {
    if v == 0 {
        0
    } else {
        key_len(tag) + encoded_len_varint(v)
    }
}

fn default_reason(reason: ResolveReason) -> DefaultAssignmentReason {
    match reason {
        ResolveReason::NoSegmentMatch => DefaultAssignmentReason::NoSegmentMatch,
        ResolveReason::FlagArchived => DefaultAssignmentReason::FlagArchived,
        _ => DefaultAssignmentReason::Unspecified,
    }
}

/// Appends `f`'s AppliedFlag fields 1-8 (its dedup identity) to `buf`.
pub fn write_identity(buf: &mut Vec<u8>, f: &FlagOutcome) {
    put_str(buf, FLAG, &f.flag.name);
    put_str(buf, TARGETING_KEY, f.unit.as_deref().unwrap_or(""));
    put_str(buf, SELECTOR, &f.selector);
    if f.reason == ResolveReason::Match {
        let (segment, variant) = (f.segment(), f.variant_name());
        put_len(buf, ASSIGNMENT_INFO, str_len(1, segment) + str_len(2, variant));
        put_str(buf, 1, segment);
        put_str(buf, 2, variant);
    } else {
        let reason = default_reason(f.reason) as i32 as u64;
        put_len(buf, DEFAULT_ASSIGNMENT, varint_field_len(1, reason));
        put_varint(buf, 1, reason);
    }
    put_str(buf, ASSIGNMENT_ID, &f.assignment_id);
    put_str(buf, RULE, f.rule_name());
    for ft in &f.fallthroughs {
        let len =
            str_len(1, &ft.rule) + str_len(2, &ft.assignment_id) + str_len(3, &ft.unit) + str_len(4, &ft.selector);
        put_len(buf, FALLTHROUGH, len);
        put_str(buf, 1, &ft.rule);
        put_str(buf, 2, &ft.assignment_id);
        put_str(buf, 3, &ft.unit);
        put_str(buf, 4, &ft.selector);
    }
}

/// AppliedFlag.apply_time (a `Timestamp`) for `now_ms`: (seconds, nanos) and the length
/// of its body.
fn apply_time(now_ms: i64) -> (u64, u64, usize) {
    // int64 is a varint of its two's complement (a negative time takes ten bytes)
    let (seconds, nanos) = (now_ms.div_euclid(1000) as u64, (now_ms.rem_euclid(1000) * 1_000_000) as u64);
    (seconds, nanos, varint_field_len(1, seconds) + varint_field_len(2, nanos))
}

/// One `FlagAssigned` event: `resolve_id`, the client, and one AppliedFlag per identity
/// (`identities[range]`, from `write_identity`), each with `now_ms` as its apply time.
pub fn write_event(
    resolve_id: &str,
    client: &ClientIdentity,
    sdk: Option<&Sdk>,
    identities: &[u8],
    ranges: &[(usize, usize)],
    now_ms: i64,
) -> Vec<u8> {
    let (seconds, nanos, time_body) = apply_time(now_ms);
    let time_len = key_len(APPLY_TIME) + encoded_len_varint(time_body as u64) + time_body;
    let client_len = str_len(CLIENT, &client.client)
        + str_len(CREDENTIAL, &client.credential)
        + sdk.map_or(0, |s| message::encoded_len(SDK, s));
    let flags_len: usize = ranges
        .iter()
        .map(|(a, b)| {
            let n = b - a + time_len;
            key_len(FLAGS) + encoded_len_varint(n as u64) + n
        })
        .sum();
    let total = str_len(RESOLVE_ID, resolve_id)
        + key_len(CLIENT_INFO)
        + encoded_len_varint(client_len as u64)
        + client_len
        + flags_len;
    let mut buf = Vec::with_capacity(total);
    put_str(&mut buf, RESOLVE_ID, resolve_id);
    put_len(&mut buf, CLIENT_INFO, client_len);
    put_str(&mut buf, CLIENT, &client.client);
    put_str(&mut buf, CREDENTIAL, &client.credential);
    if let Some(sdk) = sdk {
        message::encode(SDK, sdk, &mut buf);
    }
    for &(a, b) in ranges {
        put_len(&mut buf, FLAGS, b - a + time_len);
        buf.extend_from_slice(&identities[a..b]);
        put_len(&mut buf, APPLY_TIME, time_body);
        put_varint(&mut buf, 1, seconds);
        put_varint(&mut buf, 2, nanos);
    }
    debug_assert_eq!(buf.len(), total);
    buf
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::admin::flag::Rule;
    use crate::proto::api::sdk::Sdk as SdkKind;
    use crate::proto::events::flag_assigned::applied_flag::Assignment;
    use crate::proto::events::flag_assigned::{AppliedFlag, AssignmentInfo, DefaultAssignment};
    use crate::proto::events::{ClientInfo, FallthroughAssignment, FlagAssigned};
    use crate::resolve::Fallthrough;
    use crate::testutil::{flag, variant};
    use prost::Message;

    /// The oracle: the event as prost messages (what this module replaced).
    fn prost_event(
        resolve_id: &str,
        client: &ClientIdentity,
        sdk: Option<&Sdk>,
        flags: &[FlagOutcome],
        now_ms: i64,
    ) -> FlagAssigned {
        let applied = flags
            .iter()
            .map(|f| AppliedFlag {
                flag: f.flag.name.clone(),
                targeting_key: f.unit.clone().unwrap_or_default(),
                targeting_key_selector: f.selector.clone(),
                assignment: Some(if f.reason == ResolveReason::Match {
                    Assignment::AssignmentInfo(AssignmentInfo {
                        segment: f.segment().to_string(),
                        variant: f.variant_name().to_string(),
                    })
                } else {
                    Assignment::DefaultAssignment(DefaultAssignment { reason: default_reason(f.reason) as i32 })
                }),
                assignment_id: f.assignment_id.clone(),
                rule: f.rule_name().to_string(),
                fallthrough_assignments: f
                    .fallthroughs
                    .iter()
                    .map(|ft| FallthroughAssignment {
                        rule: ft.rule.clone(),
                        assignment_id: ft.assignment_id.clone(),
                        targeting_key: ft.unit.clone(),
                        targeting_key_selector: ft.selector.clone(),
                    })
                    .collect(),
                apply_time: Some(prost_types::Timestamp {
                    seconds: now_ms.div_euclid(1000),
                    nanos: (now_ms.rem_euclid(1000) * 1_000_000) as i32,
                }),
            })
            .collect();
        FlagAssigned {
            resolve_id: resolve_id.to_string(),
            client_info: Some(ClientInfo {
                client: client.client.clone(),
                client_credential: client.credential.clone(),
                sdk: sdk.cloned(),
            }),
            flags: applied,
        }
    }

    fn ours(
        resolve_id: &str,
        client: &ClientIdentity,
        sdk: Option<&Sdk>,
        flags: &[FlagOutcome],
        now_ms: i64,
    ) -> Vec<u8> {
        let mut ids = Vec::new();
        let mut ranges = Vec::new();
        for f in flags {
            let start = ids.len();
            write_identity(&mut ids, f);
            ranges.push((start, ids.len()));
        }
        write_event(resolve_id, client, sdk, &ids, &ranges, now_ms)
    }

    #[test]
    fn events_decode_to_what_the_prost_messages_encode() {
        let on = variant("flags/f/variants/on", r#"{"x":1}"#);
        let r = Rule { name: "flags/f/rules/r".into(), segment: "segments/s".into(), ..Default::default() };
        let r_no_segment = Rule { name: "flags/f/rules/r2".into(), ..Default::default() };
        let f = flag("flags/f", vec![on.clone()], vec![r.clone()]);
        let ft = Fallthrough {
            rule: "flags/f/rules/r0".into(),
            assignment_id: "ft-1".into(),
            unit: "u-é\"1".into(),
            selector: "user.id".into(),
        };
        let matched = FlagOutcome {
            flag: &f,
            reason: ResolveReason::Match,
            variant: Some(&on),
            rule: Some(&r),
            assignment_id: "flags/f/variants/on-0".into(),
            unit: Some("user-1".into()),
            selector: "targeting_key".into(),
            fallthroughs: vec![ft.clone(), ft.clone()],
            deferred: false,
        };
        let client_default = FlagOutcome {
            variant: None,
            rule: Some(&r_no_segment),
            fallthroughs: vec![],
            unit: None,
            ..matched.clone()
        };
        let no_match = FlagOutcome {
            reason: ResolveReason::NoSegmentMatch,
            variant: None,
            rule: None,
            assignment_id: String::new(),
            unit: None,
            selector: String::new(),
            fallthroughs: vec![ft],
            ..matched.clone()
        };
        let archived = FlagOutcome { reason: ResolveReason::FlagArchived, fallthroughs: vec![], ..no_match.clone() };
        let other = FlagOutcome { reason: ResolveReason::TargetingKeyError, ..archived.clone() };
        let client = ClientIdentity {
            account: "accounts/a".into(),
            client: "clients/c".into(),
            credential: "clients/c/credentials/k".into(),
            environments: vec![],
        };
        let sdk = Sdk { version: "1.2.3".into(), sdk: Some(SdkKind::CustomId("py".into())) };
        let all = [matched, client_default, no_match, archived, other];
        for now in [0, 1, 999, 1_700_000_000_123, -1, -1_500, i64::MAX / 2] {
            for sdk in [None, Some(&sdk)] {
                for id in ["", "rid-1"] {
                    for n in 0..=all.len() {
                        let flags = &all[..n];
                        let bytes = ours(id, &client, sdk, flags, now);
                        let expected = prost_event(id, &client, sdk, flags, now);
                        assert_eq!(FlagAssigned::decode(bytes.as_slice()).unwrap(), expected, "now={now} n={n}");
                        assert_eq!(bytes.len(), expected.encoded_len(), "now={now} n={n}");
                    }
                }
            }
        }
    }

    #[test]
    fn the_identity_is_every_field_but_the_apply_time() {
        let f = flag("flags/f", vec![], vec![]);
        let a = FlagOutcome {
            flag: &f,
            reason: ResolveReason::NoSegmentMatch,
            variant: None,
            rule: None,
            assignment_id: String::new(),
            unit: Some("u".into()),
            selector: "targeting_key".into(),
            fallthroughs: vec![],
            deferred: false,
        };
        let identity = |o: &FlagOutcome| {
            let mut b = Vec::new();
            write_identity(&mut b, o);
            b
        };
        let client = ClientIdentity {
            account: String::new(),
            client: String::new(),
            credential: String::new(),
            environments: vec![],
        };
        let mut expected = prost_event("", &client, None, std::slice::from_ref(&a), 0).flags.remove(0);
        expected.apply_time = None;
        assert_eq!(identity(&a), expected.encode_to_vec(), "fields 1-8 as prost writes them");
        let b = FlagOutcome { selector: "other".into(), ..a.clone() };
        let c = FlagOutcome { unit: Some("v".into()), ..a.clone() };
        assert_ne!(identity(&a), identity(&b));
        assert_ne!(identity(&a), identity(&c));
    }
}
