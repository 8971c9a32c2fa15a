//! An in-process keyhop data plane over three real redis-servers, whose routing tables the
//! tests publish by hand (as the fleet's etcd watcher would): groups a and b own the slots,
//! c owns none and is where migrating slots go.

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use keyhop_proxy::{Proxy, Settings};
use keyhop_router::{FluxRange, FluxState, Group, RoutingTable, SharedTable, key_slot};

use crate::common::{Proc, free_port, redis_server};

/// The slots that move (a -> c) in these tests.
pub const FLUX: (u16, u16) = (0, 4095);

pub struct Fleet {
    pub rt: tokio::runtime::Runtime,
    pub proxy: Proxy,
    pub table: SharedTable,
    pub port: u16,
    /// Groups a (slots 0-8191), b (8192-16383) and c (none).
    pub servers: [Proc; 3],
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Fleet {
    /// Starts the servers and the proxy with `hold` as `hold_ms`; nothing is in flux yet.
    pub fn start(hold: Duration) -> Fleet {
        // DEBUG SLEEP makes a request slow on purpose (the drain barrier's test).
        let debug = ["--enable-debug-command", "yes"];
        let servers = [redis_server(&debug), redis_server(&debug), redis_server(&debug)];
        // The test matrix (scripts/test.sh) runs these on 2 workers and 3 connections too.
        let env =
            |k: &str, d: usize| std::env::var(k).ok().and_then(|v| v.parse().ok()).unwrap_or(d);
        let threads = env("KEYHOP_TEST_THREADS", 1);
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .enable_all()
            .build()
            .expect("runtime");
        let mut settings = Settings::default();
        settings.backend.connections = env("KEYHOP_TEST_BACKEND_CONNECTIONS", 2);
        settings.allow_admin = true;
        settings.hold = hold;
        let table: SharedTable =
            Arc::new(ArcSwap::from_pointee(build(&servers, 1, &OWNERS, vec![])));
        let proxy = Proxy::new(settings, table.clone());
        let (listener, port) = (0..5)
            .find_map(|_| {
                let port = free_port();
                let l = rt.block_on(tokio::net::TcpListener::bind(("127.0.0.1", port))).ok()?;
                Some((l, port))
            })
            .expect("bind a free port");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let p = proxy.clone();
        rt.spawn(async move {
            p.serve(listener, async {
                let _ = stopped.await;
            })
            .await
        });
        Fleet { rt, proxy, table, port, servers, stop: Some(stop) }
    }

    /// Publishes a table with [`FLUX`] in `state` (None: nothing in flux); returns its epoch.
    pub fn publish(&self, state: Option<FluxState>) -> u64 {
        let old = self.table.load_full();
        let flux = state
            .map(|state| vec![FluxRange { first: FLUX.0, last: FLUX.1, from: 0, to: 2, state }])
            .unwrap_or_default();
        self.store(build(&self.servers, old.epoch + 1, &OWNERS, flux))
    }

    /// Publishes the table after the flip: [`FLUX`] owned by c, nothing in flux.
    pub fn publish_flipped(&self) -> u64 {
        let epoch = self.table.load().epoch + 1;
        let owners = [(FLUX.0, FLUX.1, 2), (FLUX.1 + 1, 8191, 0), (8192, 16383, 1)];
        self.store(build(&self.servers, epoch, &owners, vec![]))
    }

    fn store(&self, new: RoutingTable) -> u64 {
        let (old, new) = (self.table.load_full(), Arc::new(new));
        self.table.store(new.clone());
        self.proxy.table_changed(&old, &new);
        new.epoch
    }

    /// The port of group `g`'s server.
    pub fn server(&self, g: usize) -> u16 {
        self.servers[g].port
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

/// Slot ownership before the flip.
const OWNERS: [(u16, u16, u16); 2] = [(0, 8191, 0), (8192, 16383, 1)];

fn build(
    servers: &[Proc; 3],
    epoch: u64,
    owners: &[(u16, u16, u16)],
    flux: Vec<FluxRange>,
) -> RoutingTable {
    let group =
        |name: &str, p: &Proc| Group { name: name.into(), master: p.addr(), replicas: vec![] };
    let groups = vec![group("a", &servers[0]), group("b", &servers[1]), group("c", &servers[2])];
    RoutingTable::from_parts(epoch, groups, owners, flux, 0).expect("a valid table")
}

/// The `n`th key (by `prefix`) whose slot is in `first..=last`.
pub fn key_in(prefix: &str, first: u16, last: u16, n: usize) -> String {
    (0..100_000)
        .map(|i| format!("{prefix}{i}"))
        .filter(|k| (first..=last).contains(&key_slot(k.as_bytes())))
        .nth(n)
        .expect("a key in the range")
}

/// A key on a slot in flux.
pub fn flux_key(n: usize) -> String {
    key_in("fx", FLUX.0, FLUX.1, n)
}

/// A key of group a that does not move.
pub fn still_key(n: usize) -> String {
    key_in("st", FLUX.1 + 1, 8191, n)
}

/// A key of group b.
pub fn b_key(n: usize) -> String {
    key_in("bk", 8192, 16383, n)
}
