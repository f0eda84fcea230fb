//! Explain traces: why one flag resolved the way it did for one context.
//!
//! The resolver's own code path reports its steps through the [`Trace`] trait. Normal
//! resolves use [`NoTrace`], whose methods are empty and whose `ON` is `false`: after
//! monomorphization the hooks compile to nothing, so tracing costs nothing when off.
//! `cr_explain` uses [`JsonTrace`], which builds a tree and writes it as JSON
//! (the shape is documented on `Instance::explain_json`).
use std::fmt::Write as _;

use crate::json::{format_number, write_string};
use crate::materialize::ReadAnswer;
use crate::proto::admin::flag::rule::{assignment::Assignment as AssignmentKind, Assignment};
use crate::proto::admin::flag::Rule;
use crate::proto::types::targeting::{
    criterion::{attribute_criterion::Rule as AttrRule, AttributeCriterion},
    inner_rule::Rule as InnerRuleKind,
    range_rule::{End, Start},
    value::Value as RuleValue,
    Value as RV,
};
use crate::targeting::Tri;
use crate::value::{Context, Value};

/// Hooks called by `resolve_flag` and the targeting evaluator. Every method defaults to
/// doing nothing; implementations only pay for what they record.
pub trait Trace {
    /// `false` for the no-op tracer: guards any work done only to feed the trace.
    const ON: bool;
    fn rule(&mut self, _rule: &Rule) {}
    /// The rule was not used (and why); rule evaluation goes on with the next rule.
    fn skip(&mut self, _why: &'static str) {}
    /// Rule evaluation stopped with a reason-only result (e.g. TARGETING_KEY_ERROR).
    fn stop(&mut self, _why: &'static str) {}
    fn unit(&mut self, _selector: &str, _seen: Option<&Value>, _unit: Option<&str>) {}
    fn mat_read(&mut self, _materialization: &str, _answer: &ReadAnswer) {}
    fn seg_enter(&mut self, _name: &str, _targeting_only: bool) {}
    /// `bitset`: (index, allocated); `index` is `None` without a unit.
    fn seg_exit(&mut self, _targeting: Option<Tri>, _bitset: Option<(Option<u64>, bool)>, _result: Tri) {}
    /// The segment evaluation failed (unrecognized rule, materialization unsupported).
    fn seg_error(&mut self, _why: &'static str) {}
    fn seg_absent(&mut self, _name: &str, _why: &'static str) {}
    fn attribute(&mut self, _id: &str, _attr: &AttributeCriterion, _ctx: &Context, _matched: Option<bool>) {}
    fn seg_ref(&mut self, _id: &str, _result: Tri) {}
    fn materialized(&mut self, _id: &str, _name: &str, _source: &'static str, _result: Tri) {}
    fn criterion_missing(&mut self, _id: &str) {}
    /// `bucket` is `None` for a full rollout (no hashing).
    fn bucketing(
        &mut self,
        _unit: Option<&str>,
        _salt: &str,
        _bucket: Option<u64>,
        _count: i32,
        _chosen: Option<&Assignment>,
    ) {
    }
    fn sticky(&mut self, _variant: &str, _chosen: Option<&Assignment>) {}
    fn write(&mut self, _materialization: &str, _variant: &str) {}
    fn outcome(&mut self, _what: &'static str) {}
}

/// The tracer of normal resolves: records nothing.
pub struct NoTrace;

impl Trace for NoTrace {
    const ON: bool = false;
}

#[derive(Debug, Default)]
struct SegNode {
    name: String,
    targeting_only: bool,
    criteria: Vec<CritNode>,
    targeting: Option<Tri>,
    bitset: Option<(Option<u64>, bool)>,
    result: Option<Tri>,
    note: Option<&'static str>,
}

#[derive(Debug)]
enum CritBody {
    Attribute { attribute: String, rule_json: String, seen_json: Option<String>, reason: Option<&'static str> },
    Segment(SegNode),
    Materialized { name: String, source: &'static str },
    Missing,
}

#[derive(Debug)]
struct CritNode {
    id: String,
    body: CritBody,
    /// None: evaluation failed (unrecognized rule).
    matched: Option<Tri>,
}

#[derive(Debug, Default)]
struct RuleNode {
    name: String,
    segment: String,
    enabled: bool,
    environments: Vec<String>,
    selector: String,
    seen_json: Option<String>,
    unit: Option<String>,
    unit_looked_up: bool,
    mat_read: Option<(String, String, Option<String>)>,
    segments: Vec<SegNode>,
    bucketing: Option<String>,
    sticky: Option<String>,
    write: Option<(String, String)>,
    outcome: &'static str,
}

/// Records an explain trace as a tree.
#[derive(Debug, Default)]
pub struct JsonTrace {
    rules: Vec<RuleNode>,
    stack: Vec<SegNode>,
    /// A finished nested segment waiting for its `seg_ref` criterion.
    child: Option<SegNode>,
}

impl JsonTrace {
    pub fn new() -> Self {
        Self::default()
    }

    fn cur(&mut self) -> Option<&mut RuleNode> {
        self.rules.last_mut()
    }

    fn push_criterion(&mut self, c: CritNode) {
        if let Some(top) = self.stack.last_mut() {
            top.criteria.push(c);
        }
    }

    fn finish_segment(&mut self, seg: SegNode) {
        if self.stack.is_empty() {
            if let Some(r) = self.cur() {
                r.segments.push(seg);
            }
        } else {
            self.child = Some(seg);
        }
    }

    /// Writes the `"rules":[...]` member (without braces around it).
    pub fn write_rules(&self, out: &mut String) {
        out.push_str("\"rules\":[");
        for (i, r) in self.rules.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            write_rule(out, r);
        }
        out.push(']');
    }
}

impl Trace for JsonTrace {
    const ON: bool = true;

    fn rule(&mut self, rule: &Rule) {
        self.stack.clear();
        self.child = None;
        self.rules.push(RuleNode {
            name: rule.name.clone(),
            segment: rule.segment.clone(),
            enabled: rule.enabled,
            environments: rule.environments.clone(),
            outcome: "not_evaluated",
            ..Default::default()
        });
    }

    fn skip(&mut self, why: &'static str) {
        if let Some(r) = self.cur() {
            r.outcome = why;
        }
    }

    fn stop(&mut self, why: &'static str) {
        self.skip(why)
    }

    fn unit(&mut self, selector: &str, seen: Option<&Value>, unit: Option<&str>) {
        if let Some(r) = self.cur() {
            r.selector = selector.to_string();
            r.seen_json = seen.map(value_json);
            r.unit = unit.map(str::to_string);
            r.unit_looked_up = true;
        }
    }

    fn mat_read(&mut self, materialization: &str, answer: &ReadAnswer) {
        let (a, v) = match answer {
            ReadAnswer::Unknown => ("unknown", None),
            ReadAnswer::NotRecorded => ("not_recorded", None),
            ReadAnswer::Recorded(v) => ("recorded", v.clone()),
        };
        if let Some(r) = self.cur() {
            r.mat_read = Some((materialization.to_string(), a.to_string(), v));
        }
    }

    fn seg_enter(&mut self, name: &str, targeting_only: bool) {
        self.stack.push(SegNode { name: name.to_string(), targeting_only, ..Default::default() });
    }

    fn seg_exit(&mut self, targeting: Option<Tri>, bitset: Option<(Option<u64>, bool)>, result: Tri) {
        if let Some(mut seg) = self.stack.pop() {
            seg.targeting = targeting;
            seg.bitset = bitset;
            seg.result = Some(result);
            self.finish_segment(seg);
        }
    }

    fn seg_error(&mut self, why: &'static str) {
        if let Some(mut seg) = self.stack.pop() {
            seg.note = Some(why);
            self.finish_segment(seg);
        }
    }

    fn seg_absent(&mut self, name: &str, why: &'static str) {
        let seg = SegNode { name: name.to_string(), result: Some(Tri::False), note: Some(why), ..Default::default() };
        self.finish_segment(seg);
    }

    fn attribute(&mut self, id: &str, attr: &AttributeCriterion, ctx: &Context, matched: Option<bool>) {
        let seen = ctx.lookup(&attr.attribute_name);
        let reason = match matched {
            Some(false) => Some(crate::targeting::miss_reason(attr, ctx)),
            Some(true) => None,
            None => Some("unrecognized_rule"),
        };
        let mut rule_json = String::new();
        write_attr_rule(&mut rule_json, attr.rule.as_ref());
        self.push_criterion(CritNode {
            id: id.to_string(),
            body: CritBody::Attribute {
                attribute: attr.attribute_name.clone(),
                rule_json,
                seen_json: seen.map(value_json),
                reason,
            },
            matched: matched.map(Tri::from_bool),
        });
    }

    fn seg_ref(&mut self, id: &str, result: Tri) {
        let seg = self.child.take().unwrap_or_default();
        self.push_criterion(CritNode { id: id.to_string(), body: CritBody::Segment(seg), matched: Some(result) });
    }

    fn materialized(&mut self, id: &str, name: &str, source: &'static str, result: Tri) {
        self.push_criterion(CritNode {
            id: id.to_string(),
            body: CritBody::Materialized { name: name.to_string(), source },
            matched: Some(result),
        });
    }

    fn criterion_missing(&mut self, id: &str) {
        self.push_criterion(CritNode { id: id.to_string(), body: CritBody::Missing, matched: Some(Tri::False) });
    }

    fn bucketing(
        &mut self,
        unit: Option<&str>,
        salt: &str,
        bucket: Option<u64>,
        count: i32,
        chosen: Option<&Assignment>,
    ) {
        let mut s = String::from("{\"unit\":");
        opt_string(&mut s, unit);
        s.push_str(",\"salt\":");
        write_string(&mut s, salt);
        s.push_str(",\"bucket\":");
        match bucket {
            Some(b) => s.push_str(&b.to_string()),
            None => s.push_str("null"),
        }
        s.push_str(",\"bucket_count\":");
        s.push_str(&count.to_string());
        s.push_str(",\"full_rollout\":");
        s.push_str(if bucket.is_none() && chosen.is_some() { "true" } else { "false" });
        s.push_str(",\"assignment\":");
        write_assignment(&mut s, chosen);
        s.push('}');
        if let Some(r) = self.cur() {
            r.bucketing = Some(s);
        }
    }

    fn sticky(&mut self, variant: &str, chosen: Option<&Assignment>) {
        let mut s = String::from("{\"variant\":");
        write_string(&mut s, variant);
        s.push_str(",\"assignment\":");
        write_assignment(&mut s, chosen);
        s.push('}');
        if let Some(r) = self.cur() {
            r.sticky = Some(s);
        }
    }

    fn write(&mut self, materialization: &str, variant: &str) {
        if let Some(r) = self.cur() {
            r.write = Some((materialization.to_string(), variant.to_string()));
        }
    }

    fn outcome(&mut self, what: &'static str) {
        self.skip(what)
    }
}

fn opt_string(out: &mut String, s: Option<&str>) {
    match s {
        Some(s) => write_string(out, s),
        None => out.push_str("null"),
    }
}

fn tri(t: Option<Tri>) -> &'static str {
    match t {
        Some(Tri::True) => "true",
        Some(Tri::False) => "false",
        Some(Tri::Unknown) => "\"unknown\"",
        None => "null",
    }
}

fn write_assignment(out: &mut String, a: Option<&Assignment>) {
    let a = match a {
        None => return out.push_str("null"),
        Some(a) => a,
    };
    out.push_str("{\"id\":");
    write_string(out, &a.assignment_id);
    out.push_str(",\"kind\":");
    match &a.assignment {
        Some(AssignmentKind::Variant(v)) => {
            out.push_str("\"variant\",\"variant\":");
            write_string(out, &v.variant);
        }
        Some(AssignmentKind::Fallthrough(_)) => out.push_str("\"fallthrough\""),
        Some(AssignmentKind::ClientDefault(_)) => out.push_str("\"client_default\""),
        None => out.push_str("null"),
    }
    out.push_str(",\"ranges\":[");
    for (i, r) in a.bucket_ranges.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let _ = write!(out, "[{},{}]", r.lower, r.upper); // (a String: never fails)
    }
    out.push_str("]}");
}

fn write_rule(out: &mut String, r: &RuleNode) {
    out.push_str("{\"name\":");
    write_string(out, &r.name);
    out.push_str(",\"segment\":");
    write_string(out, &r.segment);
    out.push_str(",\"enabled\":");
    out.push_str(if r.enabled { "true" } else { "false" });
    out.push_str(",\"environments\":[");
    for (i, e) in r.environments.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        write_string(out, e);
    }
    out.push(']');
    if r.unit_looked_up {
        out.push_str(",\"targeting_key\":{\"selector\":");
        write_string(out, &r.selector);
        out.push_str(",\"seen\":");
        out.push_str(r.seen_json.as_deref().unwrap_or("null"));
        out.push_str(",\"unit\":");
        opt_string(out, r.unit.as_deref());
        out.push('}');
    }
    if let Some((m, a, v)) = &r.mat_read {
        out.push_str(",\"materialization_read\":{\"materialization\":");
        write_string(out, m);
        out.push_str(",\"answer\":");
        write_string(out, a);
        out.push_str(",\"variant\":");
        opt_string(out, v.as_deref());
        out.push('}');
    }
    out.push_str(",\"segments\":[");
    for (i, s) in r.segments.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        write_segment(out, s);
    }
    out.push(']');
    if let Some(s) = &r.sticky {
        out.push_str(",\"sticky\":");
        out.push_str(s);
    }
    if let Some(b) = &r.bucketing {
        out.push_str(",\"bucketing\":");
        out.push_str(b);
    }
    if let Some((m, v)) = &r.write {
        out.push_str(",\"materialization_write\":{\"materialization\":");
        write_string(out, m);
        out.push_str(",\"variant\":");
        write_string(out, v);
        out.push('}');
    }
    out.push_str(",\"outcome\":");
    write_string(out, r.outcome);
    out.push('}');
}

fn write_segment(out: &mut String, s: &SegNode) {
    out.push_str("{\"name\":");
    write_string(out, &s.name);
    if s.targeting_only {
        out.push_str(",\"targeting_only\":true");
    }
    out.push_str(",\"criteria\":[");
    for (i, c) in s.criteria.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        write_criterion(out, c);
    }
    out.push_str("],\"targeting\":");
    out.push_str(tri(s.targeting));
    out.push_str(",\"bitset\":");
    match s.bitset {
        None => out.push_str("null"),
        Some((idx, allocated)) => {
            out.push_str("{\"index\":");
            match idx {
                Some(i) => out.push_str(&i.to_string()),
                None => out.push_str("null"),
            }
            out.push_str(",\"allocated\":");
            out.push_str(if allocated { "true" } else { "false" });
            out.push('}');
        }
    }
    out.push_str(",\"matched\":");
    out.push_str(tri(s.result));
    if let Some(n) = s.note {
        out.push_str(",\"note\":");
        write_string(out, n);
    }
    out.push('}');
}

fn write_criterion(out: &mut String, c: &CritNode) {
    out.push_str("{\"id\":");
    write_string(out, &c.id);
    match &c.body {
        CritBody::Attribute { attribute, rule_json, seen_json, reason } => {
            out.push_str(",\"kind\":\"attribute\",\"attribute\":");
            write_string(out, attribute);
            out.push_str(",\"rule\":");
            out.push_str(rule_json);
            out.push_str(",\"seen\":");
            out.push_str(seen_json.as_deref().unwrap_or("null"));
            out.push_str(",\"present\":");
            out.push_str(if seen_json.is_some() { "true" } else { "false" });
            out.push_str(",\"reason\":");
            opt_string(out, *reason);
        }
        CritBody::Segment(seg) => {
            out.push_str(",\"kind\":\"segment\",\"segment\":");
            write_segment(out, seg);
        }
        CritBody::Materialized { name, source } => {
            out.push_str(",\"kind\":\"materialized_segment\",\"materialization\":");
            write_string(out, name);
            out.push_str(",\"source\":");
            write_string(out, source);
        }
        CritBody::Missing => out.push_str(",\"kind\":\"missing\""),
    }
    out.push_str(",\"matched\":");
    out.push_str(tri(c.matched));
    out.push('}');
}

/// A context value as JSON (non-finite numbers as NaN/Infinity, like the resolve answer).
pub fn value_json(v: &Value) -> String {
    let mut out = String::new();
    write_value(&mut out, v);
    out
}

fn write_value(out: &mut String, v: &Value) {
    match v {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => out.push_str(&format_number(*n)),
        Value::String(s) => write_string(out, s),
        Value::List(l) => {
            out.push('[');
            for (i, x) in l.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_value(out, x);
            }
            out.push(']');
        }
        Value::Struct(m) => {
            out.push('{');
            for (i, (k, x)) in m.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_string(out, k);
                out.push(':');
                write_value(out, x);
            }
            out.push('}');
        }
    }
}

