//! Generated protobuf types (prost-build from `../proto`).
#![allow(clippy::all, missing_docs, non_camel_case_types)]
include!(concat!(env!("OUT_DIR"), "/_protos.rs"));

pub use confidence::flags::admin::v1 as admin;
pub use confidence::flags::resolver::v1 as api;
pub use confidence::flags::resolver::v1::events;
pub use confidence::flags::types::v1 as types;
pub use confidence::iam::v1 as iam;
pub use confidence::wasm::v1 as abi;
