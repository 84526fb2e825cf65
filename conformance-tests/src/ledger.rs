//! The side-effect ledger: every step body of the conformance jobs appends one JSON line when
//! it starts and one when it ends, `{"run_id","step","attempt","phase":"start"|"end","t":ms}`,
//! so cases can check how often (and in which attempt) each body really executed.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;

use anyhow::Context as _;
use serde::Deserialize;

/// One ledger line.
#[derive(Debug, Clone, Deserialize)]
pub struct Entry {
    pub run_id: String,
    /// The step id as written in the script (without occurrence suffix).
    pub step: String,
    pub attempt: i32,
    /// `start` or `end`.
    pub phase: String,
    /// Milliseconds since the Unix epoch.
    pub t: f64,
}

/// Reads every complete line of the ledger (a line being written is skipped).
pub fn read(path: &Path) -> anyhow::Result<Vec<Entry>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut entries = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        match serde_json::from_str::<Entry>(line) {
            Ok(entry) => entries.push(entry),
            Err(e) if !text.ends_with('\n') && text.lines().last() == Some(line) => {
                let _ = e; // the last line is still being written
            }
            Err(e) => anyhow::bail!("bad ledger line {line:?}: {e}"),
        }
    }
    Ok(entries)
}

/// The largest number of executions of `step` (across `runs`) that were running at once.
/// Every execution must have ended.
pub fn max_overlap(
    entries: &[Entry],
    runs: &BTreeSet<String>,
    step: &str,
) -> anyhow::Result<usize> {
    let mut open: HashMap<(String, i32), f64> = HashMap::new();
    let mut intervals = Vec::new();
    for e in entries
        .iter()
        .filter(|e| runs.contains(&e.run_id) && e.step == step)
    {
        let key = (e.run_id.clone(), e.attempt);
        if e.phase == "start" {
            open.insert(key, e.t);
        } else if let Some(start) = open.remove(&key) {
            intervals.push((start, e.t));
        }
    }
    anyhow::ensure!(
        open.is_empty(),
        "{} executions of {step} never ended",
        open.len()
    );
    // Sweep: ends sort before starts at the same instant (touching intervals do not overlap).
    let mut events: Vec<(f64, i32)> = intervals
        .iter()
        .flat_map(|&(s, e)| [(s, 1), (e, -1)])
        .collect();
    events.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
    let (mut now, mut max) = (0i32, 0i32);
    for (_, delta) in events {
        now += delta;
        max = max.max(now);
    }
    Ok(usize::try_from(max).unwrap_or(0))
}
