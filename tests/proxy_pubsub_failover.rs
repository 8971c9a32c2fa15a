//! A subscriber through keyhop across Sentinel failovers of a group's master (SENTINEL FAILOVER
//! and kill -9): keyhop re-subscribes its channels and patterns on the new master, the client
//! sees no extra confirmation and receives what is published afterwards.
//!
//! Measured numbers are printed with `eprintln!`:
//! `cargo test --test proxy_pubsub_failover -- --nocapture 2>&1 | grep '\[pubsub\]'`.

mod common;

use common::{group_of, keyhop_log, message_of, role};

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::SentinelCluster as Cluster;
use common::{Raw, Reply, keyhop, temp_dir, wait_until};

/// Bound for anything that should take milliseconds.
const SHORT: Duration = Duration::from_secs(10);
/// Bound for anything Sentinel does (detection, election, promotion) on a loaded machine.
const FAILOVER_BOUND: Duration = Duration::from_secs(40);

/// The first name `prefix<n>` of `group`.
fn name_in(group: usize, prefix: &str) -> String {
    (0..1000)
        .map(|n| format!("{prefix}{n}"))
        .find(|c| group_of(c) == group)
        .expect("a name of the group among 1000 candidates")
}

/// Reads one reply, `None` after `wait` without one.
fn read_within(r: &mut Raw, wait: Duration) -> Option<Reply> {
    r.writer.set_read_timeout(Some(wait)).expect("set timeout");
    let reply = r.try_read().ok();
    r.writer.set_read_timeout(Some(SHORT)).expect("set timeout");
    reply
}

/// Publishes to `ch` through keyhop until the subscriber receives one (bounded); returns when.
fn first_delivery(port: u16, sub: &mut Raw, ch: &str, bound: Duration) -> Option<Instant> {
    let mut publisher = Raw::connect(port);
    let started = Instant::now();
    let mut i = 0;
    while started.elapsed() < bound && i < 10_000 {
        i += 1;
        let payload = format!("probe{i}");
        if publisher.try_call(&["PUBLISH", ch, &payload]).is_none() {
            publisher = Raw::connect(port);
            continue;
        }
        while let Some(r) = read_within(sub, Duration::from_millis(50)) {
            let (c, p) = message_of(r);
            if c == ch && p == payload {
                return Some(Instant::now());
            }
        }
    }
    None
}

/// After g1's master changed: messages to a g1 channel, to g1 and g2 channels matching the
/// pattern, and to a g2 channel all arrive, exactly once and nothing else.
fn assert_receives_everything(port: u16, sub: &mut Raw, chans: &[&str]) {
    // Drain what the probes left behind.
    while read_within(sub, Duration::from_millis(200)).is_some() {}
    let mut publisher = Raw::connect(port);
    for (i, ch) in chans.iter().enumerate() {
        let payload = format!("after{i}");
        assert_eq!(publisher.call(&["PUBLISH", ch, &payload]), Reply::Int(1), "PUBLISH {ch}");
        let got = read_within(sub, SHORT).map(message_of);
        assert_eq!(got, Some((ch.to_string(), payload)), "message on {ch}");
    }
    assert_eq!(read_within(sub, Duration::from_millis(300)), None);
}

/// The `elapsed_ms` of keyhop's "re-subscribed" lines for group 0.
fn resubscribe_times(dir: &Path) -> Vec<f64> {
    keyhop_log(dir)
        .lines()
        .filter(|l| l.contains("re-subscribed on the group's master") && l.contains("group=0"))
        .filter_map(|l| l.split("elapsed_ms=").nth(1))
        .filter_map(|r| r.split_whitespace().next().and_then(|t| t.parse().ok()))
        .collect()
}

/// Seconds since midnight of a log line's RFC 3339 timestamp (`2026-01-01T13:35:52.127403Z`).
fn log_time(line: &str) -> Option<f64> {
    let t = line.split_whitespace().next()?.split('T').nth(1)?.trim_end_matches('Z');
    let mut parts = t.split(':');
    let (h, m, s) = (parts.next()?, parts.next()?, parts.next()?);
    Some(h.parse::<f64>().ok()? * 3600.0 + m.parse::<f64>().ok()? * 60.0 + s.parse::<f64>().ok()?)
}

/// Milliseconds from keyhop's "switched master" line for g1 (logged once the new table is
/// published) to its pub/sub "re-subscribed" line, when both are in the log.
fn publish_to_resubscribed_ms(dir: &Path) -> Option<f64> {
    let log = keyhop_log(dir);
    let switched = log.lines().find(|l| l.contains("switched master") && l.contains("g1"))?;
    let resub = log
        .lines()
        .rfind(|l| l.contains("re-subscribed on the group's master") && l.contains("group=0"))?;
    Some((log_time(resub)? - log_time(switched)?) * 1000.0)
}

