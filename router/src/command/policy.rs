//! The policy overlay: how keyhop treats every command and subcommand of the generated table.
//!
//! The lists are exhaustive on purpose. `of` runs at compile time for every generated entry and
//! a command missing here fails the build (a regenerated table with a new command forces a
//! decision). `container|*` covers every subcommand of a container; use it only where the answer
//! cannot depend on the subcommand (CLIENT is answered locally, CLUSTER is refused, ...).
//! Unit tests check that no entry is stale or listed twice. docs/commands.md explains the choices.

use super::{AdminFanout, Local, Merge, Policy};

/// Keyed data commands: sent to the group owning all their keys (CROSSSLOT across groups).
/// EVAL/EVALSHA/FCALL and their `_ro` forms with no keys route nowhere (`route` gives `None`);
/// the proxy sends them to the first group. SORT's BY/GET patterns are read on the group of
/// the sorted key only. XREAD/XREADGROUP need pinning when BLOCK is given (`needs_pinning`).
const FORWARD: &[&str] = &[
    "append",
    "bitcount",
    "bitfield",
    "bitfield_ro",
    "bitop",
    "bitpos",
    "copy",
    "decr",
    "decrby",
    "dump",
    "eval",
    "eval_ro",
    "evalsha",
    "evalsha_ro",
    "expire",
    "expireat",
    "expiretime",
    "fcall",
    "fcall_ro",
    "geoadd",
    "geodist",
    "geohash",
    "geopos",
    "georadius",
    "georadius_ro",
    "georadiusbymember",
    "georadiusbymember_ro",
    "geosearch",
    "geosearchstore",
    "get",
    "getbit",
    "getdel",
    "getex",
    "getrange",
    "getset",
    "hdel",
    "hexists",
    "hget",
    "hgetall",
    "hincrby",
    "hincrbyfloat",
    "hkeys",
    "hlen",
    "hmget",
    "hmset",
    "hrandfield",
    "hscan",
    "hset",
    "hsetnx",
    "hstrlen",
    "hvals",
    "incr",
    "incrby",
    "incrbyfloat",
    "lcs",
    "lindex",
    "linsert",
    "llen",
    "lmove",
    "lmpop",
    "lpop",
    "lpos",
    "lpush",
    "lpushx",
    "lrange",
    "lrem",
    "lset",
    "ltrim",
    "memory|usage",
    "msetnx",
    "object|freq",
    "object|refcount",
    "object|encoding",
    "object|idletime",
    "persist",
    "pexpire",
    "pexpireat",
    "pexpiretime",
    "pfadd",
    "pfcount",
    "pfmerge",
    "psetex",
    "pttl",
    "rename",
    "renamenx",
    "restore",
    "rpop",
    "rpoplpush",
    "rpush",
    "rpushx",
    "sadd",
    "scard",
    "sdiff",
    "sdiffstore",
    "set",
    "setbit",
    "setex",
    "setnx",
    "setrange",
    "sinter",
    "sintercard",
    "sinterstore",
    "sismember",
    "smembers",
    "smismember",
    "smove",
    "sort",
    "sort_ro",
    "spop",
    "srandmember",
    "srem",
    "sscan",
    "strlen",
    "substr",
    "sunion",
    "sunionstore",
    "ttl",
    "type",
    "xack",
    "xadd",
    "xautoclaim",
    "xclaim",
    "xdel",
    "xgroup|createconsumer",
    "xgroup|destroy",
    "xgroup|delconsumer",
    "xgroup|create",
    "xgroup|setid",
    "xinfo|stream",
    "xinfo|groups",
    "xinfo|consumers",
    "xlen",
    "xpending",
    "xrange",
    "xread",
    "xreadgroup",
    "xrevrange",
    "xsetid",
    "xtrim",
    "zadd",
    "zcard",
    "zcount",
    "zdiff",
    "zdiffstore",
    "zincrby",
    "zinter",
    "zintercard",
    "zinterstore",
    "zlexcount",
    "zmpop",
    "zmscore",
    "zpopmax",
    "zpopmin",
    "zrandmember",
    "zrange",
    "zrangebylex",
    "zrangebyscore",
    "zrangestore",
    "zrank",
    "zrem",
    "zremrangebylex",
    "zremrangebyrank",
    "zremrangebyscore",
    "zrevrange",
    "zrevrangebylex",
    "zrevrangebyscore",
    "zrevrank",
    "zscan",
    "zscore",
    "zunion",
    "zunionstore",
];

