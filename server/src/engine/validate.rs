//! Input validation with messages a person can act on. Limits are documented in
//! `docs/limits.md`; keep the two in sync.

use super::error::{EngineError, EngineResult};

/// Longest job, queue, namespace and worker name, in bytes.
pub const MAX_NAME_LEN: usize = 128;
/// Longest step id (before the occurrence suffix), in characters.
pub const MAX_STEP_ID_LEN: usize = 256;
/// Longest idempotency key, in bytes.
pub const MAX_IDEMPOTENCY_KEY_LEN: usize = 512;
/// Longest failure message or stack trace kept; longer text is truncated.
pub const MAX_FAILURE_TEXT: usize = 32 * 1024;
/// Deepest JSON nesting accepted (what the SDKs' JSON decoders accept).
pub const MAX_JSON_DEPTH: usize = 128;

/// Validates a job, queue or namespace name: 1-128 characters of `A-Z a-z 0-9 _ - . : /`.
pub fn name(field: &str, value: &str) -> EngineResult<()> {
    if value.is_empty() {
        return Err(EngineError::invalid(format!("{field} must not be empty")));
    }
    if value.len() > MAX_NAME_LEN {
        return Err(EngineError::invalid(format!(
            "{field} is {} bytes long; the limit is {MAX_NAME_LEN}",
            value.len()
        )));
    }
    if let Some(c) = value
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ':' | '/')))
    {
        return Err(EngineError::invalid(format!(
            "{field} {value:?} contains {c:?}; allowed characters are A-Z a-z 0-9 _ - . : /"
        )));
    }
    Ok(())
}

/// Validates free text identifiers (step ids, idempotency keys, worker ids): non-empty,
/// at most `max` (bytes, or characters for step ids), no control characters.
pub fn text_id(field: &str, value: &str, max: usize) -> EngineResult<()> {
    if value.is_empty() {
        return Err(EngineError::invalid(format!("{field} must not be empty")));
    }
    if value.chars().count() > max || value.len() > max * 4 {
        return Err(EngineError::invalid(format!(
            "{field} is too long; the limit is {max} characters"
        )));
    }
    if value.chars().any(char::is_control) {
        return Err(EngineError::invalid(format!(
            "{field} must not contain control characters"
        )));
    }
    Ok(())
}

/// Validates a JSON document given as bytes and returns it as text. Empty means `null`.
pub fn json(field: &str, bytes: &[u8], limit: usize) -> EngineResult<String> {
    if bytes.len() > limit {
        return Err(EngineError::ResourceExhausted(format!(
            "{field} is {} bytes; the limit is {limit} bytes (--max-payload-bytes)",
            bytes.len()
        )));
    }
    if bytes.is_empty() {
        return Ok("null".to_owned());
    }
    let text = std::str::from_utf8(bytes)
        .map_err(|e| EngineError::invalid(format!("{field} is not UTF-8: {e}")))?;
    serde_json::from_str::<serde::de::IgnoredAny>(text)
        .map_err(|e| EngineError::invalid(format!("{field} is not valid JSON: {e}")))?;
    if json_depth(text.as_bytes()) > MAX_JSON_DEPTH {
        return Err(EngineError::invalid(format!(
            "{field} nests arrays/objects deeper than {MAX_JSON_DEPTH} levels"
        )));
    }
    Ok(text.to_owned())
}

/// Maximum nesting depth of a (valid) JSON text, in one pass without allocating.
fn json_depth(bytes: &[u8]) -> usize {
    let (mut depth, mut max, mut in_string, mut escaped) = (0usize, 0usize, false, false);
    for &b in bytes {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                max = max.max(depth);
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    max
}

/// Truncates text to at most `max` bytes on a character boundary.
pub fn truncate(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut cut = max;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
        s.push_str("…[truncated]");
    }
    s
}

/// Validates that an optional duration (milliseconds) lies in `[min, max]`.
pub fn duration_ms(field: &str, value: Option<i64>, min: i64, max: i64) -> EngineResult<()> {
    match value {
        Some(v) if v < min || v > max => Err(EngineError::invalid(format!(
            "{field} must be between {} and {} (got {})",
            fmt_ms(min),
            fmt_ms(max),
            fmt_ms(v)
        ))),
        _ => Ok(()),
    }
}

/// Formats milliseconds for messages (`1500ms`, `30s`).
pub fn fmt_ms(ms: i64) -> String {
    if ms % 1000 == 0 {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(name("job", "send-verification-email").is_ok());
        assert!(name("job", "a/b:c.d_e").is_ok());
        assert!(name("job", "").is_err());
        assert!(name("job", "has space").is_err());
        assert!(name("job", &"x".repeat(129)).is_err());
    }

    #[test]
    fn json_rules() {
        assert_eq!(json("payload", b"", 10).ok().as_deref(), Some("null"));
        assert!(json("payload", b"{\"a\":1}", 100).is_ok());
        assert!(matches!(
            json("payload", b"{", 100),
            Err(EngineError::InvalidArgument(_))
        ));
        assert!(matches!(
            json("payload", &[0xff, 0xfe], 100),
            Err(EngineError::InvalidArgument(_))
        ));
        assert!(matches!(
            json("payload", b"[1,2,3]", 3),
            Err(EngineError::ResourceExhausted(_))
        ));
        let deep = "[".repeat(10_000) + &"]".repeat(10_000);
        assert!(json("payload", deep.as_bytes(), 1 << 20).is_err());
        let ok = "[".repeat(128) + &"]".repeat(128);
        assert!(json("payload", ok.as_bytes(), 1 << 20).is_ok());
        let quoted = format!("[\"{}\\\"\"]", "[".repeat(500));
        assert!(
            json("payload", quoted.as_bytes(), 1 << 20).is_ok(),
            "brackets in strings"
        );
    }

    #[test]
    fn text_ids() {
        assert!(text_id("step_id", "import-batch#2", MAX_STEP_ID_LEN).is_ok());
        assert!(text_id("step_id", "a\u{0}b", MAX_STEP_ID_LEN).is_err());
        assert!(text_id("step_id", "", MAX_STEP_ID_LEN).is_err());
        assert_eq!(truncate("héllo".into(), 2), "h…[truncated]");
    }
}
