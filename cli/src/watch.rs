//! Following a run until it is final (`runs watch`).
//!
//! Today an update is one `GetRun` call with its `wait` field (the server's long-poll: it
//! answers as soon as the run is final, or after the wait with the run as it is). A
//! server-streaming `WatchRun` RPC is being added; switching to it only means
//! reimplementing [`RunUpdates::next`] on top of the stream — the printing loop in
//! `commands` stays as it is.

use std::time::Duration;

use stackshift::{Run, StackShift};

/// How long one `GetRun` long-poll waits for the run to become final.
const POLL_WAIT: Duration = Duration::from_secs(1);

/// A source of successive states of one run.
pub struct RunUpdates {
    client: StackShift,
    id: String,
    first: bool,
}

impl RunUpdates {
    /// Follows run `id`.
    pub fn new(client: StackShift, id: String) -> Self {
        Self {
            client,
            id,
            first: true,
        }
    }

    /// The run's next observed state: immediately on the first call, then after at most
    /// [`POLL_WAIT`] (sooner when the run becomes final).
    pub async fn next(&mut self) -> Result<Run, stackshift::Error> {
        if std::mem::take(&mut self.first) {
            return self.client.get_run(&self.id).await;
        }
        self.client.wait_for_run(&self.id, POLL_WAIT).await
    }
}
