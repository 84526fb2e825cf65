//! `auth`: placeholder.
use crate::Opts;
use crate::report::Report;
use std::path::Path;
pub async fn run(_opts: &Opts, _bin: &Path, _report: &mut Report) -> anyhow::Result<()> {
    anyhow::bail!("not yet")
}
