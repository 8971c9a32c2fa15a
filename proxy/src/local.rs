//! Commands keyhop answers or orchestrates itself: connection state (PING, ECHO, SELECT, HELLO,
//! AUTH, CLIENT ...), proxy-wide views (SCAN, RANDOMKEY, TIME) and guarded ones (FLUSHALL).

use std::time::{SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use keyhop_router::command::{CommandSpec, Local};
use keyhop_router::{Args, Merge, RoutingTable};

use crate::merge;
use crate::resp::{self, Proto, parse_int};
use crate::session::{Builder, FrameArgs, MergeKind, Session, Slot, Src, display_name};

/// Bits of a keyhop SCAN cursor that name the group (so at most 1024 groups).
const GROUP_BITS: u32 = 10;

/// keyhop's SCAN cursor for "continue with `backend_cursor` on `group`"; after a group's last
/// page it points at the next group, and 0 after the last group.
pub fn encode_scan_cursor(backend_cursor: u64, group: usize, groups: usize) -> u64 {
    if backend_cursor == 0 {
        if group + 1 < groups { (group + 1) as u64 } else { 0 }
    } else {
        (backend_cursor << GROUP_BITS) | group as u64
    }
}

/// (group, backend cursor) of a keyhop SCAN cursor.
pub fn decode_scan_cursor(cursor: u64) -> (usize, u64) {
    ((cursor & ((1 << GROUP_BITS) - 1)) as usize, cursor >> GROUP_BITS)
}

/// Picks one non-nil RANDOMKEY reply (errors win; all nil gives nil in `proto`).
pub fn pick_random_key(parts: &[Bytes], seed: u64, proto: Proto) -> Bytes {
    if let Some(e) = parts.iter().find(|p| merge::is_error(p)) {
        return e.clone();
    }
    let found: Vec<&Bytes> =
        parts.iter().filter(|p| p.first() == Some(&b'$') && p.as_ref() != resp::NIL).collect();
    if found.is_empty() {
        return proto.nil();
    }
    found[(seed % found.len() as u64) as usize].clone()
}

/// ASCII case-insensitive comparison of an argument with a keyword.
pub(crate) fn eq_ic(a: &[u8], b: &str) -> bool {
    a.eq_ignore_ascii_case(b.as_bytes())
}

/// Compares secrets in time independent of where they differ.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = (a.len() ^ b.len()) as u8 | (a.len() != b.len()) as u8;
    for i in 0..a.len().max(b.len()) {
        let x = a.get(i).copied().unwrap_or(0);
        let y = b.get(i).copied().unwrap_or(0xff);
        diff |= x ^ y;
    }
    diff == 0
}

const NOT_INTEGER: &str = "ERR value is not an integer or out of range";

impl Session {
    fn next_random(&mut self) -> u64 {
        // xorshift64: RANDOMKEY's choice of group needs spread, not cryptographic strength.
        let mut x = self.rng;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.rng = x;
        x
    }

