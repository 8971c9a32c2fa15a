//! Waiting for a cancellation token from a task's hot loop.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

/// Resolves when `token` is cancelled, like `token.cancelled()`, but cheap to poll again and
/// again from a `select!` in a loop.
///
/// Re-polling tokio's waiter takes its `Notify`'s lock every time; with one waiter per client,
/// all on one token, that was 3% of keyhop's CPU with 1,000 clients (perf). After the first poll
/// this only reads the token's flag: the waker registered then stays valid because the future
/// never leaves the task that first polled it (a task's waker doesn't change).
pub struct Cancelled {
    token: CancellationToken,
    wait: Pin<Box<WaitForCancellationFutureOwned>>,
    registered: bool,
}

impl Cancelled {
    /// A waiter for `token`; poll it from one task only.
    pub fn new(token: CancellationToken) -> Cancelled {
        let wait = Box::pin(token.clone().cancelled_owned());
        Cancelled { token, wait, registered: false }
    }
}

impl Future for Cancelled {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.token.is_cancelled() {
            return Poll::Ready(());
        }
        if self.registered {
            return Poll::Pending;
        }
        self.registered = true;
        self.wait.as_mut().poll(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn wakes_a_waiting_task_on_cancel() {
        let token = CancellationToken::new();
        let waiter = tokio::spawn({
            let token = token.clone();
            async move {
                let mut c = std::pin::pin!(Cancelled::new(token));
                // Polled several times before the cancel, as in a select! loop.
                for _ in 0..3 {
                    tokio::select! {
                        biased;
                        _ = &mut c => return true,
                        _ = tokio::time::sleep(Duration::from_millis(5)) => {}
                    }
                }
                (&mut c).await;
                true
            }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        token.cancel();
        let done = tokio::time::timeout(Duration::from_secs(5), waiter).await;
        assert!(matches!(done, Ok(Ok(true))), "waiter not woken: {done:?}");
    }

    #[tokio::test]
    async fn ready_at_once_when_already_cancelled() {
        let token = CancellationToken::new();
        token.cancel();
        let r = tokio::time::timeout(Duration::from_secs(1), Cancelled::new(token)).await;
        assert!(r.is_ok());
    }
}
