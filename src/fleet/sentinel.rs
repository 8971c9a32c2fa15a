//! Fleet mode with Sentinel: etcd says which groups exist and who owns each slot, Sentinel says
//! where each group's master is. The watcher publishes into a table of its own; every publish
//! re-composes the data plane's table from the latest fleet state and the watcher's addresses.

use std::sync::{Arc, OnceLock};
use std::time::Instant;

use arc_swap::ArcSwap;
use keyhop_control::sentinel::{self, WatcherConfig, WatcherHandle};
use keyhop_control::{Config, EtcdConfig, GroupConfig};
use keyhop_proxy::{Proxy, Settings};
use keyhop_router::RoutingTable;

use super::member::{self, Member};
use crate::run::{CurrentWatcher, set_fence_hook};

/// The watcher configuration for the fleet's group names (the file's [sentinel] section).
fn watcher_config(cfg: &Config, names: &[String]) -> Result<WatcherConfig, String> {
    let mut c = cfg.clone();
    c.groups =
        names.iter().map(|n| GroupConfig { name: n.clone(), ..GroupConfig::default() }).collect();
    WatcherConfig::from_config(&c).map_err(|e| e.to_string())
}

/// Starts a watcher for `names` whose publishes re-compose `member`'s table.
async fn watch(
    cfg: &Config,
    names: &[String],
    member: &Member,
    proxy: Arc<OnceLock<Proxy>>,
) -> Result<WatcherHandle, String> {
    let m = member.clone();
    let on_publish = Arc::new(move |_: &RoutingTable, _: &RoutingTable| {
        if let Some(p) = proxy.get() {
            m.recompose(p);
        }
    });
    sentinel::start(watcher_config(cfg, names)?, on_publish).await.map_err(|e| e.to_string())
}

/// Joins the fleet, learns its groups' masters from Sentinel and starts following both.
pub async fn start(
    cfg: &Config,
    ecfg: &EtcdConfig,
    settings: Settings,
) -> Result<(Proxy, CurrentWatcher, Member), String> {
    let (m, deadline) = member::join(ecfg, &cfg.listen).await?;
    let cell: Arc<OnceLock<Proxy>> = Arc::new(OnceLock::new());
    let current = CurrentWatcher::default();
    current.replace(watch(cfg, &m.group_names(), &m, cell.clone()).await?);
    let resolve: member::Resolve = {
        let current = current.clone();
        Arc::new(move |def| {
            let w = current.get()?;
            w.table().load().groups.iter().find(|g| g.name == def.name).cloned()
        })
    };
    let on_groups: member::OnGroups = {
        let (cfg, m, cell, current) = (cfg.clone(), m.clone(), cell.clone(), current.clone());
        Arc::new(move |names: Vec<String>| {
            let (cfg, m, cell, current) = (cfg.clone(), m.clone(), cell.clone(), current.clone());
            tokio::spawn(async move {
                let started = Instant::now();
                match watch(&cfg, &names, &m, cell.clone()).await {
                    Ok(w) => {
                        if let Some(p) = cell.get() {
                            set_fence_hook(&w, p);
                        }
                        if let Some(old) = current.replace(w) {
                            old.shutdown();
                        }
                        tracing::info!(groups = ?names, after_ms = started.elapsed().as_millis() as u64, "Sentinel watcher follows the fleet's groups");
                        if let Some(p) = cell.get() {
                            m.recompose(p);
                        }
                    }
                    Err(e) => {
                        tracing::error!(groups = ?names, "cannot follow the fleet's groups through Sentinel: {e}")
                    }
                }
            });
        })
    };
    m.set_resolver(resolve, Some(on_groups));
    let table = m.first_table()?;
    let proxy = Proxy::new(settings, Arc::new(ArcSwap::from_pointee(table)));
    let _ = cell.set(proxy.clone());
    if let Some(w) = current.get() {
        set_fence_hook(&w, &proxy);
    }
    let stale = current.clone();
    proxy.set_stale_hook(Arc::new(move |addr: &str| {
        let Some(w) = stale.get() else { return };
        let t = w.table();
        let t = t.load();
        if let Some(g) = t.groups.iter().position(|g| g.master == addr) {
            tracing::info!(backend = addr, group = %t.groups[g].name, "master answered as a replica; re-checking the group");
            w.recheck(g as u16);
        }
    }));
    m.start(&proxy, deadline);
    Ok((proxy, current, m))
}
