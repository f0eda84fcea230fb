//! Resolving flags (resolve.md §2, §3, §8).
use crate::error::Error;
use crate::hash::{bucket, hash_concat};
use crate::json::{format_number, write_proto_value, write_string};
use crate::materialize::{MatError, Materializer, Mode, ReadAnswer};
use crate::proto::admin::flag::rule::{assignment::Assignment as AssignmentKind, Assignment, AssignmentSpec};
use crate::proto::admin::flag::{Rule, State as FlagState, Variant};
use crate::proto::admin::Flag;
use crate::proto::api::{MaterializationRecord, ResolveReason};
use crate::proto::types::flag_schema::{SchemaType, StructFlagSchema};
use crate::state::{ClientIdentity, State};
use crate::targeting::{EvalError, Evaluator, Tri};
use crate::value::{Context, Value};

pub const MAX_FLAGS_PER_REQUEST: usize = 1000;
pub const MAX_TARGETING_KEY_BYTES: usize = 100;
pub const DEFAULT_SELECTOR: &str = "targeting_key";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fallthrough {
    pub rule: String,
    pub assignment_id: String,
    pub unit: String,
    pub selector: String,
}

/// The result of resolving one flag.
#[derive(Debug, Clone)]
pub struct FlagOutcome<'s> {
    pub flag: &'s Flag,
    pub reason: ResolveReason,
    /// The matched variant (None for a client default or no match).
    pub variant: Option<&'s Variant>,
    /// The matched rule (MATCH only).
    pub rule: Option<&'s Rule>,
    pub assignment_id: String,
    pub unit: Option<String>,
    pub selector: String,
    pub fallthroughs: Vec<Fallthrough>,
    /// Discovery: a materialization read is missing; resolve again with records.
    pub deferred: bool,
}

impl<'s> FlagOutcome<'s> {
    fn new(flag: &'s Flag) -> Self {
        FlagOutcome {
            flag,
            reason: ResolveReason::NoSegmentMatch,
            variant: None,
            rule: None,
            assignment_id: String::new(),
            unit: None,
            selector: String::new(),
            fallthroughs: Vec::new(),
            deferred: false,
        }
    }

    /// Stops rule evaluation with a reason. While materialization reads are missing
    /// (discovery) an earlier rule might still match once they are known, so the flag is
    /// deferred instead of final.
    fn stop(self, reason: ResolveReason, missing_reads: bool) -> Self {
        let mut out = self.reason_only(reason);
        out.deferred = missing_reads;
        out
    }

    /// A reason-only result: clears variant, rule, segment, assignment id and unit.
    fn reason_only(mut self, reason: ResolveReason) -> Self {
        self.reason = reason;
        self.variant = None;
        self.rule = None;
        self.assignment_id.clear();
        self.unit = None;
        self.selector.clear();
        self
    }

    pub fn should_apply(&self) -> bool {
        self.reason == ResolveReason::Match || !self.fallthroughs.is_empty()
    }

    pub fn segment(&self) -> &'s str {
        self.rule.map(|r| r.segment.as_str()).unwrap_or("")
    }

    pub fn rule_name(&self) -> &'s str {
        self.rule.map(|r| r.name.as_str()).unwrap_or("")
    }

    pub fn variant_name(&self) -> &'s str {
        self.variant.map(|v| v.name.as_str()).unwrap_or("")
    }

    /// A rule matched without a variant (client default).
    pub fn is_client_default(&self) -> bool {
        self.reason == ResolveReason::Match && self.variant.is_none()
    }
}

/// Whole-request outcome.
#[derive(Debug)]
pub enum Outcome<'s> {
    Resolved { flags: Vec<FlagOutcome<'s>>, writes: Vec<MaterializationRecord> },
    Suspended { reads: Vec<MaterializationRecord> },
}

/// Masks a client secret for error messages: never echo it.
pub fn mask_secret(secret: &str) -> String {
    let n = secret.chars().count();
    if n == 0 {
        "<empty>".to_string()
    } else {
        "*".repeat(n.min(8))
    }
}

/// Looks up the client of a secret; unknown secrets are an error that masks the secret.
pub fn client_for<'s>(state: &'s State, secret: &str) -> Result<&'s ClientIdentity, Error> {
    state.secrets.get(secret).ok_or_else(|| Error::UnknownClientSecret { masked: mask_secret(secret) })
}

