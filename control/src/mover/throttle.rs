//! The two limits on how fast the mover takes keys from a source: the adaptive batch size,
//! which bounds how long one `MIGRATE` blocks the (single-threaded) source for its other
//! clients, and the token bucket of `keys_per_second`.

use std::time::{Duration, Instant};

/// A `MIGRATE` slower than this halves the batch.
const SLOW: Duration = Duration::from_millis(2);
/// A `MIGRATE` faster than this lets the batch grow back.
const FAST: Duration = Duration::from_micros(500);

/// The batch size: halved after a slow `MIGRATE`, grown back a quarter at a time after fast ones.
#[derive(Debug)]
pub(super) struct Adaptive {
    max: usize,
    cur: usize,
}

impl Adaptive {
    /// Starts at `max` (at least 1).
    pub(super) fn new(max: usize) -> Adaptive {
        let max = max.max(1);
        Adaptive { max, cur: max }
    }

    /// The number of keys the next `MIGRATE` may carry.
    pub(super) fn size(&self) -> usize {
        self.cur
    }

    /// Adjusts the size after a `MIGRATE` of a full batch that took `took`.
    pub(super) fn record(&mut self, took: Duration) {
        if took > SLOW {
            self.cur = (self.cur / 2).max(1);
        } else if took < FAST {
            self.cur = (self.cur + (self.cur / 4).max(1)).min(self.max);
        }
    }
}

/// A token bucket of `rate` keys per second; a rate of 0 never waits.
#[derive(Debug)]
pub(super) struct Bucket {
    rate: u64,
    tokens: f64,
    burst: f64,
    last: Instant,
}

impl Bucket {
    /// A bucket that starts empty (no burst at the start) and holds at most `burst` keys.
    pub(super) fn new(rate: u64, burst: usize) -> Bucket {
        Bucket { rate, tokens: 0.0, burst: burst.max(1) as f64, last: Instant::now() }
    }

    /// The largest batch that keeps the pace smooth: a tenth of a second's keys (at least 1),
    /// or `None` when unthrottled.
    pub(super) fn batch_cap(&self) -> Option<usize> {
        (self.rate > 0).then(|| usize::try_from(self.rate / 10).unwrap_or(usize::MAX).max(1))
    }

    /// Takes `n` keys' worth of tokens, sleeping until the bucket has paid for them.
    pub(super) async fn take(&mut self, n: usize) {
        if self.rate == 0 {
            return;
        }
        let now = Instant::now();
        let rate = self.rate as f64;
        let refill = now.duration_since(self.last).as_secs_f64() * rate;
        self.last = now;
        self.tokens = (self.tokens + refill).min(self.burst) - n as f64;
        if self.tokens < 0.0 {
            let wait = Duration::from_secs_f64(-self.tokens / rate);
            tokio::time::sleep(wait).await;
            // The sleep paid the debt; the next refill counts from its end.
            self.tokens = 0.0;
            self.last = Instant::now();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adaptive_halves_and_grows_back() {
        let mut a = Adaptive::new(64);
        a.record(Duration::from_millis(3));
        assert_eq!(a.size(), 32);
        a.record(Duration::from_millis(1));
        assert_eq!(a.size(), 32, "between the bounds the size holds");
        for _ in 0..3 {
            a.record(Duration::from_micros(100));
        }
        assert_eq!(a.size(), 62);
        a.record(Duration::from_micros(100));
        assert_eq!(a.size(), 64, "never past the ceiling");
        for _ in 0..10 {
            a.record(Duration::from_millis(5));
        }
        assert_eq!(a.size(), 1, "never below one key");
        a.record(Duration::from_micros(100));
        assert_eq!(a.size(), 2);
    }

    #[tokio::test]
    async fn bucket_paces_keys() {
        let mut b = Bucket::new(1000, 64);
        assert_eq!(b.batch_cap(), Some(100));
        let start = Instant::now();
        for _ in 0..5 {
            b.take(50).await;
        }
        // 250 keys at 1000/s from an empty bucket: 250 ms.
        let took = start.elapsed();
        assert!(took >= Duration::from_millis(240), "took {took:?}");
        let mut free = Bucket::new(0, 64);
        assert_eq!(free.batch_cap(), None);
        let start = Instant::now();
        free.take(1_000_000).await;
        assert!(start.elapsed() < Duration::from_millis(50));
    }
}
