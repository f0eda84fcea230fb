//! Builders for hand-made states in unit tests.
#![cfg(test)]
use crate::proto::admin::flag::rule::assignment::{
    Assignment as AKind, ClientDefaultAssignment, FallthroughAssignment, VariantAssignment,
};
use crate::proto::admin::flag::rule::{Assignment, AssignmentSpec, BucketRange, MaterializationSpec};
use crate::proto::admin::flag::{Rule, State as FlagState, Variant};
use crate::proto::admin::resolver_state::{packed_bitset, BloomFilter, PackedBitset};
use crate::proto::admin::{Flag, ResolverState, Segment};
use crate::proto::iam::{client_credential, Client, ClientCredential};
use crate::proto::types::targeting::criterion::{
    attribute_criterion::Rule as AttrRule, AttributeCriterion, Criterion as CKind, MaterializedSegmentCriterion,
    SegmentCriterion,
};
use crate::proto::types::targeting::{value::Value as RV, Criterion, EqRule, Value as PV};
use crate::proto::types::{expression, Expression, Targeting};
use crate::value::Value;

pub const SECRET: &str = "secret-1";
pub const CLIENT: &str = "clients/c";
pub const CREDENTIAL: &str = "clients/c/credentials/k";

pub fn to_proto(v: &Value) -> prost_types::Value {
    use prost_types::value::Kind;
    let kind = match v {
        Value::Null => Kind::NullValue(0),
        Value::Bool(b) => Kind::BoolValue(*b),
        Value::Number(n) => Kind::NumberValue(*n),
        Value::String(s) => Kind::StringValue(s.clone()),
        Value::List(l) => Kind::ListValue(prost_types::ListValue { values: l.iter().map(to_proto).collect() }),
        Value::Struct(m) => {
            Kind::StructValue(prost_types::Struct { fields: m.iter().map(|(k, v)| (k.clone(), to_proto(v))).collect() })
        }
    };
    prost_types::Value { kind: Some(kind) }
}

pub fn json_struct(json: &str) -> prost_types::Struct {
    match to_proto(&crate::json::parse_value(json.as_bytes()).expect("test json")).kind {
        Some(prost_types::value::Kind::StructValue(s)) => s,
        _ => panic!("not an object"),
    }
}

pub fn variant(name: &str, json: &str) -> Variant {
    Variant { name: name.into(), value: Some(json_struct(json)), ..Default::default() }
}

pub fn range(lower: i32, upper: i32) -> BucketRange {
    BucketRange { lower, upper }
}

pub fn to_variant(id: &str, v: &str, ranges: Vec<BucketRange>) -> Assignment {
    Assignment {
        assignment_id: id.into(),
        assignment: Some(AKind::Variant(VariantAssignment { variant: v.into() })),
        bucket_ranges: ranges,
    }
}

pub fn fallthrough(id: &str, ranges: Vec<BucketRange>) -> Assignment {
    Assignment {
        assignment_id: id.into(),
        assignment: Some(AKind::Fallthrough(FallthroughAssignment {})),
        bucket_ranges: ranges,
    }
}

pub fn client_default(id: &str, ranges: Vec<BucketRange>) -> Assignment {
    Assignment {
        assignment_id: id.into(),
        assignment: Some(AKind::ClientDefault(ClientDefaultAssignment {})),
        bucket_ranges: ranges,
    }
}

pub fn rule(name: &str, segment: &str, selector: &str, bucket_count: i32, assignments: Vec<Assignment>) -> Rule {
    Rule {
        name: name.into(),
        segment: segment.into(),
        targeting_key_selector: selector.into(),
        enabled: true,
        assignment_spec: Some(AssignmentSpec { bucket_count, assignments }),
        ..Default::default()
    }
}

pub fn with_mat(mut r: Rule, read: &str, write: &str, must_match: bool, ignore_targeting: bool) -> Rule {
    use crate::proto::admin::flag::rule::materialization_spec::MaterializationReadMode;
    r.materialization_spec = Some(MaterializationSpec {
        read_materialization: read.into(),
        write_materialization: write.into(),
        mode: Some(MaterializationReadMode {
            materialization_must_match: must_match,
            segment_targeting_can_be_ignored: ignore_targeting,
        }),
    });
    r
}