/// Days since 1970-01-01 → (year, month, day) (proleptic Gregorian).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = if z >= 0 { z } else { z - 146_096 } / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// RFC 3339 text of a timestamp (UTC), for readable rule values.
pub fn timestamp_text(seconds: i64, nanos: i32) -> String {
    let days = seconds.div_euclid(86_400);
    let secs = seconds.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    let mut s = format!("{:04}-{:02}-{:02}T{:02}:{:02}:{:02}", y, m, d, secs / 3600, secs / 60 % 60, secs % 60);
    if nanos != 0 {
        let frac = format!("{:09}", nanos);
        s.push('.');
        s.push_str(frac.trim_end_matches('0'));
    }
    s.push('Z');
    s
}

fn write_rule_value(out: &mut String, v: &RV) {
    match &v.value {
        None => out.push_str("null"),
        Some(RuleValue::BoolValue(b)) => out.push_str(if *b { "true" } else { "false" }),
        Some(RuleValue::NumberValue(n)) => out.push_str(&format_number(*n)),
        Some(RuleValue::StringValue(s)) => write_string(out, s),
        Some(RuleValue::TimestampValue(t)) => {
            out.push_str("{\"timestamp\":");
            write_string(out, &timestamp_text(t.seconds, t.nanos));
            out.push('}');
        }
        Some(RuleValue::VersionValue(sv)) => {
            out.push_str("{\"version\":");
            write_string(out, &sv.version);
            out.push('}');
        }
        Some(RuleValue::ListValue(l)) => {
            out.push('[');
            for (i, x) in l.values.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_rule_value(out, x);
            }
            out.push(']');
        }
    }
}

