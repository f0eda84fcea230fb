//! Segment bitsets (gzip streams) and bloom filters (resolve.md §1, §4.5).
use crate::error::GzipError;
use miniz_oxide::inflate::decompress_to_vec_with_limit;

/// Upper bound on an inflated bitset (a bitset covers 1,000,000 units = 125,000 bytes).
const MAX_INFLATED: usize = 16 * 1024 * 1024;

pub(crate) fn crc32(data: &[u8]) -> u32 {
    let mut table = [0u32; 256];
    for (i, slot) in table.iter_mut().enumerate() {
        let mut c = i as u32;
        for _ in 0..8 {
            c = if c & 1 != 0 { 0xEDB8_8320 ^ (c >> 1) } else { c >> 1 };
        }
        *slot = c;
    }
    let mut crc = 0xFFFF_FFFFu32;
    for &b in data {
        crc = table[((crc ^ b as u32) & 0xff) as usize] ^ (crc >> 8);
    }
    !crc
}

/// Inflates a single-member gzip stream (RFC 1952), checking CRC-32 and size.
pub fn gunzip(data: &[u8]) -> Result<Vec<u8>, GzipError> {
    if data.len() < 18 || data[0] != 0x1f || data[1] != 0x8b {
        return Err(GzipError::NotGzip);
    }
    if data[2] != 8 {
        return Err(GzipError::UnsupportedMethod);
    }
    let flags = data[3];
    if flags & 0xe0 != 0 {
        return Err(GzipError::ReservedFlags);
    }
    let mut i = 10usize;
    if flags & 0x04 != 0 {
        // FEXTRA
        if i + 2 > data.len() {
            return Err(GzipError::TruncatedHeader);
        }
        let xlen = data[i] as usize | ((data[i + 1] as usize) << 8);
        i += 2 + xlen;
    }
    for bit in [0x08u8, 0x10u8] {
        // FNAME, FCOMMENT: zero-terminated
        if flags & bit != 0 {
            while i < data.len() && data[i] != 0 {
                i += 1;
            }
            i += 1;
        }
    }
    if flags & 0x02 != 0 {
        i += 2; // FHCRC
    }
    if i + 8 > data.len() {
        return Err(GzipError::Truncated);
    }
    let body = &data[i..data.len() - 8];
    let trailer = &data[data.len() - 8..];
    let out = decompress_to_vec_with_limit(body, MAX_INFLATED).map_err(|e| GzipError::BadData(e.status))?;
    let crc = u32::from_le_bytes([trailer[0], trailer[1], trailer[2], trailer[3]]);
    let isize = u32::from_le_bytes([trailer[4], trailer[5], trailer[6], trailer[7]]);
    if crc != crc32(&out) || isize != out.len() as u32 {
        return Err(GzipError::ChecksumMismatch);
    }
    Ok(out)
}

/// A segment's allocation bitset: bit `i` is bit `i % 8` (LSB first) of byte `i / 8`.
#[derive(Debug, Clone)]
pub struct Bitset {
    bytes: Vec<u8>,
    all_set: bool,
}

impl Bitset {
    pub fn from_bytes(bytes: Vec<u8>) -> Self {
        let all_set = bytes.iter().all(|b| *b == 0xff);
        Bitset { bytes, all_set }
    }

    pub fn from_gzip(data: &[u8]) -> Result<Self, GzipError> {
        Ok(Self::from_bytes(gunzip(data)?))
    }

    /// Bit `i`; indices beyond the bitset are clear.
    pub fn get(&self, i: u64) -> bool {
        let byte = (i / 8) as usize;
        match self.bytes.get(byte) {
            Some(b) => (b >> (i % 8)) & 1 == 1,
            None => false,
        }
    }

    /// True when every bit is set (the only way a unit-less resolve passes a bitset).
    pub fn all_set(&self) -> bool {
        self.all_set
    }
}

/// A materialized segment's bloom filter (strategy 1).
#[derive(Debug, Clone)]
pub struct Bloom {
    data: Vec<u8>,
    hash_function_count: i32,
    bit_count: i64,
}

impl Bloom {
    pub fn new(data: Vec<u8>, hash_function_count: i32, bit_count: i64) -> Self {
        Bloom { data, hash_function_count, bit_count }
    }

