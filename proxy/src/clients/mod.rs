//! keyhop's own clients: a registry of every session (CLIENT LIST, INFO, KILL) and the
//! per-session CLIENT REPLY state.
//!
//! Other sessions' fields are read from a shared [`ClientEntry`]; a session writes its entry
//! once per batch (last command and activity time, two relaxed stores) and when a connection
//! setting changes, never per command.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{
    AtomicBool, AtomicI32, AtomicU8, AtomicU32, AtomicU64, AtomicUsize, Ordering,
};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::Bytes;
use dashmap::DashMap;
use keyhop_router::command::{self, CommandSpec};

mod subcommands;

use subcommands::ClientType;

use crate::Shared;
use crate::cancel::{Fired, Flag};
use crate::resp::{RequestScanner, Scanned};
use crate::session::{FrameArgs, Slot};

/// Every session of the proxy, by client id.
#[derive(Default)]
pub(crate) struct Registry {
    map: DashMap<u64, Arc<ClientEntry>>,
}

impl Registry {
    /// Every client, in connection order (as Redis lists them). The map's locks are released
    /// before the caller formats anything.
    pub fn snapshot(&self) -> Vec<Arc<ClientEntry>> {
        let mut all: Vec<Arc<ClientEntry>> = self.map.iter().map(|e| e.value().clone()).collect();
        all.sort_unstable_by_key(|e| e.id);
        all
    }

    /// Wakes every session for a drain (each also checks the drain signal itself, so one that
    /// registers meanwhile is not missed).
    pub fn drain_all(&self) {
        for e in self.map.iter() {
            e.value().drain.fire();
        }
    }

    /// True when no client has a request in flight that was routed with a table older than
    /// `epoch`.
    pub fn drained_to(&self, epoch: u64) -> bool {
        self.map.iter().all(|e| e.value().routed_epoch() >= epoch)
    }

    /// The client with `id`, if connected.
    pub fn get(&self, id: u64) -> Option<Arc<ClientEntry>> {
        self.map.get(&id).map(|e| e.value().clone())
    }
}

/// What other sessions may read of one client connection.
pub(crate) struct ClientEntry {
    /// Client id (CLIENT ID).
    pub id: u64,
    /// The client's address.
    pub addr: SocketAddr,
    /// keyhop's address the client connected to.
    pub laddr: SocketAddr,
    fd: i32,
    created: Instant,
    /// Boxed, and only once set: most clients never name themselves.
    names: Mutex<Option<Box<Names>>>,
    db: AtomicU32,
    resp: AtomicU8,
    no_evict: AtomicBool,
    /// Address of the last command's `CommandSpec`, 0 before the first (or for an unknown one):
    /// a plain store, mapped back to a name only when listed.
    cmd: AtomicUsize,
    /// Milliseconds from `created` to the last batch read.
    active_ms: AtomicU64,
    /// Fired by CLIENT KILL from another client.
    pub kill: Flag,
    /// Fired when the proxy drains (see [`Registry::drain_all`]).
    drain: Flag,
    /// Subscribed channels, patterns and shard channels (`sub=`, `psub=`, `ssub=`; flag `P`).
    subs: [AtomicU32; 3],
    /// Commands queued since MULTI, or -1 outside a transaction (`multi=`; flag `x`).
    multi: AtomicI32,
    /// Blocked in a blocking command (flag `b`).
    blocked: AtomicBool,
    /// The epoch of the oldest table with which this client's unanswered requests were routed
    /// (`fleet::NONE` when none; kept only with a fleet gate), for [`crate::Proxy::drained_to`].
    routed_epoch: AtomicU64,
}

/// Client name and library, changed by CLIENT SETNAME/SETINFO, HELLO and RESET only.
#[derive(Default)]
struct Names {
    name: Option<Bytes>,
    lib_name: Option<Bytes>,
    lib_ver: Option<Bytes>,
}

impl ClientEntry {
    /// Records the oldest table epoch this client has requests in flight for.
    #[inline]
    pub fn set_routed_epoch(&self, epoch: u64) {
        self.routed_epoch.store(epoch, Ordering::SeqCst);
    }

    /// The oldest table epoch this client has requests in flight for (`fleet::NONE`: none).
    pub fn routed_epoch(&self) -> u64 {
        self.routed_epoch.load(Ordering::SeqCst)
    }

