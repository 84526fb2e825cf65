//! The state store's domain: keys, values, versions, counters and locks, the operations a
//! caller can apply, their results, and the rules for validating them. Limits are
//! documented in `docs/limits.md` and `docs/state.md`; keep them in sync.
//!
//! Every write goes through [`StateOp`] and `StateStore::state_apply`, optionally bound to a
//! run ([`RunCall`]): the call is then checked against the run's lease and journaled under
//! its call id in the same transaction, and a repeated call id returns the journaled
//! outcome instead of applying the operation again.

use serde::{Deserialize, Serialize};

use super::client_ops::validate_run_id;
use super::error::{EngineError, EngineResult};
use super::model::LeaseRef;
use super::validate;

/// Longest key (and list prefix), in bytes of UTF-8.
pub const MAX_KEY_BYTES: usize = 512;
/// Default largest value, in bytes (`--max-state-value-bytes`).
pub const DEFAULT_MAX_VALUE_BYTES: usize = 256 * 1024;
/// Longest TTL (or distance to an absolute expiry) of a key: 3650 days.
pub const MAX_TTL_MS: i64 = 3_650 * 86_400_000;
/// Longest lock TTL: 24 hours.
pub const MAX_LOCK_TTL_MS: i64 = 86_400_000;
/// Longest wait for a lock.
pub const MAX_LOCK_WAIT_MS: i64 = 60_000;
/// Default and largest page of `ListStateKeys`.
pub const DEFAULT_LIST_PAGE: u64 = 100;
/// Largest page of `ListStateKeys`.
pub const MAX_LIST_PAGE: u64 = 1_000;
/// Versions of a key created from nothing start at `now_ms * VERSION_CLOCK_FACTOR`, so a key
/// deleted (or expired) and created again gets versions above its earlier ones, and a
/// compare-and-set holding a version from before the delete fails.
pub const VERSION_CLOCK_FACTOR: i64 = 1_000;

/// A live key with its value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateEntry {
    /// The key.
    pub key: String,
    /// The value, as JSON text.
    pub value: String,
    /// Grows with every write.
    pub version: i64,
    /// Expiry (milliseconds), if any.
    pub expires_at: Option<i64>,
    /// Last write.
    pub updated_at: i64,
}

/// A live key without its value (listings).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateKeyInfo {
    /// The key.
    pub key: String,
    /// Current version.
    pub version: i64,
    /// Expiry, if any.
    pub expires_at: Option<i64>,
    /// Last write.
    pub updated_at: i64,
    /// Size of the JSON value in bytes.
    pub value_size: i64,
}

/// An operation on the state store.
#[derive(Debug, Clone, PartialEq)]
pub enum StateOp {
    /// Read a key (applied through the store only inside a run, to journal the read).
    Get {
        /// The key.
        key: String,
    },
    /// List live keys with a prefix, in byte order, after a key, at most `limit`.
    List {
        /// The prefix; empty = all keys.
        prefix: String,
        /// Exclusive lower bound (the last key of the previous page).
        after: Option<String>,
        /// Page size.
        limit: u64,
    },
    /// Write a key.
    Set {
        /// The key.
        key: String,
        /// Validated JSON text.
        value: String,
        /// Absolute expiry, if any.
        expires_at: Option<i64>,
        /// Compare-and-set: 0 = must be absent, n = must be at version n.
        expected_version: Option<i64>,
    },
    /// Delete a key.
    Delete {
        /// The key.
        key: String,
        /// As for `Set`.
        expected_version: Option<i64>,
    },
    /// Add to an integer counter.
    Increment {
        /// The key.
        key: String,
        /// Amount to add.
        by: i64,
        /// Absolute expiry given to the key when this increment creates it.
        expires_at_if_created: Option<i64>,
    },
    /// Take a lock.
    Acquire {
        /// The lock's key.
        key: String,
        /// Lock TTL in milliseconds.
        ttl_ms: i64,
        /// Release the lock when the calling run ends (only inside a run).
        release_with_run: bool,
        /// Inside a run, whether a refusal is journaled. A waiting acquire journals only
        /// its final refusal, so a replay returns the outcome the caller actually got.
        journal_busy: bool,
    },
    /// Free a lock.
    Release {
        /// The lock's key.
        key: String,
        /// The fencing token it was granted with.
        token: i64,
    },
    /// Renew a lock.
    Extend {
        /// The lock's key.
        key: String,
        /// The fencing token it was granted with.
        token: i64,
        /// The new TTL from now.
        ttl_ms: i64,
    },
}

