//! Targeting: attribute criteria, conversions, expressions and segments (resolve.md §4,
//! with the §8 overrides).
use crate::hash::bitset_index;
use crate::json::format_number;
use crate::materialize::{MatError, Materializer};
use crate::proto::types::targeting::{
    criterion::{attribute_criterion::Rule as AttrRule, AttributeCriterion, Criterion as CriterionKind},
    inner_rule::Rule as InnerRuleKind,
    range_rule::{End, Start},
    value::Value as RuleValue,
    Criterion, EqRule, RangeRule, SetRule,
};
use crate::proto::types::{expression::Expression as ExprKind, Expression, Targeting};
use crate::semver::parse_version;
use crate::state::State;
use crate::timeparse::{parse_timestamp, timestamp_from_number};
use crate::value::{Context, Value};
use std::borrow::Cow;
use std::cmp::Ordering;
use std::collections::BTreeMap;

/// Three-valued logic: `Unknown` while materialization reads are missing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tri {
    True,
    False,
    Unknown,
}

impl Tri {
    pub fn from_bool(b: bool) -> Tri {
        if b {
            Tri::True
        } else {
            Tri::False
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EvalError {
    /// A criterion, rule or inner rule of a kind we do not know (or without one).
    Unrecognized,
    /// A materialized segment needs the store but the request has none.
    MatNotSupported,
}

impl From<MatError> for EvalError {
    fn from(_: MatError) -> Self {
        EvalError::MatNotSupported
    }
}

/// Deepest chain of segment references we follow.
const MAX_SEGMENT_DEPTH: usize = 64;
/// Bound on nested expression + segment evaluation (keeps the wasm stack small even for
/// adversarial states); deeper evaluation counts as an unrecognized rule.
const MAX_EVAL_DEPTH: usize = 256;

// ---------------------------------------------------------------------------------
// Values after conversion to a rule's expected type
// ---------------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq)]
enum Tv<'a> {
    /// Never matches (e.g. an unparseable number, a non-string for a string operator).
    NoValue,
    /// A null/missing attribute, kept only for "is null" rules.
    Null,
    Bool(bool),
    Num(f64),
    Str(Cow<'a, str>),
    Ts(i64, i32),
    Ver(Cow<'a, str>),
    List(Vec<Tv<'a>>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expected {
    Bool,
    Number,
    String,
    Timestamp,
    Version,
    /// No kind (is-null rules, empty list values).
    None,
}

fn expected_of(v: &crate::proto::types::targeting::Value) -> Expected {
    match &v.value {
        None => Expected::None,
        Some(RuleValue::BoolValue(_)) => Expected::Bool,
        Some(RuleValue::NumberValue(_)) => Expected::Number,
        Some(RuleValue::StringValue(_)) => Expected::String,
        Some(RuleValue::TimestampValue(_)) => Expected::Timestamp,
        Some(RuleValue::VersionValue(_)) => Expected::Version,
        Some(RuleValue::ListValue(l)) => l.values.first().map(expected_of).unwrap_or(Expected::None),
    }
}

fn rule_tv(v: &crate::proto::types::targeting::Value) -> Tv<'_> {
    match &v.value {
        None => Tv::Null,
        Some(RuleValue::BoolValue(b)) => Tv::Bool(*b),
        Some(RuleValue::NumberValue(n)) => Tv::Num(*n),
        Some(RuleValue::StringValue(s)) => Tv::Str(Cow::Borrowed(s)),
        Some(RuleValue::TimestampValue(t)) => Tv::Ts(t.seconds, t.nanos),
        Some(RuleValue::VersionValue(sv)) => Tv::Ver(Cow::Borrowed(&sv.version)),
        Some(RuleValue::ListValue(l)) => Tv::List(l.values.iter().map(rule_tv).collect()),
    }
}

const NULL_TEXT: &str = "null";

fn null_str<'a>() -> Tv<'a> {
    Tv::Str(Cow::Borrowed(NULL_TEXT))
}

/// Converts a context value for a (non-string) operator, resolve.md §4.2 and §8.
fn convert(v: Option<&Value>, exp: Expected) -> Tv<'_> {
    let v = match v {
        None | Some(Value::Null) => {
            return if exp == Expected::None { Tv::Null } else { null_str() };
        }
        Some(v) => v,
    };
    if exp == Expected::None {
        return match v {
            Value::List(l) => Tv::List(l.iter().map(|e| convert(Some(e), exp)).collect()),
            _ => Tv::NoValue,
        };
    }
    match v {
        Value::Null => null_str(),
        Value::Number(n) => match exp {
            Expected::Number => Tv::Num(*n),
            Expected::String => Tv::Str(Cow::Owned(format_number(*n))),
            Expected::Timestamp => match timestamp_from_number(*n) {
                Some((s, ns)) => Tv::Ts(s, ns),
                None => null_str(),
            },
            _ => null_str(),
        },
        Value::String(s) => match exp {
            Expected::Bool => Tv::Bool(s == "true" || s == "TRUE"),
            // §8: an unparseable number never matches (the request does not fail).
            Expected::Number => match s.parse::<f64>() {
                Ok(n) => Tv::Num(n),
                Err(_) => Tv::NoValue,
            },
            Expected::String => Tv::Str(Cow::Borrowed(s)),
            Expected::Timestamp => match parse_timestamp(s) {
                Some((sec, ns)) => Tv::Ts(sec, ns),
                None => null_str(),
            },
            Expected::Version => Tv::Ver(Cow::Borrowed(s)),
            Expected::None => Tv::NoValue,
        },
        Value::Bool(b) => match exp {
            Expected::Bool => Tv::Bool(*b),
            _ => null_str(),
        },
        Value::List(l) => Tv::List(l.iter().map(|e| convert(Some(e), exp)).collect()),
        Value::Struct(_) => null_str(),
    }
}

/// Strict conversion for string operators: strings stay, lists keep their strings
/// (recursively), everything else is "no value".
fn strict(v: Option<&Value>) -> Tv<'_> {
    match v {
        Some(Value::String(s)) => Tv::Str(Cow::Borrowed(s)),
        Some(Value::List(l)) => Tv::List(l.iter().map(|e| strict(Some(e))).collect()),
        _ => Tv::NoValue,
    }
}

fn elems<'b, 'a>(tv: &'b Tv<'a>) -> &'b [Tv<'a>] {
    match tv {
        Tv::List(l) => l.as_slice(),
        other => std::slice::from_ref(other),
    }
}

fn tv_eq(a: &Tv, b: &Tv) -> bool {
    match (a, b) {
        (Tv::Bool(x), Tv::Bool(y)) => x == y,
        (Tv::Num(x), Tv::Num(y)) => x == y,
        (Tv::Str(x), Tv::Str(y)) => x == y,
        (Tv::Ts(s1, n1), Tv::Ts(s2, n2)) => s1 == s2 && n1 == n2,
        (Tv::Ver(x), Tv::Ver(y)) => x == y,
        (Tv::List(x), Tv::List(y)) => x.len() == y.len() && x.iter().zip(y.iter()).all(|(p, q)| tv_eq(p, q)),
        (Tv::Null, Tv::Null) => true,
        _ => false,
    }
}

fn tv_cmp(a: &Tv, b: &Tv) -> Option<Ordering> {
    match (a, b) {
        (Tv::Num(x), Tv::Num(y)) => x.partial_cmp(y),
        (Tv::Str(x), Tv::Str(y)) => Some(x.as_bytes().cmp(y.as_bytes())),
        (Tv::Ts(s1, n1), Tv::Ts(s2, n2)) => Some((s1, n1).cmp(&(s2, n2))),
        (Tv::Ver(x), Tv::Ver(y)) => Some(parse_version(x).cmp(&parse_version(y))),
        _ => None,
    }
}

// ---------------------------------------------------------------------------------
// Rule matchers
// ---------------------------------------------------------------------------------

enum Matcher<'r> {
    Eq(Tv<'r>, Expected),
    IsNull,
    Set(Vec<Tv<'r>>, Expected),
    Range {
        start: Option<(Tv<'r>, bool)>,
        end: Option<(Tv<'r>, bool)>,
        exp: Expected,
    },
    StartsWith(&'r str),
    EndsWith(&'r str),
    Contains(&'r str),
    /// A rule that can never match (empty set, range without bounds).
    Never,
}

impl<'r> Matcher<'r> {
    fn eq(rule: &'r EqRule) -> Result<Self, EvalError> {
        match &rule.value {
            None => Err(EvalError::Unrecognized),
            // §8: an eq rule whose value has no kind is "is null".
            Some(v) if v.value.is_none() => Ok(Matcher::IsNull),
            Some(v) => Ok(Matcher::Eq(rule_tv(v), expected_of(v))),
        }
    }

    fn set(rule: &'r SetRule) -> Self {
        match rule.values.first() {
            None => Matcher::Never,
            Some(first) => Matcher::Set(rule.values.iter().map(rule_tv).collect(), expected_of(first)),
        }
    }

    fn range(rule: &'r RangeRule) -> Self {
        let start = match &rule.start {
            Some(Start::StartInclusive(v)) => Some((v, true)),
            Some(Start::StartExclusive(v)) => Some((v, false)),
            None => None,
        };
        let end = match &rule.end {
            Some(End::EndInclusive(v)) => Some((v, true)),
            Some(End::EndExclusive(v)) => Some((v, false)),
            None => None,
        };
        // §8: a range with neither bound never matches.
        let exp = match (start, end) {
            (None, None) => return Matcher::Never,
            (Some((v, _)), _) => expected_of(v),
            (None, Some((v, _))) => expected_of(v),
        };
        Matcher::Range {
            start: start.map(|(v, inc)| (rule_tv(v), inc)),
            end: end.map(|(v, inc)| (rule_tv(v), inc)),
            exp,
        }
    }

    fn from_inner(rule: &'r InnerRuleKind) -> Result<Self, EvalError> {
        Ok(match rule {
            InnerRuleKind::EqRule(r) => Matcher::eq(r)?,
            InnerRuleKind::SetRule(r) => Matcher::set(r),
            InnerRuleKind::RangeRule(r) => Matcher::range(r),
            InnerRuleKind::StartsWithRule(r) => Matcher::StartsWith(&r.value),
            InnerRuleKind::EndsWithRule(r) => Matcher::EndsWith(&r.value),
            InnerRuleKind::ContainsRule(r) => Matcher::Contains(&r.value),
        })
    }

    fn is_strict(&self) -> bool {
        matches!(self, Matcher::StartsWith(_) | Matcher::EndsWith(_) | Matcher::Contains(_))
    }

    fn expected(&self) -> Expected {
        match self {
            Matcher::Eq(_, e) | Matcher::Set(_, e) => *e,
            Matcher::Range { exp, .. } => *exp,
            Matcher::StartsWith(_) | Matcher::EndsWith(_) | Matcher::Contains(_) => Expected::String,
            Matcher::IsNull | Matcher::Never => Expected::None,
        }
    }

    fn prepare<'v>(&self, v: Option<&'v Value>) -> Tv<'v> {
        if self.is_strict() {
            strict(v)
        } else {
            convert(v, self.expected())
        }
    }

    /// Does one element satisfy the rule?
    fn element(&self, e: &Tv) -> bool {
        match self {
            Matcher::Eq(v, _) => tv_eq(e, v),
            Matcher::IsNull => matches!(e, Tv::Null),
            Matcher::Set(vs, _) => vs.iter().any(|v| tv_eq(e, v)),
            Matcher::Range { start, end, .. } => {
                let lo = match start {
                    None => true,
                    Some((b, inc)) => match tv_cmp(e, b) {
                        Some(Ordering::Greater) => true,
                        Some(Ordering::Equal) => *inc,
                        _ => false,
                    },
                };
                let hi = match end {
                    None => true,
                    Some((b, inc)) => match tv_cmp(e, b) {
                        Some(Ordering::Less) => true,
                        Some(Ordering::Equal) => *inc,
                        _ => false,
                    },
                };
                lo && hi
            }
            Matcher::StartsWith(p) => matches!(e, Tv::Str(s) if s.as_bytes().starts_with(p.as_bytes())),
            Matcher::EndsWith(p) => matches!(e, Tv::Str(s) if s.as_bytes().ends_with(p.as_bytes())),
            Matcher::Contains(p) => matches!(e, Tv::Str(s) if s.contains(*p)),
            Matcher::Never => false,
        }
    }

    /// The rule applied to a (converted) value: a non-list is a one-element list;
    /// some element must satisfy it.
    fn value(&self, tv: &Tv) -> bool {
        if let Matcher::IsNull = self {
            return matches!(tv, Tv::Null);
        }
        elems(tv).iter().any(|e| self.element(e))
    }
}

/// Evaluates an attribute criterion against the context.
pub fn eval_attribute(attr: &AttributeCriterion, ctx: &Context) -> Result<bool, EvalError> {
    let v = ctx.lookup(&attr.attribute_name);
    let rule = attr.rule.as_ref().ok_or(EvalError::Unrecognized)?;
    let (inner, is_all) = match rule {
        AttrRule::EqRule(r) => return Ok(top_level(Matcher::eq(r)?, v)),
        AttrRule::SetRule(r) => return Ok(top_level(Matcher::set(r), v)),
        AttrRule::RangeRule(r) => return Ok(top_level(Matcher::range(r), v)),
        AttrRule::StartsWithRule(r) => return Ok(top_level(Matcher::StartsWith(&r.value), v)),
        AttrRule::EndsWithRule(r) => return Ok(top_level(Matcher::EndsWith(&r.value), v)),
        AttrRule::ContainsRule(r) => return Ok(top_level(Matcher::Contains(&r.value), v)),
        AttrRule::AnyRule(r) => (r.rule.as_ref(), false),
        AttrRule::AllRule(r) => (r.rule.as_ref(), true),
    };
    let inner = inner.and_then(|i| i.rule.as_ref()).ok_or(EvalError::Unrecognized)?;
    let m = Matcher::from_inner(inner)?;
    // §8: a null or missing attribute is an empty list for any/all.
    if matches!(v, None | Some(Value::Null)) {
        return Ok(is_all);
    }
    let tv = m.prepare(v);
    let items = elems(&tv);
    Ok(if is_all { items.iter().all(|e| m.value(e)) } else { items.iter().any(|e| m.value(e)) })
}

fn top_level(m: Matcher, v: Option<&Value>) -> bool {
    match m {
        Matcher::IsNull => matches!(v, None | Some(Value::Null)),
        Matcher::Never => false,
        m => {
            let tv = m.prepare(v);
            m.value(&tv)
        }
    }
}

// ---------------------------------------------------------------------------------
// Expressions and segments
// ---------------------------------------------------------------------------------

/// Evaluates segments and targeting for one (context, unit) against a state.
pub struct Evaluator<'s, 'm> {
    pub state: &'s State,
    pub ctx: &'s Context,
    pub mat: &'m mut Materializer,
    /// Current nesting of expressions and segment references.
    pub depth: usize,
}

impl<'s, 'm> Evaluator<'s, 'm> {
    /// Full segment match: targeting, then the bitset. A missing segment, or one already
    /// on the current path (a cycle), is false.
    pub fn segment(&mut self, name: &'s str, unit: Option<&str>, path: &mut Vec<&'s str>) -> Result<Tri, EvalError> {
        let seg = match self.state.segments.get(name) {
            None => return Ok(Tri::False),
            Some(s) => s,
        };
        if path.contains(&name) || path.len() >= MAX_SEGMENT_DEPTH {
            return Ok(Tri::False);
        }
        path.push(name);
        let t = self.targeting(seg.targeting.as_ref(), unit, path);
        path.pop();
        let t = t?;
        if t == Tri::False {
            return Ok(Tri::False);
        }
        match self.state.bitsets.get(name) {
            None => Ok(t),
            Some(bits) => {
                let allocated = match unit {
                    Some(u) => bits.get(bitset_index(&self.state.account_id, u)),
                    None => bits.all_set(),
                };
                Ok(if allocated { t } else { Tri::False })
            }
        }
    }

    /// The segment's targeting only (no bitset): materialized-assignment checks.
    pub fn segment_targeting(&mut self, name: &'s str, unit: Option<&str>) -> Result<Tri, EvalError> {
        match self.state.segments.get(name) {
            None => Ok(Tri::False),
            Some(seg) => {
                let mut path = vec![name];
                self.targeting(seg.targeting.as_ref(), unit, &mut path)
            }
        }
    }

    fn targeting(
        &mut self,
        t: Option<&'s Targeting>,
        unit: Option<&str>,
        path: &mut Vec<&'s str>,
    ) -> Result<Tri, EvalError> {
        let t = match t {
            None => return Ok(Tri::True),
            Some(t) => t,
        };
        match &t.expression {
            None => Ok(Tri::True),
            Some(e) => self.expression(e, &t.criteria, unit, path),
        }
    }

    fn expression(
        &mut self,
        e: &'s Expression,
        criteria: &'s BTreeMap<String, Criterion>,
        unit: Option<&str>,
        path: &mut Vec<&'s str>,
    ) -> Result<Tri, EvalError> {
        if self.depth >= MAX_EVAL_DEPTH {
            return Err(EvalError::Unrecognized);
        }
        self.depth += 1;
        let r = self.expression_inner(e, criteria, unit, path);
        self.depth -= 1;
        r
    }

    fn expression_inner(
        &mut self,
        e: &'s Expression,
        criteria: &'s BTreeMap<String, Criterion>,
        unit: Option<&str>,
        path: &mut Vec<&'s str>,
    ) -> Result<Tri, EvalError> {
        match &e.expression {
            None => Ok(Tri::False),
            Some(ExprKind::Ref(id)) => match criteria.get(id) {
                None => Ok(Tri::False),
                Some(c) => self.criterion(c, unit, path),
            },
            Some(ExprKind::Not(inner)) => Ok(match self.expression(inner, criteria, unit, path)? {
                Tri::True => Tri::False,
                Tri::False => Tri::True,
                Tri::Unknown => Tri::Unknown,
            }),
            Some(ExprKind::And(ops)) => {
                let mut unknown = false;
                for op in &ops.operands {
                    match self.expression(op, criteria, unit, path)? {
                        Tri::False => return Ok(Tri::False),
                        Tri::Unknown => unknown = true,
                        Tri::True => {}
                    }
                }
                Ok(if unknown { Tri::Unknown } else { Tri::True })
            }
            Some(ExprKind::Or(ops)) => {
                let mut unknown = false;
                for op in &ops.operands {
                    match self.expression(op, criteria, unit, path)? {
                        Tri::True => return Ok(Tri::True),
                        Tri::Unknown => unknown = true,
                        Tri::False => {}
                    }
                }
                Ok(if unknown { Tri::Unknown } else { Tri::False })
            }
        }
    }

    fn criterion(&mut self, c: &'s Criterion, unit: Option<&str>, path: &mut Vec<&'s str>) -> Result<Tri, EvalError> {
        match &c.criterion {
            None => Err(EvalError::Unrecognized),
            Some(CriterionKind::Attribute(a)) => Ok(Tri::from_bool(eval_attribute(a, self.ctx)?)),
            Some(CriterionKind::Segment(s)) => self.segment(&s.segment, unit, path),
            Some(CriterionKind::MaterializedSegment(m)) => {
                let unit = match unit {
                    None => return Ok(Tri::False),
                    Some(u) => u,
                };
                if let Some(bloom) = self.state.blooms.get(&m.materialized_segment) {
                    return Ok(Tri::from_bool(bloom.contains(unit)));
                }
                Ok(match self.mat.inclusion(unit, &m.materialized_segment)? {
                    Some(b) => Tri::from_bool(b),
                    None => Tri::Unknown,
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::json::parse_context;
    use crate::proto::types::targeting::{
        AllRule, AnyRule, ContainsRule, EndsWithRule, InnerRule, ListValue, SemanticVersion, StartsWithRule,
        Value as PV,
    };

    fn ctx(s: &str) -> Context {
        parse_context(s.as_bytes()).unwrap()
    }
    fn s(v: &str) -> PV {
        PV { value: Some(RuleValue::StringValue(v.into())) }
    }
    fn n(v: f64) -> PV {
        PV { value: Some(RuleValue::NumberValue(v)) }
    }
    fn b(v: bool) -> PV {
        PV { value: Some(RuleValue::BoolValue(v)) }
    }
    fn ts(sec: i64, nanos: i32) -> PV {
        PV { value: Some(RuleValue::TimestampValue(prost_types::Timestamp { seconds: sec, nanos })) }
    }
    fn ver(v: &str) -> PV {
        PV { value: Some(RuleValue::VersionValue(SemanticVersion { version: v.into() })) }
    }
    fn attr(name: &str, rule: AttrRule) -> AttributeCriterion {
        AttributeCriterion { attribute_name: name.into(), rule: Some(rule) }
    }
    fn eq(v: PV) -> AttrRule {
        AttrRule::EqRule(EqRule { value: Some(v) })
    }
    fn range(start: Option<Start>, end: Option<End>) -> RangeRule {
        RangeRule { start, end }
    }
    fn check(a: &AttributeCriterion, c: &str) -> Result<bool, EvalError> {
        eval_attribute(a, &ctx(c))
    }

    #[test]
    fn eq_kinds() {
        let a = attr("x", eq(s("SE")));
        assert_eq!(check(&a, r#"{"x":"SE"}"#), Ok(true));
        assert_eq!(check(&a, r#"{"x":"se"}"#), Ok(false));
        assert_eq!(check(&a, r#"{"x":["US","SE"]}"#), Ok(true));
        let a = attr("x", eq(s("3")));
        assert_eq!(check(&a, r#"{"x":3.0}"#), Ok(true)); // number -> string "3"
        let a = attr("x", eq(n(3.0)));
        assert_eq!(check(&a, r#"{"x":"3"}"#), Ok(true));
        assert_eq!(check(&a, r#"{"x":"abc"}"#), Ok(false)); // §8: no request failure
        assert_eq!(check(&a, r#"{"x":true}"#), Ok(false));
        let a = attr("x", eq(b(true)));
        assert_eq!(check(&a, r#"{"x":"TRUE"}"#), Ok(true));
        assert_eq!(check(&a, r#"{"x":"true"}"#), Ok(true));
        assert_eq!(check(&a, r#"{"x":"True"}"#), Ok(false));
        let a = attr("x", eq(b(false)));
        assert_eq!(check(&a, r#"{"x":"yes"}"#), Ok(true)); // anything but true/TRUE is false
                                                           // null converts to the string "null"
        let a = attr("x", eq(s("null")));
        assert_eq!(check(&a, r#"{}"#), Ok(true));
        assert_eq!(check(&a, r#"{"x":{"a":1}}"#), Ok(true));
    }

    #[test]
    fn eq_without_value_is_unrecognized_and_no_kind_is_null() {
        let a = attr("x", AttrRule::EqRule(EqRule { value: None }));
        assert_eq!(check(&a, r#"{"x":1}"#), Err(EvalError::Unrecognized));
        let a = attr("x", eq(PV { value: None }));
        assert_eq!(check(&a, r#"{}"#), Ok(true));
        assert_eq!(check(&a, r#"{"x":null}"#), Ok(true));
        assert_eq!(check(&a, r#"{"x":"hello"}"#), Ok(false));
        assert_eq!(check(&a, r#"{"x":[]}"#), Ok(false));
        let no_rule = AttributeCriterion { attribute_name: "x".into(), rule: None };
        assert_eq!(check(&no_rule, "{}"), Err(EvalError::Unrecognized));
    }

    #[test]
    fn sets() {
        let a = attr("c", AttrRule::SetRule(SetRule { values: vec![s("NO"), s("DK")] }));
        assert_eq!(check(&a, r#"{"c":"NO"}"#), Ok(true));
        assert_eq!(check(&a, r#"{"c":["IT","NO"]}"#), Ok(true));
        assert_eq!(check(&a, r#"{"c":"SE"}"#), Ok(false));
        let empty = attr("c", AttrRule::SetRule(SetRule { values: vec![] }));
        assert_eq!(check(&empty, r#"{"c":"SE"}"#), Ok(false));
    }

    #[test]
    fn ranges() {
        let r = attr(
            "x",
            AttrRule::RangeRule(range(Some(Start::StartInclusive(n(18.0))), Some(End::EndExclusive(n(65.0))))),
        );
        assert_eq!(check(&r, r#"{"x":18}"#), Ok(true));
        assert_eq!(check(&r, r#"{"x":64.9}"#), Ok(true));
        assert_eq!(check(&r, r#"{"x":65}"#), Ok(false));
        assert_eq!(check(&r, r#"{"x":"30"}"#), Ok(true));
        assert_eq!(check(&r, r#"{"x":NaN}"#), Ok(false));
        assert_eq!(check(&r, r#"{"x":[1, 30]}"#), Ok(true));
        assert_eq!(check(&r, r#"{}"#), Ok(false));
        let r = attr("x", AttrRule::RangeRule(range(Some(Start::StartExclusive(n(0.0))), None)));
        assert_eq!(check(&r, r#"{"x":0}"#), Ok(false));
        assert_eq!(check(&r, r#"{"x":0.001}"#), Ok(true));
        let r = attr("x", AttrRule::RangeRule(range(None, Some(End::EndInclusive(n(100.0))))));
        assert_eq!(check(&r, r#"{"x":100}"#), Ok(true));
        assert_eq!(check(&r, r#"{"x":-1e300}"#), Ok(true));
        let none = attr("x", AttrRule::RangeRule(range(None, None)));
        assert_eq!(check(&none, r#"{"x":50}"#), Ok(false));
        // strings compare by bytes
        let r = attr("x", AttrRule::RangeRule(range(Some(Start::StartInclusive(s("b"))), None)));
        assert_eq!(check(&r, r#"{"x":"ba"}"#), Ok(true));
        assert_eq!(check(&r, r#"{"x":"B"}"#), Ok(false));
        // bool bounds never satisfy
        let r = attr("x", AttrRule::RangeRule(range(Some(Start::StartInclusive(b(false))), None)));
        assert_eq!(check(&r, r#"{"x":true}"#), Ok(false));
    }

    #[test]
    fn timestamps() {
        let r =
            attr("t", AttrRule::RangeRule(range(Some(Start::StartInclusive(ts(1_668_698_177, 118_000_000))), None)));
        assert_eq!(check(&r, r#"{"t":"2022-11-17T15:16:17.200Z"}"#), Ok(true));
        assert_eq!(check(&r, r#"{"t":"2022-11-17T15:16:17.000Z"}"#), Ok(false));
        assert_eq!(check(&r, r#"{"t":1668698178}"#), Ok(true));
        assert_eq!(check(&r, r#"{"t":1668698177}"#), Ok(false));
        assert_eq!(check(&r, r#"{"t":1668698177200}"#), Ok(true));
        assert_eq!(check(&r, r#"{"t":"2022-11-18"}"#), Ok(true));
        assert_eq!(check(&r, r#"{"t":"not a time"}"#), Ok(false));
        assert_eq!(check(&r, r#"{"t":true}"#), Ok(false));
        let e = attr("t", eq(ts(1_668_643_200, 0)));
        assert_eq!(check(&e, r#"{"t":"2022-11-17"}"#), Ok(true));
    }

    #[test]
    fn versions() {
        let r = attr("v", AttrRule::RangeRule(range(Some(Start::StartInclusive(ver("2.0.0"))), None)));
        assert_eq!(check(&r, r#"{"v":"2.0.0"}"#), Ok(true));
        assert_eq!(check(&r, r#"{"v":"10.1"}"#), Ok(true));
        assert_eq!(check(&r, r#"{"v":"1.99.99"}"#), Ok(false));
        assert_eq!(check(&r, r#"{"v":2}"#), Ok(false));
        let e = attr("v", eq(ver("2.0")));
        assert_eq!(check(&e, r#"{"v":"2.0"}"#), Ok(true));
        assert_eq!(check(&e, r#"{"v":"2.0.0"}"#), Ok(false)); // equality compares the text
    }

    #[test]
    fn string_operators_are_strict() {
        let c = attr("t", AttrRule::ContainsRule(ContainsRule { value: "bar".into() }));
        assert_eq!(check(&c, r#"{"t":"crowbar"}"#), Ok(true));
        assert_eq!(check(&c, r#"{"t":[123,false,"crowbar"]}"#), Ok(true));
        assert_eq!(check(&c, r#"{"t":[]}"#), Ok(false));
        assert_eq!(check(&c, r#"{"t":null}"#), Ok(false));
        assert_eq!(check(&c, r#"{}"#), Ok(false));
        let c = attr("t", AttrRule::ContainsRule(ContainsRule { value: "12".into() }));
        assert_eq!(check(&c, r#"{"t":123}"#), Ok(false));
        assert_eq!(check(&c, r#"{"t":"123"}"#), Ok(true));
        let c = attr("t", AttrRule::ContainsRule(ContainsRule { value: "café".into() }));
        assert_eq!(check(&c, "{\"t\":\"cafe\\u0301\"}"), Ok(false));
        let sw = attr("t", AttrRule::StartsWithRule(StartsWithRule { value: "test@".into() }));
        assert_eq!(check(&sw, r#"{"t":"test@x.com"}"#), Ok(true));
        assert_eq!(check(&sw, r#"{"t":"Test@x.com"}"#), Ok(false));
        let ew = attr("t", AttrRule::EndsWithRule(EndsWithRule { value: "2".into() }));
        assert_eq!(check(&ew, r#"{"t":42}"#), Ok(false));
        assert_eq!(check(&ew, r#"{"t":"42"}"#), Ok(true));
    }

    fn any(inner: InnerRuleKind) -> AttrRule {
        AttrRule::AnyRule(AnyRule { rule: Some(InnerRule { rule: Some(inner) }) })
    }
    fn all(inner: InnerRuleKind) -> AttrRule {
        AttrRule::AllRule(AllRule { rule: Some(InnerRule { rule: Some(inner) }) })
    }

    #[test]
    fn any_and_all() {
        let a = attr("tags", any(InnerRuleKind::EqRule(EqRule { value: Some(s("premium")) })));
        assert_eq!(check(&a, r#"{"tags":["basic","premium"]}"#), Ok(true));
        assert_eq!(check(&a, r#"{"tags":["basic","free"]}"#), Ok(false));
        assert_eq!(check(&a, r#"{"tags":[]}"#), Ok(false));
        assert_eq!(check(&a, r#"{"tags":null}"#), Ok(false));
        assert_eq!(check(&a, r#"{}"#), Ok(false));
        assert_eq!(check(&a, r#"{"tags":"premium"}"#), Ok(true));
        let r = InnerRuleKind::RangeRule(range(Some(Start::StartInclusive(n(0.0))), Some(End::EndInclusive(n(100.0)))));
        let a = attr("scores", all(r));
        assert_eq!(check(&a, r#"{"scores":[10,20]}"#), Ok(true));
        assert_eq!(check(&a, r#"{"scores":[10,200]}"#), Ok(false));
        assert_eq!(check(&a, r#"{"scores":[]}"#), Ok(true));
        assert_eq!(check(&a, r#"{"scores":null}"#), Ok(true));
        assert_eq!(check(&a, r#"{}"#), Ok(true));
        assert_eq!(check(&a, r#"{"scores":["10","x"]}"#), Ok(false)); // §8: unparseable fails all
        let a = attr("r", all(InnerRuleKind::ContainsRule(ContainsRule { value: "confidence".into() })));
        assert_eq!(check(&a, r#"{"r":["confidence-admin","local-confidence"]}"#), Ok(true));
        assert_eq!(check(&a, r#"{"r":["confidence-admin",42]}"#), Ok(false));
        let empty_set = attr("tags", any(InnerRuleKind::SetRule(SetRule { values: vec![] })));
        assert_eq!(check(&empty_set, r#"{"tags":["a"]}"#), Ok(false));
        let unknown_inner = attr("tags", AttrRule::AnyRule(AnyRule { rule: Some(InnerRule { rule: None }) }));
        assert_eq!(check(&unknown_inner, r#"{"tags":["a"]}"#), Err(EvalError::Unrecognized));
        let no_inner = attr("tags", AttrRule::AllRule(AllRule { rule: None }));
        assert_eq!(check(&no_inner, r#"{"tags":["a"]}"#), Err(EvalError::Unrecognized));
        let is_null_inner = attr("l", any(InnerRuleKind::EqRule(EqRule { value: Some(PV { value: None }) })));
        assert_eq!(check(&is_null_inner, r#"{"l":[1,null]}"#), Ok(true));
        assert_eq!(check(&is_null_inner, r#"{"l":[1,"x"]}"#), Ok(false));
        let list_val = attr("l", eq(PV { value: Some(RuleValue::ListValue(ListValue { values: vec![] })) }));
        assert_eq!(check(&list_val, r#"{"l":[1]}"#), Ok(false));
    }
}