    /// Records the client's database (SELECT); shown as `db=`.
    pub fn set_db(&self, db: u32) {
        self.db.store(db, Ordering::Relaxed);
    }

    /// Records the client's protocol version (HELLO 2|3); shown as `resp=`.
    pub fn set_resp(&self, resp: u8) {
        self.resp.store(resp, Ordering::Relaxed);
    }

    /// Records the client's name (CLIENT SETNAME, HELLO SETNAME, RESET).
    pub fn set_name(&self, name: Option<Bytes>) {
        self.names().get_or_insert_with(Box::default).name = name;
    }

    /// Records CLIENT SETINFO's library name and/or version (`None` keeps the current one).
    pub fn set_lib(&self, lib_name: Option<Bytes>, lib_ver: Option<Bytes>) {
        let mut guard = self.names();
        let names = guard.get_or_insert_with(Box::default);
        if lib_name.is_some() {
            names.lib_name = lib_name;
        }
        if lib_ver.is_some() {
            names.lib_ver = lib_ver;
        }
    }

    /// Records the client's subscriptions: channels, patterns, shard channels.
    pub fn set_subs(&self, channels: usize, patterns: usize, shards: usize) {
        for (slot, n) in self.subs.iter().zip([channels, patterns, shards]) {
            slot.store(n.min(u32::MAX as usize) as u32, Ordering::Relaxed);
        }
    }

    /// Records the commands queued in the client's transaction (`None`: not in MULTI).
    pub fn set_multi(&self, queued: Option<usize>) {
        let v = queued.map_or(-1, |n| n.min(i32::MAX as usize) as i32);
        self.multi.store(v, Ordering::Relaxed);
    }

    /// Records whether the client is blocked in a blocking command.
    pub fn set_blocked(&self, blocked: bool) {
        self.blocked.store(blocked, Ordering::Relaxed);
    }

    /// True while the client is subscribed to anything (CLIENT LIST/KILL TYPE pubsub).
    fn is_pubsub(&self) -> bool {
        self.subs.iter().any(|s| s.load(Ordering::Relaxed) > 0)
    }

    fn client_type(&self) -> ClientType {
        if self.is_pubsub() { ClientType::PubSub } else { ClientType::Normal }
    }

    /// CLIENT LIST's `flags=`: Redis's letters, in its order, `N` for none.
    fn flags(&self) -> String {
        let mut f = String::new();
        if self.is_pubsub() {
            f.push('P');
        }
        if self.multi.load(Ordering::Relaxed) >= 0 {
            f.push('x');
        }
        if self.blocked.load(Ordering::Relaxed) {
            f.push('b');
        }
        if self.no_evict.load(Ordering::Relaxed) {
            f.push('e');
        }
        if f.is_empty() {
            f.push('N');
        }
        f
    }

    fn names(&self) -> std::sync::MutexGuard<'_, Option<Box<Names>>> {
        // A panic while holding it leaves plain data behind: still fine to read.
        self.names.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Appends the client's CLIENT LIST line. `current` is the command being run when the line
    /// is the caller's own (Redis shows it, and idle=0, for the caller).
    fn push_line(&self, out: &mut String, now: Instant, current: Option<&CommandSpec>) {
        let age = now.saturating_duration_since(self.created);
        let idle_s = match current {
            Some(_) => 0,
            None => {
                let age_ms = age.as_secs() * 1000 + u64::from(age.subsec_millis());
                age_ms.saturating_sub(self.active_ms.load(Ordering::Relaxed)) / 1000
            }
        };
        let cmd = match current {
            Some(spec) => spec.name,
            None => spec_name(self.cmd.load(Ordering::Relaxed)),
        };
        let flags = self.flags();
        let guard = self.names();
        let none = Names::default();
        let names = guard.as_deref().unwrap_or(&none);
        let text = |v: &Option<Bytes>| {
            // Names are checked to be printable ASCII when set, so nothing is lost here.
            v.as_ref().map(|n| String::from_utf8_lossy(n).into_owned()).unwrap_or_default()
        };
        // Redis 7.0's fields in its order; keyhop keeps no per-client buffers, hence the zeros.
        // lib-name/lib-ver are Redis 7.2's, last as there.
        let _ = writeln!(
            out,
            "id={} addr={} laddr={} fd={} name={} age={} idle={} flags={} db={} sub={} psub={} \
             ssub={} multi={} qbuf=0 qbuf-free=0 argv-mem=0 multi-mem=0 rbs=0 rbp=0 obl=0 oll=0 \
             omem=0 tot-mem=0 events=r cmd={} user=default redir=-1 resp={} lib-name={} \
             lib-ver={}",
            self.id,
            self.addr,
            self.laddr,
            self.fd,
            text(&names.name),
            age.as_secs(),
            idle_s,
            flags,
            self.db.load(Ordering::Relaxed),
            self.subs[0].load(Ordering::Relaxed),
            self.subs[1].load(Ordering::Relaxed),
            self.subs[2].load(Ordering::Relaxed),
            self.multi.load(Ordering::Relaxed),
            cmd,
            self.resp.load(Ordering::Relaxed),
            text(&names.lib_name),
            text(&names.lib_ver),
        );
    }
}

