//! `keyhop run` and `keyhop check`: load the config, build the routing table, start the data
//! plane, reload the config on SIGHUP, and drain on SIGINT/SIGTERM.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use arc_swap::ArcSwap;
use keyhop_control::sentinel::{self, WatcherConfig, WatcherHandle};
use keyhop_control::{Config, ReadFrom, TlsSetup};
use keyhop_proxy::{BackendSettings, Proxy, Settings, Stats};
use keyhop_router::{RoutingTable, SharedTable};
use tokio::signal::unix::{Signal, SignalKind, signal};

use crate::cli::Cli;
use crate::reload::Plan;

fn load(cli: &Cli) -> Result<Config, String> {
    let Some(path) = &cli.config else {
        return Err("no configuration given: pass --config FILE (see examples/static.toml)".into());
    };
    Config::load(path).map_err(|e| e.to_string())
}

/// The data-plane settings a config asks for.
pub fn proxy_settings(cfg: &Config) -> Settings {
    Settings {
        max_clients: crate::fdlimit::effective_max_clients(cfg.max_clients),
        client_keepalive: cfg.tcp_keepalive(),
        allow_flush: cfg.allow_flush,
        allow_admin: cfg.allow_admin,
        password: cfg.password.clone(),
        read_from_replicas: cfg.read_from == ReadFrom::ReplicaPreferred,
        // Metrics are scraped from the admin endpoint; without it, skip recording them.
        metrics: cfg.admin_listen.is_some(),
        slowlog_threshold: std::time::Duration::from_micros(cfg.slowlog_threshold_us),
        slowlog_max_len: cfg.slowlog_max_len,
        max_pinned_connections: cfg.max_pinned_connections,
        pubsub_limit: keyhop_proxy::settings::OutputLimit {
            hard: cfg.pubsub_output_limit.hard_bytes as usize,
            soft: cfg.pubsub_output_limit.soft_bytes as usize,
            soft_for: std::time::Duration::from_secs(cfg.pubsub_output_limit.soft_seconds),
        },
        client_limit: keyhop_proxy::settings::OutputLimit {
            hard: cfg.client_output_limit.hard_bytes as usize,
            soft: cfg.client_output_limit.soft_bytes as usize,
            soft_for: std::time::Duration::from_secs(cfg.client_output_limit.soft_seconds),
        },
        backend: BackendSettings {
            connect_timeout: cfg.connect_timeout(),
            request_timeout: cfg.request_timeout(),
            keepalive: cfg.tcp_keepalive(),
            password: cfg.backend_password.clone(),
            connections: cfg.backend_connections,
            // Set from the TLS loaded at start (see `with_tls`).
            tls: None,
        },
        client_tls: None,
        hold: std::time::Duration::from_millis(cfg.etcd.as_ref().map_or(2000, |e| e.hold_ms)),
        migrate_timeout: std::time::Duration::from_millis(
            cfg.etcd.as_ref().map_or(1000, |e| e.migrate_timeout_ms),
        ),
    }
}

/// `settings` with the TLS configurations loaded at start (TLS keys need a restart: a reload
/// keeps serving with these).
fn with_tls(mut settings: Settings, tls: &TlsSetup) -> Settings {
    settings.client_tls = tls.clients.clone();
    settings.backend.tls = tls.backends.clone();
    settings
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
    if let Some(e) = &cfg.etcd {
        println!(
            "fleet mode: groups and slots come from etcd at {} (endpoints {}); see them with `keyhop slots show`",
            e.prefix,
            e.endpoints.join(", ")
        );
        if cfg.groups.is_empty() {
            println!(
                "config OK: {}",
                cli.config.as_deref().map(Path::display).map(|d| d.to_string()).unwrap_or_default()
            );
            return ExitCode::SUCCESS;
        }
        println!("the [[groups]] below seed the fleet once (`keyhop slots init`):");
    }
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

/// Loads the configuration and runs `f` with it (the fleet subcommands).
pub fn with_config(cli: &Cli, f: impl FnOnce(&Config) -> ExitCode) -> ExitCode {
    match load(cli) {
        Ok(cfg) => f(&cfg),
        Err(e) => {
            eprintln!("keyhop: {e}");
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
    let runtime = match runtime(&cfg) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("keyhop: {e}");
            return ExitCode::from(1);
        }
    };
    let path = cli.config.clone();
    let result = runtime.block_on(async move {
        let signals = Signals::new()?;
        serve(cfg, Launch { config_path: path, listener: None, signals, ready: None }).await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("keyhop: {e}");
            ExitCode::from(1)
        }
    }
}

/// The runtime a config asks for: with one worker, Tokio's single-threaded scheduler (no work
/// stealing, no cross-thread wake-ups to pay for); otherwise the multi-threaded one.
pub fn runtime(cfg: &Config) -> Result<tokio::runtime::Runtime, String> {
    let threads = cfg.worker_threads();
    let mut builder = if threads == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(threads);
        b
    };
    builder
        .thread_name("keyhop-worker")
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))
}

