//! A backend that restarts is used again at once, and one that stays down costs clients only
//! fast errors (issue 12, goal 2: requests succeed within 50 ms of the server accepting
//! connections again; before, keyhop's reconnect backoff kept failing them for up to 2 s).

mod common;

use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Raw, Reply, cmd, keyhop, redis_server, redis_server_on, temp_dir, wait_until};

/// One GET through keyhop: when it was sent, when its reply came, and the error text if any.
struct Get {
    sent: Instant,
    done: Instant,
    error: Option<String>,
}

/// A client sending GETs one after another (1 ms apart) until stopped.
struct Client {
    stop: Arc<AtomicBool>,
    gets: Arc<Mutex<Vec<Get>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Client {
    fn start(port: u16) -> Client {
        let stop = Arc::new(AtomicBool::new(false));
        let gets = Arc::new(Mutex::new(Vec::new()));
        let (s, g) = (stop.clone(), gets.clone());
        let thread = std::thread::spawn(move || {
            let mut c = Raw::connect(port);
            // Bounded: 60 s of 1 ms steps at most, whatever the test does.
            for _ in 0..60_000 {
                if s.load(Ordering::Relaxed) {
                    break;
                }
                let sent = Instant::now();
                let error = match c.call(&["GET", "k"]) {
                    // Served by the server: "v", or nil from the restarted one (nothing saved).
                    Reply::Bulk(Some(v)) if v == b"v" => None,
                    Reply::Bulk(None) => None,
                    Reply::Error(e) => Some(e),
                    other => Some(format!("unexpected reply {other:?}")),
                };
                g.lock().unwrap_or_else(|e| e.into_inner()).push(Get {
                    sent,
                    done: Instant::now(),
                    error,
                });
                std::thread::sleep(Duration::from_millis(1));
            }
        });
        Client { stop, gets, thread: Some(thread) }
    }

    fn any(&self, f: impl Fn(&Get) -> bool) -> bool {
        self.gets.lock().unwrap_or_else(|e| e.into_inner()).iter().any(f)
    }

    fn finish(mut self) -> Vec<Get> {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.join().expect("client thread");
        }
        std::mem::take(&mut *self.gets.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

#[test]
fn a_restarted_backend_serves_again_within_50ms_of_accepting_connections() {
    let dir = temp_dir();
    let mut server = redis_server(&["--save", "", "--appendonly", "no"]);
    let port = server.port;
    let config = format!(
        "listen = \"{{listen}}\"\n[[groups]]\nname = \"g1\"\nmaster = \"127.0.0.1:{port}\"\n"
    );
    let proxy = keyhop(dir.path(), &config);
    assert_eq!(cmd(proxy.port, &["SET", "k", "v"]), "OK");
    let client = Client::start(proxy.port);
    assert!(wait_until(Duration::from_secs(10), || client.any(|g| g.error.is_none())));

    server.kill();
    let killed = Instant::now();
    // Down long enough for the background probe's backoff to reach its 2 s ceiling
    // (100 + 200 + 400 + 800 + 1600 ms): a server that was down a while must come back as fast
    // as one that was down briefly.
    let long_down = wait_until(Duration::from_secs(30), || {
        client.any(|g| g.error.is_some() && g.sent >= killed + Duration::from_millis(3500))
    });
    assert!(long_down, "no failed GET 3.5 s after the kill");

    // When the server first accepts a connection, measured from this side to the millisecond.
    let accepting: Arc<Mutex<Option<Instant>>> = Arc::default();
    let watcher = {
        let accepting = accepting.clone();
        std::thread::spawn(move || {
            for _ in 0..20_000 {
                if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    *accepting.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
                    return;
                }
                std::thread::sleep(Duration::from_micros(500));
            }
        })
    };
    let _restarted = redis_server_on(port, &["--save", "", "--appendonly", "no"]);
    watcher.join().expect("watcher thread");
    let up =
        accepting.lock().unwrap_or_else(|e| e.into_inner()).expect("the restarted server accepted");
    let served =
        wait_until(Duration::from_secs(10), || client.any(|g| g.error.is_none() && g.sent > up));
    let gets = client.finish();
    assert!(
        served,
        "no GET through keyhop succeeded after the restart; log:\n{}",
        common::keyhop_log(dir.path())
    );

    // Answered before the server accepted again: a GET sent just before `up` (the watcher polls
    // every 0.5 ms) may be served by the restarted server, which is right.
    let down: Vec<&Get> = gets.iter().filter(|g| g.sent > killed && g.done < up).collect();
    let first_ok = gets.iter().find(|g| g.sent > up && g.error.is_none()).map(|g| g.done);
    eprintln!(
        "[recovery] down {:.0} ms, {} GETs failed meanwhile (slowest error {:.1} ms); first GET \
         served {:.1} ms after the server accepted again",
        (up - killed).as_secs_f64() * 1e3,
        down.len(),
        down.iter().map(|g| (g.done - g.sent).as_secs_f64() * 1e3).fold(0.0, f64::max),
        first_ok.map_or(f64::NAN, |t| (t.saturating_duration_since(up)).as_secs_f64() * 1e3),
    );
    // While down: fast errors naming the backend (not timeouts), one per request.
    let prefix = format!("ERR keyhop: backend 127.0.0.1:{port} of group g1 ");
    for g in &down {
        let e = g.error.as_deref().unwrap_or("(served while the server was down?)");
        assert!(
            e.starts_with(&prefix) && (e.contains("unreachable: ") || e.contains("down (")),
            "{e}"
        );
    }
    // Back: keyhop may learn of the return only from a request, and demand retries at most
    // every 20 ms after a refused connect; every GET sent 25 ms or more after the server
    // accepted again was served.
    let back = up + Duration::from_millis(25);
    let late_failures: Vec<String> = gets
        .iter()
        .filter(|g| g.sent >= back)
        .filter_map(|g| {
            g.error
                .clone()
                .map(|e| format!("{:.1} ms after: {e}", (g.sent - up).as_secs_f64() * 1e3))
        })
        .collect();
    assert!(late_failures.is_empty(), "GETs failed after the server was back: {late_failures:?}");
}
