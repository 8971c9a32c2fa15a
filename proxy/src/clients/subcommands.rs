//! The CLIENT subcommands keyhop answers over its own clients: LIST, INFO, KILL, REPLY,
//! NO-EVICT, HELP, in Redis 7.0's formats.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use bytes::Bytes;
use keyhop_router::Args;
use keyhop_router::command::CommandSpec;

use super::{CLOSE, ClientEntry, REPLY_OFF, SKIP, SKIP_NEXT};
use crate::local::eq_ic;
use crate::merge;
use crate::resp::{self, parse_int};
use crate::session::{FrameArgs, Session};

/// Redis's client types (`getClientTypeByName`): keyhop's clients are `normal` or `pubsub`.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum ClientType {
    Normal,
    PubSub,
    /// Replicas and masters: keyhop has none among its clients.
    Other,
}

fn client_type(name: &[u8]) -> Result<ClientType, Bytes> {
    match name.to_ascii_lowercase().as_slice() {
        b"normal" => Ok(ClientType::Normal),
        b"pubsub" => Ok(ClientType::PubSub),
        b"slave" | b"replica" | b"master" => Ok(ClientType::Other),
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
                Ok(t) => clients.snapshot().into_iter().filter(|e| e.client_type() == t).collect(),
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
        let mut of_type = None;
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
                        Ok(t) => of_type = Some(t),
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
        for e in self.shared.clients.snapshot() {
            if of_type.is_some_and(|t| t != e.client_type())
                || addr.is_some_and(|a| a != e.addr.to_string().as_bytes())
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
                e.kill.fire();
            }
            killed += 1;
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
