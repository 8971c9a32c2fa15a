//! The admin HTTP endpoint (`admin_listen`): `/metrics`, `/healthz`, `/readyz`, `/topology`, and
//! the live dashboard (`/` and the `/dashboard.json` it polls; see [`dashboard`]).
//!
//! `/metrics` joins two sources: the data plane's hot-path families, kept in its own sharded
//! atomics ([`Proxy::render_metrics`]), and the low-rate families recorded here through the
//! `metrics` facade into a Prometheus recorder (failovers, config reloads, Sentinel links,
//! readiness, build info). The two sets of names are disjoint (see [`FAMILIES`] and the tests).
//!
//! Readiness is active: [`crate::health`] pings every master and replica each second.

use std::convert::Infallible;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{ALLOW, CONTENT_TYPE, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use keyhop_proxy::Proxy;
use keyhop_router::RoutingTable;
use keyhop_router::table::format_ranges;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::AbortHandle;

use crate::health::Health;

mod dashboard;
pub mod events;

/// The metric families recorded through the `metrics` facade (never rendered by the data plane).
#[cfg_attr(not(test), allow(dead_code))] // The list documents the names; tests check them.
pub const FAMILIES: [&str; 7] = [
    "keyhop_failovers_total",
    "keyhop_config_reloads_total",
    "keyhop_sentinel_connected",
    "keyhop_sentinel_known",
    "keyhop_build_info",
    "keyhop_ready",
    "keyhop_master_reachable",
];

/// How often gauges are refreshed and the recorder's upkeep runs.
const UPKEEP_INTERVAL: Duration = Duration::from_secs(1);
/// Admin connections served at once; more wait in the accept queue.
const MAX_CONNECTIONS: usize = 32;
/// Longest life of one admin connection (bounds slow or idle clients).
const CONNECTION_LIFETIME: Duration = Duration::from_secs(60);
/// How long a client may take to send its request headers.
const HEADER_TIMEOUT: Duration = Duration::from_secs(5);

/// What the admin server needs from the rest of the process.
pub struct AdminState {
    /// The data plane (metrics, routing table, draining).
    pub proxy: Proxy,
    /// The Sentinel watcher, in Sentinel mode.
    pub watcher: Option<crate::run::CurrentWatcher>,
    /// This instance's fleet membership, in fleet mode.
    pub member: Option<crate::fleet::member::Member>,
    /// Password the health prober gives to the redis-servers.
    pub backend_password: Option<String>,
    /// TLS the health prober uses to the redis-servers (`backend_tls`).
    pub backend_tls: Option<std::sync::Arc<rustls::ClientConfig>>,
    /// The configuration file, when keyhop was started with one (shown on the dashboard).
    pub config_path: Option<std::path::PathBuf>,
    /// Worker threads of the data plane (shown on the dashboard).
    pub threads: usize,
}

/// A running admin server and health prober; both stop when it is dropped.
pub struct AdminHandle {
    tasks: Vec<AbortHandle>,
    health: Health,
}

impl AdminHandle {
    /// Makes the health prober use `password` from its next round (after a config reload).
    pub fn set_backend_password(&self, password: Option<String>) {
        self.health.set_password(password);
    }
}

impl Drop for AdminHandle {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

struct Ctx {
    proxy: Proxy,
    watcher: Option<crate::run::CurrentWatcher>,
    member: Option<crate::fleet::member::Member>,
    health: Health,
    metrics: Option<&'static PrometheusHandle>,
    config_path: Option<std::path::PathBuf>,
    threads: usize,
    started: std::time::Instant,
}

/// Binds `listen` and starts the admin server, the health prober and the metrics upkeep.
/// Must run inside a Tokio runtime.
pub async fn start(listen: &str, state: AdminState) -> Result<AdminHandle, String> {
    let listener = TcpListener::bind(listen).await.map_err(|e| {
        format!("cannot listen on {listen}: {e} (change `admin_listen` in the config)")
    })?;
    let addr = listener.local_addr().map_err(|e| format!("admin listener on {listen}: {e}"))?;
    let metrics = recorder();
    metrics::gauge!("keyhop_build_info", "version" => env!("CARGO_PKG_VERSION")).set(1.0);
    // Counters appear at zero so rate() and increase() work from the first failover or reload.
    for result in ["ok", "failed"] {
        metrics::counter!("keyhop_config_reloads_total", "result" => result).increment(0);
    }
    for g in &state.proxy.table().load().groups {
        metrics::counter!("keyhop_failovers_total", "group" => g.name.clone()).increment(0);
    }
    let health = Health::new(state.backend_password).with_tls(state.backend_tls);
    let ctx = Arc::new(Ctx {
        proxy: state.proxy,
        watcher: state.watcher,
        member: state.member,
        health: health.clone(),
        metrics,
        config_path: state.config_path,
        threads: state.threads,
        started: std::time::Instant::now(),
    });
    let prober = ctx.health.spawn(ctx.proxy.table().clone());
    let upkeep = tokio::spawn(upkeep(ctx.clone()));
    let server = tokio::spawn(accept_loop(listener, ctx));
    tracing::info!(admin_listen = %addr, "admin endpoint serving / /dashboard.json /metrics /healthz /readyz /topology");
    Ok(AdminHandle {
        tasks: vec![prober.abort_handle(), upkeep.abort_handle(), server.abort_handle()],
        health,
    })
}

/// Counts master changes between two published tables in `keyhop_failovers_total{group}`,
/// and notes them (and a new fleet revision) on the dashboard's timeline.
/// Called from the Sentinel watcher's publish callback; cheap.
pub fn record_publish(old: &RoutingTable, new: &RoutingTable) {
    if installed().is_none() {
        return;
    }
    for n in &new.groups {
        let counter = metrics::counter!("keyhop_failovers_total", "group" => n.name.clone());
        match old.groups.iter().find(|o| o.name == n.name) {
            Some(o) if o.master != n.master => {
                counter.increment(1);
                let refused = events::take_fence(&o.master);
                let text = match refused {
                    Some(ms) => format!(
                        "{}: master {} -> {} (writes refused {ms} ms)",
                        n.name, o.master, n.master
                    ),
                    None => format!("{}: master {} -> {}", n.name, o.master, n.master),
                };
                events::record("failover", Some(n.name.clone()), text, refused);
            }
            // A group new to this table still shows up, at zero.
            _ => counter.increment(0),
        }
    }
    if new.fleet_revision != old.fleet_revision {
        let text = format!("fleet revision {} applied (epoch {})", new.fleet_revision, new.epoch);
        events::record("fleet", None, text, None);
    }
}

/// Notes when Sentinel fences a master (`on`), so the failover's timeline entry can say how
/// long writes were refused.
pub fn record_fence(addr: &str, on: bool) {
    if installed().is_some() {
        events::fence(addr, on);
    }
}

/// Counts a configuration reload in `keyhop_config_reloads_total{result="ok"|"failed"}`.
pub fn record_reload(ok: bool) {
    if installed().is_none() {
        return;
    }
    let result = if ok { "ok" } else { "failed" };
    metrics::counter!("keyhop_config_reloads_total", "result" => result).increment(1);
    events::record("reload", None, format!("configuration reload {result}"), None);
}

/// The process-wide Prometheus recorder, once [`start`] installed it.
static RECORDER: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// The recorder if the admin endpoint runs: without it nothing is scraped, so nothing is recorded.
fn installed() -> Option<&'static PrometheusHandle> {
    RECORDER.get().and_then(Option::as_ref)
}

/// Installs the recorder on first use (`None` if another recorder was installed first, which
/// keyhop never does).
fn recorder() -> Option<&'static PrometheusHandle> {
    RECORDER
        .get_or_init(|| {
            let buckets: Vec<f64> =
                keyhop_proxy::metrics::BUCKETS_US.iter().map(|&us| us as f64 / 1e6).collect();
            let installed =
                PrometheusBuilder::new().set_buckets(&buckets).and_then(|b| b.install_recorder());
            match installed {
                Ok(h) => {
                    describe();
                    Some(h)
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot install the metrics recorder");
                    None
                }
            }
        })
        .as_ref()
}

