//! keyhop's own clients: a registry of every session (CLIENT LIST, INFO, KILL) and the
//! per-session CLIENT REPLY state.
//!
//! Other sessions' fields are read from a shared [`ClientEntry`]; a session writes its entry
//! once per batch (last command and activity time, two relaxed stores) and when a connection
//! setting changes, never per command.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::Bytes;
use dashmap::DashMap;
use keyhop_router::Args;
use keyhop_router::command::{self, CommandSpec};

use crate::Shared;
use crate::cancel::{Cancelled, Signal};
use crate::local::eq_ic;
use crate::merge;
use crate::resp::{self, RequestScanner, Scanned, parse_int};
use crate::session::{FrameArgs, Session, Slot};

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
    names: Mutex<Names>,
    db: AtomicU32,
    resp: AtomicU8,
    no_evict: AtomicBool,
    /// Address of the last command's `CommandSpec`, 0 before the first (or for an unknown one):
    /// a plain store, mapped back to a name only when listed.
    cmd: AtomicUsize,
    /// Milliseconds from `created` to the last batch read.
    active_ms: AtomicU64,
    kill: Signal,
}

/// Client name and library, changed by CLIENT SETNAME/SETINFO, HELLO and RESET only.
#[derive(Default)]
struct Names {
    name: Option<Bytes>,
    lib_name: Option<Bytes>,
    lib_ver: Option<Bytes>,
}

