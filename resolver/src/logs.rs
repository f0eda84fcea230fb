//! What gets logged (resolve.md §6): resolve info, exposures with apply dedup, telemetry,
//! drained as one `WriteFlagLogsRequest`.
use crate::exposure;
use crate::hash::murmur3_x64_128;
use crate::hash::{FastMap, FastSet};
use crate::proto::admin::client_resolve_info::EvaluationContextSchemaInstance;
use crate::proto::admin::context_field_semantic_type::{
    country_semantic_type::CountryFormat, CountrySemanticType, DateSemanticType, TimestampSemanticType,
    Type as SemType, VersionSemanticType,
};
use crate::proto::admin::evaluation_context_schema_field::Kind;
use crate::proto::admin::flag_resolve_info::{AssignmentResolveInfo, RuleResolveInfo, VariantResolveInfo};
use crate::proto::admin::{ClientResolveInfo, ContextFieldSemanticType, FlagResolveInfo};
use crate::proto::api::telemetry_data::{ApplyDedupTelemetry, ResolveRate};
use crate::proto::api::{Sdk, TelemetryData, WriteFlagLogsRequest};
use crate::resolve::FlagOutcome;
use crate::state::ClientIdentity;
use crate::value::{Context, Value};
use prost::encoding::{encode_varint, encoded_len_varint};
use prost::Message;
use std::collections::{BTreeMap, VecDeque};

pub const MAX_SCHEMAS_PER_CREDENTIAL: usize = 50;
pub const DEDUP_WINDOW_MS: i64 = 120_000;
pub const DEDUP_CAPACITY: usize = 100_000;
/// Exposures kept while the host does not drain (beyond this, new ones are dropped and
/// counted: the host reports the count, so a drop is never silent).
pub const MAX_PENDING_ASSIGNED_BYTES: usize = 64 * 1024 * 1024;

// ---------------------------------------------------------------------------------
// Context schemas
// ---------------------------------------------------------------------------------

const COUNTRY_CODES: &str =
    "AD AE AF AG AI AL AM AO AQ AR AS AT AU AW AX AZ BA BB BD BE BF BG BH BI BJ BL BM BN BO BQ \
BR BS BT BV BW BY BZ CA CC CD CF CG CH CI CK CL CM CN CO CR CU CV CW CX CY CZ DE DJ DK DM DO DZ EC EE EG EH ER ES ET \
FI FJ FK FM FO FR GA GB GD GE GF GG GH GI GL GM GN GP GQ GR GS GT GU GW GY HK HM HN HR HT HU ID IE IL IM IN IO IQ IR \
IS IT JE JM JO JP KE KG KH KI KM KN KP KR KW KY KZ LA LB LC LI LK LR LS LT LU LV LY MA MC MD ME MF MG MH MK ML MM MN \
MO MP MQ MR MS MT MU MV MW MX MY MZ NA NC NE NF NG NI NL NO NP NR NU NZ OM PA PE PF PG PH PK PL PM PN PR PS PT PW PY \
QA RE RO RS RU RW SA SB SC SD SE SG SH SI SJ SK SL SM SN SO SR SS ST SV SX SY SZ TC TD TF TG TH TJ TK TL TM TN TO TR \
TT TV TW TZ UA UG UM US UY UZ VA VC VE VG VI VN VU WF WS YE YT ZA ZM ZW";

fn is_country_code(s: &str) -> bool {
    let b = s.as_bytes();
    if b.len() != 2 || !b.iter().all(|c| c.is_ascii_uppercase()) {
        return false;
    }
    // COUNTRY_CODES is sorted, one code every 3 bytes
    let table = COUNTRY_CODES.as_bytes();
    let n = (table.len() + 1) / 3;
    let (mut lo, mut hi) = (0usize, n);
    while lo < hi {
        let mid = (lo + hi) / 2;
        let code = &table[mid * 3..mid * 3 + 2];
        match code.cmp(b) {
            std::cmp::Ordering::Equal => return true,
            std::cmp::Ordering::Less => lo = mid + 1,
            std::cmp::Ordering::Greater => hi = mid,
        }
    }
    false
}

fn is_date(s: &str) -> bool {
    s.len() == 10 && crate::timeparse::parse_timestamp(s).is_some()
}

fn is_timestamp(s: &str) -> bool {
    s.len() > 10 && s.contains(|c| c == 'T' || c == 't' || c == ' ') && crate::timeparse::parse_timestamp(s).is_some()
}