fn describe() {
    metrics::describe_counter!("keyhop_failovers_total", "Master changes adopted, by group.");
    metrics::describe_counter!(
        "keyhop_config_reloads_total",
        "Configuration reloads, by result (ok or failed)."
    );
    metrics::describe_gauge!(
        "keyhop_sentinel_connected",
        "Sentinels with a live subscription (Sentinel mode)."
    );
    metrics::describe_gauge!(
        "keyhop_sentinel_known",
        "Sentinels known, configured and discovered (Sentinel mode)."
    );
    metrics::describe_gauge!("keyhop_build_info", "Always 1; the version is a label.");
    metrics::describe_gauge!("keyhop_ready", "1 when /readyz answers 200.");
    metrics::describe_gauge!(
        "keyhop_master_reachable",
        "1 when the group's master answered the latest health probe, by group."
    );
    crate::fleet::admin::describe();
}

/// Refreshes the gauges that mirror other state, so the recorder's values are current.
fn refresh_gauges(ctx: &Ctx) {
    if ctx.metrics.is_none() {
        return;
    }
    let table = ctx.proxy.table().load_full();
    metrics::gauge!("keyhop_ready").set(if readiness(ctx).is_ok() { 1.0 } else { 0.0 });
    if let Some(m) = &ctx.member {
        crate::fleet::admin::refresh(m, &ctx.proxy, &table);
    }
    for g in &table.groups {
        let up = ctx.health.get(&g.master).is_some_and(|s| s.reachable);
        metrics::gauge!("keyhop_master_reachable", "group" => g.name.clone()).set(if up {
            1.0
        } else {
            0.0
        });
    }
    if let Some(w) = ctx.watcher.as_ref().and_then(crate::run::CurrentWatcher::get) {
        let st = w.status();
        metrics::gauge!("keyhop_sentinel_connected").set(st.connected_sentinels as f64);
        metrics::gauge!("keyhop_sentinel_known").set(st.known_sentinels as f64);
    }
}