/// The process signals keyhop acts on. Registered before anything slow happens, so a signal sent
/// while starting is acted on once serving instead of killing the process with its default
/// action (SIGHUP's default is to terminate).
pub struct Signals {
    term: Signal,
    int: Signal,
    hup: Signal,
}

impl Signals {
    /// Registers SIGTERM, SIGINT and SIGHUP handlers. Must run inside a Tokio runtime.
    pub fn new() -> Result<Signals, String> {
        let reg = |kind: SignalKind, name: &str| {
            signal(kind).map_err(|e| format!("cannot install the {name} handler: {e}"))
        };
        Ok(Signals {
            term: reg(SignalKind::terminate(), "SIGTERM")?,
            int: reg(SignalKind::interrupt(), "SIGINT")?,
            hup: reg(SignalKind::hangup(), "SIGHUP")?,
        })
    }
}

/// Completes on the next SIGTERM or SIGINT, naming it.
async fn stop_signal(term: &mut Signal, int: &mut Signal) -> &'static str {
    tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    }
}

/// How [`serve`] gets its inputs besides the configuration.
pub struct Launch {
    /// The file SIGHUP re-reads; without one SIGHUP only logs that there is nothing to reload.
    pub config_path: Option<PathBuf>,
    /// An already bound client listener (e.g. `keyhop demo` checks its port before starting
    /// servers); otherwise `cfg.listen` is bound.
    pub listener: Option<std::net::TcpListener>,
    /// The signal handlers, registered by the caller as early as possible.
    pub signals: Signals,
    /// Run once keyhop serves (table known, listener up), e.g. to print what to try.
    pub ready: Option<Box<dyn FnOnce() + Send>>,
}