pub fn flag(name: &str, variants: Vec<Variant>, rules: Vec<Rule>) -> Flag {
    Flag {
        name: name.into(),
        state: FlagState::Active as i32,
        clients: vec![CLIENT.into()],
        variants,
        rules,
        ..Default::default()
    }
}

pub fn criterion_attr_eq(attr: &str, v: &str) -> Criterion {
    Criterion {
        criterion: Some(CKind::Attribute(AttributeCriterion {
            attribute_name: attr.into(),
            rule: Some(AttrRule::EqRule(EqRule { value: Some(PV { value: Some(RV::StringValue(v.into())) }) })),
        })),
    }
}

pub fn criterion_segment(seg: &str) -> Criterion {
    Criterion { criterion: Some(CKind::Segment(SegmentCriterion { segment: seg.into() })) }
}

pub fn criterion_materialized(m: &str) -> Criterion {
    Criterion {
        criterion: Some(CKind::MaterializedSegment(MaterializedSegmentCriterion { materialized_segment: m.into() })),
    }
}

pub fn r#ref(id: &str) -> Expression {
    Expression { expression: Some(expression::Expression::Ref(id.into())) }
}

pub fn or(ops: Vec<Expression>) -> Expression {
    Expression { expression: Some(expression::Expression::Or(expression::Operands { operands: ops })) }
}

pub fn and(ops: Vec<Expression>) -> Expression {
    Expression { expression: Some(expression::Expression::And(expression::Operands { operands: ops })) }
}

pub fn not(e: Expression) -> Expression {
    Expression { expression: Some(expression::Expression::Not(Box::new(e))) }
}

/// A segment whose targeting is `expr` over criteria `c1`, `c2`, ... .
pub fn segment(name: &str, criteria: Vec<Criterion>, expr: Option<Expression>) -> Segment {
    Segment {
        name: name.into(),
        targeting: Some(Targeting {
            criteria: criteria.into_iter().enumerate().map(|(i, c)| (format!("c{}", i + 1), c)).collect(),
            expression: expr,
        }),
        ..Default::default()
    }
}

pub fn catch_all(name: &str) -> Segment {
    Segment { name: name.into(), ..Default::default() }
}

pub fn gzip(data: &[u8]) -> Vec<u8> {
    let mut out = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];
    out.extend(miniz_oxide::deflate::compress_to_vec(data, 6));
    out.extend(crate::bitset::crc32(data).to_le_bytes());
    out.extend((data.len() as u32).to_le_bytes());
    out
}

pub fn bitset(segment: &str, bits: &[u64]) -> PackedBitset {
    let mut bytes = vec![0u8; 125_000];
    for b in bits {
        bytes[(*b / 8) as usize] |= 1 << (b % 8);
    }
    PackedBitset { segment: segment.into(), bitset: Some(packed_bitset::Bitset::GzippedBitset(gzip(&bytes))) }
}

pub fn bloom(materialized_segment: &str, units: &[&str], bit_count: i64, hashes: i32) -> BloomFilter {
    let words = ((bit_count + 63) / 64) as usize;
    let mut w = vec![0u64; words];
    for u in units {
        let (a, b) = crate::hash::murmur3_x64_128(u.as_bytes(), 0);
        let (h2, mut c) = (b as i64, a as i64);
        for _ in 0..hashes {
            let idx = ((c & i64::MAX) % bit_count) as usize;
            w[idx / 64] |= 1 << (idx % 64);
            c = c.wrapping_add(h2);
        }
    }
    let data = w.iter().flat_map(|x| x.to_be_bytes()).collect();
    BloomFilter {
        materialized_segment: materialized_segment.into(),
        data,
        hash_function_count: hashes,
        bit_count,
        strategy: 1,
    }
}

pub fn resolver_state(flags: Vec<Flag>, segments: Vec<Segment>) -> ResolverState {
    ResolverState {
        flags,
        segments_no_bitsets: segments,
        clients: vec![Client { name: CLIENT.into(), ..Default::default() }],
        client_credentials: vec![ClientCredential {
            name: CREDENTIAL.into(),
            credential: Some(client_credential::Credential::ClientSecret(client_credential::ClientSecret {
                secret: SECRET.into(),
            })),
            environments: vec!["prod".into()],
            ..Default::default()
        }],
        ..Default::default()
    }
}
