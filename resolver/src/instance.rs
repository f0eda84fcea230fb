//! One resolver instance: configuration, the loaded state, accumulated logs and the
//! resolve-id generator. The ABI layer (`abi.rs`) is a thin wrapper around this.
use crate::error::Error;
use crate::json::parse_context;
use crate::json::write_string;
use crate::logs::{LogConfig, Logs};
use crate::materialize::Mode;
use crate::proto::abi::{
    resolve_result, Configure, ConfigureResult, FlagDigest, FlagResult, FlushLogs, FlushLogsResult,
    MaterializationMode, ResolveCall, ResolveResult, Resolved, SetState, SetStateResult, Suspended,
};
use crate::proto::api::MaterializationRecord;
use crate::proto::api::ResolveReason;
use crate::proto::types::flag_schema::StructFlagSchema;
use crate::resolve::{client_for, explain, resolve, Explained, FlagOutcome, Outcome};
use crate::rng::Rng;
use crate::state::State;
use crate::trace::JsonTrace;
use std::fmt::Write as _;

/// Used until the host calls `cr_configure` with its own entropy.
const DEFAULT_SEED: u64 = 0x5eed_c0f1_d3ce_0001;

#[derive(Debug)]
pub struct Instance {
    state: Option<State>,
    logs: Logs,
    rng: Rng,
}

impl Default for Instance {
    fn default() -> Self {
        Self::new()
    }
}

/// The guest's linear memory size (0 on the host).
pub fn memory_bytes() -> u64 {
    #[cfg(target_arch = "wasm32")]
    {
        (core::arch::wasm32::memory_size(0) as u64) * 65_536
    }
    #[cfg(not(target_arch = "wasm32"))]
    {
        0
    }
}

impl Instance {
    pub fn new() -> Self {
        Instance { state: None, logs: Logs::new(LogConfig::default()), rng: Rng::new(DEFAULT_SEED) }
    }

    pub fn configure(&mut self, req: Configure) -> ConfigureResult {
        self.rng = Rng::new(req.rng_seed);
        self.logs.config = LogConfig {
            sdk: req.sdk,
            enable_apply_dedup: req.enable_apply_dedup,
            disable_exposure_collection: req.disable_exposure_collection,
        };
        self.logs.set_pending_cap(req.max_pending_assigned_bytes as usize);
        ConfigureResult { resolver_version: crate::RESOLVER_VERSION.to_string() }
    }

    /// Decodes and indexes the whole state before swapping it in; on error the previous
    /// state stays.
    pub fn set_state(&mut self, req: SetState) -> Result<SetStateResult, Error> {
        self.set_state_from(&req.state, &req.account_id)
    }

    /// `set_state` of a state and account borrowed from the caller (the ABI's input buffer:
    /// no copy of a state of several MB).
    pub fn set_state_from(&mut self, state: &[u8], account_id: &str) -> Result<SetStateResult, Error> {
        let state = State::load(state, account_id)?;
        let result = SetStateResult {
            flags: state
                .digests
                .iter()
                .map(|(name, digest)| FlagDigest { name: name.clone(), digest: *digest })
                .collect(),
            segment_count: state.segment_count(),
            client_count: state.client_count,
        };
        self.state = Some(state);
        Ok(result)
    }

    pub fn has_state(&self) -> bool {
        self.state.is_some()
    }

    /// Resolves `call` as a `ResolveResult` message (tests and tools; the ABI answers with
    /// the JSON form of `resolve_json`, which carries no flag schema).
    pub fn resolve(&mut self, call: &ResolveCall) -> Result<ResolveResult, Error> {
        self.resolve_with(call, |state, resolution| {
            let result = match resolution {
                Resolution::Suspended(reads) => {
                    resolve_result::Result::Suspended(Suspended { materializations_to_read: reads })
                }
                Resolution::Resolved { flags, writes, resolve_id } => resolve_result::Result::Resolved(Resolved {
                    flags: flags.iter().map(|f| flag_result(state, f)).collect(),
                    resolve_id,
                    materializations_to_write: writes,
                }),
            };
            ResolveResult { result: Some(result) }
        })
    }

    /// Resolves `call` and writes the answer as JSON (the `cr_resolve` response, ABI 2):
    /// `{"r":resolve_id,"f":[[flag,variant,value,reason,should_apply,rule,assignment_id],..],
    /// "w":[[unit,materialization,rule,variant],..]}` or `{"s":[[unit,materialization,rule,
    /// variant],..]}` when suspended. `value` is the variant's value object (precomputed at
    /// state load), `{}` for a client default, `null` without a variant.
    pub fn resolve_json(&mut self, call: &ResolveCall, out: &mut String) -> Result<(), Error> {
        self.resolve_with(call, |state, resolution| write_resolution(out, state, resolution))
    }

