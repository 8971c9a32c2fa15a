//! Waiting for a cancellation token from a task's hot loop.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, Wake, Waker};

use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

/// Resolves when `token` is cancelled, like `token.cancelled()`, but cheap to poll again and
/// again from a `select!` in a loop.
///
/// Polling tokio-util's waiter takes the token's mutex (`is_cancelled`) and its `Notify`'s lock
/// every time; with one waiter per client, all on one token, that was 3-5% of keyhop's CPU with
/// 1,000 clients (perf). Here the waiter is registered once, with a waker that raises a flag of
/// our own before waking the task, so later polls read one uncontended atomic. That waker stays
/// valid because the future never leaves the task that first polled it.
pub struct Cancelled {
    token: CancellationToken,
    wait: Pin<Box<WaitForCancellationFutureOwned>>,
    flag: Option<(Arc<Flag>, Waker)>,
}

/// Raised when the token's waiter is woken; then wakes the task.
struct Flag {
    fired: AtomicBool,
    task: Waker,
}

impl Wake for Flag {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.fired.store(true, Ordering::Release);
        self.task.wake_by_ref();
    }
}

impl Cancelled {
    /// A waiter for `token`; poll it from one task only.
    pub fn new(token: CancellationToken) -> Cancelled {
        let wait = Box::pin(token.clone().cancelled_owned());
        Cancelled { token, wait, flag: None }
    }
}

impl Future for Cancelled {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = &mut *self;
        let waker = match &this.flag {
            Some((flag, _)) if !flag.fired.swap(false, Ordering::Acquire) => return Poll::Pending,
            Some((_, waker)) => waker.clone(),
            None => {
                let flag =
                    Arc::new(Flag { fired: AtomicBool::new(false), task: cx.waker().clone() });
                let waker = Waker::from(flag.clone());
                this.flag = Some((flag, waker.clone()));
                waker
            }
        };
        // The token's own check, for a cancel that raced with registration.
        if this.token.is_cancelled() {
            return Poll::Ready(());
        }
        this.wait.as_mut().poll(&mut Context::from_waker(&waker))
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
