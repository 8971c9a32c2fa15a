//! Administrative commands (CONFIG SET, SAVE, DEBUG, SCRIPT KILL ...) and the database commands
//! that only make sense with one group (MOVE, SWAPDB).
//!
//! Administrative commands change every server at once, so they are refused unless `allow_admin`
//! is set: a shared proxy must not let any client reconfigure every server. When allowed, they go
//! to every master (CONFIG SET to the healthy replicas too, so that a promoted replica keeps the
//! setting) and answer OK only when every server did; otherwise the reply names the first server
//! that failed, so the operator knows where the change did not land.

use bytes::Bytes;
use keyhop_router::command::{self, AdminFanout, CommandSpec, DebugRoute, RouteError};
use keyhop_router::{Args, GroupId, Policy, RoutingTable};

use crate::merge;
use crate::resp;
use crate::session::{
    Builder, CROSSSLOT, FrameArgs, MergeKind, MergeSlot, Session, Slot, Src, display_name,
};
use crate::stats::Stats;

/// How the replies of a fanned-out administrative command become one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum AdminMerge {
    /// Every server must succeed: the first server's reply, or the first failure, named.
    All,
    /// Like `All`, but the servers' integer replies are added up (LATENCY RESET's counts).
    AllSum,
    /// SCRIPT/FUNCTION KILL: at most one server runs the script, so any success is `+OK`; when
    /// every server answers -NOTBUSY, that reply.
    AnyKill,
}

/// Everything the merge of an administrative fan-out needs, carried by the batch's merge slot.
pub(crate) struct AdminReplies {
    kind: AdminMerge,
    /// The command as the client reads it in errors (`CONFIG SET`, `DEBUG SLEEP`).
    name: String,
    /// `(address, group name)` of the server each part went to, in part order.
    servers: Vec<(String, String)>,
}

impl AdminReplies {
    /// Merges one reply per server (a backend failure arrives as keyhop's error reply for it).
    pub(crate) fn merge(&self, parts: &[Bytes]) -> Bytes {
        let failed = match self.kind {
            AdminMerge::All | AdminMerge::AllSum => parts.iter().position(|p| merge::is_error(p)),
            AdminMerge::AnyKill => {
                if let Some(ok) = parts.iter().find(|p| !merge::is_error(p)) {
                    return ok.clone();
                }
                // Nothing was killed: NOTBUSY everywhere is the answer, anything else a failure
                // (the script may be running on a server that could not be asked).
                parts.iter().position(|p| !p.starts_with(b"-NOTBUSY"))
            }
        };
        if let Some(i) = failed {
            return self.failure(i, &parts[i]);
        }
        if self.kind == AdminMerge::AllSum
            && let Some(sum) =
                parts.iter().try_fold(0i64, |acc, p| Some(acc.saturating_add(merge::int_value(p)?)))
        {
            return resp::int(sum);
        }
        parts
            .first()
            .cloned()
            .unwrap_or_else(|| resp::error("ERR keyhop: internal error (no server replied)"))
    }

    /// `-ERR keyhop: CONFIG SET failed on <addr> (group <g>): <the server's error text>`.
    fn failure(&self, part: usize, reply: &[u8]) -> Bytes {
        let (addr, group) = match self.servers.get(part) {
            Some((a, g)) => (a.as_str(), g.as_str()),
            None => ("?", "?"),
        };
        let body = reply.strip_prefix(b"-").unwrap_or(reply);
        let body = body.strip_suffix(b"\r\n").unwrap_or(body);
        let text = String::from_utf8_lossy(body);
        // keyhop's own error for an unreachable server names it too; say it once.
        let own = format!("ERR keyhop: backend {addr} of group {group} ");
        let text = text.strip_prefix(own.as_str()).unwrap_or(&text);
        resp::error(&format!("ERR keyhop: {} failed on {addr} (group {group}): {text}", self.name))
    }
}

