//! MurmurHash3 x64 128 (seed 0), bucketing and bloom-filter probing (resolve.md §4.5).

const C1: u64 = 0x87c3_7b91_1142_53d5;
const C2: u64 = 0x4cf5_ad43_2745_937f;

#[inline]
fn fmix64(mut k: u64) -> u64 {
    k ^= k >> 33;
    k = k.wrapping_mul(0xff51_afd7_ed55_8ccd);
    k ^= k >> 33;
    k = k.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    k ^= k >> 33;
    k
}

#[inline]
fn le_u64(b: &[u8]) -> u64 {
    let mut v = 0u64;
    for (i, x) in b.iter().enumerate().take(8) {
        v |= (*x as u64) << (8 * i);
    }
    v
}

/// MurmurHash3_x64_128; returns (h1, h2) — h1 is the low 64 bits of the 128-bit hash.
pub fn murmur3_x64_128(data: &[u8], seed: u32) -> (u64, u64) {
    let len = data.len();
    let mut h1 = seed as u64;
    let mut h2 = seed as u64;
    let mut chunks = data.chunks_exact(16);
    for block in &mut chunks {
        let mut k1 = le_u64(&block[0..8]);
        let mut k2 = le_u64(&block[8..16]);
        k1 = k1.wrapping_mul(C1).rotate_left(31).wrapping_mul(C2);
        h1 ^= k1;
        h1 = h1.rotate_left(27).wrapping_add(h2).wrapping_mul(5).wrapping_add(0x52dc_e729);
        k2 = k2.wrapping_mul(C2).rotate_left(33).wrapping_mul(C1);
        h2 ^= k2;
        h2 = h2.rotate_left(31).wrapping_add(h1).wrapping_mul(5).wrapping_add(0x3849_5ab5);
    }
    let tail = chunks.remainder();
    if tail.len() > 8 {
        let k2 = le_u64(&tail[8..]);
        h2 ^= k2.wrapping_mul(C2).rotate_left(33).wrapping_mul(C1);
    }
    if !tail.is_empty() {
        let n = tail.len().min(8);
        let k1 = le_u64(&tail[..n]);
        h1 ^= k1.wrapping_mul(C1).rotate_left(31).wrapping_mul(C2);
    }
    h1 ^= len as u64;
    h2 ^= len as u64;
    h1 = h1.wrapping_add(h2);
    h2 = h2.wrapping_add(h1);
    h1 = fmix64(h1);
    h2 = fmix64(h2);
    h1 = h1.wrapping_add(h2);
    h2 = h2.wrapping_add(h1);
    (h1, h2)
}

/// `hash(s)`: the low 64 bits of MurmurHash3 x64 128 with seed 0 (tests; resolving uses
/// `hash_concat`).
#[cfg(test)]
pub fn hash(s: &str) -> u64 {
    murmur3_x64_128(s.as_bytes(), 0).0
}

/// `hash(parts.concat())` without `format!` or a heap allocation for short keys: bucketing
/// hashes a salted key on every resolve.
pub fn hash_concat(parts: &[&str]) -> u64 {
    let len: usize = parts.iter().map(|p| p.len()).sum();
    let mut stack = [0u8; 256];
    let mut heap = Vec::new();
    let buf: &mut [u8] = if len <= stack.len() {
        &mut stack[..len]
    } else {
        heap.resize(len, 0);
        &mut heap[..]
    };
    let mut at = 0;
    for p in parts {
        buf[at..at + p.len()].copy_from_slice(p.as_bytes());
        at += p.len();
    }
    murmur3_x64_128(buf, 0).0
}

/// A fast non-cryptographic hasher (FxHash: rotate, xor, multiply per word) for the
/// state's lookup tables. Their keys come from the state, not from callers, so SipHash's
/// flooding resistance buys nothing there, and it was ~5 % of a resolve.
#[derive(Default, Clone, Copy)]
pub struct FxHasher {
    hash: u64,
}

const FX_SEED: u64 = 0x51_7c_c1_b7_27_22_0a_95;

impl FxHasher {
    #[inline]
    fn add(&mut self, word: u64) {
        self.hash = (self.hash.rotate_left(5) ^ word).wrapping_mul(FX_SEED);
    }
}

