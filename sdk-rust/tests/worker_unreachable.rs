//! A worker whose server is unreachable: it keeps retrying with backoff instead of
//! spinning or giving up, and still shuts down promptly. Needs no server (the end-to-end
//! tests against the real server are in `server/tests`).
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use stackshift::{ClientOptions, JobContext, StackShift, Worker};
use tokio::net::TcpListener;
use tokio::time::Instant;

#[tokio::test]
async fn worker_without_a_server_backs_off_and_shuts_down() {
    // Nothing listens on port 1: every poll fails to connect.
    let client = StackShift::new(ClientOptions::new("http://127.0.0.1:1")).unwrap();
    let handle = Worker::builder(client)
        .job("x", |_ctx: JobContext<()>| async { anyhow::Ok(()) })
        .shutdown_grace(Duration::from_secs(60))
        .build()
        .start();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!handle.is_finished(), "the worker gave up");
    let t = Instant::now();
    handle.shutdown().await;
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "shutdown took {:?}",
        t.elapsed()
    );
}

#[tokio::test]
async fn worker_reconnects_with_backoff_not_in_a_busy_loop() {
    // A port that accepts TCP connections and closes them at once, without speaking HTTP/2:
    // every poll fails, and each retry shows up as one accepted connection.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let a = Arc::clone(&accepted);
    let acceptor = tokio::spawn(async move {
        loop {
            let (socket, _) = listener.accept().await.unwrap();
            a.fetch_add(1, Ordering::SeqCst);
            drop(socket);
        }
    });
    let client = StackShift::new(ClientOptions::new(format!("http://{addr}"))).unwrap();
    let handle = Worker::builder(client)
        .job("x", |_ctx: JobContext<()>| async { anyhow::Ok(()) })
        .build()
        .start();
    // Backoff starts at 100 ms (jittered down to 50 ms) and doubles: in 2 s that is at most
    // about 6 tries; a loop without backoff would make hundreds.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let tries = accepted.load(Ordering::SeqCst);
    assert!(!handle.is_finished(), "the worker gave up");
    let t = Instant::now();
    handle.shutdown().await;
    assert!(t.elapsed() < Duration::from_secs(5));
    acceptor.abort();
    assert!(
        (1..=20).contains(&tries),
        "{tries} connection attempts in 2 s"
    );
}

#[tokio::test]
async fn declared_triggers_without_a_server() {
    use stackshift::{JobOptions, JobTrigger};
    let build = || {
        let client = StackShift::new(ClientOptions::new("http://127.0.0.1:1")).unwrap();
        Worker::builder(client)
            .job_with_options(
                "x",
                JobOptions::default().trigger(JobTrigger::event("e")),
                |_ctx: JobContext<()>| async { anyhow::Ok(()) },
            )
            .build()
    };
    // try_start reports the unreachable server as itself, not as a refused declaration.
    let err = build().try_start().await.unwrap_err();
    assert!(err.is_transient(), "{err:?}");
    // start keeps retrying the declaration in the background and still shuts down promptly.
    let handle = build().start();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!handle.is_finished(), "the worker gave up");
    let t = Instant::now();
    handle.shutdown().await;
    assert!(t.elapsed() < Duration::from_secs(5));
}
