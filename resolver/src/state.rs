//! Loading and indexing a `ResolverState` (resolve.md §1).
use crate::bitset::{Bitset, Bloom};
use crate::error::StateError;
use crate::hash::murmur3_x64_128;
use crate::hash::FastMap;
use crate::proto::admin::flag::Variant;
use crate::proto::admin::{resolver_state, Flag, ResolverState, Segment};
use crate::proto::iam::client_credential;
use crate::resolve::value_json;
use prost::Message;
use std::borrow::Cow;

/// Who a client secret belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientIdentity {
    /// `accounts/<account id>`
    pub account: String,
    /// `clients/<id>`
    pub client: String,
    /// `clients/<id>/credentials/<id>`
    pub credential: String,
    pub environments: Vec<String>,
}

#[derive(Debug)]
pub struct State {
    /// The account id without `accounts/` (bitset hashing).
    pub account_id: String,
    pub flags: Vec<Flag>,
    pub flag_index: FastMap<String, usize>,
    pub segments: FastMap<String, Segment>,
    /// Stored bitsets; a segment without an entry is fully allocated.
    pub bitsets: FastMap<String, Bitset>,
    /// Bloom filters by materialized segment name (strategy 1 only).
    pub blooms: FastMap<String, Bloom>,
    pub secrets: FastMap<String, ClientIdentity>,
    /// (flag name, digest of the flag's serialized bytes), in state order.
    pub digests: Vec<(String, u64)>,
    /// Each flag's variant values as JSON (schema-backfilled), aligned with `flags` and
    /// their `variants`: computed once here instead of on every resolve.
    pub variant_json: Vec<Vec<String>>,
    pub client_count: u32,
}

pub const SUPPORTED_BLOOM_STRATEGY: i32 = 1;

impl State {
    /// Decodes and indexes a serialized `ResolverState`; any problem is an error
    /// (the caller keeps its previous state).
    ///
    /// A flag's digest is the hash of its bytes as they arrived (not re-encoded: that was
    /// a quarter to a third of the load), so it changes exactly when those bytes do.
    pub fn load(bytes: &[u8], account_id: &str) -> Result<State, StateError> {
        let (rs, raw) = decode_keeping_flag_bytes(bytes).map_err(StateError::Decode)?;
        Self::from_parts(rs, Some(raw), account_id)
    }

    /// `load` of an already decoded state (tests): digests of the re-encoded flags.
    #[cfg(test)]
    pub fn from_proto(rs: ResolverState, account_id: &str) -> Result<State, StateError> {
        Self::from_parts(rs, None, account_id)
    }

