//! The command table: for every Redis 7.0 command its arity, flags, key positions and how keyhop
//! treats it (forward, split, answer locally, refuse).
//!
//! The table itself (`generated.rs`) is generated from a live redis-server 7.0.15 by
//! `router/gen/gen_commands.py`; the policies are hand-written in `policy.rs`, and key logic the
//! key specs cannot express lives in `keys.rs`. docs/commands.md lists every command's policy.

#[rustfmt::skip]
mod errors;
mod generated;
mod keys;
mod policy;
#[cfg(test)]
mod tests;

pub use errors::{
    arity_error, unknown_command_bytes, unknown_command_error, unknown_subcommand_bytes,
};
pub use generated::{REDIS_VERSION, TOTAL_COMMANDS};
pub use keys::{KeysProc, parse_i64};

use crate::table::{GroupId, RoutingTable};

/// Arguments of one command as the proxy sees them; index 0 is the command name.
pub trait Args {
    /// Number of arguments, the command name included.
    fn count(&self) -> usize;
    /// Argument `i` (0 is the command name). Panics if `i >= count()`.
    fn arg(&self, i: usize) -> &[u8];
}

impl Args for [&[u8]] {
    fn count(&self) -> usize {
        self.len()
    }
    fn arg(&self, i: usize) -> &[u8] {
        self[i]
    }
}

impl Args for Vec<Vec<u8>> {
    fn count(&self) -> usize {
        self.len()
    }
    fn arg(&self, i: usize) -> &[u8] {
        &self[i]
    }
}

/// Command flags, as `COMMAND INFO` lists them (bit set).
pub mod flags {
    /// May modify the dataset.
    pub const WRITE: u32 = 1 << 0;
    /// Reads only; may be served by a replica.
    pub const READONLY: u32 = 1 << 1;
    /// Administrative.
    pub const ADMIN: u32 = 1 << 2;
    /// Pub/sub related.
    pub const PUBSUB: u32 = 1 << 3;
    /// May block the connection.
    pub const BLOCKING: u32 = 1 << 4;
    /// Keys cannot be found from the fixed first/last/step alone.
    pub const MOVABLEKEYS: u32 = 1 << 5;
    /// O(1) or O(log N) command.
    pub const FAST: u32 = 1 << 6;
    /// May grow memory (refused under OOM).
    pub const DENYOOM: u32 = 1 << 7;
    /// Not allowed in scripts.
    pub const NOSCRIPT: u32 = 1 << 8;
    /// Allowed while the server loads.
    pub const LOADING: u32 = 1 << 9;
    /// Allowed on a stale replica.
    pub const STALE: u32 = 1 << 10;
    /// Does not require authentication.
    pub const NO_AUTH: u32 = 1 << 11;
    /// Not propagated to MONITOR clients.
    pub const SKIP_MONITOR: u32 = 1 << 12;
    /// Not logged in SLOWLOG.
    pub const SKIP_SLOWLOG: u32 = 1 << 13;
    /// Allowed on a cluster node importing a slot after ASKING.
    pub const ASKING: u32 = 1 << 14;
    /// Not allowed inside MULTI.
    pub const NO_MULTI: u32 = 1 << 15;
    /// May run with no key at all although it has key specs (EVAL with numkeys 0).
    pub const NO_MANDATORY_KEYS: u32 = 1 << 16;
    /// Allowed while a script or module blocks the server.
    pub const ALLOW_BUSY: u32 = 1 << 17;
    /// Refused during an asynchronous replica load.
    pub const NO_ASYNC_LOADING: u32 = 1 << 18;
    /// May replicate even when read-only (not used by 7.0's built-in commands).
    pub const MAY_REPLICATE: u32 = 1 << 19;
    /// Implemented by a module (never in the generated table).
    pub const MODULE: u32 = 1 << 20;
}