fn is_version(s: &str) -> bool {
    let core = s.split('-').next().unwrap_or("");
    let parts = core.split('.').count();
    (3..=4).contains(&parts) && crate::semver::try_parse(s).is_some()
}

fn semantic_type(s: &str) -> Option<SemType> {
    if is_country_code(s) {
        Some(SemType::Country(CountrySemanticType { format: CountryFormat::TwoLetterIsoCode as i32 }))
    } else if !s.as_bytes().first().map_or(false, u8::is_ascii_digit) {
        None // a date, a timestamp and a version all start with a digit (most strings do not)
    } else if is_date(s) {
        Some(SemType::Date(DateSemanticType {}))
    } else if is_timestamp(s) {
        Some(SemType::Timestamp(TimestampSemanticType {}))
    } else if is_version(s) {
        Some(SemType::Version(VersionSemanticType {}))
    } else {
        None
    }
}

fn semantic_code(t: &Option<SemType>) -> u8 {
    match t {
        None => 0,
        Some(SemType::Country(_)) => 1,
        Some(SemType::Date(_)) => 2,
        Some(SemType::Timestamp(_)) => 3,
        Some(SemType::Version(_)) => 4,
        Some(_) => 5,
    }
}

/// The list's element kind, when every element shares one scalar kind.
fn list_kind(items: &[Value]) -> Option<Kind> {
    let mut kinds = items.iter().map(scalar_kind);
    match kinds.next() {
        Some(Some(first)) if kinds.all(|k| k == Some(first)) => Some(first),
        _ => None,
    }
}

/// A cheap, allocation-free fingerprint of the context's schema (the same schema gives
/// the same bytes), so a repeated schema is recognized without building it.
fn fingerprint(fields: &BTreeMap<String, Value>, buf: &mut Vec<u8>) {
    for (k, v) in fields {
        buf.extend_from_slice(k.as_bytes());
        buf.push(0);
        match v {
            Value::Struct(m) => {
                buf.push(b'{');
                fingerprint(m, buf);
                buf.push(b'}');
            }
            Value::List(items) => {
                buf.push(b'[');
                buf.push(list_kind(items).map(|k| k as u8).unwrap_or(0));
            }
            scalar => {
                buf.push(scalar_kind(scalar).map(|k| k as u8).unwrap_or(0));
                if let Value::String(s) = scalar {
                    buf.push(semantic_code(&semantic_type(s)));
                }
            }
        }
    }
}

fn scalar_kind(v: &Value) -> Option<Kind> {
    match v {
        Value::Null => Some(Kind::NullKind),
        Value::Number(_) => Some(Kind::NumberKind),
        Value::String(_) => Some(Kind::StringKind),
        Value::Bool(_) => Some(Kind::BoolKind),
        _ => None,
    }
}