    /// Handles a `Local` command; returns true when the connection must close.
    pub(crate) fn local(
        &mut self,
        local: Local,
        table: &RoutingTable,
        spec: &CommandSpec,
        args: &FrameArgs,
        src: Src,
        b: &mut Builder,
    ) -> bool {
        let argc = args.count();
        match local {
            Local::Ping => match argc {
                1 => b.ready(Bytes::from_static(b"+PONG\r\n")),
                2 => b.ready(resp::bulk(args.arg(1))),
                _ => b.ready(resp::error(&keyhop_router::command::arity_error(spec))),
            },
            Local::Echo => b.ready(resp::bulk(args.arg(1))),
            Local::Quit => {
                b.slots_push(Slot::Close(Some(Bytes::from_static(resp::OK))));
                return true;
            }
            Local::Select => {
                let reply = self.select(table, args);
                b.ready(reply);
            }
            Local::Auth => {
                let reply = self.auth(args, 1);
                b.ready(reply);
            }
            Local::Hello => {
                let reply = self.hello(table, args);
                b.ready(reply);
            }
            Local::Reset => {
                // An empty name is always valid: it clears the name.
                let _ = self.set_name(b"");
                self.authed = self.shared.settings.load().password.is_none();
                self.client.on_reset();
                self.set_mode(table, Proto::Resp2, 0);
                b.ready(Bytes::from_static(b"+RESET\r\n"));
            }
            Local::Client => {
                let reply = self.client(spec, args);
                b.ready(reply);
            }
            Local::Time => {
                let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
                let mut out = BytesMut::with_capacity(48);
                resp::push_array_len(&mut out, 2);
                resp::push_bulk(&mut out, now.as_secs().to_string().as_bytes());
                resp::push_bulk(&mut out, now.subsec_micros().to_string().as_bytes());
                b.ready(out.freeze());
            }
            Local::Scan => self.scan(table, args, b),
            Local::RandomKey => {
                let seed = self.next_random();
                let proto = self.proto;
                self.fan_out(b, table.groups.len(), src, MergeKind::RandomKey { seed, proto });
            }
            Local::Flush => {
                if self.shared.settings.load().allow_flush {
                    self.fan_out(
                        b,
                        table.groups.len(),
                        src,
                        MergeKind::Router(Merge::AllOk, Vec::new()),
                    );
                } else {
                    b.ready(resp::error(&format!(
                        "ERR keyhop: {} is refused by the proxy (set allow_flush = true in the config to allow it)",
                        display_name(spec.name)
                    )));
                }
            }
            // Served by the first group's server until keyhop has views of its own.
            Local::Info => {
                let wanted = crate::render::InfoWanted::parse((1..argc).map(|i| args.arg(i)));
                let head =
                    crate::render::info_head(&self.shared, &wanted, self.client.entry.laddr.port());
                let tail =
                    if wanted.keyhop { crate::render::info_keyhop(table) } else { String::new() };
                if wanted.keyspace {
                    let frame = resp::command([b"INFO".as_slice(), b"keyspace"]);
                    let proto = self.proto;
                    self.fan_out(
                        b,
                        table.groups.len(),
                        Src::Owned(frame),
                        MergeKind::Info { head, tail, proto },
                    );
                } else {
                    b.ready(crate::render::info_text(self.proto, &format!("{head}{tail}")));
                }
            }
            Local::Slowlog => {
                let reply = self.slowlog(spec, args);
                b.ready(reply);
            }
            // COMMAND's views (COUNT, INFO, DOCS, GETKEYS) come from a real server.
            Local::Command => self.forward_reply(b, 0, false, src),
        }
        false
    }

    /// AUTH [user] password, with the arguments starting at `first`.
    fn auth(&mut self, args: &FrameArgs, first: usize) -> Bytes {
        let settings = self.shared.settings.load();
        let (user, pass) = match args.count() - first {
            1 => (None, args.arg(first)),
            2 => (Some(args.arg(first)), args.arg(first + 1)),
            _ => return resp::error("ERR syntax error"),
        };
        let Some(expected) = &settings.password else {
            return resp::error(
                "ERR AUTH <password> called without any password configured for the default user. Are you sure your configuration is correct?",
            );
        };
        let user_ok = user.is_none_or(|u| u == b"default");
        if user_ok & constant_time_eq(pass, expected.as_bytes()) {
            self.authed = true;
            Bytes::from_static(resp::OK)
        } else {
            resp::error("WRONGPASS invalid username-password pair or user is disabled.")
        }
    }

    /// SELECT n: later requests go to connections that selected database `n`. A database a
    /// server is known not to have gets Redis's error at once; otherwise the first request
    /// there reports the server's refusal, naming the server.
    fn select(&mut self, table: &RoutingTable, args: &FrameArgs) -> Bytes {
        let Some(n) = parse_int(args.arg(1)) else { return resp::error(NOT_INTEGER) };
        let out_of_range = || resp::error("ERR DB index is out of range");
        let Ok(db) = u32::try_from(n) else { return out_of_range() };
        let known_short = self.pools.iter().any(|g| {
            let have = g.master.pool.state.databases.load(std::sync::atomic::Ordering::Relaxed);
            have != 0 && u64::from(db) >= have
        });
        if known_short {
            return out_of_range();
        }
        self.set_mode(table, self.proto, db);
        Bytes::from_static(resp::OK)
    }