fn write_range(out: &mut String, start: Option<&Start>, end: Option<&End>) {
    out.push_str("\"op\":\"range\"");
    match start {
        Some(Start::StartInclusive(v)) => {
            out.push_str(",\"start_inclusive\":");
            write_rule_value(out, v);
        }
        Some(Start::StartExclusive(v)) => {
            out.push_str(",\"start_exclusive\":");
            write_rule_value(out, v);
        }
        None => {}
    }
    match end {
        Some(End::EndInclusive(v)) => {
            out.push_str(",\"end_inclusive\":");
            write_rule_value(out, v);
        }
        Some(End::EndExclusive(v)) => {
            out.push_str(",\"end_exclusive\":");
            write_rule_value(out, v);
        }
        None => {}
    }
}

fn write_inner(out: &mut String, r: &InnerRuleKind) {
    match r {
        InnerRuleKind::EqRule(r) => {
            out.push_str("\"op\":\"eq\",\"value\":");
            match &r.value {
                Some(v) => write_rule_value(out, v),
                None => out.push_str("null"),
            }
        }
        InnerRuleKind::SetRule(r) => {
            out.push_str("\"op\":\"in\",\"values\":[");
            for (i, v) in r.values.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_rule_value(out, v);
            }
            out.push(']');
        }
        InnerRuleKind::RangeRule(r) => write_range(out, r.start.as_ref(), r.end.as_ref()),
        InnerRuleKind::StartsWithRule(r) => {
            out.push_str("\"op\":\"starts_with\",\"value\":");
            write_string(out, &r.value);
        }
        InnerRuleKind::EndsWithRule(r) => {
            out.push_str("\"op\":\"ends_with\",\"value\":");
            write_string(out, &r.value);
        }
        InnerRuleKind::ContainsRule(r) => {
            out.push_str("\"op\":\"contains\",\"value\":");
            write_string(out, &r.value);
        }
    }
}

