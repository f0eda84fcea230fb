//! Resolution tests on hand-built states (resolve.md §2–§5, §8).
use crate::error::{Error, ErrorKind};
use crate::hash::{bitset_index, bucket, hash};
use crate::json::parse_context;
use crate::materialize::Mode;
use crate::proto::admin::flag::State as FlagState;
use crate::proto::api::{MaterializationRecord, ResolveReason as R};
use crate::proto::types::flag_schema::{SchemaType, StructFlagSchema};
use crate::proto::types::FlagSchema;
use crate::resolve::{client_for, resolve, value_json, FlagOutcome, Outcome};
use crate::state::State;
use crate::testutil::*;

fn load(rs: crate::proto::admin::ResolverState) -> State {
    State::from_proto(rs, "acc").expect("state")
}

fn run<'s>(
    st: &'s State,
    ctx: &str,
    flags: &[&str],
    mode: Mode,
    records: &[MaterializationRecord],
) -> Result<Outcome<'s>, Error> {
    let client = client_for(st, SECRET)?;
    let ctx = parse_context(ctx.as_bytes())?;
    let names: Vec<String> = flags.iter().map(|s| s.to_string()).collect();
    resolve(st, client, &ctx, &names, mode, records)
}

fn resolved(o: Outcome<'_>) -> (Vec<FlagOutcome<'_>>, Vec<MaterializationRecord>) {
    match o {
        Outcome::Resolved { flags, writes } => (flags, writes),
        Outcome::Suspended { reads } => panic!("unexpectedly suspended: {reads:?}"),
    }
}

fn one<'s>(st: &'s State, ctx: &str, flag: &str) -> FlagOutcome<'s> {
    let (mut flags, _) = resolved(run(st, ctx, &[flag], Mode::Complete, &[]).unwrap());
    assert_eq!(flags.len(), 1);
    flags.remove(0)
}

fn rec(u: &str, m: &str, r: &str, v: &str) -> MaterializationRecord {
    MaterializationRecord { unit: u.into(), materialization: m.into(), rule: r.into(), variant: v.into() }
}