fn collect_schema(prefix: &str, fields: &BTreeMap<String, Value>, out: &mut EvaluationContextSchemaInstance) {
    for (k, v) in fields {
        let path = if prefix.is_empty() { k.clone() } else { format!("{}.{}", prefix, k) };
        match v {
            Value::Struct(m) => collect_schema(&path, m, out),
            Value::List(items) => {
                if let Some(kind) = list_kind(items) {
                    out.schema.insert(path, kind as i32);
                }
            }
            scalar => {
                if let Some(kind) = scalar_kind(scalar) {
                    out.schema.insert(path.clone(), kind as i32);
                }
                if let Value::String(s) = scalar {
                    if let Some(t) = semantic_type(s) {
                        out.semantic_types.insert(path, ContextFieldSemanticType { r#type: Some(t) });
                    }
                }
            }
        }
    }
}

/// The schema of an evaluation context: dotted field paths -> kind, plus semantic types.
pub fn context_schema(ctx: &Context) -> EvaluationContextSchemaInstance {
    let mut out = EvaluationContextSchemaInstance::default();
    collect_schema("", &ctx.fields, &mut out);
    out
}

// ---------------------------------------------------------------------------------
// Aggregation
// ---------------------------------------------------------------------------------

#[derive(Default, Debug)]
struct ClientSchemas {
    /// fingerprints of contexts already accounted for
    fingerprints: FastSet<u64>,
    /// hashes of the schemas in `list`
    seen: FastSet<u64>,
    list: Vec<EvaluationContextSchemaInstance>,
}

#[derive(Default, Debug)]
struct RuleAgg {
    count: i64,
    assignments: BTreeMap<String, i64>,
}

#[derive(Default, Debug)]
struct FlagAgg {
    variants: BTreeMap<String, i64>,
    rules: BTreeMap<String, RuleAgg>,
}

#[derive(Default, Debug, Clone, Copy, PartialEq, Eq)]
pub struct DedupCounters {
    pub applies_total: u32,
    pub applies_deduped: u32,
    pub apply_dedup_overflow: u32,
    pub sweeps: u32,
}

#[derive(Debug, Clone, Default)]
pub struct LogConfig {
    pub sdk: Option<Sdk>,
    pub enable_apply_dedup: bool,
    pub disable_exposure_collection: bool,
}

/// Everything an instance accumulates between drains.
#[derive(Debug, Default)]
pub struct Logs {
    pub config: LogConfig,
    schemas: BTreeMap<(String, String), ClientSchemas>,
    flags: BTreeMap<String, FlagAgg>,
    pending: VecDeque<Vec<u8>>,
    pending_bytes: usize,
    dedup: DedupWindow,
    counters: DedupCounters,
    rates: BTreeMap<i32, u32>,
    /// what the pending cap refused since the last drain: events and the flags they held
    dropped: Dropped,
    /// the pending cap (MAX_PENDING_ASSIGNED_BYTES; lowered by tests)
    pending_cap: usize,
    /// reusable buffer for schema fingerprints
    scratch: Vec<u8>,
    /// reusable buffer for the exposures of one resolve (`record_apply`)
    identities: Vec<u8>,
}

/// What `DedupWindow::check` found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Seen {
    /// Sent within the window: do not send it again.
    Duplicate,
    /// Send it; `evicted` live identities (0 or 1) were forgotten to make room.
    New { evicted: u32 },
}

/// The apply-dedup window: identity -> time (ms) it was last sent, plus a FIFO of
/// (time, identity) in insertion order.
///
/// Invariants: `sent.len() <= DEDUP_CAPACITY`; every live identity has exactly one FIFO
/// entry whose time equals its map value (other entries for it are stale and are dropped
/// when they reach the front); `order.len() <= 2 * DEDUP_CAPACITY`. Every entry enters the
/// FIFO once and leaves it once, so a call costs O(1) amortized: expiry only touches
/// expired entries and a full window evicts its oldest entry, never rescanning the map.
/// With a clock that never goes back (the host's), time order is insertion order.
#[derive(Debug, Default)]
struct DedupWindow {
    sent: FastMap<u128, i64>,
    order: VecDeque<(i64, u128)>,
    /// Entries examined (map look-ups and FIFO pops): instrumentation for the tests.
    touched: u64,
}

impl DedupWindow {
    fn len(&self) -> usize {
        self.sent.len()
    }

    fn check(&mut self, key: u128, now_ms: i64) -> Seen {
        self.expire(now_ms);
        self.touched += 1;
        if let Some(sent) = self.sent.get_mut(&key) {
            if now_ms.saturating_sub(*sent) < DEDUP_WINDOW_MS {
                return Seen::Duplicate;
            }
            // Out of the window but not expired yet (the clock went back since an entry
            // ahead of it was recorded): restart its window. Its old FIFO entry is now stale.
            *sent = now_ms;
            self.order.push_back((now_ms, key));
            let evicted = self.bound_order();
            return Seen::New { evicted };
        }
        let mut evicted = 0;
        while self.sent.len() >= DEDUP_CAPACITY {
            // Full of identities still in their window: forget the oldest.
            match self.pop_front() {
                Some(n) => evicted += n,
                None => break, // unreachable: every live identity has a FIFO entry
            }
        }
        self.sent.insert(key, now_ms);
        self.order.push_back((now_ms, key));
        Seen::New { evicted: evicted + self.bound_order() }
    }

    /// Forgets every identity whose window has passed (they are at the front).
    fn expire(&mut self, now_ms: i64) {
        while let Some(&(at, _)) = self.order.front() {
            if now_ms.saturating_sub(at) < DEDUP_WINDOW_MS {
                break;
            }
            self.pop_front();
        }
    }

    /// Drops the FIFO's front entry: Some(1) when it was a live identity (now forgotten),
    /// Some(0) when it was stale, None when the FIFO is empty.
    fn pop_front(&mut self) -> Option<u32> {
        let (at, key) = self.order.pop_front()?;
        self.touched += 1;
        if self.sent.get(&key) == Some(&at) {
            self.sent.remove(&key);
            Some(1)
        } else {
            Some(0) // stale: the identity was re-sent later and has a newer entry
        }
    }

    /// Keeps stale entries (only a clock going back makes them) from growing the FIFO.
    fn bound_order(&mut self) -> u32 {
        let mut evicted = 0;
        while self.order.len() > 2 * DEDUP_CAPACITY {
            evicted += self.pop_front().unwrap_or(0);
        }
        evicted
    }
}

/// Exposures refused by the pending cap.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Dropped {
    pub flag_assigned: u64,
    pub applied_flags: u64,
}