/// Keyless and harmless: sent to the first group's master. Server-wide views (LATENCY, MEMORY
/// STATS, FUNCTION LIST/STATS/DUMP, CONFIG GET) therefore
/// describe that one server only. FUNCTION DUMP is representative because FUNCTION LOAD/RESTORE
/// go to every group. A container's own entry is only reached when its arity fails (no
/// subcommand given).
const ANY_GROUP: &[&str] = &[
    "lastsave",
    "lolwut",
    "config",
    "config|get",
    "config|help",
    "latency",
    "latency|doctor",
    "latency|graph",
    "latency|help",
    "latency|histogram",
    "latency|history",
    "latency|latest",
    "memory",
    "memory|doctor",
    "memory|help",
    "memory|malloc-stats",
    "memory|stats",
    "function",
    "function|dump",
    "function|help",
    "function|list",
    "function|stats",
    "pubsub",
    "pubsub|*",
    "object",
    "object|help",
    "xinfo",
    "xinfo|help",
    "xgroup",
    "xgroup|help",
    "script",
    "script|help",
];

/// Served on a dedicated backend connection of the client's own (transactions, pub/sub, blocking):
/// the proxy's pinned modes.
const NEEDS_PINNING: &[&str] = &[
    "multi",
    "exec",
    "discard",
    "watch",
    "unwatch",
    "subscribe",
    "psubscribe",
    "ssubscribe",
    "unsubscribe",
    "punsubscribe",
    "sunsubscribe",
    "blpop",
    "brpop",
    "blmove",
    "brpoplpush",
    "blmpop",
    "bzpopmin",
    "bzpopmax",
    "bzmpop",
    "wait",
];

/// Administrative and server-wide: refused unless `allow_admin` is set, then sent to every
/// group's master; `+OK` only when every master succeeded.
const ADMIN_MASTERS: &[&str] = &[
    "bgrewriteaof",
    "bgsave",
    "config|resetstat",
    "config|rewrite",
    "latency|reset",
    "memory|purge",
    "save",
];

/// Never through the proxy: they act on one server's global state, replication or cluster
/// topology, or are only meaningful between servers. ROLE is refused because it would expose a
/// backend's replication view as if it were keyhop's. SCRIPT DEBUG needs a dedicated connection.
/// The administrative commands an operator may want across every server are `ADMIN_MASTERS`
/// and the `Policy::Admin` entries of `OTHER` instead.
const REFUSED: &[&str] = &[
    "acl",
    "acl|*",
    "asking",
    "cluster",
    "cluster|*",
    "failover",
    "migrate",
    "module",
    "module|*",
    "monitor",
    "pfdebug",
    "pfselftest",
    "psync",
    "readonly",
    "readwrite",
    "replconf",
    "replicaof",
    "restore-asking",
    "role",
    "script|debug",
    "shutdown",
    "slaveof",
    "sync",
];