/// The criterion's rule as JSON: `{"op": ..., operands}`.
fn write_attr_rule(out: &mut String, rule: Option<&AttrRule>) {
    out.push('{');
    match rule {
        None => out.push_str("\"op\":null"),
        Some(AttrRule::EqRule(r)) => write_inner(out, &InnerRuleKind::EqRule(r.clone())),
        Some(AttrRule::SetRule(r)) => write_inner(out, &InnerRuleKind::SetRule(r.clone())),
        Some(AttrRule::RangeRule(r)) => write_range(out, r.start.as_ref(), r.end.as_ref()),
        Some(AttrRule::StartsWithRule(r)) => write_inner(out, &InnerRuleKind::StartsWithRule(r.clone())),
        Some(AttrRule::EndsWithRule(r)) => write_inner(out, &InnerRuleKind::EndsWithRule(r.clone())),
        Some(AttrRule::ContainsRule(r)) => write_inner(out, &InnerRuleKind::ContainsRule(r.clone())),
        Some(AttrRule::AnyRule(r)) => write_quantified(out, "any", r.rule.as_ref().and_then(|i| i.rule.as_ref())),
        Some(AttrRule::AllRule(r)) => write_quantified(out, "all", r.rule.as_ref().and_then(|i| i.rule.as_ref())),
    }
    out.push('}');
}

fn write_quantified(out: &mut String, op: &str, inner: Option<&InnerRuleKind>) {
    out.push_str("\"op\":");
    write_string(out, op);
    out.push_str(",\"inner\":");
    match inner {
        None => out.push_str("null"),
        Some(i) => {
            out.push('{');
            write_inner(out, i);
            out.push('}');
        }
    }
}
