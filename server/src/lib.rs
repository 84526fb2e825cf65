//! The StackShift server: a tonic gRPC API (`api`) over the domain engine (`engine`) over
//! sea-orm storage (`storage`), on embedded SQLite or PostgreSQL.

pub mod api;
pub mod engine;
pub mod failpoint;
pub mod http;
pub mod server;
pub mod storage;
pub mod telemetry;

#[doc(hidden)]
/// TEMP latency trace (removed before merge).
pub fn lat_trace(tag: &str) {
    use std::io::Write;
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    if !*ON.get_or_init(|| std::env::var_os("LAT_TRACE").is_some()) {
        return;
    }
    let us = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros())
        .unwrap_or(0);
    let _ = writeln!(std::io::stderr(), "LT {us} {tag}");
}