/// One drained batch.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Drained {
    /// A serialized WriteFlagLogsRequest; empty when nothing accumulated.
    pub request: Vec<u8>,
    pub more_pending: bool,
    pub flag_assigned_count: u32,
    /// Dropped by the pending cap since the previous drain (reported once).
    pub dropped: Dropped,
}

/// `map.entry(key.to_string()).or_default()` without allocating when the key exists.
fn entry_for<'m, V: Default>(map: &'m mut BTreeMap<String, V>, key: &str) -> &'m mut V {
    if !map.contains_key(key) {
        map.insert(key.to_string(), V::default());
    }
    match map.get_mut(key) {
        Some(v) => v,
        None => unreachable!("inserted above"),
    }
}

impl Logs {
    pub fn new(config: LogConfig) -> Self {
        Logs { config, pending_cap: MAX_PENDING_ASSIGNED_BYTES, ..Default::default() }
    }

    /// Caps the bytes of exposures kept between drains (0 = MAX_PENDING_ASSIGNED_BYTES).
    pub fn set_pending_cap(&mut self, bytes: usize) {
        self.pending_cap = if bytes == 0 { MAX_PENDING_ASSIGNED_BYTES } else { bytes };
    }

    /// Resolve info for one resolve (applied or not).
    pub fn record_resolve(&mut self, client: &ClientIdentity, ctx: &Context, flags: &[FlagOutcome]) {
        // Found by reference (a process has a credential or two): the owned key is built
        // once per credential, not on every resolve.
        let known = self.schemas.keys().any(|(c, cr)| *c == client.client && *cr == client.credential);
        if !known {
            self.schemas.insert((client.client.clone(), client.credential.clone()), ClientSchemas::default());
        }
        let entry = match self.schemas.iter_mut().find(|((c, cr), _)| *c == client.client && *cr == client.credential) {
            Some((_, e)) => e,
            None => unreachable!("inserted above"),
        };
        // Bounded per drain (schemas per credential, fingerprints): contexts whose field
        // names vary per user cannot grow this, and once a bound is hit a resolve skips
        // the fingerprint entirely.
        if entry.list.len() < MAX_SCHEMAS_PER_CREDENTIAL && entry.fingerprints.len() < 16 * MAX_SCHEMAS_PER_CREDENTIAL {
            self.scratch.clear();
            fingerprint(&ctx.fields, &mut self.scratch);
            let fp = murmur3_x64_128(&self.scratch, 0).0;
            if entry.fingerprints.insert(fp) {
                let schema = context_schema(ctx);
                let hash = murmur3_x64_128(&schema.encode_to_vec(), 0).0;
                if entry.seen.insert(hash) {
                    entry.list.push(schema);
                }
            }
        }
        for f in flags {
            *self.rates.entry(f.reason as i32).or_insert(0) += 1;
            let agg = entry_for(&mut self.flags, &f.flag.name);
            *entry_for(&mut agg.variants, f.variant_name()) += 1;
            if let Some(rule) = f.rule {
                let r = entry_for(&mut agg.rules, &rule.name);
                r.count += 1;
                *entry_for(&mut r.assignments, &f.assignment_id) += 1;
            }
            for ft in &f.fallthroughs {
                let r = entry_for(&mut agg.rules, &ft.rule);
                r.count += 1;
                *entry_for(&mut r.assignments, &ft.assignment_id) += 1;
            }
        }
    }