/// CLIENT REPLY OFF is on.
const REPLY_OFF: u8 = 1;
/// CLIENT REPLY SKIP was the command just run: the next command's reply is dropped.
const SKIP_NEXT: u8 = 2;
/// This command's reply is dropped (CLIENT REPLY SKIP before it).
const SKIP: u8 = 4;
/// CLIENT KILL matched this client: close once the reply is written.
const CLOSE: u8 = 8;

/// A session's own client state: its registry entry (removed when the session ends, however it
/// ends) and the CLIENT REPLY / self-kill flags only it reads.
pub(crate) struct ClientState {
    shared: Arc<Shared>,
    /// This client's registry entry.
    pub entry: Arc<ClientEntry>,
    /// [`REPLY_OFF`], [`SKIP_NEXT`], [`SKIP`], [`CLOSE`]: zero for a session that never used
    /// CLIENT REPLY, which then pays one test per command.
    pub flags: u8,
}

impl ClientState {
    /// Registers a new client connection; it is deregistered when the state is dropped.
    pub fn register(
        shared: &Arc<Shared>,
        id: u64,
        addr: SocketAddr,
        laddr: SocketAddr,
        fd: i32,
    ) -> ClientState {
        let entry = Arc::new(ClientEntry {
            id,
            addr,
            laddr,
            fd,
            created: Instant::now(),
            names: Mutex::new(None),
            db: AtomicU32::new(0),
            resp: AtomicU8::new(2),
            no_evict: AtomicBool::new(false),
            cmd: AtomicUsize::new(0),
            active_ms: AtomicU64::new(0),
            kill: Flag::default(),
            drain: Flag::default(),
            subs: Default::default(),
            multi: AtomicI32::new(-1),
            blocked: AtomicBool::new(false),
            routed_epoch: AtomicU64::new(crate::fleet::NONE),
        });
        shared.clients.map.insert(id, entry.clone());
        ClientState { shared: shared.clone(), entry, flags: 0 }
    }

    /// RESET ends CLIENT REPLY OFF and a pending SKIP (it keeps NO-EVICT and a SKIP already in
    /// force for RESET itself, as Redis 7.0 does).
    pub fn on_reset(&mut self) {
        self.flags &= !(REPLY_OFF | SKIP_NEXT);
    }

    /// Resolves once CLIENT KILL from another client matched this one.
    pub fn killed(entry: &ClientEntry) -> Fired<'_> {
        entry.kill.fired(None)
    }

    /// Resolves once the proxy drains.
    pub fn drained<'a>(entry: &'a ClientEntry, shared: &'a Shared) -> Fired<'a> {
        entry.drain.fired(Some(&shared.drain))
    }

    /// Records a batch read at `at` whose last command is top-level command `top` (an index of
    /// `command::commands()`), with its frame when it is in `buf` at `start..start + len`.
    #[inline]
    pub fn touch(&self, at: Instant, top: u16, buf: &[u8], start: u32, len: u32) {
        let spec = match command::commands().get(usize::from(top)) {
            Some(t) if t.subcommands.is_empty() => spec_addr(t),
            Some(t) => subcommand_addr(t, buf, start, len),
            None => 0,
        };
        let d = at.saturating_duration_since(self.entry.created);
        self.entry.cmd.store(spec, Ordering::Relaxed);
        self.entry
            .active_ms
            .store(d.as_secs() * 1000 + u64::from(d.subsec_millis()), Ordering::Relaxed);
    }

    /// Applies CLIENT REPLY and a self-kill to the reply slots of the command just dispatched
    /// (`slots`); returns true when the connection must close after them.
    pub fn after_command(&mut self, slots: &mut [Slot]) -> bool {
        let mut close = false;
        if self.flags & CLOSE != 0 {
            self.flags &= !CLOSE;
            close = true;
            if let Some(last) = slots.last_mut() {
                *last = match std::mem::replace(last, Slot::Close(None)) {
                    Slot::Ready(reply) => Slot::Close(Some(reply)),
                    other => other,
                };
            }
        }
        if self.flags & (REPLY_OFF | SKIP) != 0 {
            for s in slots.iter_mut() {
                let inner = std::mem::replace(s, Slot::Close(None));
                *s = Slot::Silent(Box::new(inner));
            }
        }
        // As Redis's resetClient: a SKIP lasts one command, set by the SKIP just before it.
        self.flags &= !SKIP;
        if self.flags & SKIP_NEXT != 0 {
            self.flags = (self.flags & !SKIP_NEXT) | SKIP;
        }
        close
    }
}

