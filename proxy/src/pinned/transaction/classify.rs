//! Where a command of a transaction may run: a transaction runs on one group's master, so each
//! queued command is checked against that group before it is queued (as Redis checks a command
//! before answering `+QUEUED`), and keyhop's own or spread-out commands are refused up front.

use bytes::Bytes;
use keyhop_router::command::{self, Local, Policy, RouteError};
use keyhop_router::{Args, GroupId, RoutingTable};

use super::super::Command;
use crate::resp;
use crate::session::{Session, display_name, flux};
use crate::stats::Stats;

/// Where one command may run inside a transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Class {
    /// No key: any group's server gives the same answer.
    Keyless,
    /// Every key is in this group.
    Group(GroupId),
    /// Keys in more than one group.
    Cross,
    /// Refused at queue time with this reply (unknown command, wrong arity, not allowed in a
    /// transaction, or something keyhop cannot run on one server); EXEC then aborts.
    Refuse(Bytes),
}

/// Classifies `cmd` (any command but the transaction's own MULTI/EXEC/DISCARD/WATCH).
pub(super) fn classify(session: &Session, table: &RoutingTable, cmd: &Command) -> Class {
    let stats = &session.shared.stats;
    let Some(top) = command::lookup(cmd.arg(0)) else {
        Stats::add(&stats.errors_unsupported, 1);
        return Class::Refuse(resp::error_bytes(&command::unknown_command_bytes(cmd)));
    };
    let spec = match top.resolve(cmd) {
        Ok(s) => s,
        Err(unknown) => return Class::Refuse(resp::error_bytes(&unknown)),
    };
    if !spec.arity_ok(cmd.count()) {
        return Class::Refuse(resp::error(&command::arity_error(spec)));
    }
    if spec.flags & command::flags::NO_MULTI != 0 {
        return Class::Refuse(resp::error("ERR Command not allowed inside a transaction"));
    }
    let name = display_name(spec.name);
    let groups = table.groups.len();
    let spans_groups = || {
        Stats::add(&stats.errors_unsupported, 1);
        Class::Refuse(resp::error(&format!(
            "ERR keyhop: {name} inside MULTI would span {groups} groups, but a transaction runs on one group's server (run it outside the transaction)"
        )))
    };
    let unsupported = |how: &str| {
        Stats::add(&stats.errors_unsupported, 1);
        Class::Refuse(resp::error(&format!(
            "ERR keyhop: {name} inside MULTI is not supported through the proxy ({how})"
        )))
    };
    let mut keys = Vec::new();
    let fence = session.shared.fence_at(std::time::Instant::now());
    match spec.policy {
        Policy::NeedsPinning if spec.flags & command::flags::PUBSUB != 0 => {
            unsupported("subscribe outside the transaction")
        }
        // Blocking commands don't block inside a transaction; XREAD ... BLOCK neither.
        Policy::Forward | Policy::NeedsPinning => by_keys(table, fence, spec, cmd, &mut keys),
        Policy::SingleGroup if groups == 1 => by_keys(table, fence, spec, cmd, &mut keys),
        Policy::SingleGroup => spans_groups(),
        Policy::AnyGroup => Class::Keyless,
        Policy::ByChannel => Class::Group(table.group_for_key(cmd.arg(1))),
        Policy::Split(_) => match by_keys(table, fence, spec, cmd, &mut keys) {
            Class::Cross => {
                Stats::add(&stats.errors_crossslot, 1);
                Class::Refuse(resp::error(&format!(
                    "ERR keyhop: {name} inside MULTI needs all its keys in one group, as a transaction runs on one group's server (use a {{hash tag}})"
                )))
            }
            c => c,
        },
        Policy::AllGroups(_) if groups == 1 => Class::Keyless,
        Policy::AllGroups(_) => spans_groups(),
        Policy::Local(Local::Ping | Local::Echo | Local::Time | Local::Command) => Class::Keyless,
        Policy::Local(Local::Flush) if !session.shared.settings.load().allow_flush => {
            Stats::add(&stats.errors_unsupported, 1);
            Class::Refuse(resp::error(&format!(
                "ERR keyhop: {name} is refused by the proxy (set allow_flush = true in the config to allow it)"
            )))
        }
        Policy::Local(Local::Flush | Local::Scan | Local::RandomKey) if groups == 1 => {
            Class::Keyless
        }
        Policy::Local(Local::Flush | Local::Scan | Local::RandomKey) => spans_groups(),
        Policy::Local(_) | Policy::Admin(_) => unsupported("send it before MULTI or after EXEC"),
        Policy::Refused => {
            Stats::add(&stats.errors_unsupported, 1);
            Class::Refuse(resp::error(&format!(
                "ERR keyhop: {name} is not supported through the proxy"
            )))
        }
    }
}

/// The group of a command's keys. Malformed key lists (a bad numkeys) count as keyless: the
/// server answers them with its own error, at EXEC as Redis does.
fn by_keys(
    table: &RoutingTable,
    fence: u8,
    spec: &command::CommandSpec,
    cmd: &Command,
    keys: &mut Vec<usize>,
) -> Class {
    let routed = command::route(table, spec, cmd, keys);
    // A key on a slot in flux: a transaction cannot move its keys first (its commands run at
    // EXEC, on one server), so it is refused and EXEC aborts.
    if (table.flux.is_some() || fence >= 2)
        && let Some(reply) = flux::refusal(table, fence, cmd, keys, "the transaction")
    {
        return Class::Refuse(reply);
    }
    match routed {
        Ok(Some(g)) => Class::Group(g),
        Ok(None) | Err(RouteError::Syntax(_)) => Class::Keyless,
        Err(RouteError::CrossGroup) => Class::Cross,
    }
}

/// The group of WATCH's keys (`Cross` when they span groups, `Refuse` for a wrong arity).
pub(super) fn watch_keys(table: &RoutingTable, fence: u8, cmd: &Command) -> Class {
    let Some(spec) = command::lookup(b"watch") else {
        return Class::Refuse(resp::error("ERR keyhop: internal error (no WATCH in the table)"));
    };
    if !spec.arity_ok(cmd.count()) {
        return Class::Refuse(resp::error(&command::arity_error(spec)));
    }
    by_keys(table, fence, spec, cmd, &mut Vec::new())
}