    /// Exposures for an applied resolve: one FlagAssigned with the flags that should apply.
    pub fn record_apply(&mut self, resolve_id: &str, client: &ClientIdentity, flags: &[FlagOutcome], now_ms: i64) {
        if self.config.disable_exposure_collection {
            return;
        }
        // Each exposure's identity is written once, into a buffer kept across resolves
        // (taken out while `is_duplicate` borrows self), and copied into the event.
        let mut identities = std::mem::take(&mut self.identities);
        identities.clear();
        let mut ranges: Vec<(usize, usize)> = Vec::new();
        let mut candidates = 0usize;
        for f in flags.iter().filter(|f| f.should_apply()) {
            candidates += 1;
            let start = identities.len();
            exposure::write_identity(&mut identities, f);
            if self.config.enable_apply_dedup && self.is_duplicate(&identities[start..], now_ms) {
                identities.truncate(start);
                continue;
            }
            ranges.push((start, identities.len()));
        }
        if candidates > 0 && ranges.is_empty() {
            self.identities = identities;
            return; // fully deduplicated
        }
        let bytes = exposure::write_event(resolve_id, client, self.config.sdk.as_ref(), &identities, &ranges, now_ms);
        self.identities = identities;
        if self.pending_bytes + bytes.len() > self.pending_cap {
            // The host stopped draining (or cannot keep up): memory stays bounded, and the
            // loss is counted for the host to report.
            self.dropped.flag_assigned += 1;
            self.dropped.applied_flags += ranges.len() as u64;
            return;
        }
        self.pending_bytes += bytes.len();
        self.pending.push_back(bytes);
    }

    /// True when an identical exposure was sent within the window (`identity`: the
    /// applied flag's encoded fields except the apply time, `exposure::write_identity`).
    fn is_duplicate(&mut self, identity: &[u8], now_ms: i64) -> bool {
        self.counters.applies_total = self.counters.applies_total.saturating_add(1);
        let (lo, hi) = murmur3_x64_128(identity, 0);
        let key = ((hi as u128) << 64) | lo as u128;
        match self.dedup.check(key, now_ms) {
            Seen::Duplicate => {
                self.counters.applies_deduped = self.counters.applies_deduped.saturating_add(1);
                true
            }
            Seen::New { evicted } => {
                // An identity forgotten while still in its window: a later duplicate of it
                // will be sent again. Reported as overflow (the telemetry has no other field).
                self.counters.apply_dedup_overflow = self.counters.apply_dedup_overflow.saturating_add(evicted);
                false
            }
        }
    }

    fn sweep(&mut self, now_ms: i64) {
        self.counters.sweeps = self.counters.sweeps.saturating_add(1);
        self.dedup.expire(now_ms);
    }

    pub fn pending_assigned(&self) -> usize {
        self.pending.len()
    }

    pub fn dedup_size(&self) -> usize {
        self.dedup.len()
    }

    /// Dedup entries examined since the instance started (instrumentation: tests bound the
    /// work per exposure with it).
    pub fn dedup_work(&self) -> u64 {
        self.dedup.touched
    }

    pub fn counters(&self) -> DedupCounters {
        self.counters
    }