async fn upkeep(ctx: Arc<Ctx>) {
    let mut tick = tokio::time::interval(UPKEEP_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        refresh_gauges(&ctx);
        if let Some(h) = ctx.metrics {
            h.run_upkeep();
        }
    }
}

async fn accept_loop(listener: TcpListener, ctx: Arc<Ctx>) {
    let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok(permit) = permits.clone().acquire_owned().await else { return };
        let stream = match listener.accept().await {
            Ok((s, _)) => s,
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                tracing::warn!(error = %e, "admin accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let ctx = ctx.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                let response = respond(&ctx, req.method(), req.uri().path());
                async move { Ok::<_, Infallible>(response) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service);
            let _ = tokio::time::timeout(CONNECTION_LIFETIME, conn).await;
            drop(permit);
        });
    }
}

fn respond(ctx: &Ctx, method: &Method, path: &str) -> Response<Full<Bytes>> {
    let known =
        matches!(path, "/" | "/dashboard.json" | "/metrics" | "/healthz" | "/readyz" | "/topology");
    if !known {
        return text(
            StatusCode::NOT_FOUND,
            "not found: try / /dashboard.json /metrics /healthz /readyz /topology\n",
        );
    }
    if method != Method::GET {
        let mut r = text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed: use GET\n");
        r.headers_mut().insert(ALLOW, HeaderValue::from_static("GET"));
        return r;
    }
    match path {
        "/metrics" => {
            refresh_gauges(ctx);
            let mut out = String::with_capacity(16 * 1024);
            ctx.proxy.render_metrics(&mut out);
            if let Some(h) = ctx.metrics {
                out.push_str(&h.render());
            }
            let mut r = Response::new(Full::new(Bytes::from(out)));
            r.headers_mut().insert(
                CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            r
        }
        "/healthz" => text(StatusCode::OK, "ok\n"),
        "/" => dashboard::page(),
        "/dashboard.json" => json_response(StatusCode::OK, &dashboard::state(ctx)),
        "/readyz" => match readiness(ctx) {
            Ok(()) => json_response(StatusCode::OK, &json!({ "ready": true })),
            Err(reason) => json_response(
                StatusCode::SERVICE_UNAVAILABLE,
                &json!({ "ready": false, "reason": reason }),
            ),
        },
        _ => json_response(StatusCode::OK, &topology(ctx)),
    }
}

/// `Ok` when keyhop should get traffic: not draining, and every group's master answers.
fn readiness(ctx: &Ctx) -> Result<(), String> {
    if ctx.proxy.is_draining() {
        return Err("draining: keyhop is shutting down".into());
    }
    if ctx.proxy.fence_level() >= 2 {
        return Err(
            "fenced: keyhop lost its etcd lease and refuses keyed commands until it re-registers"
                .into(),
        );
    }
    ctx.health.readiness(&ctx.proxy.table().load())
}

fn topology(ctx: &Ctx) -> Value {
    let table = ctx.proxy.table().load_full();
    let status = ctx.watcher.as_ref().and_then(crate::run::CurrentWatcher::get).map(|w| w.status());
    let probe = |addr: &str| {
        let s = ctx.health.get(addr);
        json!({
            "reachable": s.as_ref().map(|s| s.reachable),
            "error": s.as_ref().and_then(|s| s.error.clone()),
            "rtt_us": s.as_ref().and_then(|s| s.rtt).map(|d| d.as_micros() as u64),
        })
    };
    let groups: Vec<Value> = table
        .groups
        .iter()
        .enumerate()
        .map(|(i, g)| {
            let ranges = table.slot_ranges(i as u16);
            let slot_count: u32 = ranges.iter().map(|&(a, b)| u32::from(b - a) + 1).sum();
            let mut master = probe(&g.master);
            master["addr"] = json!(g.master);
            let offset = |addr: &str| ctx.health.get(addr).and_then(|s| s.repl_offset);
            let master_offset = offset(&g.master);
            let replicas: Vec<Value> = g
                .replicas
                .iter()
                .map(|r| {
                    let mut v = probe(&r.addr);
                    v["addr"] = json!(r.addr);
                    v["healthy"] = json!(r.healthy);
                    // Bytes of the master's replication stream the replica has not processed,
                    // from the same probe round (so about a second old at most).
                    v["lag_bytes"] = json!(
                        master_offset.zip(offset(&r.addr)).map(|(m, r)| (m - r).max(0))
                    );
                    v
                })
                .collect();
            let gs = status.as_ref().and_then(|s| s.groups.iter().find(|s| s.name == g.name));
            let last_failover = gs.and_then(|s| s.last_switch.as_ref()).map(|sw| {
                json!({
                    "from": sw.from,
                    "to": sw.to,
                    "at_unix_ms": sw.at.duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_millis() as u64).ok(),
                    "seconds_ago": SystemTime::now().duration_since(sw.at).map(|d| d.as_secs()).ok(),
                    "via": format!("{:?}", sw.via),
                })
            });
            json!({
                "id": i,
                "name": g.name,
                "slots": format_ranges(ranges.iter().copied()),
                "slot_ranges": ranges,
                "slot_count": slot_count,
                "master": master,
                "replicas": replicas,
                "failovers": gs.map(|s| s.switches),
                "last_failover": last_failover,
            })
        })
        .collect();
    let sentinel = status.as_ref().map(|s| {
        let links: Vec<Value> = s
            .sentinels
            .iter()
            .map(|l| json!({ "addr": l.addr, "connected": l.connected, "last_error": l.last_error }))
            .collect();
        json!({ "connected": s.connected_sentinels, "known": s.known_sentinels, "sentinels": links })
    });
    let ready = readiness(ctx);
    json!({
        "epoch": table.epoch,
        "mode": match (ctx.watcher.is_some(), ctx.member.is_some()) {
            (true, false) => "sentinel",
            (true, true) => "sentinel+etcd",
            (false, true) => "static+etcd",
            (false, false) => "static",
        },
        "fleet": ctx.member.as_ref().map(|m| crate::fleet::admin::topology(m, &ctx.proxy, &table)),
        "ready": ready.is_ok(),
        "not_ready_reason": ready.err(),
        "draining": ctx.proxy.is_draining(),
        "groups": groups,
        "sentinel": sentinel,
    })
}