    /// The data is a sequence of big-endian 64-bit words: bit `i` is bit `i % 64` of word `i / 64`.
    fn bit(&self, i: u64) -> bool {
        let word = (i / 64) as usize;
        let start = word.saturating_mul(8);
        if start >= self.data.len() {
            return false;
        }
        let end = (start + 8).min(self.data.len());
        let chunk = &self.data[start..end];
        // reverse the chunk, then LSB-first bit numbering
        let j = ((i % 64) / 8) as usize;
        if j >= chunk.len() {
            return false;
        }
        let byte = chunk[chunk.len() - 1 - j];
        (byte >> (i % 8)) & 1 == 1
    }

    pub fn contains(&self, unit: &str) -> bool {
        crate::hash::bloom_contains(unit, self.hash_function_count, self.bit_count, |i| self.bit(i))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // gzip of b"\xff\x01\x00" produced by Python's gzip.compress(..., mtime=0)
    const GZ: &[u8] = &[
        0x1f, 0x8b, 0x08, 0x00, 0x00, 0x00, 0x00, 0x00, 0x02, 0x03, 0xfb, 0xcf, 0xc8, 0x00, 0x00, 0xbe, 0xdc, 0xc2,
        0x58, 0x03, 0x00, 0x00, 0x00,
    ];

    #[test]
    fn crc32_vector() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
    }

    #[test]
    fn gunzip_and_bits() {
        let b = Bitset::from_gzip(GZ).unwrap();
        for i in 0..8 {
            assert!(b.get(i));
        }
        assert!(b.get(8));
        assert!(!b.get(9));
        assert!(!b.get(16));
        assert!(!b.get(1_000_000));
        assert!(!b.all_set());
    }

    #[test]
    fn gunzip_rejects_garbage() {
        assert!(gunzip(b"garbage").is_err());
        assert_eq!(gunzip(b"garbage"), Err(GzipError::NotGzip));
        assert!(gunzip(&GZ[..GZ.len() - 3]).is_err());
        let mut bad = GZ.to_vec();
        let n = bad.len();
        bad[n - 8] ^= 1; // crc
        assert!(gunzip(&bad).is_err());
        assert_eq!(gunzip(&bad), Err(GzipError::ChecksumMismatch));
        let mut bad = GZ.to_vec();
        bad[12] ^= 0x55; // deflate body
        assert!(gunzip(&bad).is_err());
        let mut bad = GZ.to_vec();
        bad[2] = 7;
        assert_eq!(gunzip(&bad), Err(GzipError::UnsupportedMethod));
        bad[2] = 8;
        bad[3] = 0x20;
        assert_eq!(gunzip(&bad), Err(GzipError::ReservedFlags));
    }

    #[test]
    fn bloom_bit_order() {
        // word 0 = 0x0000000000000001 (big-endian) -> bit 0 set; word 1 = 0x8000000000000000 -> bit 127
        let mut data = vec![0u8; 16];
        data[7] = 1;
        data[8] = 0x80;
        let bl = Bloom::new(data, 1, 128);
        assert!(bl.bit(0));
        assert!(!bl.bit(1));
        assert!(bl.bit(127));
        assert!(!bl.bit(126));
        assert!(!bl.bit(500));
    }

    #[test]
    fn conformance_bloom_filter() {
        // state.json bloomFilters["materializations/bf-seg"]: user1 is in, user3 is not.
        let data: Vec<u8> = vec![
            0x20, 0x00, 0x00, 0x00, 0x00, 0x20, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x10, 0x00,
            0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x80, 0x00, 0x40, 0x00, 0x00, 0x00,
            0x22, 0x00, 0x00, 0x00, 0x00, 0x40, 0x20, 0x00, 0x00, 0x00, 0x00, 0x20, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
            0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x08, 0x00, 0x00, 0x00, 0x01, 0x20, 0x00, 0x00, 0x00, 0x00, 0x00,
            0x00, 0x20, 0x00, 0x00, 0x00, 0x00, 0x20, 0x00, 0x00, 0x00, 0x00, 0x00, 0x10, 0x00, 0x20, 0x00, 0x00, 0x00,
            0x04, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x08, 0x00, 0x04, 0x00, 0x00, 0x00,
            0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        ];
        let bl = Bloom::new(data, 7, 960);
        assert!(bl.contains("user1"));
        assert!(!bl.contains("user3"));
    }
}