/// Key-spec flags, as `COMMAND INFO` lists them (bit set).
pub mod key_flags {
    /// Read-only access to the key.
    pub const RO: u32 = 1 << 0;
    /// Read-write access.
    pub const RW: u32 = 1 << 1;
    /// Overwrites the key.
    pub const OW: u32 = 1 << 2;
    /// Removes the key.
    pub const RM: u32 = 1 << 3;
    /// Returns, copies or uses the user data of the key.
    pub const ACCESS: u32 = 1 << 4;
    /// Updates the data stored in the key.
    pub const UPDATE: u32 = 1 << 5;
    /// Only adds data to the key.
    pub const INSERT: u32 = 1 << 6;
    /// Only deletes data from the key.
    pub const DELETE: u32 = 1 << 7;
    /// Not a key (SPUBLISH's shard channel): skipped when extracting keys.
    pub const NOT_KEY: u32 = 1 << 8;
    /// The spec may miss keys: the command's own logic decides (MIGRATE).
    pub const INCOMPLETE: u32 = 1 << 9;
    /// Flags depend on the arguments (SET with GET, BITFIELD).
    pub const VARIABLE_FLAGS: u32 = 1 << 10;
}

/// How keyhop treats a command.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Policy {
    /// Sent to the group that owns all its keys; refused with CROSSSLOT when keys span groups.
    Forward,
    /// Keyless and harmless: sent to the first group's master.
    AnyGroup,
    /// Routed by the slot of argument 1 (a channel name, e.g. PUBLISH).
    ByChannel,
    /// Keys split per group, sent in parallel, replies merged.
    Split(Merge),
    /// Sent to every group's master, replies merged.
    AllGroups(Merge),
    /// Answered (or orchestrated) by keyhop itself.
    Local(Local),
    /// Never through the proxy.
    Refused,
    /// Served on a dedicated backend connection (transactions, pub/sub, blocking; proxy/src/pinned).
    NeedsPinning,
    /// Administrative and server-wide: refused unless the `allow_admin` setting is on, then
    /// sent where [`AdminFanout`] says.
    Admin(AdminFanout),
    /// Acts on a server's numbered databases, which hold only that group's keys (MOVE, SWAPDB):
    /// forwarded when the table has exactly one group, refused otherwise.
    SingleGroup,
}

/// Where an administrative command goes once `allow_admin` lets it through.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AdminFanout {
    /// Every group's master; succeeds only when every master did (SAVE, CONFIG RESETSTAT ...).
    Masters,
    /// Every group's master and every healthy replica (CONFIG SET).
    MastersAndReplicas,
    /// Every group's master; succeeds when any of them killed a script (SCRIPT/FUNCTION KILL).
    Kill,
    /// DEBUG: forms that read keys go to the keys' group, the others to every master (see
    /// [`route_debug`]).
    Debug,
}

/// Where an allowed DEBUG goes, from its subcommand.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DebugRoute {
    /// A form that reads keys (OBJECT, DIGEST-VALUE, SDSLEN, LISTPACK, QUICKLIST, HTSTATS-KEY):
    /// the group owning them, `None` when no key is given (DIGEST-VALUE alone).
    Keys(Option<GroupId>),
    /// POPULATE writes keys named by the server, whichever group owns their slots.
    CreatesKeys,
    /// Every other form acts on the server as a whole: every master.
    Servers,
}

/// How the replies of a split or fanned-out command are merged into one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Merge {
    /// Arrays re-assembled in the original key order (MGET).
    Mget,
    /// `+OK` when every part answered `+OK` (MSET, FLUSHALL).
    AllOk,
    /// Integer replies added up (DEL, EXISTS, DBSIZE ...).
    SumIntegers,
    /// Arrays concatenated (KEYS).
    ConcatArrays,
    /// Every part must succeed; the first part's reply is returned (SCRIPT LOAD).
    First,
    /// Arrays of integers combined element-wise with min (SCRIPT EXISTS).
    MinElementwise,
    /// Arrays joined without duplicates, in first-seen order (PUBSUB CHANNELS/SHARDCHANNELS).
    UnionArrays,
    /// `[name, count, ...]` arrays with the same names in the same order: counts added up per
    /// name (PUBSUB NUMSUB/SHARDNUMSUB).
    SumPairs,
    /// The largest integer reply (PUBSUB NUMPAT: every keyhop pattern is on every group).
    MaxInteger,
}