impl Drop for ClientState {
    fn drop(&mut self) {
        self.shared.clients.map.remove(&self.entry.id);
    }
}

fn spec_addr(spec: &CommandSpec) -> usize {
    spec as *const CommandSpec as usize
}

/// The resolved subcommand of container `top` from its frame (cold: CLIENT, CONFIG, OBJECT...).
#[cold]
fn subcommand_addr(top: &'static CommandSpec, buf: &[u8], start: u32, len: u32) -> usize {
    let Some(frame) = buf.get(start as usize..start as usize + len as usize) else {
        // An inline command: its frame is not in the buffer; the container names it.
        return spec_addr(top);
    };
    let mut sc = RequestScanner::default();
    if !matches!(sc.scan(frame), Ok(Some(Scanned::Command { .. }))) {
        return spec_addr(top);
    }
    match top.resolve(&FrameArgs { frame, ranges: &sc.args }) {
        Ok(spec) => spec_addr(spec),
        // Redis shows cmd=NULL after an unknown subcommand.
        Err(_) => 0,
    }
}

/// The full name (`client|list`) of the command at `addr`, `NULL` as Redis shows none.
fn spec_name(addr: usize) -> &'static str {
    if addr == 0 {
        return "NULL";
    }
    let within = |specs: &'static [CommandSpec]| {
        let size = std::mem::size_of::<CommandSpec>();
        let start = specs.as_ptr() as usize;
        if addr < start || size == 0 {
            return None;
        }
        specs.get((addr - start) / size).filter(|s| spec_addr(s) == addr)
    };
    let all = command::commands();
    if let Some(s) = within(all) {
        return s.name;
    }
    if let Some(s) = all.iter().find_map(|t| within(t.subcommands)) {
        return s.name;
    }
    // CLIENT SETINFO lives outside the generated table.
    let setinfo: &[&[u8]] = &[b"client", b"setinfo"];
    match command::lookup(b"client").map(|c| c.resolve(setinfo)) {
        Some(Ok(s)) if spec_addr(s) == addr => s.name,
        _ => "NULL",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resp;

    #[test]
    fn names_commands_by_address() {
        let get = command::lookup(b"get").expect("GET");
        assert_eq!(spec_name(spec_addr(get)), "get");
        let client = command::lookup(b"client").expect("CLIENT");
        let list: &[&[u8]] = &[b"client", b"list"];
        let l = client.resolve(list).expect("CLIENT LIST");
        assert_eq!(spec_name(spec_addr(l)), "client|list");
        let setinfo: &[&[u8]] = &[b"client", b"setinfo"];
        let s = client.resolve(setinfo).expect("CLIENT SETINFO");
        assert_eq!(spec_name(spec_addr(s)), "client|setinfo");
        assert_eq!(spec_name(0), "NULL");
        assert_eq!(spec_name(1), "NULL");
    }

    #[test]
    fn subcommand_from_frame() {
        let client = command::lookup(b"client").expect("CLIENT");
        let frame = resp::command([b"CLIENT".as_slice(), b"SetName", b"x"]);
        let addr = subcommand_addr(client, &frame, 0, frame.len() as u32);
        assert_eq!(spec_name(addr), "client|setname");
        let bad = resp::command([b"CLIENT".as_slice(), b"nope"]);
        assert_eq!(subcommand_addr(client, &bad, 0, bad.len() as u32), 0);
        assert_eq!(spec_name(subcommand_addr(client, &bad, u32::MAX, 0)), "client");
    }
}
