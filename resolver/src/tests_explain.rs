//! Explain traces (`Instance::explain_json`): the trace follows the resolver's own steps
//! and its final answer is the resolve's.
use crate::hash::{bucket, hash};
use crate::instance::Instance;
use crate::json::parse_value;
use crate::proto::abi::{resolve_result, MaterializationMode, ResolveCall, SetState};
use crate::proto::admin::flag::State as FlagState;
use crate::proto::api::MaterializationRecord;
use crate::proto::types::targeting::criterion::{
    attribute_criterion::Rule as AttrRule, AttributeCriterion, Criterion as CKind,
};
use crate::proto::types::targeting::range_rule::{End, Start};
use crate::proto::types::targeting::{value::Value as RV, Criterion, RangeRule, SetRule, Value as PV};
use crate::testutil::*;
use crate::value::Value;
use prost::Message;

fn attr(name: &str, rule: AttrRule) -> Criterion {
    Criterion {
        criterion: Some(CKind::Attribute(AttributeCriterion { attribute_name: name.into(), rule: Some(rule) })),
    }
}

fn num(n: f64) -> PV {
    PV { value: Some(RV::NumberValue(n)) }
}

fn string(s: &str) -> PV {
    PV { value: Some(RV::StringValue(s.into())) }
}

fn instance() -> Instance {
    let vs = vec![variant("treatment", r#"{"color":"red"}"#), variant("control", r#"{"color":"blue"}"#)];
    let split = || {
        vec![to_variant("a1", "treatment", vec![range(0, 500)]), to_variant("a2", "control", vec![range(500, 1000)])]
    };
    let half = || vec![to_variant("h1", "treatment", vec![range(0, 500)])];
    let mut archived =
        flag("flags/archived", vs.clone(), vec![rule("flags/archived/rules/r1", "segments/all", "", 1000, split())]);
    archived.state = FlagState::Archived as i32;
    let mut rs = resolver_state(
        vec![
            flag(
                "flags/targeted",
                vs.clone(),
                vec![
                    rule("flags/targeted/rules/se", "segments/se", "", 1000, split()),
                    rule("flags/targeted/rules/adults", "segments/adults", "", 1000, split()),
                    rule("flags/targeted/rules/nordic", "segments/nordic", "", 1000, split()),
                ],
            ),
            flag("flags/half", vs.clone(), vec![rule("flags/half/rules/r1", "segments/all", "", 1000, half())]),
            flag(
                "flags/custom-key",
                vs.clone(),
                vec![rule("flags/custom-key/rules/r1", "segments/all", "user.id", 1000, split())],
            ),
            archived,
            flag(
                "flags/bloomseg",
                vs.clone(),
                vec![rule("flags/bloomseg/rules/r1", "segments/bloomseg", "", 1000, split())],
            ),
            flag("flags/matseg", vs.clone(), vec![rule("flags/matseg/rules/r1", "segments/matseg", "", 1000, split())]),
            flag(
                "flags/sticky",
                vs.clone(),
                vec![with_mat(
                    rule("flags/sticky/rules/r1", "segments/all", "", 1000, split()),
                    "materializations/m",
                    "materializations/m",
                    false,
                    false,
                )],
            ),
            flag("flags/nested", vs, vec![rule("flags/nested/rules/r1", "segments/outer", "", 1000, split())]),
        ],
        vec![
            catch_all("segments/all"),
            segment("segments/se", vec![criterion_attr_eq("country", "SE")], Some(r#ref("c1"))),
            segment(
                "segments/adults",
                vec![attr(
                    "age",
                    AttrRule::RangeRule(RangeRule {
                        start: Some(Start::StartInclusive(num(18.0))),
                        end: Some(End::EndExclusive(num(65.0))),
                    }),
                )],
                Some(r#ref("c1")),
            ),
            segment(
                "segments/nordic",
                vec![attr("country", AttrRule::SetRule(SetRule { values: vec![string("NO"), string("DK")] }))],
                Some(r#ref("c1")),
            ),
            segment("segments/bloomseg", vec![criterion_materialized("materializations/bloom")], Some(r#ref("c1"))),
            segment("segments/matseg", vec![criterion_materialized("materializations/seg")], Some(r#ref("c1"))),
            segment("segments/outer", vec![criterion_segment("segments/se")], Some(r#ref("c1"))),
        ],
    );
    rs.bloom_filters.push(bloom("materializations/bloom", &["u-in"], 1024, 5));
    let mut i = Instance::new();
    i.set_state(SetState { state: rs.encode_to_vec(), account_id: "acc".into() }).unwrap();
    i
}

fn call(flag: &str, ctx: &str, mode: MaterializationMode, records: Vec<MaterializationRecord>) -> ResolveCall {
    ResolveCall {
        flags: vec![flag.into()],
        context_json: ctx.as_bytes().to_vec(),
        client_secret: SECRET.into(),
        materialization_mode: mode as i32,
        materializations: records,
        ..Default::default()
    }
}

fn explain_with(i: &Instance, c: &ResolveCall) -> Value {
    let mut out = String::new();
    i.explain_json(c, &mut out).unwrap();
    parse_value(out.as_bytes()).unwrap_or_else(|e| panic!("invalid JSON {out}: {e:?}"))
}

fn explain(i: &Instance, flag: &str, ctx: &str) -> Value {
    explain_with(i, &call(flag, ctx, MaterializationMode::Complete, vec![]))
}

/// `v["a"]["b"][0]` as a path "a.b.0".
fn at<'v>(v: &'v Value, path: &str) -> &'v Value {
    let mut cur = v;
    for p in path.split('.') {
        cur = match cur {
            Value::Struct(m) => m.get(p).unwrap_or_else(|| panic!("no {p} in {cur:?}")),
            Value::List(l) => &l[p.parse::<usize>().unwrap()],
            other => panic!("{p} of {other:?}"),
        };
    }
    cur
}

fn s<'v>(v: &'v Value, path: &str) -> &'v str {
    match at(v, path) {
        Value::String(s) => s,
        other => panic!("{path} is {other:?}"),
    }
}

fn rules(v: &Value) -> usize {
    match at(v, "rules") {
        Value::List(l) => l.len(),
        _ => panic!(),
    }
}

fn expected_variant(segment_id: &str, unit: &str) -> &'static str {
    if bucket(hash(&format!("{segment_id}|{unit}")), 1000).unwrap() < 500 {
        "treatment"
    } else {
        "control"
    }
}

#[test]
fn a_match_shows_the_criterion_the_bucket_and_the_variant() {
    let i = instance();
    let t = explain(&i, "flags/targeted", r#"{"targeting_key":"u1","country":"SE"}"#);
    assert_eq!(s(&t, "presence"), "resolved");
    assert_eq!(s(&t, "reason"), "MATCH");
    assert_eq!(rules(&t), 1);
    assert_eq!(s(&t, "rules.0.outcome"), "match");
    assert_eq!(s(&t, "rules.0.targeting_key.unit"), "u1");
    let c = at(&t, "rules.0.segments.0.criteria.0");
    assert_eq!(s(c, "attribute"), "country");
    assert_eq!(s(c, "seen"), "SE");
    assert_eq!(at(c, "matched"), &Value::Bool(true));
    assert_eq!(at(c, "reason"), &Value::Null);
    let b = bucket(hash("se|u1"), 1000).unwrap();
    assert_eq!(at(&t, "rules.0.bucketing.bucket"), &Value::Number(b as f64));
    assert_eq!(s(&t, "rules.0.bucketing.salt"), "se");
    assert_eq!(s(&t, "variant"), expected_variant("se", "u1"));
    assert_eq!(s(&t, "rules.0.bucketing.assignment.variant"), expected_variant("se", "u1"));
    assert_eq!(s(&t, "value.color"), if expected_variant("se", "u1") == "treatment" { "red" } else { "blue" });
}

#[test]
fn misses_name_their_reason_per_criterion_kind() {
    let i = instance();
    // missing attribute, then out of range, then not in list
    let t = explain(&i, "flags/targeted", r#"{"targeting_key":"u1","age":70,"country":"FI"}"#);
    assert_eq!(s(&t, "reason"), "NO_SEGMENT_MATCH");
    assert_eq!(rules(&t), 3);
    assert_eq!(s(&t, "rules.0.segments.0.criteria.0.reason"), "not_equal");
    assert_eq!(s(&t, "rules.1.segments.0.criteria.0.reason"), "out_of_range");
    assert_eq!(s(&t, "rules.2.segments.0.criteria.0.reason"), "not_in_list");
    for r in 0..3 {
        assert_eq!(s(&t, &format!("rules.{r}.outcome")), "segment_not_matched");
    }
    let t = explain(&i, "flags/targeted", r#"{"targeting_key":"u1"}"#);
    assert_eq!(s(&t, "rules.0.segments.0.criteria.0.reason"), "missing_attribute");
    assert_eq!(at(&t, "rules.0.segments.0.criteria.0.present"), &Value::Bool(false));
    let t = explain(&i, "flags/targeted", r#"{"targeting_key":"u1","age":true,"country":{"a":1}}"#);
    assert_eq!(s(&t, "rules.0.segments.0.criteria.0.reason"), "wrong_type");
    assert_eq!(s(&t, "rules.1.segments.0.criteria.0.reason"), "wrong_type");
    let t = explain(&i, "flags/targeted", r#"{"targeting_key":"u1","age":"old"}"#);
    assert_eq!(s(&t, "rules.1.segments.0.criteria.0.reason"), "wrong_type", "unparseable number");
    let t = explain(&i, "flags/targeted", r#"{"targeting_key":"u1","age":30}"#);
    assert_eq!(s(&t, "rules.1.outcome"), "match");
    assert_eq!(s(&t, "rule"), "flags/targeted/rules/adults");
}

#[test]
fn a_bucket_outside_the_allocation_goes_on_to_the_next_rule() {
    let i = instance();
    let (inside, outside): (Vec<String>, Vec<String>) =
        (0..40).map(|n| format!("u{n}")).partition(|u| bucket(hash(&format!("all|{u}")), 1000).unwrap() < 500);
    let t = explain(&i, "flags/half", &format!(r#"{{"targeting_key":"{}"}}"#, outside[0]));
    assert_eq!(s(&t, "rules.0.outcome"), "bucket_not_allocated");
    assert_eq!(at(&t, "rules.0.bucketing.assignment"), &Value::Null);
    let b = bucket(hash(&format!("all|{}", outside[0])), 1000).unwrap();
    assert_eq!(at(&t, "rules.0.bucketing.bucket"), &Value::Number(b as f64));
    assert_eq!(s(&t, "reason"), "NO_SEGMENT_MATCH");
    let t = explain(&i, "flags/half", &format!(r#"{{"targeting_key":"{}"}}"#, inside[0]));
    assert_eq!(s(&t, "rules.0.bucketing.assignment.id"), "h1");
    assert_eq!(s(&t, "reason"), "MATCH");
}

#[test]
fn a_missing_targeting_key() {
    let i = instance();
    let t = explain(&i, "flags/custom-key", r#"{"targeting_key":"u1"}"#);
    assert_eq!(s(&t, "rules.0.outcome"), "targeting_key_missing");
    assert_eq!(s(&t, "rules.0.targeting_key.selector"), "user.id");
    assert_eq!(at(&t, "rules.0.targeting_key.seen"), &Value::Null);
    // default selector, no key, a split: no unit to bucket
    let t = explain(&i, "flags/targeted", r#"{"country":"SE"}"#);
    assert_eq!(s(&t, "rules.0.outcome"), "no_unit_for_bucketing");
    let t = explain(&i, "flags/targeted", r#"{"targeting_key":1.5,"country":"SE"}"#);
    assert_eq!(s(&t, "rules.0.outcome"), "targeting_key_error");
    assert_eq!(s(&t, "reason"), "TARGETING_KEY_ERROR");
    assert_eq!(at(&t, "rules.0.targeting_key.seen"), &Value::Number(1.5));
}

#[test]
fn archived_and_unknown_flags_are_absent() {
    let i = instance();
    let t = explain(&i, "flags/archived", r#"{"targeting_key":"u1"}"#);
    assert_eq!((s(&t, "presence"), s(&t, "reason")), ("archived", "FLAG_ARCHIVED"));
    assert_eq!(rules(&t), 0);
    let t = explain(&i, "flags/nope", "{}");
    assert_eq!((s(&t, "presence"), s(&t, "reason")), ("not_found", "FLAG_NOT_FOUND"));
}

#[test]
fn materialized_segments_and_reads() {
    let i = instance();
    let t = explain(&i, "flags/bloomseg", r#"{"targeting_key":"u-in"}"#);
    assert_eq!(s(&t, "rules.0.segments.0.criteria.0.source"), "bloom_filter");
    assert_eq!(s(&t, "reason"), "MATCH");
    let t = explain(&i, "flags/bloomseg", r#"{"targeting_key":"u-out"}"#);
    assert_eq!(at(&t, "rules.0.segments.0.criteria.0.matched"), &Value::Bool(false));
    // the store: discovery suspends with the read, complete answers it
    let c = call("flags/matseg", r#"{"targeting_key":"u1"}"#, MaterializationMode::Discovery, vec![]);
    let t = explain_with(&i, &c);
    assert_eq!(s(&t, "s.0.1"), "materializations/seg");
    let rec = MaterializationRecord {
        unit: "u1".into(),
        materialization: "materializations/seg".into(),
        ..Default::default()
    };
    let t =
        explain_with(&i, &call("flags/matseg", r#"{"targeting_key":"u1"}"#, MaterializationMode::Complete, vec![rec]));
    assert_eq!(s(&t, "rules.0.segments.0.criteria.0.source"), "store");
    assert_eq!(s(&t, "reason"), "MATCH");
    // a sticky read that names a variant decides it, and the write is reported
    let sticky = |v: &str| MaterializationRecord {
        unit: "u1".into(),
        materialization: "materializations/m".into(),
        rule: "flags/sticky/rules/r1".into(),
        variant: v.into(),
    };
    let other = if expected_variant("all", "u1") == "treatment" { "control" } else { "treatment" };
    let t = explain_with(
        &i,
        &call("flags/sticky", r#"{"targeting_key":"u1"}"#, MaterializationMode::Complete, vec![sticky(other)]),
    );
    assert_eq!(s(&t, "rules.0.materialization_read.answer"), "recorded");
    assert_eq!(s(&t, "rules.0.materialization_read.variant"), other);
    assert_eq!(s(&t, "rules.0.sticky.variant"), other);
    assert_eq!(s(&t, "variant"), other);
    assert_eq!(s(&t, "rules.0.materialization_write.variant"), other);
    let t = explain_with(&i, &call("flags/sticky", r#"{"targeting_key":"u1"}"#, MaterializationMode::Complete, vec![]));
    assert_eq!(s(&t, "rules.0.materialization_read.answer"), "not_recorded");
    assert_eq!(s(&t, "variant"), expected_variant("all", "u1"));
}

#[test]
fn nested_segments_appear_under_their_criterion() {
    let i = instance();
    let t = explain(&i, "flags/nested", r#"{"targeting_key":"u1","country":"DK"}"#);
    assert_eq!(s(&t, "rules.0.segments.0.criteria.0.kind"), "segment");
    assert_eq!(s(&t, "rules.0.segments.0.criteria.0.segment.name"), "segments/se");
    assert_eq!(s(&t, "rules.0.segments.0.criteria.0.segment.criteria.0.reason"), "not_equal");
}

#[test]
fn explain_agrees_with_resolve_and_logs_nothing() {
    let mut i = instance();
    let flags = ["flags/targeted", "flags/half", "flags/custom-key", "flags/bloomseg", "flags/nested"];
    let ctxs = [
        r#"{"targeting_key":"u1","country":"SE"}"#,
        r#"{"targeting_key":"u2","age":20}"#,
        r#"{"targeting_key":"u-in","country":"NO","user":{"id":"x"}}"#,
        r#"{"country":"DK"}"#,
        r#"{"targeting_key":7,"age":"19"}"#,
    ];
    for f in flags {
        for c in ctxs {
            let t = explain(&i, f, c);
            let mut rc = call(f, c, MaterializationMode::Complete, vec![]);
            rc.skip_logging = true;
            let r = match i.resolve(&rc).unwrap().result {
                Some(resolve_result::Result::Resolved(r)) => r,
                other => panic!("{other:?}"),
            };
            assert_eq!(s(&t, "variant"), r.flags[0].variant, "{f} {c}");
            assert_eq!(s(&t, "rule"), r.flags[0].assignment_origin, "{f} {c}");
            assert_eq!(s(&t, "assignment_id"), r.flags[0].assignment_id, "{f} {c}");
        }
    }
    let d = i.flush_logs(Default::default());
    assert!(d.write_flag_logs_request.is_empty() || d.flag_assigned_count == 0, "explain logged");
    let mut out = String::new();
    let mut two = call("flags/half", "{}", MaterializationMode::Complete, vec![]);
    two.flags.push("flags/targeted".into());
    let err = i.explain_json(&two, &mut out).unwrap_err();
    assert_eq!(err.kind(), crate::ErrorKind::InvalidRequest);
    assert!(err.to_string().contains("exactly one flag"));
}