fn failover_case(kill: bool) {
    let mut c = Cluster::new_ready(Duration::from_secs(15));
    let dir = temp_dir();
    let proxy = keyhop(dir.path(), &c.keyhop_config(""));
    let (ch1, ch2) = (name_in(0, "news"), name_in(1, "news"));
    let (pat1, pat2) = (name_in(0, "evt."), name_in(1, "evt."));
    let mut sub = Raw::connect(proxy.port);
    sub.send(&[b"SUBSCRIBE", ch1.as_bytes(), ch2.as_bytes()]);
    sub.read();
    sub.read();
    assert!(matches!(sub.call(&["PSUBSCRIBE", "evt.*"]), Reply::Array(_)));
    assert_receives_everything(proxy.port, &mut sub, &[&ch1, &ch2, &pat1, &pat2]);
    let old = c.port(0);
    let new = c.port(1);
    let at = if kill {
        let at = Instant::now();
        c.servers[0].kill();
        let delivered = first_delivery(proxy.port, &mut sub, &ch1, FAILOVER_BOUND);
        let Some(delivered) = delivered else {
            panic!("no message on {ch1} within {FAILOVER_BOUND:?} of killing g1's master");
        };
        assert_eq!(role(new), "master");
        assert_receives_everything(proxy.port, &mut sub, &[&ch1, &ch2, &pat1, &pat2]);
        (at, delivered)
    } else {
        // Clients subscribing all through the failover, fenced master or not: none is refused.
        let stop = Arc::new(AtomicBool::new(false));
        let late = name_in(0, "late");
        let newcomers = subscribe_continuously(proxy.port, &late, stop.clone());
        let at = c.force_failover(0, "g1", FAILOVER_BOUND);
        let switched = wait_until(FAILOVER_BOUND, || role(new) == "master");
        assert!(switched, "the replica was not promoted");
        let delivered = first_delivery(proxy.port, &mut sub, &ch1, FAILOVER_BOUND);
        let Some(delivered) = delivered else {
            panic!("no message on {ch1} within {FAILOVER_BOUND:?} of SENTINEL FAILOVER");
        };
        stop.store(true, Ordering::Relaxed);
        let mut newcomers = newcomers.join().expect("subscriber thread").expect("no refusal");
        assert_receives_everything(proxy.port, &mut sub, &[&ch1, &ch2, &pat1, &pat2]);
        all_receive(proxy.port, &late, &mut newcomers);
        let demoted = wait_until(FAILOVER_BOUND, || role(old) != "master");
        assert!(demoted, "the old master was not demoted");
        (at, delivered)
    };
    for l in keyhop_log(dir.path()).lines().filter(|l| l.contains("pubsub")) {
        eprintln!("[pubsub] keyhop log: {l}");
    }
    let times = resubscribe_times(dir.path());
    assert!(!times.is_empty(), "keyhop did not log a re-subscription of g1");
    let how = if kill { "kill -9 of g1's master" } else { "SENTINEL FAILOVER g1" };
    eprintln!(
        "[pubsub] {how}: first message on the g1 channel {:.0} ms after it; keyhop re-subscribed \
         {times:?} ms after adopting the new table; from the \"switched master\" log line to \
         re-subscribed: {:?} ms",
        at.1.duration_since(at.0).as_secs_f64() * 1000.0,
        publish_to_resubscribed_ms(dir.path()).map(|ms| format!("{ms:.1}")),
    );
    // Measured from adopting the new table: within the 100 ms.
    let last = times.last().copied().unwrap_or(f64::MAX);
    assert!(last <= 100.0, "re-subscribing took {last} ms");
}

/// Connects and SUBSCRIBEs to `ch` every 20 ms until `stop` (at most 200 clients); `Err` at the
/// first reply that is not a confirmation.
fn subscribe_continuously(
    port: u16,
    ch: &str,
    stop: Arc<AtomicBool>,
) -> JoinHandle<Result<Vec<Raw>, String>> {
    let ch = ch.to_string();
    std::thread::spawn(move || {
        let started = Instant::now();
        let mut subs = Vec::new();
        while !stop.load(Ordering::Relaxed)
            && subs.len() < 200
            && started.elapsed() < FAILOVER_BOUND
        {
            let mut r = Raw::connect(port);
            match r.try_call(&["SUBSCRIBE", &ch]) {
                Some(Reply::Array(Some(items))) if items.len() == 3 => subs.push(r),
                other => {
                    return Err(format!(
                        "SUBSCRIBE #{} during the failover: {other:?}",
                        subs.len()
                    ));
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(subs)
    })
}

/// Every one of `subs` is subscribed to `ch` on the new master and receives a message
/// published there.
fn all_receive(port: u16, ch: &str, subs: &mut [Raw]) {
    let mut admin = Raw::connect(port);
    let want = Reply::Array(Some(vec![
        Reply::Bulk(Some(ch.as_bytes().to_vec())),
        Reply::Int(subs.len() as i64),
    ]));
    let mut last = None;
    let all = wait_until(SHORT, || {
        last = Some(admin.call(&["PUBSUB", "NUMSUB", ch]));
        last.as_ref() == Some(&want)
    });
    assert!(all, "{} subscribers during the failover; NUMSUB says {last:?}", subs.len());
    admin.call(&["PUBLISH", ch, "final"]);
    for (i, r) in subs.iter_mut().enumerate() {
        let mut got = false;
        // Probes of `first_delivery` may come first.
        for _ in 0..10_000 {
            match read_within(r, SHORT).map(message_of) {
                Some((c, p)) if c == ch && p == "final" => {
                    got = true;
                    break;
                }
                Some(_) => {}
                None => break,
            }
        }
        assert!(got, "subscriber #{i} of the failover did not get the message");
    }
    eprintln!("[pubsub] {} clients subscribed during the failover; all receive", subs.len());
}

#[test]
fn a_subscriber_follows_sentinel_failover() {
    failover_case(false);
}

#[test]
fn a_subscriber_follows_kill_9_of_the_master() {
    failover_case(true);
}