    /// Drains what accumulated: resolve info and telemetry always, exposures up to
    /// `max_assigned_bytes` (0 = no bound; a single larger event goes alone).
    pub fn drain(&mut self, now_ms: i64, max_assigned_bytes: u32, memory_bytes: u64) -> Drained {
        if self.config.enable_apply_dedup {
            self.sweep(now_ms);
        }
        let mut req = WriteFlagLogsRequest::default();
        for ((client, credential), s) in std::mem::take(&mut self.schemas) {
            req.client_resolve_info.push(ClientResolveInfo { client, client_credential: credential, schema: s.list });
        }
        for (flag, agg) in std::mem::take(&mut self.flags) {
            req.flag_resolve_info.push(FlagResolveInfo {
                flag,
                variant_resolve_info: agg
                    .variants
                    .into_iter()
                    .map(|(variant, count)| VariantResolveInfo { variant, count })
                    .collect(),
                rule_resolve_info: agg
                    .rules
                    .into_iter()
                    .map(|(rule, r)| RuleResolveInfo {
                        rule,
                        count: r.count,
                        assignment_resolve_info: r
                            .assignments
                            .into_iter()
                            .map(|(assignment_id, count)| AssignmentResolveInfo { assignment_id, count })
                            .collect(),
                    })
                    .collect(),
            });
        }
        let rates = std::mem::take(&mut self.rates);
        let counters = std::mem::take(&mut self.counters);
        let dropped = std::mem::take(&mut self.dropped);

        // exposures, bounded
        let mut assigned: Vec<Vec<u8>> = Vec::new();
        let mut size = 0usize;
        while let Some(front) = self.pending.front() {
            let entry = 1 + encoded_len_varint(front.len() as u64) + front.len();
            if max_assigned_bytes > 0 && !assigned.is_empty() && size + entry > max_assigned_bytes as usize {
                break;
            }
            size += entry;
            if let Some(b) = self.pending.pop_front() {
                self.pending_bytes = self.pending_bytes.saturating_sub(b.len());
                assigned.push(b);
            }
        }

        let nothing = req.client_resolve_info.is_empty()
            && req.flag_resolve_info.is_empty()
            && assigned.is_empty()
            && rates.is_empty()
            && counters == DedupCounters::default();
        if nothing {
            return Drained {
                request: Vec::new(),
                more_pending: !self.pending.is_empty(),
                flag_assigned_count: 0,
                dropped,
            };
        }
        req.telemetry_data = Some(TelemetryData {
            sdk: self.config.sdk.clone(),
            resolve_rate: rates
                .into_iter()
                .map(|(reason, count)| ResolveRate { count, reason: reason as u32 })
                .collect(),
            memory_bytes,
            resolver_version: crate::RESOLVER_VERSION.to_string(),
            apply_dedup: Some(ApplyDedupTelemetry {
                applies_total: counters.applies_total,
                applies_deduped: counters.applies_deduped,
                apply_dedup_overflow: counters.apply_dedup_overflow,
                sweeps: counters.sweeps,
                map_size: self.dedup.len() as u32,
                map_capacity: DEDUP_CAPACITY as u32,
            }),
            ..Default::default()
        });
        let mut out = req.encode_to_vec();
        out.reserve(size);
        for a in &assigned {
            out.push(0x0a); // field 1 (flag_assigned), length-delimited
            encode_varint(a.len() as u64, &mut out);
            out.extend_from_slice(a);
        }
        Drained {
            request: out,
            more_pending: !self.pending.is_empty(),
            flag_assigned_count: assigned.len() as u32,
            dropped,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::api::ResolveReason;
    use crate::proto::events::flag_assigned::AppliedFlag;

    /// An exposure identity (the encoded applied flag, as `exposure::write_identity` writes).
    fn af(i: usize) -> Vec<u8> {
        AppliedFlag { flag: format!("flags/f{}", i), targeting_key: "u".into(), ..Default::default() }.encode_to_vec()
    }

    fn dedup_logs() -> Logs {
        Logs::new(LogConfig { enable_apply_dedup: true, ..Default::default() })
    }

    /// `is_duplicate`, and the dedup entries it examined.
    fn checked(logs: &mut Logs, a: &[u8], now_ms: i64) -> (bool, u64) {
        let before = logs.dedup_work();
        let dup = logs.is_duplicate(a, now_ms);
        (dup, logs.dedup_work() - before)
    }

    #[test]
    fn a_full_window_evicts_its_oldest_identity_and_counts_it() {
        let mut logs = dedup_logs();
        for i in 0..DEDUP_CAPACITY {
            assert!(!logs.is_duplicate(&af(i), i as i64 / 1000));
        }
        assert_eq!(logs.dedup_size(), DEDUP_CAPACITY);
        assert!(logs.is_duplicate(&af(7), 200), "known identities are still deduplicated");
        // full, every entry in its window: a new identity is sent and tracked, the oldest
        // is forgotten, and each call examines a bounded number of entries
        let (dup, work) = checked(&mut logs, &af(DEDUP_CAPACITY), 201);
        assert!(!dup);
        assert!(work <= 2, "{work} entries examined");
        assert!(logs.is_duplicate(&af(DEDUP_CAPACITY), 202), "the new identity is tracked");
        assert_eq!(logs.dedup_size(), DEDUP_CAPACITY);
        assert_eq!(logs.counters().apply_dedup_overflow, 1);
        assert!(!logs.is_duplicate(&af(0), 203), "the oldest was forgotten");
        assert!(logs.is_duplicate(&af(2), 204), "the next oldest was not");
        assert_eq!(logs.counters().apply_dedup_overflow, 2);
        // once the window passed, the expired entries go (each once) and the map empties
        let (dup, work) = checked(&mut logs, &af(DEDUP_CAPACITY + 1), 204 + DEDUP_WINDOW_MS);
        assert!(!dup);
        assert!(work <= DEDUP_CAPACITY as u64 + 1);
        assert_eq!(logs.dedup_size(), 1);
        assert!(logs.is_duplicate(&af(DEDUP_CAPACITY + 1), 205 + DEDUP_WINDOW_MS));
        assert_eq!(logs.counters().apply_dedup_overflow, 2, "expiry is not eviction");
    }

    #[test]
    fn work_per_exposure_stays_bounded_past_capacity() {
        // 4 capacities of unique identities at 1 per ms: the window (120,000 ms) holds more
        // than the capacity, so the map both evicts in-window entries and expires old ones.
        let mut logs = dedup_logs();
        let n = 4 * DEDUP_CAPACITY;
        let mut total = 0u64;
        let mut worst = 0u64;
        for i in 0..n {
            let (dup, work) = checked(&mut logs, &af(i), i as i64);
            assert!(!dup);
            total += work;
            worst = worst.max(work);
            assert!(logs.dedup_size() <= DEDUP_CAPACITY);
        }
        assert!(worst <= 3, "worst call examined {worst} entries");
        assert!(total <= 3 * n as u64, "{total} entries examined for {n} exposures");
        assert_eq!(logs.dedup_size(), DEDUP_CAPACITY);
        // every identity sent before the last DEDUP_CAPACITY is gone (evicted: the window
        // is longer than the capacity at this rate), the recent ones are deduplicated
        assert_eq!(logs.counters().apply_dedup_overflow as usize, n - DEDUP_CAPACITY);
        let now = n as i64;
        let recent: Vec<usize> = (n - DEDUP_CAPACITY + 1..n).step_by(997).collect();
        for &i in &recent {
            assert!(logs.is_duplicate(&af(i), now), "{i}");
        }
        // a duplicate found does not evict; dedup counters add up
        let c = logs.counters();
        assert_eq!(c.applies_total as usize, n + recent.len());
        assert_eq!(c.applies_deduped as usize, recent.len());
        assert_eq!(c.apply_dedup_overflow as usize, n - DEDUP_CAPACITY);
        // at a lower rate (1 per 2 ms) only expiry happens: the window holds 60,000
        let mut logs = dedup_logs();
        for i in 0..n {
            let (dup, work) = checked(&mut logs, &af(i), 2 * i as i64);
            assert!(!dup);
            assert!(work <= 3, "{work}");
        }
        assert_eq!(logs.dedup_size(), (DEDUP_WINDOW_MS / 2) as usize);
        assert_eq!(logs.counters().apply_dedup_overflow, 0);
        let now = 2 * n as i64;
        assert!(logs.is_duplicate(&af(n - 1), now));
        assert!(!logs.is_duplicate(&af(n - DEDUP_WINDOW_MS as usize), now), "expired");
    }

    #[test]
    fn entries_inside_and_outside_the_window_mixed() {
        // half the capacity old, then a full capacity's worth of recent ones
        let mut logs = dedup_logs();
        let old = DEDUP_CAPACITY / 2;
        for i in 0..old {
            logs.is_duplicate(&af(i), 0);
        }
        let t = DEDUP_WINDOW_MS - 1; // the old ones are still (just) in the window
        for i in old..old + DEDUP_CAPACITY {
            let (dup, work) = checked(&mut logs, &af(i), t);
            assert!(!dup);
            assert!(work <= 2);
        }
        assert_eq!(logs.dedup_size(), DEDUP_CAPACITY);
        assert_eq!(logs.counters().apply_dedup_overflow as usize, old, "the old ones were evicted first");
        assert!(logs.is_duplicate(&af(old), t));
        // the drain's sweep touches only what expired
        let before = logs.dedup_work();
        logs.drain(t + 1, 0, 0);
        assert_eq!(logs.dedup_work(), before, "nothing expired, nothing examined");
        logs.drain(t + DEDUP_WINDOW_MS, 0, 0);
        assert_eq!(logs.dedup_size(), 0);
        assert_eq!(logs.dedup_work() - before, DEDUP_CAPACITY as u64);
    }

    #[test]
    fn a_clock_going_back_cannot_grow_the_fifo() {
        // An identity recorded "in the future" blocks expiry at the front; identities
        // behind it whose window passed restart their window in place, leaving stale FIFO
        // entries. The FIFO stays within twice the capacity (at the bound its front, the
        // blocker, is evicted, and what expired behind it goes) and the work stays O(1)
        // amortized.
        let mut logs = dedup_logs();
        assert!(!logs.is_duplicate(&af(usize::MAX), 10 * DEDUP_WINDOW_MS * 1000));
        let keys = 1000;
        let rounds = 2 * DEDUP_CAPACITY / keys + 5;
        let (mut calls, mut total) = (0u64, 0u64);
        for round in 0..rounds {
            let now = round as i64 * DEDUP_WINDOW_MS;
            for k in 0..keys {
                let (dup, work) = checked(&mut logs, &af(k), now);
                assert!(!dup, "round {round}: the window passed");
                assert!(logs.is_duplicate(&af(k), now + 1));
                calls += 2;
                total += work;
            }
            assert!(logs.dedup.order.len() <= 2 * DEDUP_CAPACITY);
            assert!(logs.dedup_size() <= keys + 1);
        }
        assert!(total <= 3 * calls, "{total} entries examined in {calls} calls");
        assert_eq!(logs.counters().apply_dedup_overflow, 1, "the blocker was evicted");
        assert!(!logs.is_duplicate(&af(usize::MAX), 10 * DEDUP_WINDOW_MS * 1000));
    }

    #[test]
    fn pending_cap_drops_are_counted_and_reported_once() {
        use crate::resolve::{Fallthrough, FlagOutcome};
        let flag = crate::testutil::flag("flags/f", vec![], vec![]);
        let client = ClientIdentity {
            account: "accounts/a".into(),
            client: "clients/c".into(),
            credential: "clients/c/credentials/k".into(),
            environments: vec![],
        };
        let outcome = |unit: &str| FlagOutcome {
            flag: &flag,
            reason: ResolveReason::NoSegmentMatch,
            variant: None,
            rule: None,
            assignment_id: String::new(),
            unit: Some(unit.to_string()),
            selector: String::new(),
            fallthroughs: vec![Fallthrough {
                rule: "flags/f/rules/r".into(),
                assignment_id: "a".into(),
                unit: unit.to_string(),
                selector: String::new(),
            }],
            deferred: false,
        };
        let mut logs = Logs::new(LogConfig::default());
        logs.pending_cap = 1000;
        let mut kept = 0;
        for k in 0..100 {
            let flags = [outcome(&format!("u{k}")), outcome(&format!("v{k}"))];
            logs.record_apply(&format!("r{k}"), &client, &flags, 0);
            kept = logs.pending_assigned();
        }
        assert!(kept > 0 && kept < 100);
        let d = logs.drain(0, 0, 0);
        assert_eq!(d.flag_assigned_count as usize, kept);
        assert_eq!(d.dropped, Dropped { flag_assigned: (100 - kept) as u64, applied_flags: 2 * (100 - kept) as u64 });
        assert_eq!(logs.drain(0, 0, 0).dropped, Dropped::default(), "reported once");
        // a drop with nothing else pending is still reported
        logs.pending_cap = 0;
        logs.record_apply("r", &client, &[outcome("w")], 0);
        let d = logs.drain(0, 0, 0);
        assert_eq!(d.dropped, Dropped { flag_assigned: 1, applied_flags: 1 });
    }

    #[test]
    fn country_codes() {
        for c in ["AD", "SE", "US", "ZW", "GB", "MX"] {
            assert!(is_country_code(c), "{c}");
        }
        for c in ["AA", "ZZ", "se", "S", "SWE", "UK", ""] {
            assert!(!is_country_code(c), "{c}");
        }
    }

    #[test]
    fn fingerprint_matches_schema_identity() {
        let ctx = |s: &str| crate::json::parse_context(s.as_bytes()).unwrap();
        let fp = |s: &str| {
            let mut b = Vec::new();
            fingerprint(&ctx(s).fields, &mut b);
            b
        };
        assert_eq!(fp(r#"{"a":1,"b":"x"}"#), fp(r#"{"b":"y","a":2}"#));
        assert_ne!(fp(r#"{"a":1}"#), fp(r#"{"a":"1"}"#));
        assert_ne!(fp(r#"{"c":"SE"}"#), fp(r#"{"c":"XX"}"#));
        assert_ne!(fp(r#"{"a":{"b":1}}"#), fp(r#"{"a":{"c":1}}"#));
        assert_eq!(fp(r#"{"l":[1,2]}"#), fp(r#"{"l":[3]}"#));
    }
}