/// Commands keyhop answers or orchestrates itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Local {
    /// PING.
    Ping,
    /// ECHO.
    Echo,
    /// QUIT.
    Quit,
    /// SELECT (the database is per client connection).
    Select,
    /// HELLO (protocol version and client name).
    Hello,
    /// AUTH against keyhop's own credentials.
    Auth,
    /// RESET of the client connection's state.
    Reset,
    /// Every CLIENT subcommand: answered for the client's connection or refused.
    Client,
    /// COMMAND and its subcommands, answered from this table.
    Command,
    /// TIME.
    Time,
    /// SCAN across groups (the cursor carries the group).
    Scan,
    /// RANDOMKEY from some group.
    RandomKey,
    /// FLUSHALL/FLUSHDB, allowed only by the `allow_flush` setting.
    Flush,
    /// INFO.
    Info,
    /// SLOWLOG and its subcommands.
    Slowlog,
}

/// One key spec from `COMMAND INFO` (Redis 7 key specifications).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeySpec {
    /// Where the search for keys begins.
    pub begin: BeginSearch,
    /// How keys are found from there.
    pub find: FindKeys,
    /// Key-spec flags (RW, RO, OW, RM, INCOMPLETE ...) as a bit set.
    pub flags: u32,
}

/// `begin_search` of a key spec.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BeginSearch {
    /// Keys start at a fixed argument index.
    Index(i32),
    /// Keys start after a keyword, searched from `startfrom` (negative: from the end).
    Keyword { keyword: &'static str, startfrom: i32 },
    /// Unknown: the command's own logic decides.
    Unknown,
}

/// `find_keys` of a key spec.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FindKeys {
    /// Keys up to `lastkey` (negative: from the end), every `step`, at most `limit`-th of the rest.
    Range { lastkey: i32, step: i32, limit: i32 },
    /// The number of keys is an argument at `keynumidx`; keys start at `firstkey` after it.
    Keynum { keynumidx: i32, firstkey: i32, step: i32 },
    /// Unknown: the command's own logic decides.
    Unknown,
}

/// A command's entry in the table.
#[derive(Debug)]
pub struct CommandSpec {
    /// Lower-case name; a subcommand is `container|sub` (as Redis 7 names it).
    pub name: &'static str,
    /// Redis arity: positive is exact, negative is a minimum (command name included).
    pub arity: i32,
    /// [`flags`] bit set.
    pub flags: u32,
    /// Key specifications.
    pub key_specs: &'static [KeySpec],
    /// Subcommands of a container command (CLIENT, OBJECT, XINFO ...).
    pub subcommands: &'static [CommandSpec],
    /// How keyhop treats it.
    pub policy: Policy,
    /// Legacy first key position from `COMMAND` (0: none).
    pub first_key: i32,
    /// Legacy last key position (negative: from the end).
    pub last_key: i32,
    /// Legacy step between keys.
    pub key_step: i32,
    /// Key logic beyond the key specs.
    pub keys_proc: KeysProc,
}

/// Why keys could not be extracted or routed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RouteError {
    /// Keys span more than one group.
    CrossGroup,
    /// The command's arguments are malformed (e.g. numkeys larger than the arguments): the
    /// message, without `-`, is the reply to send.
    Syntax(String),
}

/// Looks a command up by name, case-insensitively, without allocating.
///
/// A perfect hash (built by the generator) picks the only candidate, which is then compared.
#[inline]
pub fn lookup(name: &[u8]) -> Option<&'static CommandSpec> {
    if name.is_empty() || name.len() > generated::MAX_NAME_LEN {
        return None;
    }
    let h = hash_name(name);
    let d = generated::DISP[(h >> (64 - generated::DISP_BITS)) as usize];
    let slot = (h ^ u64::from(d)).wrapping_mul(HASH_MIX) >> (64 - generated::SLOT_BITS);
    let idx = generated::SLOTS[slot as usize];
    let spec = generated::COMMANDS.get(usize::from(idx))?;
    spec.name.as_bytes().eq_ignore_ascii_case(name).then_some(spec)
}

/// Looks up a command or a subcommand written `container|sub` (as Redis 7 names them).
pub fn lookup_full(name: &[u8]) -> Option<&'static CommandSpec> {
    match name.iter().position(|&b| b == b'|') {
        None => lookup(name),
        Some(bar) => {
            let container = lookup(&name[..bar])?;
            let sub = &name[bar + 1..];
            container.subcommands.iter().find(|s| s.sub_name().eq_ignore_ascii_case(sub))
        }
    }
}

/// Every top-level command, sorted by name (subcommands hang off their container).
pub fn commands() -> &'static [CommandSpec] {
    &generated::COMMANDS
}

