//! Materializations (sticky assignments and materialized segments), resolve.md §5.
//!
//! Modes: unsupported (a flag that needs a read or a write resolves
//! MATERIALIZATION_NOT_SUPPORTED), discovery (every question answers "unknown" and is
//! queued once) and complete (the host supplied every record; absent = not recorded).
use crate::proto::api::MaterializationRecord;
use std::collections::{HashMap, HashSet};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Unsupported,
    Discovery,
    Complete,
}

/// The answer to "is (unit, materialization, rule) recorded?".
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadAnswer {
    /// Discovery: the host has not read the store yet.
    Unknown,
    /// The unit is not in the materialization.
    NotRecorded,
    /// The unit is in the materialization; the variant recorded for this rule, if any
    /// (resolve.md §8: being in the materialization without a variant for the rule
    /// still counts as recorded).
    Recorded(Option<String>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MatError {
    NotSupported,
    /// A second write for the same (unit, materialization, rule) in one request.
    DuplicateWrite {
        rule: String,
        materialization: String,
    },
}

#[derive(Default, Debug)]
struct Entry {
    /// rule -> variant ("" = none)
    rules: HashMap<String, String>,
}

#[derive(Debug)]
pub struct Materializer {
    mode: Mode,
    /// (unit, materialization) -> what was recorded. Presence = the unit is in it.
    known: HashMap<(String, String), Entry>,
    /// Reads queued since the last `take_reads` (each once).
    reads: Vec<MaterializationRecord>,
    written: HashSet<(String, String, String)>,
    writes: Vec<MaterializationRecord>,
}

impl Materializer {
    pub fn new(mode: Mode, records: &[MaterializationRecord]) -> Self {
        let mut known: HashMap<(String, String), Entry> = HashMap::new();
        if mode == Mode::Complete {
            for r in records {
                let e = known.entry((r.unit.clone(), r.materialization.clone())).or_default();
                if !r.rule.is_empty() {
                    e.rules.insert(r.rule.clone(), r.variant.clone());
                }
            }
        }
        Materializer { mode, known, reads: Vec::new(), written: HashSet::new(), writes: Vec::new() }
    }

    fn queue(&mut self, unit: &str, materialization: &str, rule: &str) {
        let known = self.reads.iter().any(|r| r.unit == unit && r.materialization == materialization && r.rule == rule);
        if !known {
            self.reads.push(MaterializationRecord {
                unit: unit.to_string(),
                materialization: materialization.to_string(),
                rule: rule.to_string(),
                variant: String::new(),
            });
        }
    }

    /// Sticky read for a rule.
    pub fn read_variant(&mut self, unit: &str, materialization: &str, rule: &str) -> Result<ReadAnswer, MatError> {
        match self.mode {
            Mode::Unsupported => Err(MatError::NotSupported),
            Mode::Discovery => {
                self.queue(unit, materialization, rule);
                // Also ask whether the unit is in the materialization at all (§8: that
                // alone counts as recorded); a variant read cannot express it.
                self.queue(unit, materialization, "");
                Ok(ReadAnswer::Unknown)
            }
            Mode::Complete => match self.known.get(&(unit.to_string(), materialization.to_string())) {
                None => Ok(ReadAnswer::NotRecorded),
                Some(e) => Ok(ReadAnswer::Recorded(e.rules.get(rule).filter(|v| !v.is_empty()).cloned())),
            },
        }
    }

    /// Materialized-segment inclusion: `Some(bool)` or `None` (unknown, discovery).
    pub fn inclusion(&mut self, unit: &str, materialization: &str) -> Result<Option<bool>, MatError> {
        match self.mode {
            Mode::Unsupported => Err(MatError::NotSupported),
            Mode::Discovery => {
                self.queue(unit, materialization, "");
                Ok(None)
            }
            Mode::Complete => Ok(Some(self.known.contains_key(&(unit.to_string(), materialization.to_string())))),
        }
    }

    pub fn write(&mut self, unit: &str, materialization: &str, rule: &str, variant: &str) -> Result<(), MatError> {
        if self.mode == Mode::Unsupported {
            return Err(MatError::NotSupported);
        }
        let key = (unit.to_string(), materialization.to_string(), rule.to_string());
        if !self.written.insert(key) {
            return Err(MatError::DuplicateWrite {
                rule: rule.to_string(),
                materialization: materialization.to_string(),
            });
        }
        self.writes.push(MaterializationRecord {
            unit: unit.to_string(),
            materialization: materialization.to_string(),
            rule: rule.to_string(),
            variant: variant.to_string(),
        });
        Ok(())
    }

    /// Reads queued since the last call (per flag, so only deferred flags' reads are reported).
    pub fn take_reads(&mut self) -> Vec<MaterializationRecord> {
        std::mem::take(&mut self.reads)
    }

    pub fn into_writes(self) -> Vec<MaterializationRecord> {
        self.writes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(u: &str, m: &str, r: &str, v: &str) -> MaterializationRecord {
        MaterializationRecord { unit: u.into(), materialization: m.into(), rule: r.into(), variant: v.into() }
    }

    #[test]
    fn complete_mode_answers() {
        let mut m = Materializer::new(
            Mode::Complete,
            &[rec("u1", "m1", "r1", "v1"), rec("u1", "m2", "", ""), rec("u2", "m1", "r1", "")],
        );
        assert_eq!(m.read_variant("u1", "m1", "r1"), Ok(ReadAnswer::Recorded(Some("v1".into()))));
        assert_eq!(m.read_variant("u1", "m1", "r2"), Ok(ReadAnswer::Recorded(None)));
        assert_eq!(m.read_variant("u1", "m2", "r1"), Ok(ReadAnswer::Recorded(None)));
        assert_eq!(m.read_variant("u2", "m1", "r1"), Ok(ReadAnswer::Recorded(None)));
        assert_eq!(m.read_variant("u3", "m1", "r1"), Ok(ReadAnswer::NotRecorded));
        assert_eq!(m.inclusion("u1", "m2"), Ok(Some(true)));
        assert_eq!(m.inclusion("u1", "m1"), Ok(Some(true)));
        assert_eq!(m.inclusion("u3", "m2"), Ok(Some(false)));
        assert!(m.take_reads().is_empty());
    }

    #[test]
    fn discovery_queues_once() {
        let mut m = Materializer::new(Mode::Discovery, &[]);
        assert_eq!(m.read_variant("u1", "m1", "r1"), Ok(ReadAnswer::Unknown));
        assert_eq!(m.read_variant("u1", "m1", "r1"), Ok(ReadAnswer::Unknown));
        assert_eq!(m.inclusion("u1", "m1"), Ok(None));
        let reads = m.take_reads();
        assert_eq!(reads, vec![rec("u1", "m1", "r1", ""), rec("u1", "m1", "", "")]);
    }

    #[test]
    fn unsupported_and_duplicate_writes() {
        let mut m = Materializer::new(Mode::Unsupported, &[]);
        assert_eq!(m.read_variant("u", "m", "r"), Err(MatError::NotSupported));
        assert_eq!(m.inclusion("u", "m"), Err(MatError::NotSupported));
        assert_eq!(m.write("u", "m", "r", "v"), Err(MatError::NotSupported));
        let mut m = Materializer::new(Mode::Complete, &[]);
        assert_eq!(m.write("u", "m", "r", "v"), Ok(()));
        assert!(matches!(m.write("u", "m", "r", "v"), Err(MatError::DuplicateWrite { .. })));
        assert_eq!(m.into_writes(), vec![rec("u", "m", "r", "v")]);
    }
}