/// Resolves the request's flags (§2). `Err` fails the whole request.
pub fn resolve<'s>(
    state: &'s State,
    client: &ClientIdentity,
    ctx: &Context,
    flag_names: &[String],
    mode: Mode,
    records: &[MaterializationRecord],
) -> Result<Outcome<'s>, Error> {
    let enabled = |f: &&'s Flag| f.state == FlagState::Active as i32 && f.clients.iter().any(|c| *c == client.client);
    let selected: Vec<&'s Flag> = if flag_names.is_empty() {
        state.flags.iter().filter(enabled).collect()
    } else {
        // In request order, each flag once; unknown names are silently absent.
        let mut seen = std::collections::HashSet::new();
        flag_names
            .iter()
            .filter_map(|n| state.flag_index.get(n))
            .filter(|i| seen.insert(**i))
            .filter_map(|i| state.flags.get(*i))
            .filter(enabled)
            .collect()
    };
    if selected.len() > MAX_FLAGS_PER_REQUEST {
        return Err(Error::TooManyFlags { count: selected.len(), max: MAX_FLAGS_PER_REQUEST });
    }
    let mut mat = Materializer::new(mode, records);
    let mut outcomes = Vec::with_capacity(selected.len());
    let mut reads = Vec::new();
    for flag in selected {
        let out = resolve_flag(state, flag, ctx, client, &mut mat)?;
        let flag_reads = mat.take_reads();
        if out.deferred {
            for r in flag_reads {
                if !reads.contains(&r) {
                    reads.push(r);
                }
            }
        }
        outcomes.push(out);
    }
    if !reads.is_empty() {
        return Ok(Outcome::Suspended { reads });
    }
    // Without reads nothing stays deferred (only discovery answers "unknown").
    for o in outcomes.iter_mut() {
        if o.deferred {
            o.deferred = false;
        }
    }
    Ok(Outcome::Resolved { flags: outcomes, writes: mat.into_writes() })
}

fn is_full_rollout(spec: &AssignmentSpec) -> bool {
    match spec.assignments.as_slice() {
        [a] => match a.bucket_ranges.as_slice() {
            [r] => r.lower == 0 && r.upper == spec.bucket_count,
            _ => false,
        },
        _ => false,
    }
}

/// The unit of a targeting-key value: a string, or a finite whole number without
/// decimals; at most 100 bytes.
fn unit_from(v: &Value) -> Option<String> {
    let s = match v {
        Value::String(s) => s.clone(),
        Value::Number(n) if n.is_finite() && n.fract() == 0.0 => format_number(*n),
        _ => return None,
    };
    if s.len() > MAX_TARGETING_KEY_BYTES {
        None
    } else {
        Some(s)
    }
}

enum Step<T> {
    Go(T),
    /// Skip this rule.
    Skip,
    /// The flag resolves with this reason (rule evaluation stops).
    Stop(ResolveReason),
}

fn mat_step<T>(r: Result<T, MatError>) -> Result<Step<T>, Error> {
    match r {
        Ok(v) => Ok(Step::Go(v)),
        Err(MatError::NotSupported) => Ok(Step::Stop(ResolveReason::MaterializationNotSupported)),
        Err(MatError::DuplicateWrite { rule, materialization }) => {
            Err(Error::DuplicateMaterializationWrite { rule, materialization })
        }
    }
}

fn eval_step(r: Result<Tri, EvalError>) -> Step<Tri> {
    match r {
        Ok(t) => Step::Go(t),
        // An unrecognized rule skips the rule (§3 steps 6 and 7).
        Err(EvalError::Unrecognized) => Step::Skip,
        Err(EvalError::MatNotSupported) => Step::Stop(ResolveReason::MaterializationNotSupported),
    }
}

