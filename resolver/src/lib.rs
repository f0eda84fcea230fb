pub mod proto;
pub mod hash;
pub mod json;
pub mod value;
pub mod bitset;
pub mod state;
pub mod semver;
pub mod timeparse;
pub mod materialize;
pub mod targeting;
pub mod resolve;
pub mod logs;
pub mod rng;
pub mod trace;

/// Reported as ConfigureResult.resolver_version and TelemetryData.resolver_version.
pub const RESOLVER_VERSION: &str = env!("CARGO_PKG_VERSION");
pub mod abi;
pub mod instance;
mod testutil;
#[cfg(test)]
mod tests_resolve;
#[cfg(test)]
mod tests_instance;
#[cfg(test)]
mod tests_fuzz;
#[cfg(test)]
mod tests_explain;
