//! `keyhop run` and `keyhop check`: load the config, build the routing table, start the data
//! plane, and stop cleanly on SIGINT/SIGTERM.

use std::path::Path;
use std::process::ExitCode;
use std::sync::{Arc, OnceLock};

use arc_swap::ArcSwap;
use keyhop_control::sentinel::{self, WatcherConfig, WatcherHandle};
use keyhop_control::{Config, ReadFrom};
use keyhop_proxy::{BackendSettings, Proxy, Settings};
use keyhop_router::{RoutingTable, SharedTable};

use crate::cli::Cli;

fn load(cli: &Cli) -> Result<Config, String> {
    let Some(path) = &cli.config else {
        return Err("no configuration given: pass --config FILE (see examples/static.toml)".into());
    };
    Config::load(path).map_err(|e| e.to_string())
}

/// The data-plane settings a config asks for.
pub fn proxy_settings(cfg: &Config) -> Settings {
    Settings {
        max_clients: cfg.max_clients,
        client_keepalive: cfg.tcp_keepalive(),
        allow_flush: cfg.allow_flush,
        password: cfg.password.clone(),
        read_from_replicas: cfg.read_from == ReadFrom::ReplicaPreferred,
        // Metrics are scraped from the admin endpoint; without it, skip recording them.
        metrics: cfg.admin_listen.is_some(),
        slowlog_threshold: std::time::Duration::from_micros(cfg.slowlog_threshold_us),
        slowlog_max_len: cfg.slowlog_max_len,
        backend: BackendSettings {
            connect_timeout: cfg.connect_timeout(),
            request_timeout: cfg.request_timeout(),
            keepalive: cfg.tcp_keepalive(),
            password: cfg.backend_password.clone(),
            connections: cfg.backend_connections,
        },
    }
}

/// `keyhop check`: exit 0 and print the slot map, or print every problem and exit 1.
pub fn check(cli: &Cli) -> ExitCode {
    let cfg = match load(cli) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(1);
        }
    };
    let table = if cfg.is_sentinel_mode() {
        // Masters are unknown until the sentinels are asked; show the slot map with placeholders.
        cfg.table_from_topology(0, |_| Some(("(from sentinel)".to_string(), Vec::new())))
    } else {
        cfg.routing_table(0)
    };
    match table {
        Ok(t) => {
            print!("{}", keyhop_control::describe(&cfg, &t));
            println!(
                "config OK: {}",
                cli.config.as_deref().map(Path::display).map(|d| d.to_string()).unwrap_or_default()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::from(1)
        }
    }
}

/// `keyhop run`.
pub fn run(cli: &Cli) -> ExitCode {
    let cfg = match load(cli) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(1);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cfg.worker_threads())
        .thread_name("keyhop-worker")
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("keyhop: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(serve(cfg)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("keyhop: {e}");
            ExitCode::from(1)
        }
    }
}

async fn serve(cfg: Config) -> Result<(), String> {
    let settings = proxy_settings(&cfg);
    let (proxy, watcher) = if cfg.is_sentinel_mode() {
        let (proxy, watcher) = start_sentinel_mode(&cfg, settings).await?;
        (proxy, Some(watcher))
    } else {
        let table = cfg.routing_table(1).map_err(|e| e.to_string())?;
        let shared: SharedTable = Arc::new(ArcSwap::from_pointee(table));
        (Proxy::new(settings, shared), None)
    };
    let listener = tokio::net::TcpListener::bind(&cfg.listen).await.map_err(|e| {
        format!("cannot listen on {}: {e} (change `listen` in the config)", cfg.listen)
    })?;
    tracing::info!(listen = %cfg.listen, groups = cfg.groups.len(), threads = cfg.worker_threads(), sentinel = watcher.is_some(), "keyhop serving");
    proxy.serve(listener, shutdown_signal()).await;
    if let Some(w) = watcher {
        w.shutdown();
    }
    tracing::info!("keyhop stopped");
    Ok(())
}

/// Longest a master stays fenced by one failover step without the new master being adopted
/// (each later step of the same failover renews it).
const FENCE_MAX: std::time::Duration = std::time::Duration::from_secs(10);

/// Learns the masters from Sentinel, then starts the data plane on the table the watcher keeps
/// publishing. The data plane drops connections to demoted masters on every publish, and a
/// -READONLY/-MASTERDOWN from a believed master makes the watcher re-check that group at once.
async fn start_sentinel_mode(
    cfg: &Config,
    settings: Settings,
) -> Result<(Proxy, WatcherHandle), String> {
    let wcfg = WatcherConfig::from_config(cfg).map_err(|e| e.to_string())?;
    let cell: Arc<OnceLock<Proxy>> = Arc::new(OnceLock::new());
    let on_publish = {
        let cell = cell.clone();
        Arc::new(move |old: &RoutingTable, new: &RoutingTable| {
            if let Some(p) = cell.get() {
                p.table_changed(old, new);
            }
        })
    };
    let watcher = sentinel::start(wcfg, on_publish).await.map_err(|e| e.to_string())?;
    let proxy = Proxy::new(settings, watcher.table());
    let _ = cell.set(proxy.clone());
    // While Sentinel fails a master over, keyhop sends it nothing: a write it acknowledged after
    // its replica was promoted would be discarded when it is demoted. The fence ends when the
    // new table retires the old master, when the failover is given up, or after FENCE_MAX.
    let p = proxy.clone();
    watcher.set_fence_hook(Arc::new(move |addr: &str, on: bool| {
        p.fence(addr, on.then_some(FENCE_MAX));
    }));
    let table = watcher.table();
    let w = watcher.clone();
    proxy.set_stale_hook(Arc::new(move |addr: &str| {
        let t = table.load();
        if let Some(g) = t.groups.iter().position(|g| g.master == addr) {
            tracing::info!(backend = addr, group = %t.groups[g].name, "master answered as a replica; re-checking the group");
            w.recheck(g as u16);
        }
    }));
    Ok((proxy, watcher))
}

/// Completes on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}