impl StateOp {
    /// The operation's name, as journaled.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Get { .. } => "get",
            Self::List { .. } => "list",
            Self::Set { .. } => "set",
            Self::Delete { .. } => "delete",
            Self::Increment { .. } => "increment",
            Self::Acquire { .. } => "acquire_lock",
            Self::Release { .. } => "release_lock",
            Self::Extend { .. } => "extend_lock",
        }
    }

    /// The key it applies to (the prefix for a listing).
    pub fn key(&self) -> &str {
        match self {
            Self::List { prefix, .. } => prefix,
            Self::Get { key }
            | Self::Set { key, .. }
            | Self::Delete { key, .. }
            | Self::Increment { key, .. }
            | Self::Acquire { key, .. }
            | Self::Release { key, .. }
            | Self::Extend { key, .. } => key,
        }
    }
}

/// What an applied operation produced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum StateResult {
    /// `Get`: the live entry, if any.
    Entry {
        /// The entry; `None` when absent or expired.
        entry: Option<StateEntry>,
    },
    /// `List`: one page.
    Keys {
        /// The keys.
        keys: Vec<StateKeyInfo>,
        /// The last key of the page when more keys follow.
        next_after: Option<String>,
    },
    /// `Set`: the new version and expiry.
    Written {
        /// New version.
        version: i64,
        /// Expiry, if any.
        expires_at: Option<i64>,
    },
    /// `Delete`: whether a live key was deleted.
    Deleted {
        /// True when a live key was deleted.
        deleted: bool,
    },
    /// `Increment`: the counter after the increment.
    Counter {
        /// New value.
        value: i64,
        /// New version.
        version: i64,
        /// Expiry, if any.
        expires_at: Option<i64>,
    },
    /// `Acquire`: the lock was granted.
    Granted {
        /// The fencing token.
        token: i64,
        /// When the lock expires.
        expires_at: i64,
    },
    /// `Acquire`: another holder has the lock.
    Busy {
        /// When the holder's lock expires.
        holder_expires_at: i64,
        /// The run the holder's lock is tied to, if any (to wake waiters when it ends).
        holder_run_id: Option<String>,
    },
    /// `Release`: done.
    Released,
    /// `Extend`: the new expiry.
    Extended {
        /// When the lock now expires.
        expires_at: i64,
    },
}

/// Why an operation was refused because of the key's current state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ConflictReason {
    /// Compare-and-set: the key is not at the expected version.
    VersionMismatch,
    /// Increment: the value is not a JSON integer.
    NotAnInteger,
    /// Increment: the result leaves the signed 64-bit range.
    CounterOverflow,
    /// Release or extend: the token does not hold the lock now.
    LockNotHeld,
}

impl ConflictReason {
    /// The reason as sent in the `stackshift-error-reason` metadata.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::VersionMismatch => "VERSION_MISMATCH",
            Self::NotAnInteger => "NOT_AN_INTEGER",
            Self::CounterOverflow => "COUNTER_OVERFLOW",
            Self::LockNotHeld => "LOCK_NOT_HELD",
        }
    }
}

/// A state-dependent refusal (gRPC `FAILED_PRECONDITION` with a reason).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{message}")]
pub struct StateConflict {
    /// Machine-readable reason.
    pub reason: ConflictReason,
    /// Message for a person.
    pub message: String,
}

impl StateConflict {
    /// A conflict with a reason and a message.
    pub fn new(reason: ConflictReason, message: impl Into<String>) -> Self {
        Self {
            reason,
            message: message.into(),
        }
    }
}

/// A state call made from inside a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunCall {
    /// The run and the lease of the calling attempt.
    pub lease: LeaseRef,
    /// The call's journal id.
    pub call_id: String,
}

/// An operation to apply, in a namespace, possibly bound to a run.
#[derive(Debug, Clone, PartialEq)]
pub struct StateCall {
    /// The caller's namespace.
    pub namespace: String,
    /// The operation.
    pub op: StateOp,
    /// Set when made from inside a run.
    pub run: Option<RunCall>,
}

/// What `state_apply` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateOutcome {
    /// The result, or the state-dependent refusal.
    pub result: Result<StateResult, StateConflict>,
    /// True when the outcome came from the run's journal (nothing was applied now).
    pub replayed: bool,
}