/// Multiplier that spreads the displaced hash over the slots (golden ratio).
const HASH_MIX: u64 = 0x9E37_79B9_7F4A_7C15;
const SEED0: u64 = 0x243F_6A88_85A3_08D3;
const SEED1: u64 = 0x1319_8A2E_0370_7344;
const SEED2: u64 = 0xA409_3822_299F_31D0;
/// `| 0x20` on every byte lower-cases ASCII letters.
const LOWER: u64 = 0x2020_2020_2020_2020;

/// 64x64->128 multiply, high and low halves xor-ed.
#[inline(always)]
fn fold(a: u64, b: u64) -> u64 {
    let r = u128::from(a) * u128::from(b);
    (r as u64) ^ ((r >> 64) as u64)
}

#[inline(always)]
fn read_u64(s: &[u8], at: usize) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&s[at..at + 8]);
    u64::from_le_bytes(w) | LOWER
}

#[inline(always)]
fn read_u32(s: &[u8], at: usize) -> u64 {
    let mut w = [0u8; 4];
    w.copy_from_slice(&s[at..at + 4]);
    u64::from(u32::from_le_bytes(w) | LOWER as u32)
}

/// Case-insensitive hash of a name of at most 24 bytes; gen_commands.py computes the same.
///
/// Whole (overlapping) words instead of a byte loop: a per-byte hash costs one dependent
/// multiply per byte. Only ASCII letters are folded; the caller compares the candidate, so
/// other bytes only need to hash consistently.
#[inline]
fn hash_name(name: &[u8]) -> u64 {
    let n = name.len();
    let (a, b) = if n >= 8 {
        (read_u64(name, 0), read_u64(name, n - 8))
    } else if n >= 4 {
        (read_u32(name, 0), read_u32(name, n - 4))
    } else if n > 0 {
        let byte = |i: usize| u64::from(name[i] | 0x20);
        (byte(0) | byte(n / 2) << 8 | byte(n - 1) << 16, 0)
    } else {
        (0, 0)
    };
    let c = if n > 16 { read_u64(name, 8) } else { 0 };
    fold(a ^ SEED0, b ^ SEED1 ^ n as u64) ^ fold(c ^ SEED2, HASH_MIX)
}

/// True when XREAD/XREADGROUP arguments or the policy need a dedicated backend connection: the
/// policy is `NeedsPinning`, or the command is XREAD/XREADGROUP with a BLOCK option.
pub fn needs_pinning<A: Args + ?Sized>(spec: &CommandSpec, args: &A) -> bool {
    spec.policy == Policy::NeedsPinning
        || (spec.keys_proc == KeysProc::Xread && keys::xread_blocks(args))
}

impl CommandSpec {
    /// True when `argc` (command name included) satisfies the arity.
    pub fn arity_ok(&self, argc: usize) -> bool {
        if self.arity >= 0 { argc == self.arity as usize } else { argc >= (-self.arity) as usize }
    }