    /// `raw`: each flag's serialized bytes, aligned with `rs.flags`, when known.
    fn from_parts(rs: ResolverState, raw: Option<Vec<&[u8]>>, account_id: &str) -> Result<State, StateError> {
        let account_id = account_id.strip_prefix("accounts/").unwrap_or(account_id).to_string();

        let mut digests = Vec::with_capacity(rs.flags.len());
        let mut flag_index = FastMap::with_capacity_and_hasher(rs.flags.len(), Default::default());
        let mut flags = Vec::with_capacity(rs.flags.len());
        let raw = raw.filter(|r| r.len() == rs.flags.len());
        for (i, f) in rs.flags.into_iter().enumerate() {
            if flag_index.contains_key(&f.name) {
                continue; // a duplicate name: the first one wins
            }
            let digest = match &raw {
                Some(raw) => murmur3_x64_128(raw[i], 0).0,
                None => murmur3_x64_128(&f.encode_to_vec(), 0).0,
            };
            digests.push((f.name.clone(), digest));
            flag_index.insert(f.name.clone(), flags.len());
            flags.push(f);
        }

        let variant_json = flags
            .iter()
            .map(|f: &Flag| f.variants.iter().map(|v| value_json(v.value.as_ref(), f.schema.as_ref())).collect())
            .collect();

        let mut segments = FastMap::with_capacity_and_hasher(rs.segments_no_bitsets.len(), Default::default());
        for s in rs.segments_no_bitsets {
            segments.insert(s.name.clone(), s);
        }

        let mut bitsets = FastMap::default();
        for b in rs.bitsets {
            use resolver_state::packed_bitset::Bitset as B;
            match b.bitset {
                Some(B::FullBitset(true)) => {
                    bitsets.remove(&b.segment);
                }
                Some(B::GzippedBitset(data)) => {
                    let bs = match Bitset::from_gzip(&data) {
                        Ok(bs) => bs,
                        Err(error) => return Err(StateError::Bitset { segment: b.segment, error }),
                    };
                    bitsets.insert(b.segment, bs);
                }
                _ => {
                    return Err(StateError::UnsupportedBitset { segment: b.segment });
                }
            }
        }

        let mut blooms = FastMap::default();
        for bf in rs.bloom_filters {
            if bf.strategy != SUPPORTED_BLOOM_STRATEGY {
                continue; // unsupported strategies are skipped, not an error
            }
            blooms.insert(bf.materialized_segment, Bloom::new(bf.data, bf.hash_function_count, bf.bit_count));
        }

        let mut secrets = FastMap::default();
        let account = format!("accounts/{}", account_id);
        for client in &rs.clients {
            for cred in &rs.client_credentials {
                let belongs =
                    cred.name.strip_prefix(client.name.as_str()).map(|rest| rest.starts_with('/')).unwrap_or(false);
                if !belongs || client.name.is_empty() {
                    continue;
                }
                if let Some(client_credential::Credential::ClientSecret(secret)) = &cred.credential {
                    secrets.entry(secret.secret.clone()).or_insert_with(|| ClientIdentity {
                        account: account.clone(),
                        client: client.name.clone(),
                        credential: cred.name.clone(),
                        environments: cred.environments.clone(),
                    });
                }
            }
        }

        Ok(State {
            account_id,
            flags,
            flag_index,
            segments,
            bitsets,
            blooms,
            secrets,
            digests,
            variant_json,
            client_count: rs.clients.len() as u32,
        })
    }

    /// A variant's value as JSON, precomputed at load (`flag` and `variant` must belong to
    /// this state; anything else is computed on the spot).
    pub fn variant_json<'a>(&'a self, flag: &Flag, variant: &Variant) -> Cow<'a, str> {
        let found = position(&self.flags, flag)
            .and_then(|fi| position(&self.flags[fi].variants, variant).map(|vi| (fi, vi)))
            .and_then(|(fi, vi)| self.variant_json.get(fi).and_then(|v| v.get(vi)));
        match found {
            Some(json) => Cow::Borrowed(json.as_str()),
            None => Cow::Owned(value_json(variant.value.as_ref(), flag.schema.as_ref())),
        }
    }

    pub fn segment_count(&self) -> u32 {
        self.segments.len() as u32
    }
}

/// `ResolverState::decode(bytes)`, plus each flag's serialized bytes (the payload of every
/// `flags` field, in order). One pass: flags are decoded from their own bytes and every
/// run of other fields is merged as prost would (repeated fields append, the last
/// singular wins), so the result equals a plain decode.
fn decode_keeping_flag_bytes(bytes: &[u8]) -> Result<(ResolverState, Vec<&[u8]>), prost::DecodeError> {
    const FLAGS: u64 = 1 << 3 | 2; // ResolverState.flags: field 1, length-delimited
    let mut rs = ResolverState::default();
    let mut raw = Vec::new();
    let mut pos = 0;
    let mut run = 0; // start of the pending run of non-flag fields
    while pos < bytes.len() {
        let field = pos;
        let (tag, payload, end) = match next_field(bytes, pos) {
            Some(next) => next,
            // Malformed here: let prost say why (a plain decode fails too).
            None => return ResolverState::decode(bytes).map(|rs| (rs, Vec::new())),
        };
        if tag == FLAGS {
            if run < field {
                rs.merge(&bytes[run..field])?;
            }
            rs.flags.push(Flag::decode(payload)?);
            raw.push(payload);
            run = end;
        }
        pos = end;
    }
    if run < bytes.len() {
        rs.merge(&bytes[run..])?;
    }
    Ok((rs, raw))
}

