//! The exported ABI (version 1, see ../README.md): one call per operation, no imports.
//!
//! A call: the host writes the request (`len` bytes) at the `cr_input` pointer and calls
//! the export; the i64 result packs the response location (`ptr << 32 | len`). The
//! response's first byte is a status: 0 = OK + the output message, 1 = ERROR + UTF-8.
use crate::instance::Instance;
use crate::proto::abi::{Configure, FlushLogs, ResolveCall, SetState};
use prost::Message;
use std::cell::RefCell;

pub const ABI_VERSION: i32 = 2;
const STATUS_OK: u8 = 0;
const STATUS_ERROR: u8 = 1;

thread_local! {
    static INPUT: RefCell<Vec<u8>> = RefCell::new(Vec::new());
    static OUTPUT: RefCell<Vec<u8>> = RefCell::new(Vec::new());
    static INSTANCE: RefCell<Instance> = RefCell::new(Instance::new());
}

fn pack(ptr: *const u8, len: usize) -> i64 {
    (((ptr as usize as u32) as i64) << 32) | ((len as u32) as i64)
}

/// Runs `f` on the input bytes and writes the status-prefixed response.
fn call(len: i32, f: impl FnOnce(&mut Instance, &[u8], &mut Vec<u8>) -> Result<(), String>) -> i64 {
    OUTPUT.with(|out| {
        let mut out = out.borrow_mut();
        out.clear();
        out.push(STATUS_OK);
        let result = INPUT.with(|input| {
            let input = input.borrow();
            if len < 0 || len as usize > input.len() {
                return Err(format!("input length {} out of range (buffer holds {})", len, input.len()));
            }
            INSTANCE.with(|inst| f(&mut inst.borrow_mut(), &input[..len as usize], &mut out))
        });
        if let Err(msg) = result {
            out.clear();
            out.push(STATUS_ERROR);
            out.extend_from_slice(msg.as_bytes());
        }
        pack(out.as_ptr(), out.len())
    })
}

fn decode<M: Message + Default>(bytes: &[u8], what: &str) -> Result<M, String> {
    M::decode(bytes).map_err(|e| format!("invalid {} message: {}", what, e))
}

#[no_mangle]
pub extern "C" fn cr_abi_version() -> i32 {
    ABI_VERSION
}

/// A pointer to the input buffer, grown to at least `len` bytes.
#[no_mangle]
pub extern "C" fn cr_input(len: i32) -> i32 {
    INPUT.with(|b| {
        let mut b = b.borrow_mut();
        let need = if len > 0 { len as usize } else { 0 };
        let have = b.len();
        if have < need {
            b.reserve_exact(need - have);
            b.resize(need, 0);
        }
        b.as_mut_ptr() as usize as i32
    })
}

#[no_mangle]
pub extern "C" fn cr_configure(len: i32) -> i64 {
    call(len, |inst, input, out| {
        let req: Configure = decode(input, "Configure")?;
        inst.configure(req).encode(out).map_err(|e| e.to_string())
    })
}

#[no_mangle]
pub extern "C" fn cr_set_state(len: i32) -> i64 {
    call(len, |inst, input, out| {
        let req: SetState = decode(input, "SetState")?;
        inst.set_state(req)?.encode(out).map_err(|e| e.to_string())
    })
}

/// The answer is JSON (see `Instance::resolve_json`), not a protobuf message: the host
/// decodes it with one `json.loads`, several times cheaper in Python than a protobuf
/// `ResolveResult` plus a `json.loads` per value.
#[no_mangle]
pub extern "C" fn cr_resolve(len: i32) -> i64 {
    call(len, |inst, input, out| {
        let req: ResolveCall = decode(input, "ResolveCall")?;
        let mut json = String::with_capacity(256);
        inst.resolve_json(&req, &mut json)?;
        out.extend_from_slice(json.as_bytes());
        Ok(())
    })
}

/// Explains one flag for one context (see `Instance::explain_json`): a separate export,
/// so `cr_resolve` carries no tracing at all. The request is a `ResolveCall` with one flag;
/// the answer is JSON. Nothing is logged.
#[no_mangle]
pub extern "C" fn cr_explain(len: i32) -> i64 {
    call(len, |inst, input, out| {
        let req: ResolveCall = decode(input, "ResolveCall")?;
        let mut json = String::with_capacity(1024);
        inst.explain_json(&req, &mut json)?;
        out.extend_from_slice(json.as_bytes());
        Ok(())
    })
}

#[no_mangle]
pub extern "C" fn cr_flush_logs(len: i32) -> i64 {
    call(len, |inst, input, out| {
        let req: FlushLogs = decode(input, "FlushLogs")?;
        inst.flush_logs(req).encode(out).map_err(|e| e.to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::abi::ConfigureResult;

    fn write_input(bytes: &[u8]) {
        cr_input(bytes.len() as i32);
        INPUT.with(|b| b.borrow_mut()[..bytes.len()].copy_from_slice(bytes));
    }

    fn output() -> Vec<u8> {
        OUTPUT.with(|o| o.borrow().clone())
    }

    #[test]
    fn status_bytes() {
        assert_eq!(cr_abi_version(), 2);
        let req = Configure { rng_seed: 5, ..Default::default() }.encode_to_vec();
        write_input(&req);
        let packed = cr_configure(req.len() as i32);
        let out = output();
        assert_eq!(packed & 0xffff_ffff, out.len() as i64);
        assert_eq!(out[0], STATUS_OK);
        assert_eq!(ConfigureResult::decode(&out[1..]).unwrap().resolver_version, crate::RESOLVER_VERSION);

        write_input(b"\xff\xff\xff");
        cr_set_state(3);
        let out = output();
        assert_eq!(out[0], STATUS_ERROR);
        assert!(std::str::from_utf8(&out[1..]).unwrap().contains("invalid"));

        cr_resolve(1 << 30);
        let out = output();
        assert_eq!(out[0], STATUS_ERROR);
        cr_flush_logs(-1);
        assert_eq!(output()[0], STATUS_ERROR);

        // an empty message is a valid FlushLogs
        cr_flush_logs(0);
        assert_eq!(output()[0], STATUS_OK);
    }
}