    fn resolve_with<R>(
        &mut self,
        call: &ResolveCall,
        answer: impl FnOnce(&State, Resolution<'_, '_>) -> R,
    ) -> Result<R, Error> {
        let state = self.state.as_ref().ok_or(Error::NoState)?;
        let client = client_for(state, &call.client_secret)?;
        let ctx = parse_context(&call.context_json)?;
        let mode = mode_of(call)?;
        let outcome = resolve(state, client, &ctx, &call.flags, mode, &call.materializations)?;
        let (flags, writes) = match outcome {
            // Nothing is logged for a suspended resolve; the host resolves again.
            Outcome::Suspended { reads } => return Ok(answer(state, Resolution::Suspended(reads))),
            Outcome::Resolved { flags, writes } => (flags, writes),
        };
        let resolve_id = self.rng.resolve_id();
        if !call.skip_logging {
            self.logs.record_resolve(client, &ctx, &flags);
            if call.apply {
                self.logs.record_apply(&resolve_id, client, &flags, call.now_unix_millis);
            }
        }
        Ok(answer(state, Resolution::Resolved { flags: &flags, writes, resolve_id }))
    }

    /// Explains one flag (`call.flags` holds exactly one name) for `call`'s context and
    /// writes the trace as JSON (the `cr_explain` response). Never logged: no resolve
    /// info, no exposure, no resolve id drawn. Suspended (discovery): `{"s":[reads]}`,
    /// like `resolve_json`; the host answers the reads and explains again in COMPLETE mode.
    /// Otherwise:
    /// `{"flag","client","presence","rules":[{"name","segment","enabled","environments",
    /// "targeting_key":{"selector","seen","unit"},"materialization_read":{..},
    /// "segments":[{"name","criteria":[{"id","kind",..,"matched","reason"}],"targeting",
    /// "bitset","matched"}],"sticky","bucketing":{"unit","salt","bucket","bucket_count",
    /// "full_rollout","assignment"},"materialization_write","outcome"}],"reason","variant",
    /// "value","rule","assignment_id","unit","should_apply","fallthroughs":[..],
    /// "writes":[..]}`. Rule outcomes are `match`, `match_client_default`, `fallthrough`,
    /// a skip reason (e.g. `segment_not_matched`, `bucket_not_allocated`) or a stop reason
    /// (`targeting_key_error`); rules after the deciding one are absent.
    pub fn explain_json(&self, call: &ResolveCall, out: &mut String) -> Result<(), Error> {
        let state = self.state.as_ref().ok_or(Error::NoState)?;
        let client = client_for(state, &call.client_secret)?;
        let flag_name = match call.flags.as_slice() {
            [one] => one.as_str(),
            other => return Err(Error::ExplainFlagCount(other.len())),
        };
        let ctx = parse_context(&call.context_json)?;
        let mode = mode_of(call)?;
        let mut tr = JsonTrace::new();
        let explained = explain(state, client, &ctx, flag_name, mode, &call.materializations, &mut tr)?;
        let (presence, outcome, writes) = match explained {
            Explained::Suspended { reads } => {
                write_suspended(out, &reads);
                return Ok(());
            }
            Explained::Absent(p) => (p, None, Vec::new()),
            Explained::Resolved { outcome, writes } => (crate::resolve::Presence::Resolved, Some(outcome), writes),
        };
        out.push_str("{\"flag\":");
        write_string(out, flag_name);
        out.push_str(",\"client\":");
        write_string(out, &client.client);
        out.push_str(",\"presence\":");
        write_string(out, presence.as_str());
        out.push(',');
        tr.write_rules(out);
        let reason = match (&outcome, presence) {
            (Some(o), _) => o.reason,
            (None, crate::resolve::Presence::Archived) => ResolveReason::FlagArchived,
            (None, _) => ResolveReason::FlagNotFound,
        };
        out.push_str(",\"reason\":");
        write_string(out, reason.as_str_name().trim_start_matches("RESOLVE_REASON_"));
        if let Some(f) = &outcome {
            out.push_str(",\"variant\":");
            write_string(out, f.variant_name());
            out.push_str(",\"value\":");
            write_value(out, state, f);
            out.push_str(",\"rule\":");
            write_string(out, f.rule_name());
            out.push_str(",\"segment\":");
            write_string(out, f.segment());
            out.push_str(",\"assignment_id\":");
            write_string(out, &f.assignment_id);
            out.push_str(",\"unit\":");
            match &f.unit {
                Some(u) => write_string(out, u),
                None => out.push_str("null"),
            }
            let _ = write!(out, ",\"should_apply\":{}", f.should_apply());
            out.push_str(",\"fallthroughs\":[");
            for (i, ft) in f.fallthroughs.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str("{\"rule\":");
                write_string(out, &ft.rule);
                out.push_str(",\"assignment_id\":");
                write_string(out, &ft.assignment_id);
                out.push_str(",\"unit\":");
                write_string(out, &ft.unit);
                out.push('}');
            }
            out.push(']');
        } else {
            out.push_str(",\"variant\":\"\",\"value\":null,\"rule\":\"\",\"segment\":\"\",\"assignment_id\":\"\",\"unit\":null,\"should_apply\":false,\"fallthroughs\":[]");
        }
        out.push_str(",\"writes\":");
        write_records(out, &writes);
        out.push('}');
        Ok(())
    }

    pub fn flush_logs(&mut self, req: FlushLogs) -> FlushLogsResult {
        let d = self.logs.drain(req.now_unix_millis, req.max_assigned_bytes, memory_bytes());
        FlushLogsResult {
            write_flag_logs_request: d.request,
            more_pending: d.more_pending,
            flag_assigned_count: d.flag_assigned_count,
            dropped_flag_assigned: d.dropped.flag_assigned,
            dropped_applied_flags: d.dropped.applied_flags,
        }
    }

    pub fn logs(&self) -> &Logs {
        &self.logs
    }
}