impl ClientEntry {
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
        self.names().name = name;
    }

    /// Records CLIENT SETINFO's library name and/or version (`None` keeps the current one).
    pub fn set_lib(&self, lib_name: Option<Bytes>, lib_ver: Option<Bytes>) {
        let mut names = self.names();
        if lib_name.is_some() {
            names.lib_name = lib_name;
        }
        if lib_ver.is_some() {
            names.lib_ver = lib_ver;
        }
    }

    fn names(&self) -> std::sync::MutexGuard<'_, Names> {
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
        let flags = if self.no_evict.load(Ordering::Relaxed) { "e" } else { "N" };
        let names = self.names();
        let text = |v: &Option<Bytes>| {
            // Names are checked to be printable ASCII when set, so nothing is lost here.
            v.as_ref().map(|n| String::from_utf8_lossy(n).into_owned()).unwrap_or_default()
        };
        // Redis 7.0's fields in its order; keyhop keeps no per-client buffers, hence the zeros.
        // lib-name/lib-ver are Redis 7.2's, last as there.
        let _ = writeln!(
            out,
            "id={} addr={} laddr={} fd={} name={} age={} idle={} flags={} db={} sub=0 psub=0 \
             ssub=0 multi=-1 qbuf=0 qbuf-free=0 argv-mem=0 multi-mem=0 rbs=0 rbp=0 obl=0 oll=0 \
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
            names: Mutex::new(Names::default()),
            db: AtomicU32::new(0),
            resp: AtomicU8::new(2),
            no_evict: AtomicBool::new(false),
            cmd: AtomicUsize::new(0),
            active_ms: AtomicU64::new(0),
            kill: Signal::new(),
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
    pub fn killed(&self) -> Cancelled {
        self.entry.kill.cancelled()
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

/// Redis's client types (`getClientTypeByName`): keyhop's clients are all `normal`.
enum ClientType {
    Normal,
    Other,
}

fn client_type(name: &[u8]) -> Result<ClientType, Bytes> {
    match name.to_ascii_lowercase().as_slice() {
        b"normal" => Ok(ClientType::Normal),
        b"slave" | b"replica" | b"pubsub" | b"master" => Ok(ClientType::Other),
        _ => Err(resp::error(&format!(
            "ERR Unknown client type '{}'",
            String::from_utf8_lossy(name)
        ))),
    }
}

fn syntax_error() -> Bytes {
    resp::error("ERR syntax error")
}

/// The `CLIENT HELP` lines: what keyhop answers (the rest is refused).
const HELP: &[&str] = &[
    "CLIENT <subcommand> [<arg> [value] [opt] ...]. Subcommands supported by keyhop are:",
    "GETNAME",
    "    Return the name of the current connection.",
    "ID",
    "    Return the ID of the current connection.",
    "INFO",
    "    Return information about the current client connection.",
    "KILL <ip:port>",
    "    Kill connection made from <ip:port>.",
    "KILL <option> <value> [<option> <value> [...]]",
    "    Kill connections. Options are:",
    "    * ADDR <ip:port>",
    "      Kill connections made from the specified address",
    "    * LADDR <ip:port>",
    "      Kill connections made to specified local address",
    "    * TYPE (NORMAL|MASTER|REPLICA|PUBSUB)",
    "      Kill connections by type.",
    "    * USER <username>",
    "      Kill connections authenticated by <username>.",
    "    * SKIPME (YES|NO)",
    "      Skip killing current connection (default: yes).",
    "LIST [options ...]",
    "    Return information about client connections. Options:",
    "    * TYPE (NORMAL|MASTER|REPLICA|PUBSUB)",
    "      Return clients of specified type.",
    "    * ID <client-id> [<client-id> ...]",
    "      Return clients of specified IDs only.",
    "NO-EVICT (ON|OFF)",
    "    Protect current client connection from eviction (keyhop evicts no client).",
    "REPLY (ON|OFF|SKIP)",
    "    Control the replies sent to the current connection.",
    "SETINFO <LIB-NAME|LIB-VER> <value>",
    "    Set library name or version of the current connection.",
    "SETNAME <name>",
    "    Assign the name <name> to the current connection.",
    "HELP",
    "    Prints this help.",
];

impl Session {
    /// The caller's CLIENT INFO line while it runs `current`.
    pub(crate) fn client_info(&self, current: &CommandSpec) -> String {
        let mut out = String::with_capacity(320);
        self.client.entry.push_line(&mut out, Instant::now(), Some(current));
        out
    }

    /// CLIENT LIST [TYPE type | ID id [id ...]], over every keyhop client.
    pub(crate) fn client_list(&self, current: &CommandSpec, args: &FrameArgs) -> Bytes {
        let argc = args.count();
        let clients = &self.shared.clients;
        let chosen: Vec<Arc<ClientEntry>> = if argc == 4 && eq_ic(args.arg(2), "type") {
            match client_type(args.arg(3)) {
                Ok(ClientType::Normal) => clients.snapshot(),
                // No replica, master or (until pub/sub lands) pubsub clients.
                Ok(ClientType::Other) => Vec::new(),
                Err(e) => return e,
            }
        } else if argc > 3 && eq_ic(args.arg(2), "id") {
            let mut found = Vec::new();
            // Listed in argument order, as Redis does.
            for i in 3..argc {
                let Some(id) = parse_int(args.arg(i)) else {
                    return resp::error("ERR Invalid client ID");
                };
                found.extend(u64::try_from(id).ok().and_then(|id| clients.get(id)));
            }
            found
        } else if argc != 2 {
            return syntax_error();
        } else {
            clients.snapshot()
        };
        let now = Instant::now();
        let mut out = String::with_capacity(chosen.len() * 320);
        for e in &chosen {
            let mine = (e.id == self.id).then_some(current);
            e.push_line(&mut out, now, mine);
        }
        self.proto.verbatim(out.as_bytes())
    }

    /// CLIENT KILL ip:port | CLIENT KILL <filter> <value> ..., as Redis 7.0 (no MAXAGE: 7.2's).
    pub(crate) fn client_kill(&mut self, args: &FrameArgs) -> Bytes {
        let argc = args.count();
        let old_form = argc == 3;
        let mut addr: Option<&[u8]> = None;
        let mut laddr: Option<&[u8]> = None;
        let mut id: Option<u64> = None;
        let mut skipme = true;
        let mut any_type = true;
        if old_form {
            addr = Some(args.arg(2));
            // With the old form a client may kill itself.
            skipme = false;
        } else {
            let mut i = 2;
            while i < argc {
                // Options come in pairs; a lone last option is a syntax error, as in Redis.
                if i + 1 >= argc {
                    return syntax_error();
                }
                let (opt, value) = (args.arg(i), args.arg(i + 1));
                if eq_ic(opt, "id") {
                    match parse_int(value).and_then(|v| u64::try_from(v).ok()).filter(|&v| v > 0) {
                        Some(v) => id = Some(v),
                        None => return resp::error("ERR client-id should be greater than 0"),
                    }
                } else if eq_ic(opt, "type") {
                    match client_type(value) {
                        Ok(t) => any_type = matches!(t, ClientType::Normal),
                        Err(e) => return e,
                    }
                } else if eq_ic(opt, "addr") {
                    addr = Some(value);
                } else if eq_ic(opt, "laddr") {
                    laddr = Some(value);
                } else if eq_ic(opt, "user") {
                    // `default` is keyhop's only user; Redis refuses a user it doesn't have.
                    if value != b"default" {
                        return resp::error(&format!(
                            "ERR No such user '{}'",
                            String::from_utf8_lossy(value)
                        ));
                    }
                } else if eq_ic(opt, "skipme") {
                    if eq_ic(value, "yes") {
                        skipme = true;
                    } else if eq_ic(value, "no") {
                        skipme = false;
                    } else {
                        return syntax_error();
                    }
                } else {
                    return syntax_error();
                }
                i += 2;
            }
        }
        let mut killed = 0i64;
        if any_type {
            for e in self.shared.clients.snapshot() {
                if addr.is_some_and(|a| a != e.addr.to_string().as_bytes())
                    || laddr.is_some_and(|a| a != e.laddr.to_string().as_bytes())
                    || id.is_some_and(|id| id != e.id)
                    || (skipme && e.id == self.id)
                {
                    continue;
                }
                if e.id == self.id {
                    // Closed after this reply is written (Redis's CLOSE_AFTER_REPLY).
                    self.client.flags |= CLOSE;
                } else {
                    // Gone from CLIENT LIST at once, as Redis frees it; the session stops at
                    // its next turn and deregisters again (a no-op).
                    self.shared.clients.map.remove(&e.id);
                    e.kill.cancel();
                }
                killed += 1;
            }
        }
        match (old_form, killed) {
            (true, 0) => resp::error("ERR No such client"),
            (true, _) => Bytes::from_static(resp::OK),
            (false, n) => resp::int(n),
        }
    }

    /// CLIENT NO-EVICT ON|OFF: recorded and shown as flag `e` (keyhop evicts no client).
    pub(crate) fn client_no_evict(&mut self, args: &FrameArgs) -> Bytes {
        let on = args.arg(2);
        if !eq_ic(on, "on") && !eq_ic(on, "off") {
            return syntax_error();
        }
        self.client.entry.no_evict.store(eq_ic(on, "on"), Ordering::Relaxed);
        Bytes::from_static(resp::OK)
    }

    /// CLIENT REPLY ON|OFF|SKIP. OFF and SKIP answer nothing (an empty reply writes no bytes).
    pub(crate) fn client_reply(&mut self, args: &FrameArgs) -> Bytes {
        let mode = args.arg(2);
        let flags = &mut self.client.flags;
        if eq_ic(mode, "on") {
            // Cleared before the reply, so the ON itself is answered even after a SKIP.
            *flags &= !(REPLY_OFF | SKIP | SKIP_NEXT);
            Bytes::from_static(resp::OK)
        } else if eq_ic(mode, "off") {
            *flags |= REPLY_OFF;
            Bytes::new()
        } else if eq_ic(mode, "skip") {
            if *flags & REPLY_OFF == 0 {
                *flags |= SKIP_NEXT;
            }
            Bytes::new()
        } else {
            syntax_error()
        }
    }

    /// CLIENT HELP.
    pub(crate) fn client_help(&self) -> Bytes {
        let items: Vec<Bytes> = HELP.iter().map(|l| Bytes::from(format!("+{l}\r\n"))).collect();
        merge::array(&items)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
