//! Cross-replica wakeups on PostgreSQL. Writes that make a run deliverable (or schedule a
//! timer) also run `pg_notify` inside their transaction, so the notification is delivered
//! exactly when the write commits; every replica LISTENs and wakes its own pollers or timer.
//! Each store has an origin id so a replica ignores its own notifications (its engine has
//! already acted on them).

use sea_orm::sqlx::postgres::PgListener;
use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend, Statement};
use tokio::sync::mpsc;

use crate::engine::EngineResult;
use crate::engine::store::Wakeup;

/// The notification channel.
pub const CHANNEL: &str = "stackshift_wakeup";

/// Publishes `wakeup` when the surrounding transaction commits.
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