/// A resolve's answer before it is encoded.
enum Resolution<'a, 's> {
    Suspended(Vec<MaterializationRecord>),
    Resolved { flags: &'a [FlagOutcome<'s>], writes: Vec<MaterializationRecord>, resolve_id: String },
}

fn mode_of(call: &ResolveCall) -> Result<Mode, Error> {
    match MaterializationMode::from_i32(call.materialization_mode) {
        Some(MaterializationMode::Unsupported) => Ok(Mode::Unsupported),
        Some(MaterializationMode::Discovery) => Ok(Mode::Discovery),
        Some(MaterializationMode::Complete) => Ok(Mode::Complete),
        None => Err(Error::UnknownMaterializationMode(call.materialization_mode)),
    }
}

/// `{"s":[reads]}`: a suspended answer, of a resolve and of an explain alike.
fn write_suspended(out: &mut String, reads: &[MaterializationRecord]) {
    out.push_str("{\"s\":");
    write_records(out, reads);
    out.push('}');
}

/// A flag's value in an answer: the variant's value (precomputed at state load), `{}` for a
/// client default, `null` without a variant.
fn write_value(out: &mut String, state: &State, f: &FlagOutcome) {
    match f.variant {
        Some(v) => out.push_str(&state.variant_json(f.flag, v)),
        None if f.reason == ResolveReason::Match => out.push_str("{}"),
        None => out.push_str("null"),
    }
}

fn write_records(out: &mut String, records: &[MaterializationRecord]) {
    out.push('[');
    for (i, r) in records.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push('[');
        write_string(out, &r.unit);
        out.push(',');
        write_string(out, &r.materialization);
        out.push(',');
        write_string(out, &r.rule);
        out.push(',');
        write_string(out, &r.variant);
        out.push(']');
    }
    out.push(']');
}

fn write_resolution(out: &mut String, state: &State, resolution: Resolution<'_, '_>) {
    match resolution {
        Resolution::Suspended(reads) => write_suspended(out, &reads),
        Resolution::Resolved { flags, writes, resolve_id } => {
            out.push_str("{\"r\":");
            write_string(out, &resolve_id);
            out.push_str(",\"f\":[");
            for (i, f) in flags.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push('[');
                write_string(out, &f.flag.name);
                out.push(',');
                write_string(out, f.variant_name());
                out.push(',');
                write_value(out, state, f);
                let _ = write!(out, ",{},{},", f.reason as i32, f.should_apply() as u8);
                write_string(out, f.rule_name());
                out.push(',');
                write_string(out, &f.assignment_id);
                out.push(']');
            }
            out.push_str("],\"w\":");
            write_records(out, &writes);
            out.push('}');
        }
    }
}

fn flag_result(state: &State, f: &FlagOutcome) -> FlagResult {
    let (value_json, flag_schema) = match f.variant {
        Some(v) => {
            (state.variant_json(f.flag, v).into_owned().into_bytes(), Some(f.flag.schema.clone().unwrap_or_default()))
        }
        // client default: an empty value and an empty schema
        None if f.reason == ResolveReason::Match => (b"{}".to_vec(), Some(StructFlagSchema::default())),
        None => (Vec::new(), None),
    };
    FlagResult {
        flag: f.flag.name.clone(),
        variant: f.variant_name().to_string(),
        value_json,
        reason: f.reason as i32,
        should_apply: f.should_apply(),
        assignment_origin: f.rule_name().to_string(),
        assignment_id: f.assignment_id.clone(),
        flag_schema,
    }
}
