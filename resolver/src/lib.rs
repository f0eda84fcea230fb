pub mod proto;
pub mod hash;
pub mod json;
pub mod value;
pub mod bitset;
