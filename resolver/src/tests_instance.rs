//! Instance-level tests: configure, state swaps, resolve results, logs and flushes.
use crate::error::ErrorKind;
use crate::instance::Instance;
use crate::logs::{context_schema, DEDUP_WINDOW_MS};
use crate::proto::abi::{resolve_result, Configure, FlushLogs, MaterializationMode, ResolveCall, Resolved, SetState};
use crate::proto::admin::context_field_semantic_type::Type as SemType;
use crate::proto::admin::evaluation_context_schema_field::Kind;
use crate::proto::api::{sdk, ResolveReason as R, Sdk, SdkId, WriteFlagLogsRequest};
use crate::proto::events::flag_assigned::applied_flag::Assignment;
use crate::testutil::*;
use prost::Message;

fn state_bytes() -> Vec<u8> {
    let on = variant("on", r#"{"enabled":true}"#);
    resolver_state(
        vec![
            flag(
                "flags/a",
                vec![on.clone()],
                vec![rule("flags/a/rules/r1", "segments/se", "", 1, vec![to_variant("a1", "on", vec![range(0, 1)])])],
            ),
            flag(
                "flags/ft",
                vec![on.clone()],
                vec![
                    rule("flags/ft/rules/r1", "segments/all", "", 1, vec![fallthrough("ft1", vec![range(0, 1)])]),
                    rule("flags/ft/rules/r2", "segments/se", "", 1, vec![to_variant("m1", "on", vec![range(0, 1)])]),
                ],
            ),
            flag(
                "flags/cd",
                vec![],
                vec![rule("flags/cd/rules/r1", "segments/all", "", 1, vec![client_default("cd1", vec![range(0, 1)])])],
            ),
            flag(
                "flags/sticky",
                vec![on],
                vec![with_mat(
                    rule(
                        "flags/sticky/rules/r1",
                        "segments/all",
                        "",
                        1,
                        vec![to_variant("s1", "on", vec![range(0, 1)])],
                    ),
                    "m",
                    "m",
                    false,
                    false,
                )],
            ),
        ],
        vec![
            catch_all("segments/all"),
            segment("segments/se", vec![criterion_attr_eq("country", "SE")], Some(r#ref("c1"))),
        ],
    )
    .encode_to_vec()
}

fn sdk() -> Sdk {
    Sdk { sdk: Some(sdk::Sdk::Id(SdkId::PythonLocalProvider as i32)), version: "1.2.3".into() }
}

fn instance(dedup: bool) -> Instance {
    let mut i = Instance::new();
    let r = i.configure(Configure { rng_seed: 99, sdk: Some(sdk()), enable_apply_dedup: dedup, ..Default::default() });
    assert_eq!(r.resolver_version, crate::RESOLVER_VERSION);
    i.set_state(SetState { state: state_bytes(), account_id: "acc".into() }).unwrap();
    i
}

fn call(flags: &[&str], ctx: &str, apply: bool, now: i64) -> ResolveCall {
    ResolveCall {
        flags: flags.iter().map(|s| s.to_string()).collect(),
        context_json: ctx.as_bytes().to_vec(),
        client_secret: SECRET.into(),
        apply,
        now_unix_millis: now,
        materialization_mode: MaterializationMode::Discovery as i32,
        ..Default::default()
    }
}

fn resolved(i: &mut Instance, c: &ResolveCall) -> Resolved {
    match i.resolve(c).unwrap().result {
        Some(resolve_result::Result::Resolved(r)) => r,
        other => panic!("{other:?}"),
    }
}

fn flush(i: &mut Instance, now: i64, max: u32) -> (Option<WriteFlagLogsRequest>, bool, u32) {
    let r = i.flush_logs(FlushLogs { now_unix_millis: now, max_assigned_bytes: max });
    let req = if r.write_flag_logs_request.is_empty() {
        None
    } else {
        Some(WriteFlagLogsRequest::decode(r.write_flag_logs_request.as_slice()).unwrap())
    };
    (req, r.more_pending, r.flag_assigned_count)
}

#[test]
fn set_state_reports_digests_and_keeps_old_state_on_error() {
    let mut i = Instance::new();
    assert!(i.resolve(&call(&[], "{}", false, 0)).unwrap_err().to_string().contains("no resolver state"));
    assert_eq!(i.resolve(&call(&[], "{}", false, 0)).unwrap_err().kind(), ErrorKind::NoState);
    let r = i.set_state(SetState { state: state_bytes(), account_id: "acc".into() }).unwrap();
    assert_eq!(
        r.flags.iter().map(|f| f.name.as_str()).collect::<Vec<_>>(),
        vec!["flags/a", "flags/ft", "flags/cd", "flags/sticky"]
    );
    assert_eq!((r.segment_count, r.client_count), (2, 1));
    let again = i.set_state(SetState { state: state_bytes(), account_id: "acc".into() }).unwrap();
    assert_eq!(r.flags, again.flags, "digests are stable");
    assert!(i.set_state(SetState { state: b"\xff\xff garbage".to_vec(), account_id: "acc".into() }).is_err());
    let e = i.set_state(SetState { state: b"\xff\xff garbage".to_vec(), account_id: "acc".into() }).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidState);
    assert_eq!(resolved(&mut i, &call(&["flags/a"], r#"{"country":"SE"}"#, false, 0)).flags.len(), 1);
}

#[test]
fn resolve_results() {
    let mut i = instance(false);
    let r = resolved(
        &mut i,
        &call(&["flags/a", "flags/ft", "flags/cd"], r#"{"targeting_key":"u","country":"SE"}"#, false, 0),
    );
    assert_eq!(r.resolve_id.len(), 32);
    let by = |n: &str| r.flags.iter().find(|f| f.flag == n).unwrap().clone();
    let a = by("flags/a");
    assert_eq!(
        (a.reason, a.variant.as_str(), a.value_json.as_slice()),
        (R::Match as i32, "on", &br#"{"enabled":true}"#[..])
    );
    assert_eq!(
        (a.assignment_origin.as_str(), a.assignment_id.as_str(), a.should_apply),
        ("flags/a/rules/r1", "a1", true)
    );
    assert!(a.flag_schema.is_some());
    let cd = by("flags/cd");
    assert_eq!((cd.reason, cd.variant.as_str(), cd.value_json.as_slice()), (R::Match as i32, "", &b"{}"[..]));
    // sticky rule in discovery with a unit: suspended
    match i.resolve(&call(&["flags/sticky"], r#"{"targeting_key":"u"}"#, true, 0)).unwrap().result {
        Some(resolve_result::Result::Suspended(s)) => assert_eq!(s.materializations_to_read.len(), 2),
        other => panic!("{other:?}"),
    }
    let r = resolved(&mut i, &call(&["flags/a"], r#"{"country":"NO"}"#, false, 0));
    let a = &r.flags[0];
    assert_eq!(
        (a.reason, a.variant.as_str(), a.value_json.is_empty(), a.flag_schema.is_none()),
        (R::NoSegmentMatch as i32, "", true, true)
    );
    // unsupported mode
    let mut c = call(&["flags/sticky"], r#"{"targeting_key":"u"}"#, false, 0);
    c.materialization_mode = MaterializationMode::Unsupported as i32;
    assert_eq!(resolved(&mut i, &c).flags[0].reason, R::MaterializationNotSupported as i32);
    // complete mode returns the writes
    c.materialization_mode = MaterializationMode::Complete as i32;
    let r = resolved(&mut i, &c);
    assert_eq!(r.materializations_to_write.len(), 1);
    assert_eq!(r.materializations_to_write[0].variant, "on");
}

#[test]
fn errors() {
    let mut i = instance(false);
    let mut c = call(&[], "{}", false, 0);
    c.client_secret = "top-secret-xyz".into();
    let e = i.resolve(&c).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::UnknownClientSecret);
    let e = e.to_string();
    assert!(e.contains("client secret not found") && !e.contains("top-secret-xyz"), "{e}");
    let e = i.resolve(&call(&[], "{oops", false, 0)).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidContext);
    let e = e.to_string();
    assert!(e.contains("invalid context JSON"), "{e}");
    // invalid UTF-8 in a string is a context error too
    let mut c = call(&[], "{}", false, 0);
    c.context_json = b"{\"s\":\"\xff\"}".to_vec();
    assert_eq!(i.resolve(&c).unwrap_err().kind(), ErrorKind::InvalidContext);
    let mut c = call(&[], "{}", false, 0);
    c.materialization_mode = 17;
    assert!(i.resolve(&c).is_err());
    assert_eq!(i.resolve(&c).unwrap_err().kind(), ErrorKind::InvalidRequest);
    // NaN/Infinity tokens are accepted
    assert_eq!(
        resolved(&mut i, &call(&["flags/a"], r#"{"x":NaN,"y":-Infinity,"country":"SE"}"#, false, 0)).flags.len(),
        1
    );
}

#[test]
fn resolve_ids_follow_the_seed() {
    let ids = |seed: u64| {
        let mut i = instance(false);
        i.configure(Configure { rng_seed: seed, ..Default::default() });
        (0..3).map(|_| resolved(&mut i, &call(&["flags/a"], "{}", false, 0)).resolve_id).collect::<Vec<_>>()
    };
    let a = ids(1);
    assert_eq!(a, ids(1));
    assert_ne!(a, ids(2));
    assert_ne!(a[0], a[1]);
}

#[test]
fn resolve_info_and_exposures() {
    let mut i = instance(false);
    assert_eq!(flush(&mut i, 0, 0), (None, false, 0), "nothing accumulated");
    let ctx = r#"{"targeting_key":"u","country":"SE","user":{"age":30,"premium":true,"tags":["a","b"],"mixed":[1,"x"]},"nothing":null}"#;
    for _ in 0..3 {
        resolved(&mut i, &call(&["flags/a", "flags/ft", "flags/cd"], ctx, true, 1_000));
    }
    resolved(&mut i, &call(&["flags/a"], r#"{"country":"NO"}"#, false, 1_000));
    let mut skipped = call(&["flags/a"], ctx, true, 1_000);
    skipped.skip_logging = true;
    resolved(&mut i, &skipped);

    let (req, more, n) = flush(&mut i, 2_000, 0);
    let req = req.unwrap();
    assert!(!more);
    assert_eq!(n, 3);
    // client resolve info: two distinct schemas for the credential
    assert_eq!(req.client_resolve_info.len(), 1);
    let cri = &req.client_resolve_info[0];
    assert_eq!((cri.client.as_str(), cri.client_credential.as_str()), (CLIENT, CREDENTIAL));
    assert_eq!(cri.schema.len(), 2);
    let s = &cri.schema[0];
    assert_eq!(s.schema["targeting_key"], Kind::StringKind as i32);
    assert_eq!(s.schema["user.age"], Kind::NumberKind as i32);
    assert_eq!(s.schema["user.premium"], Kind::BoolKind as i32);
    assert_eq!(s.schema["user.tags"], Kind::StringKind as i32);
    assert_eq!(s.schema["nothing"], Kind::NullKind as i32);
    assert!(!s.schema.contains_key("user.mixed"));
    assert!(matches!(s.semantic_types["country"].r#type, Some(SemType::Country(_))));
    // flag resolve info
    let fa = req.flag_resolve_info.iter().find(|f| f.flag == "flags/a").unwrap();
    let counts: Vec<_> = fa.variant_resolve_info.iter().map(|v| (v.variant.as_str(), v.count)).collect();
    assert_eq!(counts, vec![("", 1), ("on", 3)]);
    assert_eq!(fa.rule_resolve_info.len(), 1);
    assert_eq!((fa.rule_resolve_info[0].count, fa.rule_resolve_info[0].assignment_resolve_info[0].count), (3, 3));
    let ft = req.flag_resolve_info.iter().find(|f| f.flag == "flags/ft").unwrap();
    let rules: Vec<_> = ft
        .rule_resolve_info
        .iter()
        .map(|r| (r.rule.as_str(), r.count, r.assignment_resolve_info[0].assignment_id.as_str()))
        .collect();
    assert_eq!(rules, vec![("flags/ft/rules/r1", 3, "ft1"), ("flags/ft/rules/r2", 3, "m1")]);
    let cd = req.flag_resolve_info.iter().find(|f| f.flag == "flags/cd").unwrap();
    assert_eq!(cd.variant_resolve_info[0].variant, "");
    // exposures
    assert_eq!(req.flag_assigned.len(), 3);
    let fa0 = &req.flag_assigned[0];
    assert_eq!(fa0.resolve_id.len(), 32);
    let ci = fa0.client_info.as_ref().unwrap();
    assert_eq!(
        (ci.client.as_str(), ci.client_credential.as_str(), ci.sdk.as_ref()),
        (CLIENT, CREDENTIAL, Some(&sdk()))
    );
    assert_eq!(fa0.flags.len(), 3);
    let af = &fa0.flags[0];
    assert_eq!(
        (af.flag.as_str(), af.targeting_key.as_str(), af.targeting_key_selector.as_str()),
        ("flags/a", "u", "targeting_key")
    );
    assert_eq!((af.rule.as_str(), af.assignment_id.as_str()), ("flags/a/rules/r1", "a1"));
    match &af.assignment {
        Some(Assignment::AssignmentInfo(ai)) => {
            assert_eq!((ai.segment.as_str(), ai.variant.as_str()), ("segments/se", "on"))
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(af.apply_time.as_ref().map(|t| (t.seconds, t.nanos)), Some((1, 0)));
    let ft = &fa0.flags[1];
    assert_eq!(ft.fallthrough_assignments.len(), 1);
    assert_eq!(ft.fallthrough_assignments[0].rule, "flags/ft/rules/r1");
    // telemetry
    let t = req.telemetry_data.unwrap();
    assert_eq!(t.sdk, Some(sdk()));
    assert_eq!(t.resolver_version, crate::RESOLVER_VERSION);
    let rates: Vec<_> = t.resolve_rate.iter().map(|r| (r.reason, r.count)).collect();
    assert_eq!(rates, vec![(R::Match as u32, 9), (R::NoSegmentMatch as u32, 1)]);
    // drained
    assert_eq!(flush(&mut i, 3_000, 0).0, None);
}

#[test]
fn apply_dedup_window() {
    let mut i = instance(true);
    let ctx = r#"{"targeting_key":"u","country":"SE"}"#;
    for k in 0..5 {
        resolved(&mut i, &call(&["flags/a"], ctx, true, 10_000 + k));
    }
    let (req, _, n) = flush(&mut i, 10_010, 0);
    let req = req.unwrap();
    assert_eq!(n, 1, "N evaluations within the window give one exposure");
    assert_eq!(req.flag_resolve_info[0].variant_resolve_info[0].count, 5, "resolve counts are not deduplicated");
    let d = req.telemetry_data.unwrap().apply_dedup.unwrap();
    assert_eq!((d.applies_total, d.applies_deduped, d.map_size, d.map_capacity), (5, 4, 1, 100_000));
    // another unit is a new identity; after the window the same one passes again
    resolved(&mut i, &call(&["flags/a"], r#"{"targeting_key":"v","country":"SE"}"#, true, 20_000));
    resolved(&mut i, &call(&["flags/a"], ctx, true, 10_000 + DEDUP_WINDOW_MS));
    assert_eq!(flush(&mut i, 10_000 + DEDUP_WINDOW_MS, 0).2, 2);
    // an apply with no applicable flag still produces an envelope
    resolved(&mut i, &call(&["flags/a"], r#"{"country":"NO"}"#, true, 500_000));
    let (req, _, n) = flush(&mut i, 500_000, 0);
    assert_eq!(n, 1);
    assert!(req.unwrap().flag_assigned[0].flags.is_empty());
}

#[test]
fn exposure_collection_can_be_disabled() {
    let mut i = instance(false);
    i.configure(Configure {
        rng_seed: 1,
        sdk: None,
        enable_apply_dedup: false,
        disable_exposure_collection: true,
        ..Default::default()
    });
    resolved(&mut i, &call(&["flags/a"], r#"{"country":"SE"}"#, true, 0));
    let (req, _, n) = flush(&mut i, 0, 0);
    assert_eq!(n, 0);
    let req = req.unwrap();
    assert!(req.flag_assigned.is_empty());
    assert_eq!(req.flag_resolve_info.len(), 1);
}

#[test]
fn pending_cap_drops_are_reported_by_the_flush() {
    let mut i = instance(false);
    i.configure(Configure { rng_seed: 1, sdk: Some(sdk()), max_pending_assigned_bytes: 600, ..Default::default() });
    for k in 0..20 {
        resolved(&mut i, &call(&["flags/a"], &format!(r#"{{"targeting_key":"u{k}","country":"SE"}}"#), true, 0));
    }
    let r = i.flush_logs(FlushLogs { now_unix_millis: 0, max_assigned_bytes: 0 });
    assert!(r.flag_assigned_count > 0);
    assert_eq!(r.flag_assigned_count as u64 + r.dropped_flag_assigned, 20);
    assert_eq!(r.dropped_applied_flags, r.dropped_flag_assigned, "one flag per resolve");
    let req = WriteFlagLogsRequest::decode(r.write_flag_logs_request.as_slice()).unwrap();
    let resolves: i64 = req.flag_resolve_info[0].variant_resolve_info.iter().map(|v| v.count).sum();
    assert_eq!(resolves, 20, "resolve counts are never capped");
    let again = i.flush_logs(FlushLogs { now_unix_millis: 0, max_assigned_bytes: 0 });
    assert_eq!((again.dropped_flag_assigned, again.dropped_applied_flags), (0, 0), "reported once");
}

#[test]
fn bounded_drain() {
    let mut i = instance(false);
    for k in 0..10 {
        resolved(&mut i, &call(&["flags/a"], &format!(r#"{{"targeting_key":"u{k}","country":"SE"}}"#), true, 0));
    }
    let (req, more, n) = flush(&mut i, 0, 1);
    assert!(more);
    assert_eq!(n, 1, "an event larger than the bound goes alone");
    assert!(!req.unwrap().flag_resolve_info.is_empty());
    let (req, more, n) = flush(&mut i, 0, 400);
    let req = req.unwrap();
    assert!(more && (2..9).contains(&n));
    let size: usize = req.flag_assigned.iter().map(|f| f.encoded_len() + 2).sum();
    assert!(size <= 400);
    assert!(req.flag_resolve_info.is_empty());
    let (_, more, rest) = flush(&mut i, 0, 0);
    assert!(!more);
    assert_eq!(1 + n + rest, 10);
}

#[test]
fn schemas_are_capped_per_credential() {
    let mut i = instance(false);
    for k in 0..60 {
        resolved(&mut i, &call(&["flags/a"], &format!(r#"{{"field{k}":1}}"#), false, 0));
    }
    let req = flush(&mut i, 0, 0).0.unwrap();
    assert_eq!(req.client_resolve_info[0].schema.len(), 50);
}

#[test]
fn semantic_types() {
    let ctx = crate::json::parse_context(
        br#"{"c":"SE","lc":"se","d":"2024-01-31","t":"2024-01-31T10:00:00Z","v":"1.2.3","n":"hello","x":"1.5","zz":"ZZ"}"#,
    )
    .unwrap();
    let s = context_schema(&ctx);
    let kind = |k: &str| s.semantic_types.get(k).and_then(|t| t.r#type.clone());
    assert!(matches!(kind("c"), Some(SemType::Country(_))));
    assert!(matches!(kind("d"), Some(SemType::Date(_))));
    assert!(matches!(kind("t"), Some(SemType::Timestamp(_))));
    assert!(matches!(kind("v"), Some(SemType::Version(_))));
    for k in ["lc", "n", "x", "zz"] {
        assert!(kind(k).is_none(), "{k}");
    }
}

/// `resolve_json` (the ABI's answer) says what `resolve` says, minus the flag schema.
#[test]
fn json_answer_matches_the_message() {
    use crate::json::parse_value;
    use crate::value::Value;
    let mut a = instance(true);
    let mut b = instance(true);
    let calls = [
        call(&["flags/a", "flags/ft", "flags/cd"], r#"{"targeting_key":"u1","country":"SE"}"#, true, 1_000),
        call(&["flags/a"], r#"{"targeting_key":"u\"2\n","country":"NO"}"#, false, 2_000),
        call(&["flags/sticky"], r#"{"targeting_key":"u3"}"#, true, 3_000),
        call(&[], r#"{}"#, true, 4_000),
    ];
    for c in &calls {
        let msg = a.resolve(c).unwrap();
        let mut json = String::new();
        b.resolve_json(c, &mut json).unwrap();
        let doc = match parse_value(json.as_bytes()).unwrap() {
            Value::Struct(m) => m,
            other => panic!("not an object: {:?}", other),
        };
        let records = |v: &Value| -> Vec<Vec<String>> {
            match v {
                Value::List(l) => l
                    .iter()
                    .map(|r| match r {
                        Value::List(f) => f
                            .iter()
                            .map(|x| match x {
                                Value::String(s) => s.clone(),
                                _ => panic!(),
                            })
                            .collect(),
                        _ => panic!(),
                    })
                    .collect(),
                _ => panic!(),
            }
        };
        match msg.result.unwrap() {
            resolve_result::Result::Suspended(s) => {
                let want: Vec<Vec<String>> = s
                    .materializations_to_read
                    .iter()
                    .map(|r| vec![r.unit.clone(), r.materialization.clone(), r.rule.clone(), r.variant.clone()])
                    .collect();
                assert_eq!(records(&doc["s"]), want);
            }
            resolve_result::Result::Resolved(r) => {
                assert_eq!(doc["r"], Value::String(r.resolve_id.clone()));
                let flags = match &doc["f"] {
                    Value::List(l) => l.clone(),
                    _ => panic!(),
                };
                assert_eq!(flags.len(), r.flags.len());
                for (got, want) in flags.iter().zip(&r.flags) {
                    let got = match got {
                        Value::List(l) => l,
                        _ => panic!(),
                    };
                    assert_eq!(got[0], Value::String(want.flag.clone()));
                    assert_eq!(got[1], Value::String(want.variant.clone()));
                    let value =
                        if want.value_json.is_empty() { Value::Null } else { parse_value(&want.value_json).unwrap() };
                    assert_eq!(got[2], value);
                    assert_eq!(got[3], Value::Number(want.reason as f64));
                    assert_eq!(got[4], Value::Number(if want.should_apply { 1.0 } else { 0.0 }));
                    assert_eq!(got[5], Value::String(want.assignment_origin.clone()));
                    assert_eq!(got[6], Value::String(want.assignment_id.clone()));
                }
                let want: Vec<Vec<String>> = r
                    .materializations_to_write
                    .iter()
                    .map(|w| vec![w.unit.clone(), w.materialization.clone(), w.rule.clone(), w.variant.clone()])
                    .collect();
                assert_eq!(records(&doc["w"]), want);
            }
        }
    }
}

#[test]
fn json_strings_are_escaped() {
    let mut out = String::new();
    crate::json::write_string(&mut out, "a\"b\\c\nd\u{1}e\u{2028}f-é");
    assert_eq!(out, "\"a\\\"b\\\\c\\nd\\u0001e\\u2028f-é\"");
}