fn text(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *r.status_mut() = status;
    r.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    r
}

fn json_response(status: StatusCode, v: &Value) -> Response<Full<Bytes>> {
    let mut body = v.to_string();
    body.push('\n');
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use keyhop_proxy::Settings;
    use keyhop_router::Group;

    fn proxy() -> Proxy {
        let groups = vec![
            Group { name: "g1".into(), master: "127.0.0.1:1".into(), replicas: vec![] },
            Group { name: "g2".into(), master: "127.0.0.1:2".into(), replicas: vec![] },
        ];
        let t = RoutingTable::new(3, groups, &RoutingTable::even_ranges(2)).expect("table");
        Proxy::new(Settings::default(), Arc::new(arc_swap::ArcSwap::from_pointee(t)))
    }

    #[test]
    fn families_do_not_collide_with_the_data_plane() {
        let mut out = String::new();
        proxy().render_metrics(&mut out);
        let mut families = 0;
        for line in out.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let name = rest.split(' ').next().unwrap_or("");
                assert!(!FAMILIES.contains(&name), "{name} is rendered by both sources");
                assert!(
                    !crate::fleet::admin::FAMILIES.contains(&name),
                    "{name} is rendered by both sources"
                );
                families += 1;
            }
        }
        // The data plane's own families (clients, commands, errors, backends ...) were checked.
        assert!(families >= 10, "only {families} families rendered:\n{out}");
    }

    /// A static-mode context whose prober holds a password that must never be shown.
    pub(super) fn ctx() -> Ctx {
        Ctx {
            proxy: proxy(),
            watcher: None,
            member: None,
            health: Health::new(Some("secret".into())),
            metrics: None,
            config_path: None,
            threads: 1,
            started: std::time::Instant::now(),
        }
    }

    #[test]
    fn routes() {
        let ctx = ctx();
        assert_eq!(respond(&ctx, &Method::GET, "/healthz").status(), StatusCode::OK);
        assert_eq!(respond(&ctx, &Method::GET, "/nope").status(), StatusCode::NOT_FOUND);
        assert_eq!(respond(&ctx, &Method::POST, "/nope").status(), StatusCode::NOT_FOUND);
        let r = respond(&ctx, &Method::POST, "/metrics");
        assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(r.headers().get(ALLOW).map(|v| v.as_bytes()), Some(b"GET".as_slice()));
        let r = respond(&ctx, &Method::GET, "/readyz");
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
        let r = respond(&ctx, &Method::GET, "/");
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(r.headers()[CONTENT_TYPE], "text/html; charset=utf-8");
        let r = respond(&ctx, &Method::GET, "/dashboard.json");
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(r.headers()[CONTENT_TYPE], "application/json");
        let r = respond(&ctx, &Method::POST, "/dashboard.json");
        assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
        let topo = topology(&ctx);
        assert_eq!(topo["epoch"], 3);
        assert_eq!(topo["groups"][1]["slots"], "8192-16383");
        assert_eq!(topo["groups"][0]["slot_count"], 8192);
        assert!(!topo.to_string().contains("secret"));
    }

    #[test]
    fn publish_records_failover_and_fleet_events() {
        assert!(recorder().is_some(), "the recorder installs");
        let old = proxy().table().load_full();
        let mut new = (*old).clone();
        new.groups[1].master = "127.0.0.1:9".into();
        new.fleet_revision = old.fleet_revision + 7;
        events::fence("127.0.0.1:2", true);
        record_publish(&old, &new);
        let recent = events::recent();
        let failover = recent.iter().find(|e| e.kind == "failover").expect("failover event");
        assert_eq!(failover.group.as_deref(), Some("g2"));
        assert!(
            failover.text.starts_with("g2: master 127.0.0.1:2 -> 127.0.0.1:9 (writes refused "),
            "{}",
            failover.text
        );
        assert!(failover.writes_refused_ms.is_some_and(|ms| ms < 60_000));
        let fleet = recent.iter().find(|e| e.kind == "fleet").expect("fleet event");
        assert_eq!(fleet.text, format!("fleet revision {} applied (epoch 3)", new.fleet_revision));
        // g1 kept its master: no event names it.
        assert!(!recent.iter().any(|e| e.group.as_deref() == Some("g1")), "{recent:?}");
    }

    #[tokio::test]
    async fn draining_is_not_ready() {
        let ctx = Ctx {
            proxy: proxy(),
            watcher: None,
            member: None,
            health: Health::new(None),
            metrics: None,
            config_path: None,
            threads: 1,
            started: std::time::Instant::now(),
        };
        assert!(ctx.proxy.drain(Duration::ZERO).await, "no clients to wait for");
        let r = respond(&ctx, &Method::GET, "/readyz");
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(readiness(&ctx).expect_err("draining").starts_with("draining"));
        // Liveness is unaffected: the process still serves.
        assert_eq!(respond(&ctx, &Method::GET, "/healthz").status(), StatusCode::OK);
    }
}