/// Everything else, with its own policy.
pub(super) const OTHER: &[(&str, Policy)] = &[
    ("mget", Policy::Split(Merge::Mget)),
    ("mset", Policy::Split(Merge::AllOk)),
    ("del", Policy::Split(Merge::SumIntegers)),
    ("unlink", Policy::Split(Merge::SumIntegers)),
    ("exists", Policy::Split(Merge::SumIntegers)),
    ("touch", Policy::Split(Merge::SumIntegers)),
    ("ping", Policy::Local(Local::Ping)),
    ("echo", Policy::Local(Local::Echo)),
    ("quit", Policy::Local(Local::Quit)),
    ("select", Policy::Local(Local::Select)),
    ("hello", Policy::Local(Local::Hello)),
    ("auth", Policy::Local(Local::Auth)),
    ("reset", Policy::Local(Local::Reset)),
    ("client", Policy::Local(Local::Client)),
    ("client|*", Policy::Local(Local::Client)),
    ("command", Policy::Local(Local::Command)),
    ("command|*", Policy::Local(Local::Command)),
    ("time", Policy::Local(Local::Time)),
    ("scan", Policy::Local(Local::Scan)),
    ("randomkey", Policy::Local(Local::RandomKey)),
    ("flushall", Policy::Local(Local::Flush)),
    ("flushdb", Policy::Local(Local::Flush)),
    ("info", Policy::Local(Local::Info)),
    ("slowlog", Policy::Local(Local::Slowlog)),
    ("slowlog|*", Policy::Local(Local::Slowlog)),
    ("dbsize", Policy::AllGroups(Merge::SumIntegers)),
    ("keys", Policy::AllGroups(Merge::ConcatArrays)),
    ("script|load", Policy::AllGroups(Merge::First)),
    ("script|flush", Policy::AllGroups(Merge::First)),
    ("script|exists", Policy::AllGroups(Merge::MinElementwise)),
    ("function|load", Policy::AllGroups(Merge::First)),
    ("function|delete", Policy::AllGroups(Merge::First)),
    ("function|flush", Policy::AllGroups(Merge::First)),
    ("function|restore", Policy::AllGroups(Merge::First)),
    // A setting must reach the replicas too: a replica promoted by a failover keeps its own.
    ("config|set", Policy::Admin(AdminFanout::MastersAndReplicas)),
    // Any group may be running the script; only one of them can have something to kill.
    ("script|kill", Policy::Admin(AdminFanout::Kill)),
    ("function|kill", Policy::Admin(AdminFanout::Kill)),
    // DEBUG is not a container: its keyed forms (OBJECT, DIGEST-VALUE ...) are found by
    // `route_debug`.
    ("debug", Policy::Admin(AdminFanout::Debug)),
    // Databases span every group: moving a key between them, or swapping two, is one server's
    // operation only when that server holds every key.
    ("move", Policy::SingleGroup),
    ("swapdb", Policy::SingleGroup),
    ("publish", Policy::ByChannel),
    ("spublish", Policy::ByChannel),
    // Every group holds some of the channels (by slot) and every pattern (keyhop subscribes a
    // pattern on every group). These exact entries take precedence over ANY_GROUP's `pubsub|*`.
    ("pubsub|channels", Policy::AllGroups(Merge::UnionArrays)),
    ("pubsub|shardchannels", Policy::AllGroups(Merge::UnionArrays)),
    ("pubsub|numsub", Policy::AllGroups(Merge::SumPairs)),
    ("pubsub|shardnumsub", Policy::AllGroups(Merge::SumPairs)),
    ("pubsub|numpat", Policy::AllGroups(Merge::MaxInteger)),
];

/// Every list with the policy it gives, for [`of`] and the tests.
pub(super) const LISTS: &[(&[&str], Policy)] = &[
    (FORWARD, Policy::Forward),
    (ANY_GROUP, Policy::AnyGroup),
    (NEEDS_PINNING, Policy::NeedsPinning),
    (ADMIN_MASTERS, Policy::Admin(AdminFanout::Masters)),
    (REFUSED, Policy::Refused),
];

/// The policy of `name` (`container|sub` for a subcommand). Evaluated at compile time by the
/// generated table: a name with no entry is a build error.
pub(super) const fn of(name: &str) -> Policy {
    if let Some(p) = find(name, false) {
        return p;
    }
    if let Some(p) = find(name, true) {
        return p;
    }
    panic!("a command has no policy: add it to router/src/command/policy.rs");
}

/// Looks `name` up in every list, exactly or (with `wildcard`) against `container|*` entries.
const fn find(name: &str, wildcard: bool) -> Option<Policy> {
    let mut l = 0;
    while l < LISTS.len() {
        let (names, policy) = LISTS[l];
        let mut i = 0;
        while i < names.len() {
            if matches(names[i], name, wildcard) {
                return Some(policy);
            }
            i += 1;
        }
        l += 1;
    }
    let mut i = 0;
    while i < OTHER.len() {
        if matches(OTHER[i].0, name, wildcard) {
            return Some(OTHER[i].1);
        }
        i += 1;
    }
    None
}

/// True when `pattern` names `name`: equal, or (with `wildcard`) `container|*` and `name` is a
/// subcommand of that container.
pub(super) const fn matches(pattern: &str, name: &str, wildcard: bool) -> bool {
    let (p, n) = (pattern.as_bytes(), name.as_bytes());
    if !wildcard {
        return bytes_eq(p, n);
    }
    let plen = p.len();
    if plen < 2 || p[plen - 1] != b'*' || p[plen - 2] != b'|' || n.len() < plen {
        return false;
    }
    // Compare the `container|` prefix.
    let mut i = 0;
    while i < plen - 1 {
        if p[i] != n[i] {
            return false;
        }
        i += 1;
    }
    true
}

/// Byte equality usable in `const fn`.
pub(super) const fn bytes_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let mut i = 0;
    while i < a.len() {
        if a[i] != b[i] {
            return false;
        }
        i += 1;
    }
    true
}