/// Runs the proxy until SIGTERM/SIGINT: serves clients, reloads the configuration on SIGHUP, and
/// on the stop signal closes the listener, drains (in-flight replies reach their clients within
/// `shutdown_grace_ms`) and returns. A second stop signal while draining stops waiting.
pub async fn serve(cfg: Config, launch: Launch) -> Result<(), String> {
    let Launch { config_path, listener, signals, ready } = launch;
    let Signals { mut term, mut int, mut hup } = signals;
    let tls = cfg.tls_setup().map_err(|problems| {
        let list: Vec<String> = problems.iter().map(ToString::to_string).collect();
        format!("cannot set TLS up: {}", list.join("; "))
    })?;
    let settings = with_tls(proxy_settings(&cfg), &tls);
    let mut member = None;
    let (proxy, watcher) = if let (Some(ecfg), true) = (&cfg.etcd, cfg.is_sentinel_mode()) {
        let (proxy, watcher, m) = tokio::select! {
            started = crate::fleet::sentinel::start(&cfg, ecfg, settings) => started?,
            why = stop_signal(&mut term, &mut int) => {
                tracing::info!(signal = why, "stopped while joining the fleet");
                return Ok(());
            }
        };
        member = Some(m);
        (proxy, Some(watcher))
    } else if cfg.is_sentinel_mode() {
        // Learning the masters can take seconds; a stop signal meanwhile ends it there.
        let (proxy, watcher) = tokio::select! {
            started = start_sentinel_mode(&cfg, settings) => started?,
            why = stop_signal(&mut term, &mut int) => {
                tracing::info!(signal = why, "stopped while learning the masters from Sentinel");
                return Ok(());
            }
        };
        (proxy, Some(watcher))
    } else if let Some(ecfg) = &cfg.etcd {
        let (m, deadline) = crate::fleet::member::join(ecfg, &cfg.listen).await?;
        let table = m.first_table()?;
        let shared: SharedTable = Arc::new(ArcSwap::from_pointee(table));
        let proxy = Proxy::new(settings, shared);
        m.start(&proxy, deadline);
        member = Some(m);
        (proxy, None)
    } else {
        let table = cfg.routing_table(1).map_err(|e| e.to_string())?;
        let shared: SharedTable = Arc::new(ArcSwap::from_pointee(table));
        (Proxy::new(settings, shared), None)
    };
    let listener = match listener {
        Some(l) => l
            .set_nonblocking(true)
            .and_then(|()| tokio::net::TcpListener::from_std(l))
            .map_err(|e| format!("cannot use the listener for {}: {e}", cfg.listen))?,
        None => tokio::net::TcpListener::bind(&cfg.listen).await.map_err(|e| {
            format!("cannot listen on {}: {e} (change `listen` in the config)", cfg.listen)
        })?,
    };
    // Admin endpoint (metrics, health, topology); it lives in `Running` until serve() returns.
    let admin = match &cfg.admin_listen {
        Some(addr) => {
            let state = crate::admin::AdminState {
                proxy: proxy.clone(),
                watcher: watcher.clone(),
                member: member.clone(),
                backend_password: cfg.backend_password.clone(),
                backend_tls: tls.backends.clone(),
                config_path: config_path.clone(),
                threads: cfg.worker_threads(),
            };
            Some(crate::admin::start(addr, state).await?)
        }
        None => None,
    };
    tracing::info!(listen = %cfg.listen, tls = tls.clients.is_some(), backend_tls = tls.backends.is_some(), groups = cfg.groups.len(), threads = cfg.worker_threads(), sentinel = watcher.is_some(), "keyhop serving");

    // Accepting runs on its own task so a slow reload (a new Sentinel watcher may take seconds
    // to learn the masters) never holds up new clients.
    let (stop_accept, accept_stopped) = tokio::sync::oneshot::channel::<()>();
    let accept = tokio::spawn({
        let proxy = proxy.clone();
        async move {
            proxy
                .serve(listener, async {
                    let _ = accept_stopped.await;
                })
                .await
        }
    });
    if let Some(ready) = ready {
        ready();
    }
    let mut running = Running { proxy: proxy.clone(), watcher: watcher.clone(), cfg, admin, tls };
    let why = loop {
        tokio::select! {
            why = stop_signal(&mut term, &mut int) => break why,
            _ = hup.recv() => {
                // A stop signal during a reload wins; dropping an unfinished watcher start
                // aborts it.
                tokio::select! {
                    _ = running.reload(config_path.as_deref()) => {}
                    why = stop_signal(&mut term, &mut int) => break why,
                }
            }
        }
    };

    let _ = stop_accept.send(());
    let _ = accept.await;
    let clients = Stats::get(&proxy.stats().clients_current);
    let grace = running.cfg.shutdown_grace();
    tracing::info!(
        signal = why,
        clients,
        grace_ms = grace.as_millis() as u64,
        "shutting down: listener closed, draining clients"
    );
    let started = std::time::Instant::now();
    let drained = tokio::select! {
        all = proxy.drain(grace) => Some(all),
        again = stop_signal(&mut term, &mut int) => {
            tracing::warn!(signal = again, "second stop signal: not waiting for clients");
            None
        }
    };
    let left = Stats::get(&proxy.stats().clients_current);
    match drained {
        Some(true) => tracing::info!(
            clients,
            after_ms = started.elapsed().as_millis() as u64,
            "every client finished; in-flight replies delivered"
        ),
        Some(false) => tracing::warn!(
            clients_left = left,
            grace_ms = grace.as_millis() as u64,
            "shutdown grace expired; closing the remaining clients, their in-flight requests get no reply"
        ),
        None => {}
    }
    if let Some(w) = running.watcher.as_ref().and_then(CurrentWatcher::get) {
        w.shutdown();
    }
    if let Some(m) = member {
        m.leave().await;
    }
    tracing::info!("keyhop stopped");
    Ok(())
}

