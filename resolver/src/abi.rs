//! The exported ABI (version 3, see ../README.md): one call per operation, no imports.
//!
//! A call: the host writes the request (`len` bytes) at the `cr_input` pointer and calls
//! the export; the i64 result packs the response location (`ptr << 32 | len`). The
//! response's first byte is a status: 0 = OK + the output message; 1 = ERROR + one byte,
//! the `ErrorKind` code (`error.rs`), + a UTF-8 message for people. The host acts on the
//! code only.
use crate::error::Error;
use crate::instance::Instance;
use crate::proto::abi::{Configure, FlushLogs, ResolveCall, SetState};
use prost::Message;
use std::cell::RefCell;

pub const ABI_VERSION: i32 = 3;
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
fn call(len: i32, f: impl FnOnce(&mut Instance, &[u8], &mut Vec<u8>) -> Result<(), Error>) -> i64 {
    OUTPUT.with(|out| {
        let mut out = out.borrow_mut();
        out.clear();
        out.push(STATUS_OK);
        let result = INPUT.with(|input| {
            let input = input.borrow();
            if len < 0 || len as usize > input.len() {
                return Err(Error::InputLength { len, capacity: input.len() });
            }
            INSTANCE.with(|inst| f(&mut inst.borrow_mut(), &input[..len as usize], &mut out))
        });
        if let Err(error) = result {
            write_error(&mut out, &error);
        }
        pack(out.as_ptr(), out.len())
    })
}

/// Replaces `out` with the ERROR response for `error`: status, kind code, message.
fn write_error(out: &mut Vec<u8>, error: &Error) {
    use std::io::Write as _;
    out.clear();
    out.push(STATUS_ERROR);
    out.push(error.kind().code());
    // Writing into a Vec cannot fail.
    let _ = write!(out, "{}", error);
}

fn decode<M: Message + Default>(bytes: &[u8], message: &'static str) -> Result<M, Error> {
    M::decode(bytes).map_err(|error| Error::Decode { message, error })
}

/// Appends `msg` to `out`. prost fails only when the buffer cannot grow, and a `Vec` can.
fn encode<M: Message>(msg: &M, out: &mut Vec<u8>) {
    msg.encode(out).expect("a Vec<u8> grows to fit any message");
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
        encode(&inst.configure(req), out);
        Ok(())
    })
}

#[no_mangle]
pub extern "C" fn cr_set_state(len: i32) -> i64 {
    call(len, |inst, input, out| {
        let result = match set_state_fields(input) {
            Some((state, account_id)) => inst.set_state_from(state, account_id)?,
            None => inst.set_state(decode::<SetState>(input, "SetState")?)?,
        };
        encode(&result, out);
        Ok(())
    })
}