    /// HELLO [protover [AUTH user pass] [SETNAME name]], with Redis 7.0's checks in its order.
    fn hello(&mut self, table: &RoutingTable, args: &FrameArgs) -> Bytes {
        let argc = args.count();
        let mut proto = self.proto;
        if argc >= 2 {
            match parse_int(args.arg(1)) {
                Some(2) => proto = Proto::Resp2,
                Some(3) => proto = Proto::Resp3,
                Some(_) => return Bytes::from_static(b"-NOPROTO unsupported protocol version\r\n"),
                None => {
                    return resp::error("ERR Protocol version is not an integer or out of range");
                }
            }
        }
        // Clients read `version` to decide what they may send: report the servers' own.
        let version = crate::servers_version(&self.shared, table);
        // Servers before Redis 6 cannot speak RESP3: refuse it as Redis 6 refuses RESP4.
        let major = version.split('.').next().and_then(|m| m.parse::<u32>().ok());
        if proto == Proto::Resp3 && major.is_some_and(|m| m < 6) {
            return Bytes::from_static(b"-NOPROTO unsupported protocol version\r\n");
        }
        let mut i = 2;
        let mut new_name = None;
        let mut credentials = None;
        while i < argc {
            let opt = args.arg(i);
            if eq_ic(opt, "AUTH") && i + 2 < argc {
                credentials = Some((args.arg(i + 1), args.arg(i + 2)));
                i += 3;
            } else if eq_ic(opt, "SETNAME") && i + 1 < argc {
                new_name = Some(args.arg(i + 1));
                i += 2;
            } else {
                return resp::error(&format!(
                    "ERR Syntax error in HELLO option '{}'",
                    String::from_utf8_lossy(opt)
                ));
            }
        }
        if let Some((user, pass)) = credentials {
            let reply = self.auth_pair(user, pass);
            if reply.first() == Some(&b'-') {
                return reply;
            }
        }
        if !self.authed {
            return Bytes::from_static(b"-NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO <proto> AUTH <user> <pass> option can be used to authenticate the client and select the RESP protocol version at the same time\r\n");
        }
        if let Some(n) = new_name
            && let Err(e) = self.set_name(n)
        {
            return e;
        }
        self.set_mode(table, proto, self.db);
        let mut out = BytesMut::with_capacity(160);
        proto.push_map_len(&mut out, 7);
        for (k, v) in [("server", "redis"), ("version", &*version)] {
            resp::push_bulk(&mut out, k.as_bytes());
            resp::push_bulk(&mut out, v.as_bytes());
        }
        resp::push_bulk(&mut out, b"proto");
        resp::push_int(&mut out, proto.version());
        resp::push_bulk(&mut out, b"id");
        resp::push_int(&mut out, self.id as i64);
        for (k, v) in [("mode", "standalone"), ("role", "master")] {
            resp::push_bulk(&mut out, k.as_bytes());
            resp::push_bulk(&mut out, v.as_bytes());
        }
        resp::push_bulk(&mut out, b"modules");
        resp::push_array_len(&mut out, 0);
        out.freeze()
    }

    fn auth_pair(&mut self, user: &[u8], pass: &[u8]) -> Bytes {
        let args: [&[u8]; 3] = [b"AUTH", user, pass];
        let ranges = {
            // Re-use the AUTH parser over a tiny frame of our own.
            let frame = resp::command(args);
            let mut sc = resp::RequestScanner::default();
            match sc.scan(&frame) {
                Ok(Some(_)) => (frame, sc.args),
                _ => return resp::error("ERR syntax error"),
            }
        };
        let fa = FrameArgs { frame: &ranges.0, ranges: &ranges.1 };
        self.auth(&fa, 1)
    }

    /// CLIENT SETNAME / HELLO SETNAME / RESET: the session's name (kept for SLOWLOG entries)
    /// and its CLIENT LIST entry; an empty name clears it.
    fn set_name(&mut self, n: &[u8]) -> Result<(), Bytes> {
        valid_name(n)?;
        self.name = if n.is_empty() { None } else { Some(Bytes::copy_from_slice(n)) };
        self.client.entry.set_name(self.name.clone());
        Ok(())
    }

    fn client(&mut self, spec: &CommandSpec, args: &FrameArgs) -> Bytes {
        let sub = spec.name.split('|').nth(1).unwrap_or("");
        match sub {
            "setname" => match self.set_name(args.arg(2)) {
                Ok(()) => Bytes::from_static(resp::OK),
                Err(e) => e,
            },
            "getname" => match &self.name {
                Some(n) => resp::bulk(n),
                None => self.proto.nil(),
            },
            "id" => resp::int(self.id as i64),
            "setinfo" => {
                let attr = args.arg(2);
                let value = args.arg(3);
                if value.iter().any(|&c| !(b'!'..=b'~').contains(&c)) {
                    return resp::error(&format!(
                        "ERR {} cannot contain spaces, newlines or special characters.",
                        String::from_utf8_lossy(attr).to_ascii_uppercase()
                    ));
                }
                let value = Some(Bytes::copy_from_slice(value));
                if eq_ic(attr, "lib-name") {
                    self.client.entry.set_lib(value, None);
                } else if eq_ic(attr, "lib-ver") {
                    self.client.entry.set_lib(None, value);
                } else {
                    return resp::error(&format!(
                        "ERR Unrecognized option '{}'",
                        String::from_utf8_lossy(attr)
                    ));
                }
                Bytes::from_static(resp::OK)
            }
            "info" => self.proto.verbatim(self.client_line(spec).as_bytes()),
            "list" => self.client_list(spec, args),
            "kill" => self.client_kill(args),
            "no-evict" => self.client_no_evict(args),
            "reply" => self.client_reply(args),
            "help" => self.client_help(),
            _ => resp::error(&format!(
                "ERR keyhop: {} is not supported through the proxy",
                display_name(spec.name)
            )),
        }
    }