/// How a call's outcome is recorded in the journal (the `output` of a STATE entry).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JournaledCall {
    /// [`StateOp::name`].
    pub op: String,
    /// [`StateOp::key`].
    pub key: String,
    /// The result, when the call succeeded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<StateResult>,
    /// The refusal, when the call was refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conflict: Option<StateConflict>,
}

impl JournaledCall {
    /// The record of `op`'s outcome.
    pub fn new(op: &StateOp, outcome: &Result<StateResult, StateConflict>) -> Self {
        Self {
            op: op.name().to_owned(),
            key: op.key().to_owned(),
            result: outcome.as_ref().ok().cloned(),
            conflict: outcome.as_ref().err().cloned(),
        }
    }

    /// The recorded outcome, after checking that the replayed call is the same operation on
    /// the same key (a handler that changed between attempts gets a clear error instead of
    /// another call's result).
    pub fn replay(
        self,
        op: &StateOp,
        call_id: &str,
    ) -> EngineResult<Result<StateResult, StateConflict>> {
        if self.op != op.name() || self.key != op.key() {
            return Err(EngineError::invalid(format!(
                "nondeterministic replay: journal entry {call_id} recorded {} of {:?}, but \
                 this execution called {} of {:?}; state calls must happen in the same order \
                 on every attempt",
                self.op,
                self.key,
                op.name(),
                op.key()
            )));
        }
        match (self.result, self.conflict) {
            (Some(r), _) => Ok(Ok(r)),
            (None, Some(c)) => Ok(Err(c)),
            (None, None) => Err(EngineError::Storage(format!(
                "journal entry {call_id} holds no outcome"
            ))),
        }
    }
}

/// When a written key expires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expiry {
    /// Time to live from now, in milliseconds.
    Ttl(i64),
    /// Absolute instant, in milliseconds since the epoch.
    At(i64),
}

/// `SetState` input.
#[derive(Debug, Clone, Default)]
pub struct SetInput {
    /// The key.
    pub key: String,
    /// The value (JSON bytes).
    pub value: Vec<u8>,
    /// Expiry; `None` = never.
    pub expiry: Option<Expiry>,
    /// Compare-and-set expectation.
    pub expected_version: Option<i64>,
    /// Run binding.
    pub run: Option<RunCallInput>,
}

/// `IncrementState` input.
#[derive(Debug, Clone, Default)]
pub struct IncrementInput {
    /// The key.
    pub key: String,
    /// Amount; `None` = 1.
    pub by: Option<i64>,
    /// TTL applied when the increment creates the key.
    pub ttl_ms: Option<i64>,
    /// Run binding.
    pub run: Option<RunCallInput>,
}

/// `AcquireLock` input.
#[derive(Debug, Clone, Default)]
pub struct AcquireInput {
    /// The lock's key.
    pub key: String,
    /// Lock TTL (required).
    pub ttl_ms: Option<i64>,
    /// How long to wait for the lock; `None` or 0 = try once.
    pub wait_ms: Option<i64>,
    /// Release the lock when the run ends (requires `run`).
    pub release_with_run: bool,
    /// Run binding.
    pub run: Option<RunCallInput>,
}

/// The outcome of `AcquireLock`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockAttempt {
    /// The caller holds the lock.
    Granted {
        /// Fencing token.
        token: i64,
        /// Expiry.
        expires_at: i64,
    },
    /// Someone else holds it.
    Busy {
        /// When the holder's lock expires.
        holder_expires_at: i64,
    },
}

/// A counter after an increment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CounterValue {
    /// New value.
    pub value: i64,
    /// New version.
    pub version: i64,
    /// Expiry, if any.
    pub expires_at: Option<i64>,
}

/// Validates a key: 1-512 bytes of UTF-8, no control characters.
pub fn key(field: &str, value: &str) -> EngineResult<()> {
    if value.is_empty() {
        return Err(EngineError::invalid(format!("{field} must not be empty")));
    }
    prefix(field, value)
}

/// Validates a list prefix: like a key, but may be empty.
pub fn prefix(field: &str, value: &str) -> EngineResult<()> {
    if value.len() > MAX_KEY_BYTES {
        return Err(EngineError::invalid(format!(
            "{field} is {} bytes long; the limit is {MAX_KEY_BYTES} bytes",
            value.len()
        )));
    }
    if value.chars().any(char::is_control) {
        return Err(EngineError::invalid(format!(
            "{field} must not contain control characters"
        )));
    }
    Ok(())
}

