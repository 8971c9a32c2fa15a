//! A cancellation signal that a hot loop can poll for nothing.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

/// A one-way signal (drain, retirement) with a lock-free check.
///
/// tokio-util's `CancellationToken::is_cancelled` takes the token's mutex, and re-polling its
/// waiter takes its `Notify`'s lock too: with one waiter per client, all polled on every turn
/// of the client's loop, that was 3-5% of keyhop's CPU with 1,000 clients (perf). Here the
/// check is one load of a flag that nobody writes until the signal fires, and the token is only
/// used to wake waiters.
#[derive(Clone, Debug, Default)]
pub struct Signal {
    inner: Arc<SignalInner>,
}

#[derive(Debug, Default)]
struct SignalInner {
    fired: AtomicBool,
    token: CancellationToken,
}

impl Signal {
    /// A signal that has not fired.
    pub fn new() -> Signal {
        Signal::default()
    }

    /// Fires the signal and wakes every waiter.
    pub fn cancel(&self) {
        self.inner.fired.store(true, Ordering::Release);
        self.inner.token.cancel();
    }

    /// True once the signal has fired.
    #[inline]
    pub fn is_cancelled(&self) -> bool {
        self.inner.fired.load(Ordering::Acquire)
    }

    /// A future that resolves once the signal has fired; poll it from one task only.
    pub fn cancelled(&self) -> Cancelled {
        Cancelled { signal: self.clone(), wait: None }
    }
}

/// Resolves when its [`Signal`] fires. Registers its waker once, on the first poll: a task's
/// waker doesn't change, so later polls only read the flag.
pub struct Cancelled {
    signal: Signal,
    wait: Option<Pin<Box<WaitForCancellationFutureOwned>>>,
}

impl Future for Cancelled {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.signal.is_cancelled() {
            return Poll::Ready(());
        }
        if self.wait.is_some() {
            return Poll::Pending;
        }
        let mut wait = Box::pin(self.signal.inner.token.clone().cancelled_owned());
        // A fire between the flag check and this registration is seen by the waiter itself.
        let r = wait.as_mut().poll(cx);
        self.wait = Some(wait);
        r
    }
}

/// A one-way signal for one client's task (CLIENT KILL, drain), kept inside that client's
/// registry entry: no heap and no waiter list, so 10,000 idle clients don't each pay for a
/// [`Signal`]'s token and registered waiter.
#[derive(Debug, Default)]
pub struct Flag {
    fired: AtomicBool,
    waker: Mutex<Option<Waker>>,
}

impl Flag {
    /// Fires the flag and wakes the task waiting on it.
    pub fn fire(&self) {
        self.fired.store(true, Ordering::Release);
        let waker = self.waker.lock().ok().and_then(|mut w| w.take());
        if let Some(w) = waker {
            w.wake();
        }
    }

    /// A future that resolves once the flag (or `also`) has fired. Futures of one flag must be
    /// polled by one task (the waker is stored once, on the first poll).
    pub fn fired<'a>(&'a self, also: Option<&'a Signal>) -> Fired<'a> {
        Fired { flag: self, also, registered: false }
    }
}

/// Resolves when its [`Flag`] (or the [`Signal`] it also watches) fires.
pub struct Fired<'a> {
    flag: &'a Flag,
    also: Option<&'a Signal>,
    registered: bool,
}

impl Fired<'_> {
    fn done(&self) -> bool {
        self.flag.fired.load(Ordering::Acquire) || self.also.is_some_and(|s| s.is_cancelled())
    }
}

impl Future for Fired<'_> {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.done() {
            return Poll::Ready(());
        }
        if self.registered {
            return Poll::Pending;
        }
        if let Ok(mut w) = self.flag.waker.lock() {
            *w = Some(cx.waker().clone());
        }
        self.registered = true;
        // A fire between the first check and the registration found no waker to wake.
        if self.done() { Poll::Ready(()) } else { Poll::Pending }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn wakes_a_waiting_task_on_cancel() {
        let token = Signal::new();
        let waiter = tokio::spawn({
            let token = token.clone();
            async move {
                let mut c = std::pin::pin!(token.cancelled());
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
        let token = Signal::new();
        token.cancel();
        assert!(token.is_cancelled());
        let r = tokio::time::timeout(Duration::from_secs(1), token.cancelled()).await;
        assert!(r.is_ok());
    }

    #[tokio::test]
    async fn a_flag_wakes_its_waiting_task() {
        let entry = Arc::new(Flag::default());
        let also = Signal::new();
        let waiter = tokio::spawn({
            let (entry, also) = (entry.clone(), also.clone());
            async move {
                let mut f = std::pin::pin!(entry.fired(Some(&also)));
                for _ in 0..3 {
                    tokio::select! {
                        biased;
                        _ = &mut f => return false,
                        _ = tokio::time::sleep(Duration::from_millis(5)) => {}
                    }
                }
                (&mut f).await;
                true
            }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        entry.fire();
        let done = tokio::time::timeout(Duration::from_secs(5), waiter).await;
        assert!(matches!(done, Ok(Ok(true))), "waiter not woken: {done:?}");
        // The signal it also watches makes it ready too.
        let other = Flag::default();
        also.cancel();
        let r = tokio::time::timeout(Duration::from_secs(1), other.fired(Some(&also))).await;
        assert!(r.is_ok());
    }
}
