//! The GET load that runs through keyhop while slots move: one thread per client connection, no
//! pipelining, uniform random keys over everything preloaded. Each GET's latency (including the
//! retries of `-TRYAGAIN`, which is what a client sees) goes into the phase it started in, so one
//! load measures "before the migration" and "during it" without reconnecting in between.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::common::fleet::call_retry;
use crate::common::{Raw, Reply};

/// Warm-up: connections and caches settle; nothing is recorded.
pub const WARMUP: u8 = 0;
/// Before the migration.
pub const BEFORE: u8 = 1;
/// While `keyhop slots migrate` runs.
pub const DURING: u8 = 2;
const STOP: u8 = 3;
/// Phases whose latencies are recorded (`BEFORE`, `DURING`).
pub const PHASES: usize = 2;

/// No thread runs longer than this, whatever happens to the main thread.
const MAX_RUN: Duration = Duration::from_secs(3600);

/// What one client thread saw, per recorded phase.
#[derive(Default)]
pub struct Tally {
    /// GET latencies in microseconds, per phase.
    pub micros: [Vec<u32>; PHASES],
    /// `-TRYAGAIN` replies retried, per phase.
    pub tryagains: [u64; PHASES],
    /// GETs that failed (an error other than TRYAGAIN, a missing key, a wrong value), per phase.
    pub errors: [u64; PHASES],
    /// The first few failures, for the report.
    pub samples: Vec<String>,
}

/// The running load: `clients` threads and the phase they record into.
pub struct Load {
    phase: Arc<AtomicU8>,
    handles: Vec<JoinHandle<Tally>>,
}

/// The 16-byte value preloaded under `k:<n>`.
pub fn value_of(n: u64) -> String {
    format!("v{n:015}")
}

impl Load {
    /// Starts `clients` connections to keyhop on `port`, each GETting `k:<random n < keys>`.
    pub fn start(port: u16, clients: usize, keys: u64) -> Load {
        let phase = Arc::new(AtomicU8::new(WARMUP));
        let handles = (0..clients)
            .map(|i| {
                let phase = phase.clone();
                let mut raw = Raw::connect(port);
                std::thread::spawn(move || client(&mut raw, &phase, keys, i as u64))
            })
            .collect();
        Load { phase, handles }
    }

    /// Records from now on into `phase`.
    pub fn set_phase(&self, phase: u8) {
        self.phase.store(phase, Ordering::Relaxed);
    }

    /// Stops every client and merges what they saw; a client thread that panicked (its
    /// connection broke) is an error of the run.
    pub fn finish(self) -> Result<Tally, String> {
        self.phase.store(STOP, Ordering::Relaxed);
        let mut all = Tally::default();
        let mut died = 0;
        for h in self.handles {
            match h.join() {
                Ok(t) => {
                    for p in 0..PHASES {
                        all.micros[p].extend_from_slice(&t.micros[p]);
                        all.tryagains[p] += t.tryagains[p];
                        all.errors[p] += t.errors[p];
                    }
                    all.samples.extend(t.samples.into_iter().take(5 - all.samples.len().min(5)));
                }
                Err(_) => died += 1,
            }
        }
        if died > 0 {
            return Err(format!("{died} GET client thread(s) died (connection to keyhop broken?)"));
        }
        Ok(all)
    }
}

fn client(raw: &mut Raw, phase: &AtomicU8, keys: u64, seed: u64) -> Tally {
    let mut t = Tally::default();
    // xorshift64*: uniform enough for picking keys, and no dependency for it.
    let mut x = 0x9E37_79B9_7F4A_7C15u64 ^ (seed + 1).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    let started = Instant::now();
    loop {
        let p = phase.load(Ordering::Relaxed);
        if p == STOP || started.elapsed() > MAX_RUN {
            return t;
        }
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        let n = x.wrapping_mul(0x2545_F491_4F6C_DD1D) % keys;
        let key = format!("k:{n}");
        let mut tryagains = 0;
        let sent = Instant::now();
        let r = call_retry(raw, &["GET", &key], &mut tryagains);
        let micros = sent.elapsed().as_micros().min(u32::MAX as u128) as u32;
        if p == WARMUP {
            continue;
        }
        let i = (p - BEFORE) as usize;
        t.micros[i].push(micros);
        t.tryagains[i] += tryagains;
        match r {
            Reply::Bulk(Some(v)) if v == value_of(n).as_bytes() => {}
            other => {
                t.errors[i] += 1;
                if t.samples.len() < 5 {
                    let got = match &other {
                        Reply::Bulk(Some(b)) => format!("{:?}", String::from_utf8_lossy(b)),
                        other => format!("{other:?}"),
                    };
                    t.samples.push(format!("GET {key}: {got}, expected {:?}", value_of(n)));
                }
            }
        }
    }
}
