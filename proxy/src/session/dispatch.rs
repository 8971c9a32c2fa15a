//! Routing one command: where it goes (a group's master or replica, every group, keyhop itself)
//! and how its reply slot is filled (straight from a backend, or merged from parts).

use bytes::Bytes;
use keyhop_router::command::{self, Local, RouteError};
use keyhop_router::{Args, GroupId, Merge, Policy, RoutingTable};

use super::{
    Builder, CROSSSLOT, Enter, FrameArgs, MergeKind, MergeSlot, Session, Slot, Src, display_name,
};
use crate::backend::Pool;
use crate::resp;
use crate::stats::Stats;

impl Session {
    /// Queues `src` for `group`'s master (or a replica for a read when allowed).
    pub(crate) fn forward(
        &mut self,
        b: &mut Builder,
        group: GroupId,
        read_only: bool,
        src: Src,
    ) -> (u16, u32) {
        let Some(g) = self.pools.get(group as usize) else {
            // Cannot happen with a consistent table; answer rather than panic.
            b.ready(resp::error("ERR keyhop: internal routing error (group out of range)"));
            return (u16::MAX, 0);
        };
        // Not during a flux step: keys in flux are read from masters only.
        let target = if read_only && !g.replicas.is_empty() && self.view.is_none() {
            self.replica_rr = self.replica_rr.wrapping_add(1);
            // A replica keyhop cannot reach is skipped (the master serves when none is left)
            // until it answers again, without waiting for the table to mark it down.
            let n = g.replicas.len();
            (0..n)
                .map(|k| &g.replicas[(self.replica_rr + k) % n])
                .find(|t| !t.pool.state.failing.load(std::sync::atomic::Ordering::Relaxed))
                .unwrap_or(&g.master)
        } else {
            &g.master
        };
        b.send_to(&target.conn, group, &target.pool.addr, src)
    }

    /// Queues `src` for one server's `pool` on behalf of `group` (a replica that the session's
    /// per-epoch pools do not hold, for CONFIG SET).
    pub(crate) fn forward_to_pool(
        &mut self,
        b: &mut Builder,
        group: GroupId,
        pool: &Pool,
        src: Src,
    ) -> (u16, u32) {
        let conn = pool.conn_for(self.id, self.mode());
        b.send_to(&conn, group, &pool.addr, src)
    }

    /// Forwards a request whose single reply goes straight to the client.
    pub(crate) fn forward_reply(
        &mut self,
        b: &mut Builder,
        group: GroupId,
        read_only: bool,
        src: Src,
    ) {
        let (send, idx) = self.forward(b, group, read_only, src);
        if send != u16::MAX {
            b.slots.push(Slot::Reply { send, idx });
        }
    }

    /// Sends `src` to every group's master and merges the replies.
    pub(crate) fn fan_out(&mut self, b: &mut Builder, groups: usize, src: Src, kind: MergeKind) {
        let mut parts = Vec::with_capacity(groups);
        for g in 0..groups {
            let (send, idx) = self.forward(b, g as GroupId, false, src.clone());
            if send == u16::MAX {
                return;
            }
            parts.push((send, idx));
        }
        b.slots.push(Slot::Merge(Box::new(MergeSlot { kind, parts })));
    }

    /// Handles one command; returns whether the connection must close after it, and the
    /// command's metrics index.
    pub(super) fn dispatch(
        &mut self,
        table: &RoutingTable,
        args: &FrameArgs,
        src: Src,
        b: &mut Builder,
    ) -> (bool, u16) {
        let first = b.slots.len();
        let (close, id) = self.dispatch_command(table, args, src, b);
        // CLIENT REPLY OFF/SKIP and a self-kill act on the command's reply slots; a session
        // that never used them pays this one test.
        if self.client.flags != 0 {
            return (self.client.after_command(&mut b.slots[first..]) || close, id);
        }
        (close, id)
    }

    fn dispatch_command(
        &mut self,
        table: &RoutingTable,
        args: &FrameArgs,
        src: Src,
        b: &mut Builder,
    ) -> (bool, u16) {
        let Some(top) = command::lookup(args.arg(0)) else {
            Stats::add(&self.shared.stats.errors_unsupported, 1);
            b.ready(resp::error_bytes(&command::unknown_command_bytes(args)));
            return (false, self.shared.commands.unknown() as u16);
        };
        let id = command::index_of(top).unwrap_or(self.shared.commands.unknown()) as u16;
        (self.dispatch_known(table, top, args, src, b), id)
    }