/// The field of a serialized message that starts at `pos`: (tag, payload, where it ends).
/// The payload is a length-delimited field's bytes (empty for other wire types). None when
/// the field does not fit or its wire type is not one a proto3 message has.
pub(crate) fn next_field(bytes: &[u8], mut pos: usize) -> Option<(u64, &[u8], usize)> {
    let tag = read_varint(bytes, &mut pos)?;
    let (payload, end) = match tag & 7 {
        0 => {
            read_varint(bytes, &mut pos)?;
            (0..0, pos)
        }
        1 => (0..0, pos.checked_add(8)?),
        2 => {
            let len = usize::try_from(read_varint(bytes, &mut pos)?).ok()?;
            (pos..pos.checked_add(len)?, pos + len)
        }
        5 => (0..0, pos.checked_add(4)?),
        _ => return None,
    };
    if tag >> 3 == 0 || end > bytes.len() {
        return None;
    }
    Some((tag, &bytes[payload], end))
}

fn read_varint(bytes: &[u8], pos: &mut usize) -> Option<u64> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let b = *bytes.get(*pos)?;
        *pos += 1;
        value |= u64::from(b & 0x7f) << shift;
        if b < 0x80 {
            return Some(value);
        }
    }
    None
}

/// The index of `item` in `items` when it is one of its elements (by address), in O(1).
fn position<T>(items: &[T], item: &T) -> Option<usize> {
    let size = std::mem::size_of::<T>();
    let base = items.as_ptr() as usize;
    let addr = item as *const T as usize;
    if size == 0 || addr < base {
        return None;
    }
    let i = (addr - base) / size;
    match items.get(i) {
        Some(x) if std::ptr::eq(x, item) => Some(i),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::iam::{client_credential::ClientSecret, Client, ClientCredential};

    fn client_state() -> ResolverState {
        ResolverState {
            clients: vec![Client { name: "clients/a".into(), ..Default::default() }],
            client_credentials: vec![
                ClientCredential {
                    name: "clients/a/credentials/1".into(),
                    credential: Some(client_credential::Credential::ClientSecret(ClientSecret { secret: "s1".into() })),
                    environments: vec!["prod".into()],
                    ..Default::default()
                },
                ClientCredential {
                    name: "clients/ab/credentials/2".into(),
                    credential: Some(client_credential::Credential::ClientSecret(ClientSecret { secret: "s2".into() })),
                    ..Default::default()
                },
                ClientCredential { name: "clients/a/credentials/3".into(), ..Default::default() },
            ],
            ..Default::default()
        }
    }

    #[test]
    fn maps_secrets_to_clients() {
        let st = State::from_proto(client_state(), "acc").unwrap();
        let id = &st.secrets["s1"];
        assert_eq!(id.account, "accounts/acc");
        assert_eq!(id.client, "clients/a");
        assert_eq!(id.credential, "clients/a/credentials/1");
        assert_eq!(id.environments, vec!["prod".to_string()]);
        assert!(!st.secrets.contains_key("s2"));
        assert_eq!(st.secrets.len(), 1);
    }

    #[test]
    fn garbage_is_an_error() {
        assert!(State::load(&[0xff, 0xff, 0xff], "a").is_err());
        assert!(State::load(&[0x0a, 0x10, 0x01], "a").is_err()); // truncated
        assert!(matches!(State::load(&[0xff, 0xff, 0xff], "a"), Err(StateError::Decode(_))));
        assert!(State::load(&[], "a").is_ok()); // an empty state is valid
    }

    #[test]
    fn bitset_forms() {
        let mut rs = ResolverState::default();
        rs.bitsets.push(resolver_state::PackedBitset { segment: "segments/x".into(), bitset: None });
        assert!(State::from_proto(rs.clone(), "a").is_err());
        rs.bitsets[0].bitset = Some(resolver_state::packed_bitset::Bitset::FullBitset(false));
        assert!(State::from_proto(rs.clone(), "a").is_err());
        assert!(matches!(State::from_proto(rs.clone(), "a"), Err(StateError::UnsupportedBitset { .. })));
        rs.bitsets[0].bitset = Some(resolver_state::packed_bitset::Bitset::GzippedBitset(vec![1, 2, 3]));
        assert!(State::from_proto(rs.clone(), "a").is_err());
        match State::from_proto(rs.clone(), "a") {
            Err(StateError::Bitset { segment, error: crate::error::GzipError::NotGzip }) => {
                assert_eq!(segment, "segments/x")
            }
            other => panic!("{:?}", other.map(|_| ())),
        }
        rs.bitsets[0].bitset = Some(resolver_state::packed_bitset::Bitset::FullBitset(true));
        let st = State::from_proto(rs, "a").unwrap();
        assert!(st.bitsets.is_empty());
    }

    #[test]
    fn bloom_strategy_filter_and_digest() {
        let mut rs = ResolverState::default();
        rs.bloom_filters.push(resolver_state::BloomFilter {
            materialized_segment: "m1".into(),
            strategy: 1,
            ..Default::default()
        });
        rs.bloom_filters.push(resolver_state::BloomFilter {
            materialized_segment: "m2".into(),
            strategy: 2,
            ..Default::default()
        });
        rs.flags.push(Flag { name: "flags/a".into(), ..Default::default() });
        rs.flags.push(Flag { name: "flags/b".into(), ..Default::default() });
        let st = State::from_proto(rs, "accounts/a").unwrap();
        assert_eq!(st.account_id, "a");
        assert!(st.blooms.contains_key("m1"));
        assert!(!st.blooms.contains_key("m2"));
        assert_eq!(st.digests.len(), 2);
        assert_ne!(st.digests[0].1, st.digests[1].1);
    }

    #[test]
    fn load_keeps_each_flags_bytes_for_its_digest() {
        let mut rs = client_state();
        rs.flags.push(Flag { name: "flags/a".into(), ..Default::default() });
        rs.segments_no_bitsets.push(Segment { name: "segments/s".into(), ..Default::default() });
        rs.flags.push(Flag { name: "flags/b".into(), state: 2, ..Default::default() });
        // Interleave the fields: a flag after the segments and clients, as any encoder may.
        let mut bytes = Vec::new();
        let mut first = rs.clone();
        first.flags.truncate(1);
        first.encode(&mut bytes).unwrap();
        let last = ResolverState { flags: vec![rs.flags[1].clone()], ..Default::default() };
        last.encode(&mut bytes).unwrap();
        let (decoded, raw) = decode_keeping_flag_bytes(&bytes).unwrap();
        assert_eq!(decoded, ResolverState::decode(bytes.as_slice()).unwrap());
        assert_eq!(decoded.flags.len(), 2);
        assert_eq!(raw, vec![rs.flags[0].encode_to_vec(), rs.flags[1].encode_to_vec()]);
        let st = State::load(&bytes, "acc").unwrap();
        let want: Vec<(String, u64)> =
            rs.flags.iter().map(|f| (f.name.clone(), murmur3_x64_128(&f.encode_to_vec(), 0).0)).collect();
        assert_eq!(st.digests, want);
        assert_eq!(st.secrets.len(), 1);
        assert_eq!(st.segment_count(), 1);
        // A flag's bytes that differ only in encoding (an explicit default field) change its digest.
        let mut odd = Vec::new();
        prost::encoding::encode_key(1, prost::encoding::WireType::LengthDelimited, &mut odd);
        let mut flag = rs.flags[0].encode_to_vec();
        flag.extend_from_slice(&[0x20, 0x00]); // Flag.state (4) = 0, written out
        prost::encoding::encode_varint(flag.len() as u64, &mut odd);
        odd.extend_from_slice(&flag);
        let st = State::load(&odd, "acc").unwrap();
        assert_eq!(st.digests[0].0, "flags/a");
        assert_eq!(st.digests[0].1, murmur3_x64_128(&flag, 0).0);
    }

    #[test]
    fn malformed_fields_fail_like_a_plain_decode() {
        for bad in [&[0x0a, 0x05, 0x0a][..], &[0x0a, 0x02, 0xff, 0xff], &[0x0b], &[0x00, 0x01], &[0x12, 0x80]] {
            assert!(ResolverState::decode(bad).is_err());
            assert!(matches!(State::load(bad, "a"), Err(StateError::Decode(_))), "{:?}", bad);
        }
    }
}