/// The command's name for messages: `CONFIG SET`, and for DEBUG its subcommand too.
fn label(spec: &CommandSpec, args: &FrameArgs) -> String {
    let mut name = display_name(spec.name);
    if spec.name == "debug" && args.count() > 1 {
        let sub: String = String::from_utf8_lossy(args.arg(1))
            .chars()
            .take(32)
            .map(|c| if c.is_ascii_graphic() { c.to_ascii_uppercase() } else { '?' })
            .collect();
        name.push(' ');
        name.push_str(&sub);
    }
    name
}

impl Session {
    /// Handles a command whose policy is `Admin` or `SingleGroup`.
    pub(crate) fn admin(
        &mut self,
        policy: Policy,
        table: &RoutingTable,
        spec: &CommandSpec,
        args: &FrameArgs,
        src: Src,
        b: &mut Builder,
    ) {
        let fanout = match policy {
            Policy::Admin(f) => f,
            _ => return self.single_group(table, spec, src, b),
        };
        let name = label(spec, args);
        if !self.shared.settings.load().allow_admin {
            Stats::add(&self.shared.stats.errors_unsupported, 1);
            b.ready(resp::error(&format!(
                "ERR keyhop: {name} is refused by the proxy (set allow_admin = true in the config to allow it)"
            )));
            return;
        }
        let kind = match fanout {
            AdminFanout::Kill => AdminMerge::AnyKill,
            _ if spec.name == "latency|reset" => AdminMerge::AllSum,
            _ => AdminMerge::All,
        };
        let replicas = fanout == AdminFanout::MastersAndReplicas;
        if fanout != AdminFanout::Debug {
            return self.admin_fan_out(table, name, kind, replicas, src, b);
        }
        let mut scratch = Vec::new();
        match command::route_debug(table, args, &mut scratch) {
            // Keyless DIGEST-VALUE has nothing to route by; any server gives its (empty) answer.
            Ok(DebugRoute::Keys(group)) => self.forward_reply(b, group.unwrap_or(0), false, src),
            Ok(DebugRoute::CreatesKeys) if table.groups.len() > 1 => {
                Stats::add(&self.shared.stats.errors_unsupported, 1);
                b.ready(resp::error(&format!(
                    "ERR keyhop: {name} is refused with {} groups (each server would create keys whose slots other groups own)",
                    table.groups.len()
                )));
            }
            Ok(DebugRoute::CreatesKeys | DebugRoute::Servers) => {
                self.admin_fan_out(table, name, kind, false, src, b)
            }
            Err(RouteError::CrossGroup) => {
                Stats::add(&self.shared.stats.errors_crossslot, 1);
                b.ready(Bytes::from_static(CROSSSLOT));
            }
            Err(RouteError::Syntax(msg)) => b.ready(resp::error(&msg)),
        }
    }

    /// Sends `src` to every group's master (and with `replicas`, every healthy replica) and
    /// merges the replies with `kind`.
    fn admin_fan_out(
        &mut self,
        table: &RoutingTable,
        name: String,
        kind: AdminMerge,
        replicas: bool,
        src: Src,
        b: &mut Builder,
    ) {
        let mut parts = Vec::with_capacity(table.groups.len());
        let mut servers = Vec::with_capacity(table.groups.len());
        for (g, group) in table.groups.iter().enumerate() {
            let (send, idx) = self.forward(b, g as GroupId, false, src.clone());
            if send == u16::MAX {
                // `forward` already queued the error reply.
                return;
            }
            parts.push((send, idx));
            servers.push((group.master.clone(), group.name.clone()));
        }
        if replicas {
            // Replicas Sentinel reports down are skipped: keyhop cannot reach them either, and
            // one long-gone replica would otherwise fail every CONFIG SET.
            for (g, group) in table.groups.iter().enumerate() {
                for r in group.replicas.iter().filter(|r| r.healthy) {
                    // The session only holds replica pools when reads go to replicas.
                    let pool = self.shared.backends.pool(&r.addr);
                    parts.push(self.forward_to_pool(b, g as GroupId, &pool, src.clone()));
                    servers.push((r.addr.clone(), group.name.clone()));
                }
            }
        }
        let kind = MergeKind::Admin(AdminReplies { kind, name, servers });
        b.slots_push(Slot::Merge(Box::new(MergeSlot { kind, parts })));
    }

