//! The Confidence flag resolver compiled to `resolver.wasm` (see ../README.md).
//!
//! Every module is private; the ABI (`abi.rs`, the `cr_*` exports) is the crate's
//! interface. What a host-side caller (tests, tools) may use is re-exported here.
mod abi;
mod bitset;
mod error;
mod exposure;
mod hash;
mod instance;
mod json;
mod logs;
mod materialize;
mod proto;
mod resolve;
mod rng;
mod semver;
mod state;
mod targeting;
mod timeparse;
mod trace;
mod value;

pub use abi::ABI_VERSION;
pub use error::{Error, ErrorKind, GzipError, JsonError, StateError};
pub use instance::Instance;

/// Reported as ConfigureResult.resolver_version and TelemetryData.resolver_version.
pub const RESOLVER_VERSION: &str = env!("CARGO_PKG_VERSION");

#[cfg(test)]
mod tests_explain;
#[cfg(test)]
mod tests_fuzz;
#[cfg(test)]
mod tests_instance;
#[cfg(test)]
mod tests_resolve;
mod testutil;
