//! Cross-replica wakeups on PostgreSQL. Writes that make a run deliverable (or schedule a
//! timer) also run `pg_notify` inside their transaction, so the notification is delivered
//! exactly when the write commits; every replica LISTENs and wakes its own pollers or timer.
//! Each store has an origin id so a replica ignores its own notifications (its engine has
//! already acted on them). Inside the group-commit writer the notifications of a batch are
//! buffered and sent together just before its commit ([`deferred`], [`flush`]).

use std::cell::RefCell;
use std::future::Future;

use sea_orm::sqlx::postgres::PgListener;
use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend, Statement};
use tokio::sync::mpsc;

use crate::engine::EngineResult;
use crate::engine::store::Wakeup;

/// The notification channel.
pub const CHANNEL: &str = "stackshift_wakeup";

tokio::task_local! {
    /// Notifications of the current group-commit batch, not sent yet.
    static PENDING: RefCell<Vec<String>>;
}

/// Runs `fut` (a writer task) with a notification buffer: [`publish`] inside it buffers the
/// payload until [`flush`], which sends the batch's distinct payloads together just before
/// the commit (PostgreSQL delivers a transaction's notifications at its commit anyway, and
/// folds identical ones), instead of one `pg_notify` round trip per write.
pub async fn deferred<F: Future>(fut: F) -> F::Output {
    PENDING.scope(RefCell::new(Vec::new()), fut).await
}

/// The current length of the buffer, to pass to [`rollback_to`] when the work started now
/// rolls back (0 outside a [`deferred`] scope).
pub fn mark() -> usize {
    PENDING.try_with(|p| p.borrow().len()).unwrap_or(0)
}

/// Drops the notifications buffered since `mark` (their savepoint rolled back, which would
/// have discarded a `NOTIFY` run inside it too).
pub fn rollback_to(mark: usize) {
    let _ = PENDING.try_with(|p| p.borrow_mut().truncate(mark));
}

/// Sends the buffered notifications (the writer calls this once per batch, before the
/// commit): each distinct payload once, [`FLUSH_CHUNK`] per statement.
pub async fn flush<C: ConnectionTrait>(c: &C) -> EngineResult<()> {
    let pending = PENDING
        .try_with(|p| std::mem::take(&mut *p.borrow_mut()))
        .unwrap_or_default();
    let mut seen = std::collections::HashSet::with_capacity(pending.len());
    let distinct: Vec<String> = pending
        .into_iter()
        .filter(|p| seen.insert(p.clone()))
        .collect();
    for chunk in distinct.chunks(FLUSH_CHUNK) {
        let calls: Vec<String> = (0..chunk.len())
            .map(|i| format!("pg_notify($1, ${})", i + 2))
            .collect();
        let mut values = vec![CHANNEL.into()];
        values.extend(chunk.iter().map(|p| p.clone().into()));
        c.execute_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            format!("SELECT {}", calls.join(", ")),
            values,
        ))
        .await?;
    }
    Ok(())
}

/// Notifications per statement of [`flush`].
const FLUSH_CHUNK: usize = 100;

/// Publishes `wakeup` when the surrounding transaction commits (inside the writer: with the
/// batch's other notifications, see [`deferred`]).
pub async fn publish<C: ConnectionTrait>(c: &C, origin: &str, wakeup: &Wakeup) -> EngineResult<()> {
    let payload = match wakeup {
        Wakeup::Ready {
            namespace,
            queue,
            job,
        } => format!("r\t{origin}\t{namespace}\t{queue}\t{job}"),
        Wakeup::TimerAt(at) => format!("t\t{origin}\t{at}"),
        Wakeup::Capacity { namespace, queue } => format!("c\t{origin}\t{namespace}\t{queue}"),
        Wakeup::LockReleased { namespace, key } => format!("l\t{origin}\t{namespace}\t{key}"),
    };
    let mut payload = Some(payload);
    let _ = PENDING.try_with(|p| {
        if let Some(payload) = payload.take() {
            p.borrow_mut().push(payload);
        }
    });
    let Some(payload) = payload else {
        return Ok(());
    };
    c.execute_raw(Statement::from_sql_and_values(
        DbBackend::Postgres,
        "SELECT pg_notify($1, $2)",
        [CHANNEL.into(), payload.into()],
    ))
    .await?;
    Ok(())
}

fn parse(payload: &str, own_origin: &str) -> Option<Wakeup> {
    let mut parts = payload.split('\t');
    let kind = parts.next()?;
    if parts.next()? == own_origin {
        return None;
    }
    match kind {
        "r" => Some(Wakeup::Ready {
            namespace: parts.next()?.to_owned(),
            queue: parts.next()?.to_owned(),
            job: parts.next()?.to_owned(),
        }),
        "t" => parts.next()?.parse().ok().map(Wakeup::TimerAt),
        "c" => Some(Wakeup::Capacity {
            namespace: parts.next()?.to_owned(),
            queue: parts.next()?.to_owned(),
        }),
        "l" => Some(Wakeup::LockReleased {
            namespace: parts.next()?.to_owned(),
            key: parts.next()?.to_owned(),
        }),
        _ => None,
    }
}

/// Spawns the LISTEN loop; it reconnects after errors until the receiver is dropped.
pub fn spawn_listener(db: &DatabaseConnection, origin: String) -> mpsc::UnboundedReceiver<Wakeup> {
    let pool = db.get_postgres_connection_pool().clone();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let mut listener = match PgListener::connect_with(&pool).await {
                Ok(l) => l,
                Err(e) => {
                    tracing::warn!(error = %e, "LISTEN connection failed; retrying in 1s");
                    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                    continue;
                }
            };
            if let Err(e) = listener.listen(CHANNEL).await {
                tracing::warn!(error = %e, "LISTEN failed; retrying in 1s");
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                continue;
            }
            // Anything published while we were not listening is caught by the timer's
            // periodic resync.
            let _ = tx.send(Wakeup::TimerAt(0));
            loop {
                match listener.recv().await {
                    Ok(n) => {
                        if let Some(w) = parse(n.payload(), &origin)
                            && tx.send(w).is_err()
                        {
                            return;
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "LISTEN connection lost; reconnecting");
                        break;
                    }
                }
            }
        }
    });
    rx
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_skips_own_origin() {
        assert_eq!(
            parse("r\tA\tns\tq\tjob", "B"),
            Some(Wakeup::Ready {
                namespace: "ns".into(),
                queue: "q".into(),
                job: "job".into()
            })
        );
        assert_eq!(parse("t\tA\t42", "B"), Some(Wakeup::TimerAt(42)));
        assert_eq!(
            parse("c\tA\tns\tq", "B"),
            Some(Wakeup::Capacity {
                namespace: "ns".into(),
                queue: "q".into()
            })
        );
        assert_eq!(
            parse("l\t\tns\tfiles:1 lock", "B"),
            Some(Wakeup::LockReleased {
                namespace: "ns".into(),
                key: "files:1 lock".into()
            })
        );
        assert_eq!(parse("r\tA\tns\tq\tjob", "A"), None);
        assert_eq!(parse("garbage", "B"), None);
    }
}