    /// MOVE and SWAPDB: a server's databases hold only the keys of its own group, so moving a
    /// key between them (or swapping two) is what the client meant only when one group holds
    /// every key.
    fn single_group(
        &mut self,
        table: &RoutingTable,
        spec: &CommandSpec,
        src: Src,
        b: &mut Builder,
    ) {
        let groups = table.groups.len();
        if groups == 1 {
            self.forward_reply(b, 0, false, src);
            return;
        }
        Stats::add(&self.shared.stats.errors_unsupported, 1);
        b.ready(resp::error(&format!(
            "ERR keyhop: {} is refused with {groups} groups (each group has its own databases; it is allowed only when keyhop has exactly one group)",
            display_name(spec.name)
        )));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(s: &str) -> Bytes {
        Bytes::from(s.to_string())
    }

    fn replies(kind: AdminMerge) -> AdminReplies {
        AdminReplies {
            kind,
            name: "CONFIG SET".into(),
            servers: vec![
                ("127.0.0.1:7001".into(), "g1".into()),
                ("127.0.0.1:7002".into(), "g2".into()),
                ("127.0.0.1:7003".into(), "g2".into()),
            ],
        }
    }

    #[test]
    fn all_ok_gives_the_first_reply() {
        let r = replies(AdminMerge::All);
        assert_eq!(r.merge(&[b("+OK\r\n"), b("+OK\r\n"), b("+OK\r\n")]), b("+OK\r\n"));
        let started = b("+Background saving started\r\n");
        assert_eq!(r.merge(&[started.clone(), started.clone(), started.clone()]), started);
    }

    #[test]
    fn first_failure_is_named() {
        let r = replies(AdminMerge::All);
        let out = r.merge(&[b("+OK\r\n"), b("-ERR Invalid argument\r\n"), b("-ERR other\r\n")]);
        assert_eq!(
            out,
            b(
                "-ERR keyhop: CONFIG SET failed on 127.0.0.1:7002 (group g2): ERR Invalid argument\r\n"
            )
        );
        // keyhop's own backend error is not repeated.
        let down = b("-ERR keyhop: backend 127.0.0.1:7003 of group g2 unreachable: refused\r\n");
        let out = r.merge(&[b("+OK\r\n"), b("+OK\r\n"), down]);
        assert_eq!(
            out,
            b(
                "-ERR keyhop: CONFIG SET failed on 127.0.0.1:7003 (group g2): unreachable: refused\r\n"
            )
        );
    }

    #[test]
    fn latency_reset_counts_add_up() {
        let r = replies(AdminMerge::AllSum);
        assert_eq!(r.merge(&[b(":2\r\n"), b(":0\r\n"), b(":3\r\n")]), b(":5\r\n"));
        assert!(r.merge(&[b(":2\r\n"), b("-ERR x\r\n"), b(":3\r\n")]).starts_with(b"-ERR keyhop"));
    }

    #[test]
    fn kill_succeeds_when_any_server_killed() {
        let r = replies(AdminMerge::AnyKill);
        let notbusy = b("-NOTBUSY No scripts in execution right now.\r\n");
        assert_eq!(r.merge(&[notbusy.clone(), b("+OK\r\n"), notbusy.clone()]), b("+OK\r\n"));
        assert_eq!(r.merge(&[notbusy.clone(), notbusy.clone(), notbusy.clone()]), notbusy);
        let out = r.merge(&[notbusy.clone(), b("-UNKILLABLE wrote\r\n"), notbusy]);
        assert!(out.starts_with(b"-ERR keyhop: CONFIG SET failed on 127.0.0.1:7002 (group g2)"));
    }
}