    /// The caller's CLIENT INFO / LIST line while it runs `spec`.
    fn client_line(&self, spec: &CommandSpec) -> String {
        self.client_info(spec)
    }

    /// SLOWLOG GET [n] | LEN | RESET | HELP, over keyhop's own log.
    fn slowlog(&mut self, spec: &CommandSpec, args: &FrameArgs) -> Bytes {
        let Ok(mut log) = self.shared.slowlog.lock() else {
            return resp::error("ERR keyhop: slowlog unavailable");
        };
        match spec.name.split('|').nth(1).unwrap_or("") {
            "get" => {
                let n = if args.count() > 2 {
                    match parse_int(args.arg(2)) {
                        Some(n) if n >= -1 => n,
                        _ => return resp::error("ERR count should be greater than or equal to -1"),
                    }
                } else {
                    10
                };
                log.get_reply(n)
            }
            "len" => resp::int(log.len() as i64),
            "reset" => {
                log.reset();
                Bytes::from_static(resp::OK)
            }
            _ => {
                let lines = [
                    "SLOWLOG <subcommand> [<arg> ...]. keyhop's own log of commands slower than slowlog_threshold_us:",
                    "GET [<count>], LEN, RESET, HELP. Entries carry a 7th field: the group that served the command.",
                ];
                let items: Vec<Bytes> =
                    lines.iter().map(|l| Bytes::from(format!("+{l}\r\n"))).collect();
                merge::array(&items)
            }
        }
    }

    /// SCAN cursor [MATCH pattern] [COUNT n] [TYPE t] over every group in turn.
    fn scan(&mut self, table: &RoutingTable, args: &FrameArgs, b: &mut Builder) {
        let Some(cursor) =
            std::str::from_utf8(args.arg(1)).ok().and_then(|c| c.parse::<u64>().ok())
        else {
            b.ready(resp::error("ERR invalid cursor"));
            return;
        };
        let (group, backend_cursor) = decode_scan_cursor(cursor);
        if group >= table.groups.len() {
            b.ready(resp::error("ERR invalid cursor"));
            return;
        }
        let bc = backend_cursor.to_string();
        let rest = (2..args.count()).map(|i| args.arg(i));
        let frame = resp::command([args.arg(0), bc.as_bytes()].into_iter().chain(rest));
        let (send, idx) = self.forward(b, group as u16, true, Src::Owned(frame));
        if send != u16::MAX {
            let kind = MergeKind::Scan { group, groups: table.groups.len() };
            b.slots_push(Slot::Merge(Box::new(crate::session::MergeSlot {
                kind,
                parts: vec![(send, idx)],
            })));
        }
    }
}

/// Redis's rule for client names: no spaces, newlines or special characters.
fn valid_name(n: &[u8]) -> Result<(), Bytes> {
    if n.iter().any(|&c| !(b'!'..=b'~').contains(&c)) {
        return Err(resp::error(
            "ERR Client names cannot contain spaces, newlines or special characters.",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scan_cursor_walks_groups() {
        assert_eq!(decode_scan_cursor(0), (0, 0));
        assert_eq!(encode_scan_cursor(0, 0, 3), 1);
        assert_eq!(decode_scan_cursor(1), (1, 0));
        assert_eq!(encode_scan_cursor(0, 2, 3), 0);
        let c = encode_scan_cursor(12345, 2, 3);
        assert_eq!(decode_scan_cursor(c), (2, 12345));
    }

    #[test]
    fn secrets_compare() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
        assert!(!constant_time_eq(b"", b"a"));
    }

    #[test]
    fn random_key_choice() {
        let nil = Bytes::from_static(resp::NIL);
        let k = Bytes::from_static(b"$1\r\nk\r\n");
        assert_eq!(pick_random_key(&[nil.clone(), k.clone()], 7, Proto::Resp2), k);
        assert_eq!(pick_random_key(&[nil.clone(), nil.clone()], 7, Proto::Resp2), nil);
        let null3 = Bytes::from_static(b"_\r\n");
        assert_eq!(pick_random_key(&[null3.clone(), null3], 7, Proto::Resp3), Proto::Resp3.nil());
    }
}