/// Resolves one flag (§3).
pub fn resolve_flag<'s>(
    state: &'s State,
    flag: &'s Flag,
    ctx: &Context,
    client: &ClientIdentity,
    mat: &mut Materializer,
) -> Result<FlagOutcome<'s>, Error> {
    let mut out = FlagOutcome::new(flag);
    if flag.state == FlagState::Archived as i32 {
        return Ok(out.reason_only(ResolveReason::FlagArchived));
    }
    let mut missing_reads = false;
    for rule in &flag.rules {
        // 1-3: enabled, environments, segment exists
        if !rule.enabled {
            continue;
        }
        if !rule.environments.is_empty() && !rule.environments.iter().any(|e| client.environments.contains(e)) {
            continue;
        }
        if !state.segments.contains_key(&rule.segment) {
            continue;
        }
        // 4: the unit. A blank selector is "the default selector" of resolve.md §3.4: it
        // reads `targeting_key`, and only it tolerates a missing key or (for a full
        // rollout) an invalid one. Spec vs conformance: an explicit "targeting_key"
        // selector behaves like a custom one (missing -> skip the rule; invalid ->
        // TARGETING_KEY_ERROR even on a full rollout); the suite's cases
        // targeting_key_null_value / targeting_key_fractional vs
        // full_rollout_invalid_key_type / mat_write_no_unit require it. The suite wins.
        let is_default = rule.targeting_key_selector.is_empty();
        let selector: &str = if is_default { DEFAULT_SELECTOR } else { &rule.targeting_key_selector };
        let full_rollout = rule.assignment_spec.as_ref().map(is_full_rollout).unwrap_or(false);
        let unit: Option<String> = match ctx.lookup(selector) {
            None | Some(Value::Null) => {
                if is_default {
                    None
                } else {
                    continue;
                }
            }
            Some(v) => match unit_from(v) {
                Some(u) => Some(u),
                None if is_default && full_rollout => None,
                None => return Ok(out.stop(ResolveReason::TargetingKeyError, missing_reads)),
            },
        };
        // 5
        let spec = match &rule.assignment_spec {
            None => continue,
            Some(s) => s,
        };
        let mut ev = Evaluator { state, ctx, mat: &mut *mat, depth: 0 };

        // 6: materialization read
        let mut matched_by_mat = false;
        let mut sticky_variant: Option<String> = None;
        let read_spec = rule.materialization_spec.as_ref().filter(|m| !m.read_materialization.is_empty());
        if let Some(ms) = read_spec {
            let u = match &unit {
                None => continue,
                Some(u) => u.as_str(),
            };
            let mode = ms.mode.clone().unwrap_or_default();
            let answer = match mat_step(ev.mat.read_variant(u, &ms.read_materialization, &rule.name))? {
                Step::Go(a) => a,
                Step::Skip => continue,
                Step::Stop(r) => return Ok(out.stop(r, missing_reads)),
            };
            match answer {
                ReadAnswer::NotRecorded => {
                    if mode.materialization_must_match {
                        continue;
                    }
                }
                ReadAnswer::Recorded(variant) => {
                    let targeted = if mode.segment_targeting_can_be_ignored {
                        Tri::True
                    } else {
                        match eval_step(ev.segment_targeting(&rule.segment, Some(u))) {
                            Step::Go(t) => t,
                            Step::Skip => continue,
                            Step::Stop(r) => return Ok(out.stop(r, missing_reads)),
                        }
                    };
                    match targeted {
                        Tri::True => {
                            matched_by_mat = true;
                            sticky_variant = variant;
                        }
                        Tri::False => continue,
                        Tri::Unknown => {
                            missing_reads = true;
                            continue;
                        }
                    }
                }
                ReadAnswer::Unknown => missing_reads = true,
            }
        }

        // 7: segment match
        if !matched_by_mat {
            let mut path = Vec::new();
            match eval_step(ev.segment(&rule.segment, unit.as_deref(), &mut path)) {
                Step::Go(Tri::True) => {}
                Step::Go(Tri::False) | Step::Skip => continue,
                Step::Go(Tri::Unknown) => {
                    missing_reads = true;
                    continue;
                }
                Step::Stop(r) => return Ok(out.stop(r, missing_reads)),
            }
        }
        if missing_reads {
            continue; // an earlier (or this rule's) read is missing: cannot decide yet
        }

        // 8: the assignment
        let assignment = match choose_assignment(rule, spec, unit.as_deref(), sticky_variant.as_deref())? {
            None => continue,
            Some(a) => a,
        };
        let variant_name: &str = match &assignment.assignment {
            Some(AssignmentKind::Variant(v)) => &v.variant,
            _ => "",
        };

        // 9: materialization write, then the assignment kind
        if let (Some(u), Some(ms)) = (&unit, &rule.materialization_spec) {
            if !ms.write_materialization.is_empty() {
                match mat_step(mat.write(u, &ms.write_materialization, &rule.name, variant_name))? {
                    Step::Go(()) | Step::Skip => {}
                    Step::Stop(r) => return Ok(out.stop(r, missing_reads)),
                }
            }
        }
        match &assignment.assignment {
            Some(AssignmentKind::Fallthrough(_)) => {
                out.fallthroughs.push(Fallthrough {
                    rule: rule.name.clone(),
                    assignment_id: assignment.assignment_id.clone(),
                    unit: unit.clone().unwrap_or_default(),
                    selector: selector.to_string(),
                });
                continue;
            }
            Some(AssignmentKind::ClientDefault(_)) => {
                out.reason = ResolveReason::Match;
                out.rule = Some(rule);
                out.assignment_id = assignment.assignment_id.clone();
                out.unit = unit;
                out.selector = selector.to_string();
                return Ok(out);
            }
            Some(AssignmentKind::Variant(v)) => {
                let variant =
                    flag.variants.iter().find(|x| x.name == v.variant).ok_or_else(|| Error::UnknownVariant {
                        flag: flag.name.clone(),
                        rule: rule.name.clone(),
                        variant: v.variant.clone(),
                    })?;
                out.reason = ResolveReason::Match;
                out.variant = Some(variant);
                out.rule = Some(rule);
                out.assignment_id = assignment.assignment_id.clone();
                out.unit = unit;
                out.selector = selector.to_string();
                return Ok(out);
            }
            None => continue, // an assignment of unknown kind
        }
    }
    if missing_reads {
        out.deferred = true;
    }
    Ok(out)
}

