//! Fuzzes every request type of the `worker` service through prost decoding and the
//! server's conversion and validation (`stackshift_server::api::fuzz::worker`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    stackshift_server::api::fuzz::worker(data);
});