    /// For a container command, the subcommand named by argument 1; otherwise `self`.
    /// `Err` is Redis's error for an unknown subcommand, as the bytes clients get (a name that
    /// is not UTF-8 is echoed unchanged).
    ///
    /// As in Redis, a container given no argument resolves to itself (its arity then fails,
    /// except COMMAND which runs without one).
    pub fn resolve<A: Args + ?Sized>(
        &'static self,
        args: &A,
    ) -> Result<&'static CommandSpec, Vec<u8>> {
        if self.subcommands.is_empty() || args.count() < 2 {
            return Ok(self);
        }
        let sub = args.arg(1);
        match self.subcommands.iter().find(|s| s.sub_name().eq_ignore_ascii_case(sub)) {
            Some(s) => Ok(s),
            None if self.name == "client" && sub.eq_ignore_ascii_case(b"setinfo") => {
                Ok(&CLIENT_SETINFO)
            }
            None => Err(unknown_subcommand_bytes(self, sub)),
        }
    }

    /// The part of a subcommand's name after `container|` (the whole name for a command).
    pub fn sub_name(&self) -> &'static [u8] {
        let name = self.name.as_bytes();
        match name.iter().position(|&b| b == b'|') {
            Some(bar) => &name[bar + 1..],
            None => name,
        }
    }

    /// Pushes the argument indexes of every key into `out` (cleared first), in key-spec order
    /// as `COMMAND GETKEYS` lists them.
    ///
    /// `self` must be the resolved spec (see [`CommandSpec::resolve`]). Errors are the replies
    /// Redis gives for the same arguments: the arity error, and for movable-key commands a bad
    /// numkeys, an odd MSET, an unbalanced XREAD. SORT's BY/GET patterns are not keys; NOT_KEY
    /// specs (SPUBLISH's channel) are skipped.
    pub fn keys<A: Args + ?Sized>(&self, args: &A, out: &mut Vec<usize>) -> Result<(), RouteError> {
        out.clear();
        if !self.arity_ok(args.count()) {
            return Err(RouteError::Syntax(arity_error(self)));
        }
        // Most commands have a single key at a fixed index: skip the generic interpreter.
        if let [
            KeySpec {
                begin: BeginSearch::Index(i),
                find: FindKeys::Range { lastkey: 0, .. },
                flags,
            },
        ] = self.key_specs
            && self.keys_proc == KeysProc::Specs
            && flags & key_flags::NOT_KEY == 0
            && let Ok(i) = usize::try_from(*i)
            && i < args.count()
        {
            out.push(i);
            return Ok(());
        }
        self.find_keys(args, out)
    }

    /// True when the command writes (never sent to a replica).
    pub fn is_write(&self) -> bool {
        self.flags & flags::WRITE != 0
    }
}

/// The group owning every key of a `Forward` command; `None` for a keyless command.
///
/// `spec` must be resolved; `scratch` receives the key indexes (as [`CommandSpec::keys`]). Only
/// the group matters, not the slot: keys in different slots of one group are fine. A `ByChannel`
/// command routes by the slot of its channel (argument 1). Keyless EVAL/EVALSHA/FCALL (numkeys
/// 0) give `None`: the proxy sends them to the first group.
pub fn route<A: Args + ?Sized>(
    table: &RoutingTable,
    spec: &CommandSpec,
    args: &A,
    scratch: &mut Vec<usize>,
) -> Result<Option<GroupId>, RouteError> {
    if spec.policy == Policy::ByChannel {
        scratch.clear();
        if !spec.arity_ok(args.count()) {
            return Err(RouteError::Syntax(arity_error(spec)));
        }
        return Ok(Some(table.group_for_key(args.arg(1))));
    }
    spec.keys(args, scratch)?;
    owning_group(table, args, scratch)
}

/// Where DEBUG `args` go (see [`DebugRoute`]); keys spanning groups are `CrossGroup`.
///
/// DEBUG has no key specs (`COMMAND GETKEYS` finds no key in it), so its keys are found here
/// rather than by [`CommandSpec::keys`]. A keyed form with the wrong number of arguments gets
/// Redis's own error text, since there is no key to route it by.
pub fn route_debug<A: Args + ?Sized>(
    table: &RoutingTable,
    args: &A,
    scratch: &mut Vec<usize>,
) -> Result<DebugRoute, RouteError> {
    match keys::debug_keys(args, scratch)? {
        keys::DebugForm::Keyed => Ok(DebugRoute::Keys(owning_group(table, args, scratch)?)),
        keys::DebugForm::CreatesKeys => Ok(DebugRoute::CreatesKeys),
        keys::DebugForm::Server => Ok(DebugRoute::Servers),
    }
}

/// The one group owning the keys at `keys` (`None` for none); `CrossGroup` when they span more.
fn owning_group<A: Args + ?Sized>(
    table: &RoutingTable,
    args: &A,
    keys: &[usize],
) -> Result<Option<GroupId>, RouteError> {
    let mut group = None;
    for &i in keys {
        let g = table.group_for_key(args.arg(i));
        match group {
            None => group = Some(g),
            Some(first) if first != g => return Err(RouteError::CrossGroup),
            Some(_) => {}
        }
    }
    Ok(group)
}

/// One group's share of a split command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SplitPart {
    /// The group that receives this part.
    pub group: GroupId,
    /// Indexes into the original arguments (command name excluded) that this part carries, in order.
    ///
    /// Indexes count the command name as 0, so they start at 1 and 0 never appears: the part's
    /// command is the original name followed by these arguments. MGET/DEL/... carry one index
    /// per key; MSET carries each key's index followed by its value's.
    pub args: Vec<usize>,
}