/// Validates a value: required, valid JSON, nesting at most 128 levels, at most `limit`
/// bytes (`RESOURCE_EXHAUSTED` above it). Returns the JSON text.
pub fn value(bytes: &[u8], limit: usize) -> EngineResult<String> {
    if bytes.len() > limit {
        return Err(EngineError::ResourceExhausted(format!(
            "value is {} bytes; the limit is {limit} bytes (--max-state-value-bytes)",
            bytes.len()
        )));
    }
    if bytes.is_empty() {
        return Err(EngineError::invalid(
            "value is required: send a JSON document (`null` to store JSON null)",
        ));
    }
    validate::json("value", bytes, limit)
}

/// Validates a TTL in milliseconds: more than zero and at most `max`.
pub fn ttl(field: &str, ms: i64, max: i64) -> EngineResult<()> {
    if ms <= 0 {
        return Err(EngineError::invalid(format!(
            "{field} must be longer than zero (got {})",
            validate::fmt_ms(ms)
        )));
    }
    if ms > max {
        return Err(EngineError::invalid(format!(
            "{field} must be at most {} (got {})",
            validate::fmt_ms(max),
            validate::fmt_ms(ms)
        )));
    }
    Ok(())
}

/// Validates an absolute expiry: in the future, at most [`MAX_TTL_MS`] ahead.
pub fn expires_at(at: i64, now: i64) -> EngineResult<()> {
    if at <= now {
        return Err(EngineError::invalid(format!(
            "expires_at is in the past ({} ms ago); to remove a key, delete it",
            now - at
        )));
    }
    if at - now > MAX_TTL_MS {
        return Err(EngineError::invalid(format!(
            "expires_at is more than {} ahead",
            validate::fmt_ms(MAX_TTL_MS)
        )));
    }
    Ok(())
}

/// Validates an expected version: 0 (absent) or a positive version.
pub fn expected_version(v: Option<i64>) -> EngineResult<()> {
    match v {
        Some(v) if v < 0 => Err(EngineError::invalid(format!(
            "expected_version must be 0 (key absent) or a version (got {v})"
        ))),
        _ => Ok(()),
    }
}

/// Validates a fencing token.
pub fn token(t: i64) -> EngineResult<()> {
    if t <= 0 {
        return Err(EngineError::invalid(format!(
            "fencing_token must be the positive token the lock was granted with (got {t})"
        )));
    }
    Ok(())
}

/// The run-binding fields a request carries, before validation.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunCallInput {
    /// The run's id.
    pub run_id: String,
    /// The attempt's lease token.
    pub lease_token: String,
    /// The call's journal id.
    pub call_id: String,
}

/// Validates the run binding of a call made from inside a run.
pub fn run_call(namespace: &str, input: RunCallInput) -> EngineResult<RunCall> {
    validate_run_id(&input.run_id).map_err(|e| EngineError::invalid(format!("run.{e}")))?;
    if input.lease_token.is_empty() || input.lease_token.len() > 64 {
        return Err(EngineError::invalid(
            "run.lease_token must be the lease token of the task being executed",
        ));
    }
    validate::text_id(
        "run.call_id",
        &input.call_id,
        validate::MAX_STEP_ID_LEN + 12,
    )?;
    Ok(RunCall {
        lease: LeaseRef {
            namespace: namespace.to_owned(),
            run_id: input.run_id,
            token: input.lease_token,
        },
        call_id: input.call_id,
    })
}

/// The smallest string greater than every string starting with `prefix`, in byte order;
/// `None` when there is none (empty prefix, or only `char::MAX`).
pub fn prefix_upper_bound(prefix: &str) -> Option<String> {
    let mut chars: Vec<char> = prefix.chars().collect();
    while let Some(last) = chars.pop() {
        let mut next = last as u32 + 1;
        if (0xD800..=0xDFFF).contains(&next) {
            next = 0xE000;
        }
        if let Some(c) = char::from_u32(next) {
            chars.push(c);
            return Some(chars.into_iter().collect());
        }
    }
    None
}

/// The version a write gives a key: one more than its live version, or, for a key created
/// from nothing, at least `now * VERSION_CLOCK_FACTOR` and above any version its row held.
pub fn next_version(live: Option<i64>, stale: Option<i64>, now: i64) -> i64 {
    match live {
        Some(v) => v.saturating_add(1),
        None => now
            .saturating_mul(VERSION_CLOCK_FACTOR)
            .max(stale.map_or(1, |v| v.saturating_add(1))),
    }
}

