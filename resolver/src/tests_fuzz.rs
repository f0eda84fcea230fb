//! Robustness: mutated states and random contexts must never panic (a panic is a trap).
use crate::instance::Instance;
use crate::proto::abi::{Configure, FlushLogs, MaterializationMode, ResolveCall, SetState};
use crate::proto::admin::resolver_state::packed_bitset;
use crate::proto::api::MaterializationRecord;
use crate::rng::Rng;
use crate::testutil::*;
use prost::Message;

fn rich_state() -> Vec<u8> {
    let vs = vec![variant("on", r#"{"a":1,"b":{"c":[1,"x",null]}}"#), variant("off", r#"{"a":0}"#)];
    let split = || {
        vec![
            to_variant("a1", "on", vec![range(0, 3)]),
            fallthrough("f", vec![range(3, 6)]),
            client_default("cd", vec![range(6, 10)]),
        ]
    };
    let mut rs = resolver_state(
        vec![
            flag(
                "flags/f1",
                vs.clone(),
                vec![rule("r1", "segments/s1", "", 10, split()), rule("r2", "segments/s2", "id", 10, split())],
            ),
            flag(
                "flags/f2",
                vs.clone(),
                vec![with_mat(rule("r3", "segments/s3", "", 10, split()), "m1", "m1", false, false)],
            ),
            flag("flags/f3", vs, vec![with_mat(rule("r4", "segments/s1", "", 10, split()), "m2", "m2", true, true)]),
        ],
        vec![
            segment(
                "segments/s1",
                vec![criterion_attr_eq("country", "SE"), criterion_segment("segments/s2")],
                Some(or(vec![r#ref("c1"), r#ref("c2")])),
            ),
            segment(
                "segments/s2",
                vec![criterion_materialized("m3"), criterion_segment("segments/s1")],
                Some(and(vec![r#ref("c1"), not(r#ref("c2"))])),
            ),
            segment("segments/s3", vec![criterion_attr_eq("x.y", "1")], Some(r#ref("c1"))),
        ],
    );
    rs.bitsets.push(bitset("segments/s3", &[1, 2, 3]));
    rs.bitsets.push(crate::proto::admin::resolver_state::PackedBitset {
        segment: "segments/s1".into(),
        bitset: Some(packed_bitset::Bitset::FullBitset(true)),
    });
    rs.bloom_filters.push(bloom("m3", &["u1"], 256, 3));
    rs.encode_to_vec()
}

fn random_json(rng: &mut Rng, depth: u32) -> String {
    let pick = rng.next_u64() % if depth > 3 { 6 } else { 8 };
    match pick {
        0 => "null".into(),
        1 => "true".into(),
        2 => format!("{}", (rng.next_u64() % 2000) as f64 / 7.0 - 100.0),
        3 => ["NaN", "Infinity", "-Infinity", "1e308", "-0", "12345678901234567890"][(rng.next_u64() % 6) as usize]
            .into(),
        4 => format!(
            "\"{}\"",
            ["SE", "u1", "2022-01-01T00:00:00Z", "1.2.3", "", "\\u00e9\\ud83d\\ude00", "x\\\"y"]
                [(rng.next_u64() % 7) as usize]
        ),
        5 => format!("\"{}\"", "k".repeat((rng.next_u64() % 120) as usize)),
        6 => {
            let n = rng.next_u64() % 4;
            let items: Vec<String> = (0..n).map(|_| random_json(rng, depth + 1)).collect();
            format!("[{}]", items.join(","))
        }
        _ => random_object(rng, depth + 1),
    }
}

fn random_object(rng: &mut Rng, depth: u32) -> String {
    let keys = ["targeting_key", "id", "country", "x", "y", "x.y"];
    let n = rng.next_u64() % 5;
    let fields: Vec<String> = (0..n)
        .map(|_| format!("\"{}\":{}", keys[(rng.next_u64() % keys.len() as u64) as usize], random_json(rng, depth)))
        .collect();
    format!("{{{}}}", fields.join(","))
}

#[test]
fn mutated_states_and_random_contexts_never_panic() {
    let base = rich_state();
    let mut rng = Rng::new(1234);
    let mut loaded = 0;
    for iter in 0..5000 {
        let mut bytes = base.clone();
        if iter > 0 {
            for _ in 0..(1 + rng.next_u64() % 2) {
                let i = (rng.next_u64() % bytes.len() as u64) as usize;
                match rng.next_u64() % 3 {
                    0 => bytes[i] = rng.next_u64() as u8,
                    1 => bytes.truncate(i),
                    _ => bytes.insert(i, rng.next_u64() as u8),
                }
                if bytes.is_empty() {
                    break;
                }
            }
        }
        let mut inst = Instance::new();
        inst.configure(Configure { rng_seed: iter, enable_apply_dedup: true, ..Default::default() });
        if inst.set_state(SetState { state: bytes, account_id: "acc".into() }).is_err() {
            continue;
        }
        loaded += 1;
        for k in 0..4 {
            let ctx = random_object(&mut rng, 0);
            let mode = (k % 3) as i32;
            let records = vec![MaterializationRecord {
                unit: "u1".into(),
                materialization: "m1".into(),
                rule: "r3".into(),
                variant: "on".into(),
            }];
            let call = ResolveCall {
                flags: vec![],
                context_json: ctx.into_bytes(),
                client_secret: SECRET.into(),
                apply: k % 2 == 0,
                now_unix_millis: k as i64,
                materialization_mode: if mode == 2 { MaterializationMode::Complete as i32 } else { mode },
                materializations: records,
                skip_logging: false,
            };
            let _ = inst.resolve(&call);
        }
        let _ = inst.flush_logs(FlushLogs { now_unix_millis: 10, max_assigned_bytes: 50 });
    }
    assert!(loaded > 100, "only {loaded} mutated states loaded");
}

#[test]
fn garbage_context_bytes_never_panic() {
    let mut inst = Instance::new();
    inst.set_state(SetState { state: rich_state(), account_id: "acc".into() }).unwrap();
    let mut rng = Rng::new(9);
    for _ in 0..3000 {
        let n = rng.next_u64() % 40;
        let mut bytes: Vec<u8> =
            (0..n).map(|_| b"{}[]\":,.-eE0123456789tfnulNaIy \\u\xff"[(rng.next_u64() % 34) as usize]).collect();
        if rng.next_u64() % 2 == 0 {
            bytes.insert(0, b'{');
        }
        let call = ResolveCall { context_json: bytes, client_secret: SECRET.into(), ..Default::default() };
        let _ = inst.resolve(&call);
    }
}

/// Timing probe (not a test): `CR_BENCH_STATE=/path/state.pb cargo test --release -- --ignored bench --nocapture`
#[test]
#[ignore]
fn bench_resolve() {
    let path = match std::env::var("CR_BENCH_STATE") {
        Ok(p) => p,
        Err(_) => return,
    };
    let state = std::fs::read(path).unwrap();
    let mut inst = Instance::new();
    inst.configure(Configure { rng_seed: 1, enable_apply_dedup: true, ..Default::default() });
    inst.set_state(SetState { state, account_id: "test-account".into() }).unwrap();
    for (label, flags, apply, skip) in [
        ("one flag apply", vec!["flags/simple-flag".to_string()], true, false),
        ("one flag", vec!["flags/simple-flag".to_string()], false, false),
        ("one flag skip_logging", vec!["flags/simple-flag".to_string()], false, true),
        ("all flags", vec![], false, false),
    ] {
        let call = ResolveCall {
            flags,
            context_json: br#"{"targeting_key":"user1","country":"SE","age":30}"#.to_vec(),
            client_secret: "test-secret".into(),
            apply,
            now_unix_millis: 1,
            materialization_mode: 1,
            skip_logging: skip,
            ..Default::default()
        };
        let n = 20000;
        let t = std::time::Instant::now();
        for _ in 0..n {
            let r = inst.resolve(&call).unwrap();
            assert!(!r.encode_to_vec().is_empty());
        }
        println!("{label}: {:.2} us", t.elapsed().as_secs_f64() * 1e6 / n as f64);
        let _ = inst.flush_logs(FlushLogs::default());
    }
}
