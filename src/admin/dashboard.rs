//! The live dashboard: `GET /` serves one self-contained page (`page.html`, inline CSS and JS)
//! that polls `GET /dashboard.json` once a second. The JSON is built on request only, from state
//! keyhop keeps anyway ([`super::topology`], the data plane's cumulative counters and
//! histograms, the event ring); rates and percentiles are computed in the browser from the
//! deltas between polls, so nobody looking costs nothing.

use bytes::Bytes;
use http_body_util::Full;
use hyper::Response;
use hyper::header::{CACHE_CONTROL, CONTENT_TYPE, HeaderValue};
use serde_json::{Value, json};

use super::{Ctx, events, readiness, topology};

/// The page, compiled into the binary (no CDN, no build step).
const PAGE: &str = include_str!("page.html");

/// `GET /`: the dashboard page.
pub(super) fn page() -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from_static(PAGE.as_bytes())));
    r.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
    r.headers_mut().insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// `GET /dashboard.json`: `/topology`'s view plus instance facts, per-group cumulative traffic
/// and latency buckets, slots in flux, clients, pinned connections and the event timeline.
pub(super) fn state(ctx: &Ctx) -> Value {
    let mut topo = topology(ctx);
    let stats = ctx.proxy.group_stats();
    let mut pinned_total = 0;
    if let Some(groups) = topo["groups"].as_array_mut() {
        for g in groups {
            let Some(s) = g["name"].as_str().and_then(|n| stats.iter().find(|s| s.name == n))
            else {
                continue;
            };
            pinned_total += s.pinned;
            g["requests"] = json!(s.requests);
            g["errors"] = json!(s.errors);
            g["pinned"] = json!(s.pinned);
            g["latency"] = json!({
                "buckets": s.latency.buckets,
                "count": s.latency.count,
                "sum_us": s.latency.sum_us,
            });
        }
    }
    let table = ctx.proxy.table().load_full();
    let flux: Vec<Value> = table
        .flux_ranges()
        .iter()
        .map(|f| {
            json!({
                "first": f.first,
                "last": f.last,
                "from": table.groups.get(usize::from(f.from)).map(|g| g.name.clone()),
                "to": table.groups.get(usize::from(f.to)).map(|g| g.name.clone()),
                "state": match f.state {
                    keyhop_router::FluxState::Locked => "locked",
                    keyhop_router::FluxState::Migrating => "migrating",
                },
            })
        })
        .collect();
    let ready = readiness(ctx);
    let events: Vec<Value> = events::recent().iter().map(events::Event::to_json).collect();
    json!({
        "instance": {
            "version": env!("CARGO_PKG_VERSION"),
            "uptime_s": ctx.started.elapsed().as_secs(),
            "config_file": ctx.config_path.as_ref().map(|p| p.display().to_string()),
            "ready": ready.is_ok(),
            "not_ready_reason": ready.err(),
            "draining": topo["draining"],
            "mode": topo["mode"],
            "threads": ctx.threads,
            "epoch": topo["epoch"],
        },
        "latency_buckets_us": keyhop_proxy::metrics::BUCKETS_US,
        "groups": topo["groups"],
        "flux": flux,
        "sentinel": topo["sentinel"],
        "fleet": topo["fleet"],
        "clients": ctx.proxy.clients_connected(),
        "pinned": pinned_total,
        "events": events,
    })
}

#[cfg(test)]
mod tests {
    use super::super::tests::ctx;
    use super::*;

    #[test]
    fn page_is_self_contained_html_with_the_contract_hooks() {
        let r = page();
        assert_eq!(r.headers()[CONTENT_TYPE], "text/html; charset=utf-8");
        for hook in ["id=\"slotmap\"", "id=\"timeline\"", "dashboard.json", "dataset.polls"] {
            assert!(PAGE.contains(hook), "page lacks {hook}");
        }
        for external in ["http://", "https://", "<script src", "<link "] {
            assert!(!PAGE.contains(external), "page loads something external: {external}");
        }
    }

    #[test]
    fn json_shape_and_no_secrets() {
        let ctx = ctx();
        events::record("reload", None, "configuration reload ok".into(), None);
        let v = state(&ctx);
        assert_eq!(v["instance"]["version"], env!("CARGO_PKG_VERSION"));
        assert_eq!(v["instance"]["mode"], "static");
        assert_eq!(v["instance"]["threads"], 1);
        assert_eq!(v["instance"]["ready"], false);
        assert_eq!(v["instance"]["epoch"], 3);
        assert!(v["instance"]["uptime_s"].is_u64());
        let groups = v["groups"].as_array().expect("groups");
        assert_eq!(groups.len(), 2);
        assert_eq!(groups[0]["name"], "g1");
        assert_eq!(groups[0]["master"]["addr"], "127.0.0.1:1");
        assert_eq!(groups[1]["slot_ranges"], json!([[8192, 16383]]));
        assert_eq!(groups[1]["requests"], 0);
        assert_eq!(groups[1]["errors"], 0);
        assert_eq!(groups[1]["pinned"], 0);
        let buckets = groups[0]["latency"]["buckets"].as_array().expect("buckets");
        assert_eq!(buckets.len(), keyhop_proxy::metrics::BUCKETS_US.len());
        assert_eq!(v["latency_buckets_us"].as_array().map(Vec::len), Some(buckets.len()));
        assert_eq!(v["flux"], json!([]));
        assert_eq!(v["clients"], 0);
        assert_eq!(v["pinned"], 0);
        let events = v["events"].as_array().expect("events");
        assert!(events.iter().any(|e| e["kind"] == "reload"), "{events:?}");
        let text = v.to_string();
        assert!(!text.contains("secret"), "a secret leaked: {text}");
    }
}
