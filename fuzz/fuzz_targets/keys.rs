//! Fuzzes every request type of the `keys` service through prost decoding and the
//! server's conversion and validation (`stackshift_server::api::fuzz::keys`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    stackshift_server::api::fuzz::keys(data);
});
