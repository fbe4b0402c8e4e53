//! Bounded waits for tests: fail with a message instead of hanging, on real time, so they
//! also work while tokio's clock is paused.
//!
//! Include it with `#[path = "support/wait.rs"] mod wait;`.
#![allow(dead_code)]

use std::future::Future;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

/// Fails the test if `fut` does not finish within `secs` seconds of real time.
pub async fn within<T>(secs: u64, what: &str, fut: impl Future<Output = T>) -> T {
    let (tx, rx) = oneshot::channel::<()>();
    // A detached thread: the test does not wait for it to end.
    std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(secs));
        let _ = tx.send(());
    });
    tokio::select! {
        v = fut => v,
        _ = rx => panic!("timed out after {secs} s waiting for {what}"),
    }
}

/// The first item of `rx` that `pick` maps to `Some`, within `secs` seconds; the items before
/// it are dropped.
pub async fn next_matching<E, T>(
    rx: &mut mpsc::UnboundedReceiver<E>,
    secs: u64,
    what: &str,
    mut pick: impl FnMut(E) -> Option<T>,
) -> T {
    within(secs, what, async {
        loop {
            match rx.recv().await {
                Some(item) => {
                    if let Some(found) = pick(item) {
                        return found;
                    }
                }
                None => panic!("the stream ended while waiting for {what}"),
            }
        }
    })
    .await
}

/// Polls `check` until it returns `Some`, within `secs` seconds: for state that has no event
/// (a row in the store).
pub async fn eventually<T, F: Future<Output = Option<T>>>(
    secs: u64,
    what: &str,
    mut check: impl FnMut() -> F,
) -> T {
    within(secs, what, async {
        loop {
            if let Some(found) = check().await {
                return found;
            }
            // Real time even under a paused clock: the condition depends on other threads.
            let (tx, rx) = oneshot::channel();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(10));
                let _ = tx.send(());
            });
            let _ = rx.await;
        }
    })
    .await
}