/// How a `Split` command is divided among groups.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SplitPlan {
    /// One part per group, in order of first appearance.
    pub parts: Vec<SplitPart>,
    /// For each key in the original order: (part index, position of the key within that part).
    ///
    /// The position counts keys, not arguments (0-based): for MGET it is the index of the key's
    /// value in that part's reply array.
    pub order: Vec<(u16, u32)>,
}

/// Parts up to which `plan_split` finds a group's part by scanning.
const SPLIT_SCAN_PARTS: usize = 8;

/// Divides a `Split` command (MGET, MSET, DEL, UNLINK, EXISTS, TOUCH) among groups.
///
/// Keys are found from the first key spec (index 1, every `step` arguments: 1, or 2 for MSET's
/// key value pairs); each key takes the `step - 1` arguments after it along. Validate first with
/// [`CommandSpec::keys`] (arity, MSET's odd argument count): a trailing MSET key without a value
/// is carried alone. Parts with the same group are merged, so a key may repeat in one part.
pub fn plan_split<A: Args + ?Sized>(
    table: &RoutingTable,
    spec: &CommandSpec,
    args: &A,
) -> SplitPlan {
    let argc = args.count();
    let (first, step) = match spec.key_specs.first() {
        Some(KeySpec {
            begin: BeginSearch::Index(i), find: FindKeys::Range { step, .. }, ..
        }) => (usize::try_from(*i).unwrap_or(1).max(1), usize::try_from(*step).unwrap_or(1).max(1)),
        _ => (1, 1),
    };
    let nkeys = argc.saturating_sub(first).div_ceil(step);
    let mut plan = SplitPlan { parts: Vec::new(), order: Vec::with_capacity(nkeys) };
    // Group -> part index, built only once there are many parts: a linear scan of a few parts
    // is cheaper than allocating a map.
    let mut part_of: Vec<u16> = Vec::new();
    let mut key = first;
    while key < argc {
        let g = table.group_for_key(args.arg(key));
        let known = if part_of.is_empty() {
            plan.parts.iter().position(|p| p.group == g)
        } else {
            part_of.get(usize::from(g)).filter(|&&p| p != u16::MAX).map(|&p| usize::from(p))
        };
        let p = match known {
            Some(p) => p,
            None => {
                let p = plan.parts.len();
                plan.parts.push(SplitPart { group: g, args: Vec::with_capacity(4 * step) });
                if p == SPLIT_SCAN_PARTS {
                    part_of = vec![u16::MAX; table.groups.len().max(usize::from(g) + 1)];
                    for (i, part) in plan.parts.iter().enumerate() {
                        part_of[usize::from(part.group)] = i as u16;
                    }
                } else if let Some(slot) = part_of.get_mut(usize::from(g)) {
                    *slot = p as u16;
                }
                p
            }
        };
        let part = &mut plan.parts[p];
        let pos = (part.args.len() / step) as u32;
        part.args.extend(key..(key + step).min(argc));
        plan.order.push((p as u16, pos));
        key += step;
    }
    plan
}

/// CLIENT SETINFO is Redis 7.2's, not in the 7.0 table the rest is generated from, but client
/// libraries (redis-py, redis-rs) send it on every connect, so keyhop knows and answers it.
static CLIENT_SETINFO: CommandSpec = CommandSpec {
    name: "client|setinfo",
    arity: 4,
    flags: flags::NOSCRIPT | flags::LOADING | flags::STALE,
    first_key: 0,
    last_key: 0,
    key_step: 0,
    key_specs: &[],
    subcommands: &[],
    policy: Policy::Local(Local::Client),
    keys_proc: KeysProc::Specs,
};

/// Position of a top-level command in [`commands()`] (`None` for subcommands and keyhop's own
/// additions): a dense index for per-command counters.
pub fn index_of(spec: &CommandSpec) -> Option<usize> {
    let all = commands();
    let start = all.as_ptr() as usize;
    let addr = spec as *const CommandSpec as usize;
    let size = std::mem::size_of::<CommandSpec>();
    if addr < start || size == 0 {
        return None;
    }
    let i = (addr - start) / size;
    (i < all.len() && std::ptr::eq(&all[i], spec)).then_some(i)
}