    fn dispatch_known(
        &mut self,
        table: &RoutingTable,
        top: &'static command::CommandSpec,
        args: &FrameArgs,
        src: Src,
        b: &mut Builder,
    ) -> bool {
        let spec = match top.resolve(args) {
            Ok(s) => s,
            Err(unknown) => {
                Stats::add(&self.shared.stats.errors_unsupported, 1);
                b.ready(resp::error_bytes(&unknown));
                return false;
            }
        };
        if !spec.arity_ok(args.count()) {
            b.ready(resp::error(&command::arity_error(spec)));
            return false;
        }
        if !self.authed
            && !matches!(
                spec.policy,
                Policy::Local(Local::Auth | Local::Hello | Local::Ping | Local::Quit)
            )
        {
            b.ready(Bytes::from_static(b"-NOAUTH Authentication required.\r\n"));
            return false;
        }
        // XREAD ... BLOCK blocks like BLPOP: argument-dependent, so checked here.
        let policy =
            if command::needs_pinning(spec, args) { Policy::NeedsPinning } else { spec.policy };
        match policy {
            Policy::Forward => match command::route(table, spec, args, &mut self.keys) {
                Ok(_) | Err(RouteError::CrossGroup)
                    if self.flux_check
                        && super::flux::touches(table, self.fence, args, &self.keys) =>
                {
                    self.enter = Some(Enter::Flux);
                }
                Ok(group) => {
                    let read_only = !spec.is_write() && spec.flags & command::flags::READONLY != 0;
                    self.forward_reply(b, group.unwrap_or(0), read_only, src);
                }
                Err(RouteError::CrossGroup) => {
                    Stats::add(&self.shared.stats.errors_crossslot, 1);
                    b.ready(Bytes::from_static(CROSSSLOT));
                }
                // FCALL looks the function up before it reads numkeys: a server answers
                // either error, without running anything.
                Err(RouteError::Syntax(_)) if spec.keys_proc == command::KeysProc::Fcall => {
                    self.forward_reply(b, 0, false, src)
                }
                Err(RouteError::Syntax(msg)) => b.ready(resp::error(&msg)),
            },
            Policy::AnyGroup => self.forward_reply(b, 0, false, src),
            Policy::ByChannel => {
                let group = table.group_for_key(args.arg(1));
                self.forward_reply(b, group, false, src);
            }
            Policy::Split(merge) => self.split(table, spec, args, src, merge, b),
            Policy::AllGroups(merge) => {
                self.fan_out(b, table.groups.len(), src, MergeKind::Router(merge, Vec::new()))
            }
            Policy::Local(local) => return self.local(local, table, spec, args, src, b),
            p @ (Policy::Admin(_) | Policy::SingleGroup) => {
                self.admin(p, table, spec, args, src, b)
            }
            Policy::Refused => {
                Stats::add(&self.shared.stats.errors_unsupported, 1);
                b.ready(resp::error(&format!(
                    "ERR keyhop: {} is not supported through the proxy",
                    display_name(spec.name)
                )));
            }
            Policy::NeedsPinning => {
                let kind = crate::pinned::Kind::of(spec);
                // A blocking command on a key in flux is refused: the blocking mode has no
                // step that moves keys first.
                if self.flux_check
                    && kind == crate::pinned::Kind::Blocking
                    && spec.keys(args, &mut self.keys).is_ok()
                    && let Some(reply) =
                        super::flux::refusal(table, self.fence, args, &self.keys, "the command")
                {
                    b.ready(reply);
                    return false;
                }
                self.enter = Some(Enter::Pinned(kind));
            }
        }
        false
    }

    fn split(
        &mut self,
        table: &RoutingTable,
        spec: &command::CommandSpec,
        args: &FrameArgs,
        src: Src,
        merge: Merge,
        b: &mut Builder,
    ) {
        // Malformed key lists (an odd MSET) are refused before any part is sent: a split must
        // never write some keys and fail the rest.
        if let Err(RouteError::Syntax(msg)) = spec.keys(args, &mut self.keys) {
            b.ready(resp::error(&msg));
            return;
        }
        if self.flux_check && super::flux::touches(table, self.fence, args, &self.keys) {
            self.enter = Some(Enter::Flux);
            return;
        }
        let plan = command::plan_split(table, spec, args);
        if plan.parts.len() <= 1 {
            let group = plan.parts.first().map(|p| p.group).unwrap_or(0);
            let read_only = !spec.is_write();
            self.forward_reply(b, group, read_only, src);
            return;
        }
        let name = args.arg(0);
        let mut parts = Vec::with_capacity(plan.parts.len());
        for part in &plan.parts {
            let frame =
                resp::command(std::iter::once(name).chain(part.args.iter().map(|&i| args.arg(i))));
            let (send, idx) = self.forward(b, part.group, !spec.is_write(), Src::Owned(frame));
            if send == u16::MAX {
                return;
            }
            parts.push((send, idx));
        }
        b.slots.push(Slot::Merge(Box::new(MergeSlot {
            kind: MergeKind::Router(merge, plan.order),
            parts,
        })));
    }
}
