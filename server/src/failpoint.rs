//! Failpoints: test-only pauses at named points of the engine and storage, used by the
//! reliability suite to force races (e.g. a completion racing the lease reaper).
//!
//! Compiled in only with the cargo feature `failpoints`; without it [`pause`] is an empty
//! inline function and the environment is never read. With it, `STACKSHIFT_FAILPOINTS`
//! (read once) lists `NAME=MILLISECONDS` pairs separated by `;`, e.g.
//! `complete_run.before_store=1500;expire_leases.after_select=1500`. Release builds and the
//! default debug build never contain them.

/// Pauses for the configured time when the failpoint `name` is set.
#[cfg(not(feature = "failpoints"))]
#[inline(always)]
pub async fn pause(_name: &str) {}

/// Pauses for the configured time when the failpoint `name` is set.
#[cfg(feature = "failpoints")]
pub async fn pause(name: &str) {
    if let Some(ms) = configured().get(name) {
        tracing::warn!(failpoint = name, ms, "failpoint: pausing");
        tokio::time::sleep(std::time::Duration::from_millis(*ms)).await;
    }
}

#[cfg(feature = "failpoints")]
fn configured() -> &'static std::collections::HashMap<String, u64> {
    static POINTS: std::sync::OnceLock<std::collections::HashMap<String, u64>> =
        std::sync::OnceLock::new();
    POINTS.get_or_init(|| {
        std::env::var("STACKSHIFT_FAILPOINTS")
            .unwrap_or_default()
            .split(';')
            .filter_map(|p| {
                let (k, v) = p.split_once('=')?;
                Some((k.trim().to_owned(), v.trim().parse().ok()?))
            })
            .collect()
    })
}