/// `SetState{state = 1, account_id = 2}` borrowed from `input` (the state is most of the
/// input: a decode would copy it). None for anything unusual (malformed, not UTF-8), which
/// prost then decodes, or refuses with its error.
fn set_state_fields(input: &[u8]) -> Option<(&[u8], &str)> {
    let (mut state, mut account_id): (&[u8], &str) = (&[], "");
    let mut pos = 0;
    while pos < input.len() {
        let (tag, payload, end) = crate::state::next_field(input, pos)?;
        match tag {
            0x0a => state = payload, // (the last occurrence wins, as in prost)
            0x12 => account_id = std::str::from_utf8(payload).ok()?,
            tag if tag >> 3 <= 2 => return None, // a known field in another wire type
            _ => {}
        }
        pos = end;
    }
    Some((state, account_id))
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
        encode(&inst.flush_logs(req), out);
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_state_fields_borrow_what_prost_decodes() {
        let req = SetState { state: vec![1, 2, 3], account_id: "acc".into() };
        let mut bytes = req.encode_to_vec();
        bytes.extend_from_slice(&[0x18, 0x07]); // an unknown field: skipped
        assert_eq!(set_state_fields(&bytes), Some((&[1u8, 2, 3][..], "acc")));
        assert_eq!(set_state_fields(&[]), Some((&[][..], "")));
        assert_eq!(set_state_fields(&[0x12, 0x01, 0xff]), None); // not UTF-8: prost's error
        assert_eq!(set_state_fields(&[0x08, 0x01]), None); // field 1 as a varint
        assert_eq!(set_state_fields(&[0x0a, 0x05, 0x01]), None); // truncated
        assert!(SetState::decode(&[0x12, 0x01, 0xff][..]).is_err());
    }
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
        assert_eq!(cr_abi_version(), 3);
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
        assert!(std::str::from_utf8(&out[2..]).unwrap().contains("invalid"));

        cr_resolve(1 << 30);
        let out = output();
        assert_eq!(out[0], STATUS_ERROR);
        cr_flush_logs(-1);
        assert_eq!(output()[0], STATUS_ERROR);

        // an empty message is a valid FlushLogs
        cr_flush_logs(0);
        assert_eq!(output()[0], STATUS_OK);
    }

    /// (status, kind code, message) of the last response.
    fn error_response() -> (u8, u8, String) {
        let out = output();
        (out[0], out[1], String::from_utf8(out[2..].to_vec()).unwrap())
    }

    fn resolve_call(call: &ResolveCall) -> i64 {
        let bytes = call.encode_to_vec();
        write_input(&bytes);
        cr_resolve(bytes.len() as i32)
    }

    /// Each kind the exports can produce arrives as its code after the ERROR status.
    #[test]
    fn error_kind_codes_cross_the_abi() {
        use crate::error::ErrorKind;
        use crate::testutil::{resolver_state, SECRET};
        let fresh = || INSTANCE.with(|i| *i.borrow_mut() = Instance::new());
        fresh();

        cr_flush_logs(-1);
        let (status, code, message) = error_response();
        assert_eq!((status, code), (STATUS_ERROR, ErrorKind::InvalidRequest.code()));
        assert!(message.starts_with("input length -1"), "{}", message);

        write_input(b"\xff\xff\xff");
        cr_resolve(3);
        assert_eq!(error_response().1, ErrorKind::InvalidRequest.code());

        resolve_call(&ResolveCall { client_secret: SECRET.into(), ..Default::default() });
        assert_eq!(error_response().1, ErrorKind::NoState.code());

        let bad = SetState { state: vec![0xff, 0xff, 0xff], account_id: "acc".into() }.encode_to_vec();
        write_input(&bad);
        cr_set_state(bad.len() as i32);
        let (status, code, message) = error_response();
        assert_eq!((status, code), (STATUS_ERROR, ErrorKind::InvalidState.code()));
        assert!(message.starts_with("invalid resolver state"), "{}", message);

        let good = SetState { state: resolver_state(vec![], vec![]).encode_to_vec(), account_id: "acc".into() }
            .encode_to_vec();
        write_input(&good);
        cr_set_state(good.len() as i32);
        assert_eq!(output()[0], STATUS_OK);

        resolve_call(&ResolveCall { client_secret: "not-the-secret".into(), ..Default::default() });
        let (_, code, message) = error_response();
        assert_eq!(code, ErrorKind::UnknownClientSecret.code());
        assert!(!message.contains("not-the-secret"), "{}", message);

        resolve_call(&ResolveCall {
            client_secret: SECRET.into(),
            context_json: b"{oops".to_vec(),
            ..Default::default()
        });
        let (_, code, message) = error_response();
        assert_eq!(code, ErrorKind::InvalidContext.code());
        assert!(message.starts_with("invalid context JSON"), "{}", message);

        resolve_call(&ResolveCall { client_secret: SECRET.into(), materialization_mode: 99, ..Default::default() });
        assert_eq!(error_response().1, ErrorKind::InvalidRequest.code());

        resolve_call(&ResolveCall { client_secret: SECRET.into(), ..Default::default() });
        assert_eq!(output()[0], STATUS_OK);
        fresh();
    }
}