/// What a reload may change while serving.
struct Running {
    proxy: Proxy,
    watcher: Option<CurrentWatcher>,
    /// The configuration in effect (keys that need a restart keep their running values).
    cfg: Config,
    /// The admin endpoint, if configured (its health prober needs the backend password).
    admin: Option<crate::admin::AdminHandle>,
    /// The TLS configurations loaded at start.
    tls: TlsSetup,
}

impl Running {
    /// Re-reads the configuration file and applies it without dropping clients. An unusable file,
    /// a switch between static and Sentinel mode, or a new watcher that cannot start keeps the
    /// running configuration; keys that need a restart are reported and the rest is applied.
    async fn reload(&mut self, path: Option<&Path>) {
        let ok = match path {
            Some(path) => self.try_reload(path).await,
            None => {
                tracing::warn!(
                    "SIGHUP: keyhop was started without a configuration file; nothing to reload"
                );
                false
            }
        };
        crate::admin::record_reload(ok);
    }

    async fn try_reload(&mut self, path: &Path) -> bool {
        let new = match Config::load(path) {
            Ok(c) => c,
            Err(e) => {
                let problems = e.problems();
                if problems.is_empty() {
                    tracing::error!(file = %path.display(), "reload failed, keeping the running configuration: {e}");
                } else {
                    for p in problems {
                        tracing::error!(file = %path.display(), key = %p.key, "invalid configuration: {}", p.message);
                    }
                    tracing::error!(file = %path.display(), problems = problems.len(), "reload failed, keeping the running configuration");
                }
                return false;
            }
        };
        let plan = Plan::new(&self.cfg, &new);
        if plan.changed.is_empty() {
            tracing::info!(file = %path.display(), "configuration reloaded: nothing changed");
            return true;
        }
        if plan.mode_switch {
            tracing::error!(file = %path.display(), "reload refused: switching between static, Sentinel and fleet (etcd) mode needs a restart; keeping the running configuration");
            return false;
        }
        for key in &plan.needs_restart {
            tracing::warn!(
                key,
                "changed in the file but needs a restart; the running value is kept"
            );
        }
        let new = Plan::effective(&self.cfg, new);
        // Everything that can fail comes first, so a failure leaves the running state untouched.
        let mut static_table = None;
        if plan.topology {
            match &self.watcher {
                Some(current) => {
                    if let Err(e) = restart_watcher(&new, &self.proxy, current).await {
                        tracing::error!(
                            "reload failed, keeping the running configuration: cannot start a Sentinel watcher for the new configuration: {e}"
                        );
                        return false;
                    }
                }
                None => match new.routing_table(0) {
                    Ok(t) => static_table = Some(t),
                    Err(e) => {
                        tracing::error!("reload failed, keeping the running configuration: {e}");
                        return false;
                    }
                },
            }
        }
        self.proxy.set_settings(with_tls(proxy_settings(&new), &self.tls));
        if let Some(admin) = &self.admin {
            admin.set_backend_password(new.backend_password.clone());
        }
        if plan.backend {
            // Pools keep the settings they were made with; closing them makes the next request
            // connect with the new password/timeouts. Requests in flight on them get an error.
            self.proxy.backends().retain(|_| false);
            tracing::info!("backend settings changed: reconnecting to every backend");
        }
        if let Some(t) = static_table {
            let old = self.proxy.table().load_full();
            let t = Arc::new(t.with_groups(old.epoch + 1, t.groups.clone()));
            self.proxy.table().store(t.clone());
            self.proxy.table_changed(&old, &t);
            tracing::info!(epoch = t.epoch, "new routing table from the reloaded configuration");
        } else if plan.backend || plan.changed.contains(&"read_from") {
            // Sessions pick up new pools (and, for read_from, whether they hold replicas) only
            // when the epoch moves; same groups, next epoch.
            self.proxy.table().rcu(|t| t.with_groups(t.epoch + 1, t.groups.clone()));
        }
        let applied: Vec<&str> =
            plan.changed.iter().copied().filter(|k| !plan.needs_restart.contains(k)).collect();
        tracing::info!(file = %path.display(), changed = ?applied, "configuration reloaded");
        self.cfg = new;
        true
    }
}