/// Checks a compare-and-set expectation against the live version.
pub fn check_expected(
    key: &str,
    expected: Option<i64>,
    live: Option<i64>,
) -> Result<(), StateConflict> {
    match (expected, live) {
        (None, _) | (Some(0), None) => Ok(()),
        (Some(e), Some(v)) if e == v => Ok(()),
        (Some(e), live) => Err(StateConflict::new(
            ConflictReason::VersionMismatch,
            format!(
                "version mismatch on key {key:?}: expected {}, but it is {}",
                if e == 0 {
                    "the key to be absent".to_owned()
                } else {
                    format!("version {e}")
                },
                match live {
                    Some(v) => format!("at version {v}"),
                    None => "absent".to_owned(),
                }
            ),
        )),
    }
}

/// Parses a stored value as a counter.
pub fn counter_value(key: &str, json: &str) -> Result<i64, StateConflict> {
    serde_json::from_str::<serde_json::Value>(json)
        .ok()
        .and_then(|v| v.as_i64())
        .ok_or_else(|| {
            StateConflict::new(
                ConflictReason::NotAnInteger,
                format!("key {key:?} does not hold a JSON integer, so it cannot be incremented"),
            )
        })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_prefixes() {
        assert!(key("key", "files:file_1:rows").is_ok());
        assert!(key("key", "webhooks:stripe:evt_123 ü ✓").is_ok());
        assert!(key("key", "").is_err());
        assert!(key("key", &"k".repeat(513)).is_err());
        assert!(key("key", &"k".repeat(512)).is_ok());
        assert!(key("key", "a\tb").is_err());
        assert!(prefix("prefix", "").is_ok());
    }

    #[test]
    fn upper_bounds() {
        assert_eq!(prefix_upper_bound("files:"), Some("files;".to_owned()));
        assert_eq!(prefix_upper_bound(""), None);
        assert_eq!(
            prefix_upper_bound("a\u{D7FF}"),
            Some("a\u{E000}".to_owned())
        );
        assert_eq!(prefix_upper_bound("a\u{10FFFF}"), Some("b".to_owned()));
        assert_eq!(prefix_upper_bound("\u{10FFFF}"), None);
    }

    #[test]
    fn versions_and_expectations() {
        assert_eq!(next_version(Some(7), None, 1_000), 8);
        assert_eq!(next_version(None, None, 1_000), 1_000_000);
        assert_eq!(next_version(None, Some(5_000_000), 1_000), 5_000_001);
        assert!(check_expected("k", None, Some(3)).is_ok());
        assert!(check_expected("k", Some(0), None).is_ok());
        assert!(check_expected("k", Some(3), Some(3)).is_ok());
        assert_eq!(
            check_expected("k", Some(2), Some(3)).unwrap_err().reason,
            ConflictReason::VersionMismatch
        );
        assert!(check_expected("k", Some(0), Some(3)).is_err());
        assert!(check_expected("k", Some(3), None).is_err());
    }

    #[test]
    fn values_and_ttls() {
        assert!(matches!(
            value(b"", 10),
            Err(EngineError::InvalidArgument(_))
        ));
        assert!(matches!(
            value(b"{", 10),
            Err(EngineError::InvalidArgument(_))
        ));
        assert!(matches!(
            value(b"[1,2,3,4]", 4),
            Err(EngineError::ResourceExhausted(_))
        ));
        assert_eq!(value(b"null", 10).ok().as_deref(), Some("null"));
        assert!(ttl("ttl", 0, 10).is_err());
        assert!(ttl("ttl", -5, 10).is_err());
        assert!(ttl("ttl", 11, 10).is_err());
        assert!(ttl("ttl", 1, 10).is_ok());
        assert_eq!(counter_value("k", "41").ok(), Some(41));
        assert!(counter_value("k", "4.5").is_err());
        assert!(counter_value("k", "\"4\"").is_err());
    }

    #[test]
    fn journal_round_trip_and_replay_check() {
        let op = StateOp::Increment {
            key: "k".into(),
            by: 2,
            expires_at_if_created: None,
        };
        let outcome = Ok(StateResult::Counter {
            value: 2,
            version: 9,
            expires_at: None,
        });
        let text = serde_json::to_string(&JournaledCall::new(&op, &outcome)).unwrap_or_default();
        let back: JournaledCall = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(back.clone().replay(&op, "state:1"), Ok(outcome));
        let other = StateOp::Get { key: "k".into() };
        assert!(back.replay(&other, "state:1").is_err());
    }
}
