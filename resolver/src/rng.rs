//! A tiny PRNG for resolve ids (no host imports: the host seeds it via Configure).

/// SplitMix64 seeding a xoshiro256** generator.
#[derive(Debug, Clone)]
pub struct Rng {
    s: [u64; 4],
}

fn splitmix64(x: &mut u64) -> u64 {
    *x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *x;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

impl Rng {
    pub fn new(seed: u64) -> Self {
        let mut x = seed;
        let s = [splitmix64(&mut x), splitmix64(&mut x), splitmix64(&mut x), splitmix64(&mut x)];
        Rng { s }
    }

    pub fn next_u64(&mut self) -> u64 {
        let result = self.s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = self.s[1] << 17;
        self.s[2] ^= self.s[0];
        self.s[3] ^= self.s[1];
        self.s[1] ^= self.s[2];
        self.s[0] ^= self.s[3];
        self.s[2] ^= t;
        self.s[3] = self.s[3].rotate_left(45);
        result
    }

    /// 32 random alphanumeric characters, uniform: each is a 6-bit draw below 62 (a draw
    /// of 62 or 63 is rejected), ten draws per `next_u64` (no division).
    pub fn resolve_id(&mut self) -> String {
        const ALPHABET: &[u8; 62] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
        let mut id = vec![0u8; 32];
        let mut n = 0;
        while n < id.len() {
            let mut bits = self.next_u64();
            for _ in 0..10 {
                let i = (bits & 63) as usize;
                bits >>= 6;
                if i < ALPHABET.len() {
                    id[n] = ALPHABET[i];
                    n += 1;
                    if n == id.len() {
                        break;
                    }
                }
            }
        }
        String::from_utf8(id).unwrap_or_default() // ASCII by construction
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_32_alphanumeric_and_differ() {
        let mut r = Rng::new(42);
        let a = r.resolve_id();
        let b = r.resolve_id();
        assert_eq!(a.len(), 32);
        assert!(a.chars().all(|c| c.is_ascii_alphanumeric()));
        assert_ne!(a, b);
        assert_ne!(Rng::new(1).resolve_id(), Rng::new(2).resolve_id());
        assert_eq!(Rng::new(7).resolve_id(), Rng::new(7).resolve_id());
    }

    #[test]
    fn every_character_is_drawn_about_equally_often() {
        let mut r = Rng::new(3);
        let mut counts = std::collections::BTreeMap::new();
        for _ in 0..10_000 {
            for c in r.resolve_id().chars() {
                *counts.entry(c).or_insert(0u32) += 1;
            }
        }
        // 320,000 draws over 62 characters: ~5,161 each, a standard deviation of ~71
        assert_eq!(counts.len(), 62);
        assert!(counts.values().all(|&n| (4_800..5_500).contains(&n)), "{counts:?}");
    }
}