/// The Sentinel watcher in use. A reload may replace it; the data plane's stale-master hook
/// always reaches the current one through this.
#[derive(Clone, Default)]
pub struct CurrentWatcher(Arc<Mutex<Option<WatcherHandle>>>);

impl CurrentWatcher {
    /// The watcher running now.
    pub fn get(&self) -> Option<WatcherHandle> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Makes `w` the current watcher; returns the one it replaces.
    pub fn replace(&self, w: WatcherHandle) -> Option<WatcherHandle> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).replace(w)
    }
}

/// Starts a watcher for `cfg` publishing into the proxy's table, then stops the old one (so the
/// table is followed all along). Between the two an old-watcher publish may still land; the new
/// watcher corrects it on its next poll.
async fn restart_watcher(
    cfg: &Config,
    proxy: &Proxy,
    current: &CurrentWatcher,
) -> Result<(), String> {
    let wcfg = WatcherConfig::from_config(cfg).map_err(|e| e.to_string())?;
    let p = proxy.clone();
    let on_publish = Arc::new(move |old: &RoutingTable, new: &RoutingTable| {
        p.table_changed(old, new);
        crate::admin::record_publish(old, new);
    });
    let w = sentinel::start_with_table(wcfg, proxy.table().clone(), on_publish)
        .await
        .map_err(|e| e.to_string())?;
    set_fence_hook(&w, proxy);
    tracing::info!(
        epoch = proxy.table().load().epoch,
        "new Sentinel watcher started for the reloaded configuration"
    );
    if let Some(old) = current.replace(w) {
        old.shutdown();
    }
    Ok(())
}

/// Longest a master stays fenced by one failover step without the new master being adopted
/// (each later step of the same failover renews it).
const FENCE_MAX: std::time::Duration = std::time::Duration::from_secs(10);

/// While Sentinel fails a master over, keyhop sends it nothing: a write it acknowledged after
/// its replica was promoted would be discarded when it is demoted. The fence ends when the new
/// table retires the old master, when the failover is given up, or after [`FENCE_MAX`].
pub fn set_fence_hook(watcher: &WatcherHandle, proxy: &Proxy) {
    let p = proxy.clone();
    watcher.set_fence_hook(Arc::new(move |addr: &str, on: bool| {
        crate::admin::record_fence(addr, on);
        p.fence(addr, on.then_some(FENCE_MAX));
    }));
}

/// Learns the masters from Sentinel, then starts the data plane on the table the watcher keeps
/// publishing. The data plane drops connections to demoted masters on every publish, and a
/// -READONLY/-MASTERDOWN from a believed master makes the (current) watcher re-check that group
/// at once.
async fn start_sentinel_mode(
    cfg: &Config,
    settings: Settings,
) -> Result<(Proxy, CurrentWatcher), String> {
    let wcfg = WatcherConfig::from_config(cfg).map_err(|e| e.to_string())?;
    let cell: Arc<OnceLock<Proxy>> = Arc::new(OnceLock::new());
    let on_publish = {
        let cell = cell.clone();
        Arc::new(move |old: &RoutingTable, new: &RoutingTable| {
            if let Some(p) = cell.get() {
                p.table_changed(old, new);
            }
            crate::admin::record_publish(old, new);
        })
    };
    let watcher = sentinel::start(wcfg, on_publish).await.map_err(|e| e.to_string())?;
    let proxy = Proxy::new(settings, watcher.table());
    let _ = cell.set(proxy.clone());
    set_fence_hook(&watcher, &proxy);
    let table = watcher.table();
    let current = CurrentWatcher::default();
    current.replace(watcher);
    let w = current.clone();
    proxy.set_stale_hook(Arc::new(move |addr: &str| {
        let t = table.load();
        if let Some(g) = t.groups.iter().position(|g| g.master == addr) {
            tracing::info!(backend = addr, group = %t.groups[g].name, "master answered as a replica; re-checking the group");
            if let Some(w) = w.get() {
                w.recheck(g as u16);
            }
        }
    }));
    Ok((proxy, current))
}