fn in_ranges(a: &Assignment, b: u64) -> bool {
    a.bucket_ranges.iter().any(|r| (r.lower as i64) <= b as i64 && (b as i64) < r.upper as i64)
}

/// §3 step 8 (and the sticky variant of step 6).
fn choose_assignment<'s>(
    rule: &'s Rule,
    spec: &'s AssignmentSpec,
    unit: Option<&str>,
    sticky_variant: Option<&str>,
) -> Result<Option<&'s Assignment>, Error> {
    let variant_bucket = |u: &str| -> Result<u64, Error> {
        let seg = match rule.segment.find('/') {
            Some(i) => &rule.segment[i + 1..],
            None => rule.segment.as_str(),
        };
        let n = if spec.bucket_count > 0 { spec.bucket_count as u64 } else { 0 };
        bucket(hash_concat(&[seg, "|", u]), n)
            .ok_or_else(|| Error::InvalidBucketCount { rule: rule.name.clone(), bucket_count: spec.bucket_count })
    };
    if let Some(sv) = sticky_variant {
        let candidates: Vec<&Assignment> = spec
            .assignments
            .iter()
            .filter(|a| matches!(&a.assignment, Some(AssignmentKind::Variant(v)) if v.variant == sv))
            .collect();
        match candidates.as_slice() {
            [] => {} // no assignment gives it: normal bucketing (§8)
            [one] => return Ok(Some(one)),
            many => {
                if let Some(u) = unit {
                    let b = variant_bucket(u)?;
                    if let Some(a) = many.iter().find(|a| in_ranges(a, b)) {
                        return Ok(Some(a));
                    }
                }
                return Ok(Some(many[0]));
            }
        }
    }
    if is_full_rollout(spec) {
        return Ok(spec.assignments.first());
    }
    let u = match unit {
        None => return Ok(None),
        Some(u) => u,
    };
    let b = variant_bucket(u)?;
    Ok(spec.assignments.iter().find(|a| in_ranges(a, b)))
}

// ---------------------------------------------------------------------------------
// Values out
// ---------------------------------------------------------------------------------

/// The variant's value as JSON with every schema field that is missing filled with
/// null (recursively into nested struct schemas).
pub fn value_json(value: Option<&prost_types::Struct>, schema: Option<&StructFlagSchema>) -> String {
    let mut out = String::new();
    let empty = prost_types::Struct::default();
    write_backfilled(&mut out, value.unwrap_or(&empty), schema);
    out
}

fn write_backfilled(out: &mut String, value: &prost_types::Struct, schema: Option<&StructFlagSchema>) {
    use prost_types::value::Kind;
    out.push('{');
    let mut first = true;
    let mut sep = |out: &mut String| {
        if !first {
            out.push(',');
        }
        first = false;
    };
    let fields = schema.map(|s| &s.schema);
    // Keys of the value and of the schema, in order (both maps are sorted).
    let mut vi = value.fields.iter().peekable();
    let mut si = fields.into_iter().flat_map(|m| m.iter()).peekable();
    loop {
        let take_value = match (vi.peek(), si.peek()) {
            (None, None) => break,
            (Some(_), None) => Some(true),
            (None, Some(_)) => Some(false),
            (Some((vk, _)), Some((sk, _))) => match vk.as_str().cmp(sk.as_str()) {
                std::cmp::Ordering::Less => Some(true),
                std::cmp::Ordering::Greater => Some(false),
                std::cmp::Ordering::Equal => None,
            },
        };
        match take_value {
            Some(true) => {
                if let Some((k, v)) = vi.next() {
                    sep(out);
                    write_string(out, k);
                    out.push(':');
                    write_proto_value(out, v);
                }
            }
            Some(false) => {
                if let Some((k, _)) = si.next() {
                    sep(out);
                    write_string(out, k);
                    out.push_str(":null");
                }
            }
            None => {
                if let (Some((k, v)), Some((_, s))) = (vi.next(), si.next()) {
                    sep(out);
                    write_string(out, k);
                    out.push(':');
                    match (&v.kind, &s.schema_type) {
                        (Some(Kind::StructValue(inner)), Some(SchemaType::StructSchema(inner_schema))) => {
                            write_backfilled(out, inner, Some(inner_schema))
                        }
                        _ => write_proto_value(out, v),
                    }
                }
            }
        }
    }
    out.push('}');
}
