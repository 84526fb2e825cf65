//! Fuzzes every request type of the `state` service through prost decoding and the
//! server's conversion and validation (`stackshift_server::api::fuzz::state`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    stackshift_server::api::fuzz::state(data);
});