fn simple_state() -> State {
    let on = variant("on", r#"{"enabled": true}"#);
    load(resolver_state(
        vec![
            flag(
                "flags/a",
                vec![on.clone()],
                vec![rule(
                    "flags/a/rules/r1",
                    "segments/se",
                    "",
                    1000,
                    vec![to_variant("a1", "on", vec![range(0, 1000)])],
                )],
            ),
            flag(
                "flags/b",
                vec![on],
                vec![rule(
                    "flags/b/rules/r1",
                    "segments/all",
                    "",
                    1000,
                    vec![to_variant("b1", "on", vec![range(0, 1000)])],
                )],
            ),
        ],
        vec![
            segment("segments/se", vec![criterion_attr_eq("country", "SE")], Some(r#ref("c1"))),
            catch_all("segments/all"),
        ],
    ))
}

#[test]
fn match_and_no_match() {
    let st = simple_state();
    let o = one(&st, r#"{"targeting_key":"u","country":"SE"}"#, "flags/a");
    assert_eq!(o.reason, R::Match);
    assert_eq!(o.variant_name(), "on");
    assert_eq!(o.rule_name(), "flags/a/rules/r1");
    assert_eq!(o.assignment_id, "a1");
    assert!(o.should_apply());
    let o = one(&st, r#"{"targeting_key":"u","country":"US"}"#, "flags/a");
    assert_eq!(o.reason, R::NoSegmentMatch);
    assert!(o.variant.is_none() && o.rule.is_none() && !o.should_apply());
}

#[test]
fn flag_selection() {
    let mut rs = resolver_state(vec![], vec![catch_all("segments/all")]);
    let r = || rule("r", "segments/all", "", 1, vec![to_variant("x", "on", vec![range(0, 1)])]);
    rs.flags.push(flag("flags/a", vec![variant("on", "{}")], vec![r()]));
    let mut archived = flag("flags/archived", vec![variant("on", "{}")], vec![r()]);
    archived.state = FlagState::Archived as i32;
    rs.flags.push(archived);
    let mut other = flag("flags/other", vec![variant("on", "{}")], vec![r()]);
    other.clients = vec!["clients/other".into()];
    rs.flags.push(other);
    rs.flags.push(flag("flags/b", vec![variant("on", "{}")], vec![r()]));
    let st = load(rs);
    let names = |o: Outcome| resolved(o).0.iter().map(|f| f.flag.name.clone()).collect::<Vec<_>>();
    assert_eq!(names(run(&st, "{}", &[], Mode::Complete, &[]).unwrap()), vec!["flags/a", "flags/b"]);
    assert_eq!(
        names(
            run(&st, "{}", &["flags/b", "flags/nope", "flags/archived", "flags/other", "flags/b"], Mode::Complete, &[])
                .unwrap()
        ),
        vec!["flags/b"]
    );
}

#[test]
fn too_many_flags_fail_the_request() {
    let flags = (0..1001).map(|i| flag(&format!("flags/f{i}"), vec![], vec![])).collect();
    let st = load(resolver_state(flags, vec![]));
    let err = run(&st, "{}", &[], Mode::Complete, &[]).unwrap_err();
    assert_eq!(err, Error::TooManyFlags { count: 1001, max: 1000 });
    assert_eq!(err.kind(), ErrorKind::TooManyFlags);
    let err = err.to_string();
    assert!(err.contains("too many flags"), "{err}");
}

#[test]
fn unknown_secret_is_masked() {
    let st = simple_state();
    let err = client_for(&st, "my-very-secret-value").unwrap_err();
    assert_eq!(err.kind(), ErrorKind::UnknownClientSecret);
    let err = err.to_string();
    assert!(err.contains("client secret not found"));
    assert!(!err.contains("my-very-secret-value") && !err.contains("secret-value"));
}

#[test]
fn targeting_key_rules() {
    let on = variant("on", r#"{"v": 1}"#);
    let full = |name: &str, sel: &str| {
        rule(name, "segments/all", sel, 1000, vec![to_variant("a", "on", vec![range(0, 1000)])])
    };
    let half = |name: &str, sel: &str| {
        rule(
            name,
            "segments/all",
            sel,
            1000,
            vec![to_variant("a", "on", vec![range(0, 500)]), to_variant("b", "on", vec![range(500, 1000)])],
        )
    };
    let st = load(resolver_state(
        vec![
            flag("flags/full-default", vec![on.clone()], vec![full("r", "")]),
            flag("flags/full-explicit", vec![on.clone()], vec![full("r", "targeting_key")]),
            flag("flags/half-default", vec![on.clone()], vec![half("r", "")]),
            flag("flags/custom", vec![on], vec![full("r1", "user.id"), full("r2", "")]),
        ],
        vec![catch_all("segments/all")],
    ));
    // blank selector: a missing key resolves without a unit; a full rollout still matches
    let o = one(&st, "{}", "flags/full-default");
    assert_eq!((o.reason, o.unit), (R::Match, None));
    // an explicit selector with a missing key skips the rule
    assert_eq!(one(&st, "{}", "flags/full-explicit").reason, R::NoSegmentMatch);
    // a partial rollout needs a unit
    assert_eq!(one(&st, "{}", "flags/half-default").reason, R::NoSegmentMatch);
    // invalid key: tolerated for a full rollout with the blank selector only
    assert_eq!(one(&st, r#"{"targeting_key":{}}"#, "flags/full-default").reason, R::Match);
    assert_eq!(one(&st, r#"{"targeting_key":1.5}"#, "flags/full-explicit").reason, R::TargetingKeyError);
    assert_eq!(one(&st, r#"{"targeting_key":true}"#, "flags/half-default").reason, R::TargetingKeyError);
    let long = "x".repeat(101);
    let o = one(&st, &format!(r#"{{"targeting_key":"{long}"}}"#), "flags/full-explicit");
    assert_eq!(o.reason, R::TargetingKeyError);
    assert!(o.variant.is_none() && o.rule.is_none() && o.assignment_id.is_empty());
    let ok = "x".repeat(100);
    assert_eq!(one(&st, &format!(r#"{{"targeting_key":"{ok}"}}"#), "flags/full-explicit").reason, R::Match);
    // 100 bytes, not characters
    let wide = "é".repeat(51);
    assert_eq!(
        one(&st, &format!(r#"{{"targeting_key":"{wide}"}}"#), "flags/full-explicit").reason,
        R::TargetingKeyError
    );
    // whole numbers format without decimals
    assert_eq!(one(&st, r#"{"targeting_key":42.0}"#, "flags/full-explicit").unit.as_deref(), Some("42"));
    // a nested custom selector; missing -> the next rule
    let o = one(&st, r#"{"user":{"id":"u7"}}"#, "flags/custom");
    assert_eq!((o.rule_name(), o.unit.as_deref(), o.selector.as_str()), ("r1", Some("u7"), "user.id"));
    let o = one(&st, r#"{"targeting_key":"t"}"#, "flags/custom");
    assert_eq!((o.rule_name(), o.selector.as_str()), ("r2", "targeting_key"));
}

#[test]
fn bucketing_uses_segment_id_and_unit() {
    let st = load(resolver_state(
        vec![flag(
            "flags/ab",
            vec![variant("a", r#"{"g":"a"}"#), variant("b", r#"{"g":"b"}"#)],
            vec![rule(
                "r",
                "segments/all",
                "",
                10,
                vec![to_variant("A", "a", vec![range(0, 5)]), to_variant("B", "b", vec![range(5, 10)])],
            )],
        )],
        vec![catch_all("segments/all")],
    ));
    for u in ["u1", "u2", "u3", "u4", "u5", "u6", "123"] {
        let b = bucket(hash(&format!("all|{u}")), 10).unwrap();
        let want = if b < 5 { "a" } else { "b" };
        let o = one(&st, &format!(r#"{{"targeting_key":"{u}"}}"#), "flags/ab");
        assert_eq!(o.variant_name(), want, "unit {u}");
    }
    // a number key buckets like its text
    let a = one(&st, r#"{"targeting_key":123}"#, "flags/ab");
    assert_eq!(a.variant_name(), one(&st, r#"{"targeting_key":"123"}"#, "flags/ab").variant_name());
}

#[test]
fn gaps_in_ranges_go_to_the_next_rule_and_bucket_count_zero_errors() {
    let st = load(resolver_state(
        vec![
            flag(
                "flags/gap",
                vec![variant("on", "{}")],
                vec![
                    rule(
                        "r1",
                        "segments/all",
                        "",
                        1000,
                        vec![to_variant("a", "on", vec![range(0, 0)]), to_variant("b", "on", vec![range(1, 1)])],
                    ),
                    rule("r2", "segments/all", "", 1000, vec![to_variant("c", "on", vec![range(0, 1000)])]),
                ],
            ),
            flag(
                "flags/zero",
                vec![variant("on", "{}")],
                vec![rule("r", "segments/all", "", 0, vec![to_variant("a", "on", vec![range(0, 5)])])],
            ),
            flag(
                "flags/missing-variant",
                vec![],
                vec![rule("r", "segments/all", "", 1, vec![to_variant("a", "nope", vec![range(0, 1)])])],
            ),
        ],
        vec![catch_all("segments/all")],
    ));
    assert_eq!(one(&st, r#"{"targeting_key":"u"}"#, "flags/gap").rule_name(), "r2");
    assert!(run(&st, r#"{"targeting_key":"u"}"#, &["flags/zero"], Mode::Complete, &[]).is_err());
    assert!(run(&st, r#"{"targeting_key":"u"}"#, &["flags/missing-variant"], Mode::Complete, &[]).is_err());
    let zero = run(&st, r#"{"targeting_key":"u"}"#, &["flags/zero"], Mode::Complete, &[]).unwrap_err();
    assert_eq!(zero, Error::InvalidBucketCount { rule: "r".into(), bucket_count: 0 });
    assert_eq!(zero.kind(), ErrorKind::InvalidFlag);
    let missing = run(&st, r#"{"targeting_key":"u"}"#, &["flags/missing-variant"], Mode::Complete, &[]).unwrap_err();
    assert_eq!(missing.kind(), ErrorKind::InvalidFlag);
    assert_eq!(missing.to_string(), "flag flags/missing-variant rule r assigns unknown variant nope");
}

#[test]
fn a_second_write_of_one_materialization_record_fails_the_request() {
    // Two flags whose rules share a name and a write materialization: one unit would get
    // two records for the same (unit, materialization, rule).
    let on = variant("on", "{}");
    let writer = || {
        with_mat(
            rule("r", "segments/all", "", 1, vec![to_variant("a", "on", vec![range(0, 1)])]),
            "",
            "m",
            false,
            false,
        )
    };
    let st = load(resolver_state(
        vec![flag("flags/w1", vec![on.clone()], vec![writer()]), flag("flags/w2", vec![on], vec![writer()])],
        vec![catch_all("segments/all")],
    ));
    let ctx = r#"{"targeting_key":"u"}"#;
    assert!(run(&st, ctx, &["flags/w1"], Mode::Complete, &[]).is_ok());
    let err = run(&st, ctx, &["flags/w1", "flags/w2"], Mode::Complete, &[]).unwrap_err();
    assert_eq!(err, Error::DuplicateMaterializationWrite { rule: "r".into(), materialization: "m".into() });
    assert_eq!(err.kind(), ErrorKind::DuplicateMaterializationWrite);
}

#[test]
fn fallthrough_and_client_default() {
    let st = load(resolver_state(
        vec![
            flag(
                "flags/ft",
                vec![variant("t", r#"{"c":"red"}"#)],
                vec![
                    rule("r1", "segments/all", "", 1, vec![fallthrough("ft", vec![range(0, 1)])]),
                    rule("r2", "segments/se", "", 1, vec![to_variant("m", "t", vec![range(0, 1)])]),
                ],
            ),
            flag(
                "flags/cd",
                vec![],
                vec![rule("r1", "segments/all", "", 1, vec![client_default("cd", vec![range(0, 1)])])],
            ),
        ],
        vec![
            catch_all("segments/all"),
            segment("segments/se", vec![criterion_attr_eq("country", "SE")], Some(r#ref("c1"))),
        ],
    ));
    let o = one(&st, r#"{"targeting_key":"u","country":"SE"}"#, "flags/ft");
    assert_eq!((o.reason, o.variant_name(), o.rule_name()), (R::Match, "t", "r2"));
    assert_eq!(o.fallthroughs.len(), 1);
    assert_eq!(
        (o.fallthroughs[0].rule.as_str(), o.fallthroughs[0].assignment_id.as_str(), o.fallthroughs[0].unit.as_str()),
        ("r1", "ft", "u")
    );
    let o = one(&st, r#"{"targeting_key":"u","country":"US"}"#, "flags/ft");
    assert_eq!(o.reason, R::NoSegmentMatch);
    assert!(o.should_apply(), "a recorded fallthrough makes the flag apply");
    let o = one(&st, r#"{"targeting_key":"u"}"#, "flags/cd");
    assert_eq!((o.reason, o.variant_name(), o.assignment_id.as_str()), (R::Match, "", "cd"));
    assert!(o.is_client_default() && o.should_apply());
}

#[test]
fn disabled_rules_environments_and_missing_segments() {
    let mut disabled = rule("r1", "segments/all", "", 1, vec![to_variant("a", "on", vec![range(0, 1)])]);
    disabled.enabled = false;
    let mut staging = rule("r2", "segments/all", "", 1, vec![to_variant("b", "on", vec![range(0, 1)])]);
    staging.environments = vec!["staging".into()];
    let missing = rule("r3", "segments/gone", "", 1, vec![to_variant("c", "on", vec![range(0, 1)])]);
    let mut prod = rule("r4", "segments/all", "", 1, vec![to_variant("d", "on", vec![range(0, 1)])]);
    prod.environments = vec!["staging".into(), "prod".into()];
    let st = load(resolver_state(
        vec![flag("flags/x", vec![variant("on", "{}")], vec![disabled, staging, missing, prod])],
        vec![catch_all("segments/all")],
    ));
    assert_eq!(one(&st, "{}", "flags/x").assignment_id, "d");
}

#[test]
fn bitsets_with_and_without_unit() {
    let mut rs = resolver_state(
        vec![
            flag(
                "flags/bs",
                vec![variant("on", "{}")],
                vec![rule("r", "segments/bs", "", 1, vec![to_variant("a", "on", vec![range(0, 1)])])],
            ),
            flag(
                "flags/full",
                vec![variant("on", "{}")],
                vec![rule("r", "segments/full", "", 1, vec![to_variant("a", "on", vec![range(0, 1)])])],
            ),
        ],
        vec![catch_all("segments/bs"), catch_all("segments/full")],
    );
    let inside = bitset_index("acc", "in-unit");
    rs.bitsets.push(bitset("segments/bs", &[inside]));
    let all: Vec<u64> = (0..1_000_000).collect();
    rs.bitsets.push(bitset("segments/full", &all));
    let st = load(rs);
    assert_eq!(one(&st, r#"{"targeting_key":"in-unit"}"#, "flags/bs").reason, R::Match);
    let outside = (0..100).map(|i| format!("u{i}")).find(|u| bitset_index("acc", u) != inside).unwrap();
    assert_eq!(one(&st, &format!(r#"{{"targeting_key":"{outside}"}}"#), "flags/bs").reason, R::NoSegmentMatch);
    assert_eq!(one(&st, "{}", "flags/bs").reason, R::NoSegmentMatch, "no unit: only an all-set bitset passes");
    assert_eq!(one(&st, "{}", "flags/full").reason, R::Match);
}

#[test]
fn segment_references_cycles_and_diamonds() {
    let se = || criterion_attr_eq("country", "SE");
    let st = load(resolver_state(
        ["parent", "self", "cyc-a", "diamond", "and-not"]
            .iter()
            .map(|s| {
                flag(
                    &format!("flags/{s}"),
                    vec![variant("on", "{}")],
                    vec![rule("r", &format!("segments/{s}"), "", 1, vec![to_variant("a", "on", vec![range(0, 1)])])],
                )
            })
            .collect(),
        vec![
            segment("segments/se", vec![se()], Some(r#ref("c1"))),
            segment("segments/parent", vec![criterion_segment("segments/se")], Some(r#ref("c1"))),
            segment(
                "segments/self",
                vec![criterion_segment("segments/self"), se()],
                Some(or(vec![r#ref("c1"), r#ref("c2")])),
            ),
            segment("segments/cyc-a", vec![criterion_segment("segments/cyc-b")], Some(r#ref("c1"))),
            segment("segments/cyc-b", vec![criterion_segment("segments/cyc-a")], Some(r#ref("c1"))),
            segment(
                "segments/diamond",
                vec![criterion_segment("segments/parent"), criterion_segment("segments/se")],
                Some(and(vec![r#ref("c1"), r#ref("c2")])),
            ),
            segment(
                "segments/and-not",
                vec![se(), criterion_segment("segments/nope")],
                Some(and(vec![r#ref("c1"), not(r#ref("c2")), not(r#ref("missing-id"))])),
            ),
        ],
    ));
    let se_ctx = r#"{"country":"SE"}"#;
    assert_eq!(one(&st, se_ctx, "flags/parent").reason, R::Match);
    assert_eq!(one(&st, r#"{"country":"NO"}"#, "flags/parent").reason, R::NoSegmentMatch);
    assert_eq!(
        one(&st, se_ctx, "flags/self").reason,
        R::Match,
        "the self reference is false, the other operand decides"
    );
    assert_eq!(one(&st, r#"{"country":"NO"}"#, "flags/self").reason, R::NoSegmentMatch);
    assert_eq!(one(&st, se_ctx, "flags/cyc-a").reason, R::NoSegmentMatch);
    assert_eq!(one(&st, se_ctx, "flags/diamond").reason, R::Match);
    assert_eq!(one(&st, se_ctx, "flags/and-not").reason, R::Match);
}

#[test]
fn unrecognized_rules_skip_the_rule() {
    use crate::proto::types::targeting::criterion::{AttributeCriterion, Criterion as CKind};
    use crate::proto::types::targeting::Criterion;
    let bad =
        Criterion { criterion: Some(CKind::Attribute(AttributeCriterion { attribute_name: "x".into(), rule: None })) };
    let st = load(resolver_state(
        vec![flag(
            "flags/u",
            vec![variant("on", "{}")],
            vec![
                rule("r1", "segments/bad", "", 1, vec![to_variant("a", "on", vec![range(0, 1)])]),
                rule("r2", "segments/empty-crit", "", 1, vec![to_variant("b", "on", vec![range(0, 1)])]),
                rule("r3", "segments/short", "", 1, vec![to_variant("c", "on", vec![range(0, 1)])]),
            ],
        )],
        vec![
            segment("segments/bad", vec![bad.clone()], Some(r#ref("c1"))),
            segment("segments/empty-crit", vec![Criterion { criterion: None }], Some(r#ref("c1"))),
            // and() short-circuits before the unrecognized criterion
            segment(
                "segments/short",
                vec![criterion_attr_eq("country", "SE"), bad],
                Some(or(vec![r#ref("c1"), r#ref("c2")])),
            ),
        ],
    ));
    assert_eq!(one(&st, r#"{"country":"SE"}"#, "flags/u").rule_name(), "r3");
    assert_eq!(one(&st, r#"{"country":"NO"}"#, "flags/u").reason, R::NoSegmentMatch);
}

fn sticky_state() -> State {
    let vs = vec![variant("treatment", r#"{"color":"red"}"#), variant("control", r#"{"color":"blue"}"#)];
    let split = || {
        vec![to_variant("a1", "treatment", vec![range(0, 500)]), to_variant("a2", "control", vec![range(500, 1000)])]
    };
    let mut rs = resolver_state(
        vec![
            flag(
                "flags/sticky",
                vs.clone(),
                vec![with_mat(
                    rule("flags/sticky/rules/r1", "segments/se", "", 1000, split()),
                    "materializations/m",
                    "materializations/m",
                    false,
                    false,
                )],
            ),
            flag(
                "flags/must",
                vs.clone(),
                vec![with_mat(
                    rule("flags/must/rules/r1", "segments/se", "", 1000, split()),
                    "materializations/m",
                    "",
                    true,
                    false,
                )],
            ),
            flag(
                "flags/ignore",
                vs.clone(),
                vec![with_mat(
                    rule("flags/ignore/rules/r1", "segments/se", "", 1000, split()),
                    "materializations/m",
                    "",
                    false,
                    true,
                )],
            ),
            flag(
                "flags/write-only",
                vs.clone(),
                vec![with_mat(
                    rule("flags/write-only/rules/r1", "segments/all", "", 1000, split()),
                    "",
                    "materializations/w",
                    false,
                    false,
                )],
            ),
            flag("flags/matseg", vs.clone(), vec![rule("flags/matseg/rules/r1", "segments/matseg", "", 1000, split())]),
            flag(
                "flags/bloomseg",
                vs.clone(),
                vec![rule("flags/bloomseg/rules/r1", "segments/bloomseg", "", 1000, split())],
            ),
            flag("flags/plain", vs, vec![rule("flags/plain/rules/r1", "segments/all", "", 1000, split())]),
        ],
        vec![
            catch_all("segments/all"),
            segment("segments/se", vec![criterion_attr_eq("country", "SE")], Some(r#ref("c1"))),
            segment("segments/matseg", vec![criterion_materialized("materializations/seg")], Some(r#ref("c1"))),
            segment("segments/bloomseg", vec![criterion_materialized("materializations/bloom")], Some(r#ref("c1"))),
        ],
    );
    rs.bloom_filters.push(bloom("materializations/bloom", &["u-in"], 1024, 5));
    load(rs)
}

fn normal_variant(unit: &str) -> &'static str {
    if bucket(hash(&format!("se|{unit}")), 1000).unwrap() < 500 {
        "treatment"
    } else {
        "control"
    }
}

#[test]
fn materialization_unsupported() {
    let st = sticky_state();
    let ctx = r#"{"targeting_key":"u1","country":"SE"}"#;
    let (flags, writes) = resolved(
        run(
            &st,
            ctx,
            &["flags/sticky", "flags/write-only", "flags/matseg", "flags/bloomseg", "flags/plain"],
            Mode::Unsupported,
            &[],
        )
        .unwrap(),
    );
    let reasons: Vec<_> = flags.iter().map(|f| f.reason).collect();
    assert_eq!(reasons[..3], [R::MaterializationNotSupported; 3]);
    assert_eq!(reasons[3], R::NoSegmentMatch, "a bloom filter needs no store (u1 is not in it)");
    assert_eq!(reasons[4], R::Match);
    assert!(writes.is_empty());
    // without a unit nothing is read or written
    let (flags, _) = resolved(
        run(&st, r#"{"country":"SE"}"#, &["flags/sticky", "flags/write-only"], Mode::Unsupported, &[]).unwrap(),
    );
    assert_eq!(flags[0].reason, R::NoSegmentMatch);
    assert_eq!(flags[1].reason, R::NoSegmentMatch, "partial rollout without a unit");
}

#[test]
fn materialization_discovery_then_complete() {
    let st = sticky_state();
    let ctx = r#"{"targeting_key":"u1","country":"SE"}"#;
    match run(&st, ctx, &["flags/sticky", "flags/plain", "flags/matseg"], Mode::Discovery, &[]).unwrap() {
        Outcome::Suspended { reads } => assert_eq!(
            reads,
            vec![
                rec("u1", "materializations/m", "flags/sticky/rules/r1", ""),
                rec("u1", "materializations/m", "", ""),
                rec("u1", "materializations/seg", "", ""),
            ]
        ),
        other => panic!("{other:?}"),
    }
    // no flag needs a read: discovery resolves at once (writes included)
    let (flags, writes) = resolved(run(&st, ctx, &["flags/plain", "flags/write-only"], Mode::Discovery, &[]).unwrap());
    assert_eq!(flags[1].reason, R::Match);
    assert_eq!(writes, vec![rec("u1", "materializations/w", "flags/write-only/rules/r1", flags[1].variant_name())]);

    // complete with nothing recorded: normal bucketing plus a write for the sticky rule
    let (flags, writes) = resolved(run(&st, ctx, &["flags/sticky", "flags/matseg"], Mode::Complete, &[]).unwrap());
    let v = normal_variant("u1");
    assert_eq!(flags[0].variant_name(), v);
    assert_eq!(flags[1].reason, R::NoSegmentMatch);
    assert_eq!(writes, vec![rec("u1", "materializations/m", "flags/sticky/rules/r1", v)]);

    // a recorded variant wins over bucketing
    let other = if v == "treatment" { "control" } else { "treatment" };
    let recs =
        [rec("u1", "materializations/m", "flags/sticky/rules/r1", other), rec("u1", "materializations/seg", "", "")];
    let (flags, _) = resolved(run(&st, ctx, &["flags/sticky", "flags/matseg"], Mode::Complete, &recs).unwrap());
    assert_eq!(flags[0].variant_name(), other);
    assert_eq!(flags[1].reason, R::Match);
    // ...but the segment's targeting still applies (read mode default)
    let (flags, _) = resolved(
        run(&st, r#"{"targeting_key":"u1","country":"NO"}"#, &["flags/sticky"], Mode::Complete, &recs).unwrap(),
    );
    assert_eq!(flags[0].reason, R::NoSegmentMatch);
}

#[test]
fn materialization_read_modes() {
    let st = sticky_state();
    let no = r#"{"targeting_key":"u1","country":"NO"}"#;
    let se = r#"{"targeting_key":"u1","country":"SE"}"#;
    // must match: not recorded -> skip
    let (f, _) = resolved(run(&st, se, &["flags/must"], Mode::Complete, &[]).unwrap());
    assert_eq!(f[0].reason, R::NoSegmentMatch);
    let recs = [rec("u1", "materializations/m", "flags/must/rules/r1", "control")];
    let (f, _) = resolved(run(&st, se, &["flags/must"], Mode::Complete, &recs).unwrap());
    assert_eq!(f[0].variant_name(), "control");
    // targeting ignored: recorded units match even outside the segment
    let recs = [rec("u1", "materializations/m", "flags/ignore/rules/r1", "treatment")];
    let (f, _) = resolved(run(&st, no, &["flags/ignore"], Mode::Complete, &recs).unwrap());
    assert_eq!(f[0].variant_name(), "treatment");
    // §8: in the materialization without a variant for the rule -> matched, bucketed
    let recs = [rec("u1", "materializations/m", "", "")];
    let (f, _) = resolved(run(&st, no, &["flags/ignore"], Mode::Complete, &recs).unwrap());
    assert_eq!((f[0].reason, f[0].variant_name()), (R::Match, normal_variant("u1")));
    // a recorded variant no assignment gives -> bucketed
    let recs = [rec("u1", "materializations/m", "flags/ignore/rules/r1", "gone")];
    let (f, _) = resolved(run(&st, no, &["flags/ignore"], Mode::Complete, &recs).unwrap());
    assert_eq!(f[0].variant_name(), normal_variant("u1"));
}

#[test]
fn sticky_variant_given_by_two_assignments_uses_the_bucket() {
    let vs = vec![variant("on", r#"{"x":1}"#)];
    let st = load(resolver_state(
        vec![flag(
            "flags/two",
            vs,
            vec![with_mat(
                rule(
                    "r",
                    "segments/se",
                    "",
                    1000,
                    vec![to_variant("a1", "on", vec![range(0, 500)]), to_variant("a2", "on", vec![range(500, 1000)])],
                ),
                "m",
                "m",
                false,
                false,
            )],
        )],
        vec![segment("segments/se", vec![criterion_attr_eq("country", "SE")], Some(r#ref("c1")))],
    ));
    for u in ["u1", "u2", "u3", "u4"] {
        let b = bucket(hash(&format!("se|{u}")), 1000).unwrap();
        let (f, _) = resolved(
            run(
                &st,
                &format!(r#"{{"targeting_key":"{u}","country":"SE"}}"#),
                &[],
                Mode::Complete,
                &[rec(u, "m", "r", "on")],
            )
            .unwrap(),
        );
        assert_eq!(f[0].assignment_id, if b < 500 { "a1" } else { "a2" });
    }
}

#[test]
fn bloom_filter_segments() {
    let st = sticky_state();
    let (f, _) = resolved(run(&st, r#"{"targeting_key":"u-in"}"#, &["flags/bloomseg"], Mode::Discovery, &[]).unwrap());
    assert_eq!(f[0].reason, R::Match);
    let (f, _) = resolved(run(&st, r#"{"targeting_key":"u-out"}"#, &["flags/bloomseg"], Mode::Discovery, &[]).unwrap());
    assert_eq!(f[0].reason, R::NoSegmentMatch);
    let (f, _) = resolved(run(&st, "{}", &["flags/bloomseg"], Mode::Discovery, &[]).unwrap());
    assert_eq!(f[0].reason, R::NoSegmentMatch, "a materialized segment needs a unit");
}

#[test]
fn values_are_backfilled_from_the_schema() {
    fn schema(fields: Vec<(&str, SchemaType)>) -> StructFlagSchema {
        StructFlagSchema {
            schema: fields.into_iter().map(|(k, t)| (k.to_string(), FlagSchema { schema_type: Some(t) })).collect(),
        }
    }
    use crate::proto::types::flag_schema::{BoolFlagSchema, StringFlagSchema};
    let inner = schema(vec![
        ("deep", SchemaType::BoolSchema(BoolFlagSchema {})),
        ("z", SchemaType::StringSchema(StringFlagSchema {})),
    ]);
    let s = schema(vec![
        ("a", SchemaType::StringSchema(StringFlagSchema {})),
        ("m", SchemaType::StringSchema(StringFlagSchema {})),
        ("n", SchemaType::StructSchema(inner.clone())),
        ("o", SchemaType::StructSchema(inner)),
    ]);
    let v = json_struct(r#"{"m":"x","n":{"z":"q"},"extra":[1,2.5,"s\"q"]}"#);
    assert_eq!(
        value_json(Some(&v), Some(&s)),
        r#"{"a":null,"extra":[1,2.5,"s\"q"],"m":"x","n":{"deep":null,"z":"q"},"o":null}"#
    );
    assert_eq!(value_json(None, None), "{}");
    assert_eq!(value_json(Some(&v), None), r#"{"extra":[1,2.5,"s\"q"],"m":"x","n":{"z":"q"}}"#);
}

#[test]
fn an_early_stop_while_reads_are_missing_defers_the_flag() {
    let st = load(resolver_state(
        vec![flag(
            "flags/x",
            vec![variant("on", "{}")],
            vec![
                with_mat(
                    rule("r1", "segments/all", "", 1, vec![to_variant("a", "on", vec![range(0, 1)])]),
                    "m",
                    "",
                    false,
                    false,
                ),
                rule("r2", "segments/all", "customKey", 2, vec![to_variant("b", "on", vec![range(0, 1)])]),
            ],
        )],
        vec![catch_all("segments/all")],
    ));
    let ctx = r#"{"targeting_key":"u","customKey":1.5}"#;
    match run(&st, ctx, &[], Mode::Discovery, &[]).unwrap() {
        Outcome::Suspended { reads } => assert_eq!(reads.len(), 2),
        other => panic!("{other:?}"),
    }
    let (f, _) = resolved(run(&st, ctx, &[], Mode::Complete, &[rec("u", "m", "r1", "on")]).unwrap());
    assert_eq!(f[0].rule_name(), "r1");
    let (f, _) = resolved(run(&st, ctx, &[], Mode::Complete, &[]).unwrap());
    assert_eq!(f[0].reason, R::Match, "r1 matches by normal segment matching");
}