impl std::hash::Hasher for FxHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            self.add(u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut word = [0u8; 8];
            word[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(word));
        }
    }
    #[inline]
    fn write_u8(&mut self, i: u8) {
        self.add(i as u64);
    }
    #[inline]
    fn write_u64(&mut self, i: u64) {
        self.add(i);
    }
    #[inline]
    fn write_u128(&mut self, i: u128) {
        self.add(i as u64);
        self.add((i >> 64) as u64);
    }
    #[inline]
    fn write_usize(&mut self, i: usize) {
        self.add(i as u64);
    }
    #[inline]
    fn finish(&self) -> u64 {
        self.hash
    }
}

pub type FastMap<K, V> = std::collections::HashMap<K, V, std::hash::BuildHasherDefault<FxHasher>>;
pub type FastSet<K> = std::collections::HashSet<K, std::hash::BuildHasherDefault<FxHasher>>;

/// `bucket(h, n) = (h >> 4) % n`; `None` when `n == 0`.
pub fn bucket(h: u64, n: u64) -> Option<u64> {
    if n == 0 {
        None
    } else {
        Some((h >> 4) % n)
    }
}

/// The bucket (0..1_000_000) of a unit in a segment bitset of account `account_id`.
pub fn bitset_index(account_id: &str, unit: &str) -> u64 {
    (hash_concat(&["MegaSalt-", account_id, "|", unit]) >> 4) % 1_000_000
}

/// Bloom filter membership (strategy 1). `test(i)` reports whether bit `i` is set.
pub fn bloom_contains(unit: &str, hash_function_count: i32, bit_count: i64, test: impl Fn(u64) -> bool) -> bool {
    if bit_count <= 0 {
        return false;
    }
    let (a, b) = murmur3_x64_128(unit.as_bytes(), 0);
    let h2 = b as i64;
    let mut c = a as i64;
    for _ in 0..hash_function_count.max(0) {
        let idx = ((c & i64::MAX) % bit_count) as u64;
        if !test(idx) {
            return false;
        }
        c = c.wrapping_add(h2);
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_concat_is_the_hash_of_the_joined_text() {
        let long = "x".repeat(300); // past the stack buffer
        for parts in [&["MegaSalt-", "acc", "|", "user-1"][..], &["seg", "|", &long], &[], &[""]] {
            assert_eq!(hash_concat(parts), hash(&parts.concat()));
        }
    }

    #[test]
    fn fast_maps_find_what_they_hold() {
        let mut m: FastMap<String, usize> = FastMap::default();
        for i in 0..2000 {
            m.insert(format!("segments/s{i}"), i);
        }
        assert!((0..2000).all(|i| m.get(format!("segments/s{i}").as_str()) == Some(&i)));
        assert_eq!(m.get("segments/missing"), None);
        let set: FastSet<u128> = (0..100u128).map(|i| i << 64 | i).collect();
        assert!(set.contains(&(7u128 << 64 | 7)) && !set.contains(&7));
    }

    #[test]
    fn spec_bucket_vector() {
        // resolve.md §4.5: account confidence-test, unit roug -> 567493 of 1000000.
        assert_eq!(bitset_index("confidence-test", "roug"), 567_493);
        assert_eq!(bucket(hash("MegaSalt-confidence-test|roug"), 1_000_000), Some(567_493));
    }

    #[test]
    fn murmur_reference_vectors() {
        // Reference values of MurmurHash3_x64_128 (seed 0) from the canonical C++ implementation.
        assert_eq!(murmur3_x64_128(b"", 0), (0, 0));
        assert_eq!(murmur3_x64_128(b"hello", 0), (0xcbd8_a7b3_41bd_9b02, 0x5b1e_906a_48ae_1d19));
        assert_eq!(
            murmur3_x64_128(b"The quick brown fox jumps over the lazy dog", 0),
            (0xe34b_bc7b_bc07_1b6c, 0x7a43_3ca9_c49a_9347)
        );
    }

    #[test]
    fn bucket_zero_is_error() {
        assert_eq!(bucket(123, 0), None);
        assert_eq!(bucket(0xff, 10), Some(0xf % 10));
    }

    #[test]
    fn all_tail_lengths_do_not_panic() {
        let data: Vec<u8> = (0u8..40).collect();
        for n in 0..data.len() {
            let _ = murmur3_x64_128(&data[..n], 0);
        }
    }
}
