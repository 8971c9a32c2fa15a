//! The command table: for every Redis 7.0 command its arity, flags, key positions and how keyhop
//! treats it (forward, split, answer locally, refuse).
//!
//! SKELETON: the API below is the contract between router and proxy; bodies are being filled in.

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
    /// Needs a dedicated backend connection (transactions, pub/sub, blocking): refused for now.
    NeedsPinning,
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
}

/// Commands keyhop answers or orchestrates itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Local {
    Ping,
    Echo,
    Quit,
    Select,
    Hello,
    Auth,
    Reset,
    Client,
    Command,
    Time,
    Scan,
    RandomKey,
    Flush,
    Info,
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
pub fn lookup(name: &[u8]) -> Option<&'static CommandSpec> {
    let _ = name;
    unimplemented!("command table in progress")
}

impl CommandSpec {
    /// True when `argc` (command name included) satisfies the arity.
    pub fn arity_ok(&self, argc: usize) -> bool {
        if self.arity >= 0 { argc == self.arity as usize } else { argc >= (-self.arity) as usize }
    }

    /// For a container command, the subcommand named by argument 1; otherwise `self`.
    /// `Err` is the Redis error text for an unknown subcommand.
    pub fn resolve<A: Args + ?Sized>(
        &'static self,
        args: &A,
    ) -> Result<&'static CommandSpec, String> {
        let _ = args;
        unimplemented!("command table in progress")
    }

    /// Pushes the argument indexes of every key into `out` (cleared first).
    pub fn keys<A: Args + ?Sized>(&self, args: &A, out: &mut Vec<usize>) -> Result<(), RouteError> {
        let _ = (args, out);
        unimplemented!("command table in progress")
    }

    /// True when the command writes (never sent to a replica).
    pub fn is_write(&self) -> bool {
        self.flags & flags::WRITE != 0
    }
}

/// The group owning every key of a `Forward` command; `None` for a keyless command.
pub fn route<A: Args + ?Sized>(
    table: &RoutingTable,
    spec: &CommandSpec,
    args: &A,
    scratch: &mut Vec<usize>,
) -> Result<Option<GroupId>, RouteError> {
    let _ = (table, spec, args, scratch);
    unimplemented!("command table in progress")
}

/// One group's share of a split command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SplitPart {
    /// The group that receives this part.
    pub group: GroupId,
    /// Indexes into the original arguments (command name excluded) that this part carries, in order.
    pub args: Vec<usize>,
}

/// How a `Split` command is divided among groups.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SplitPlan {
    /// One part per group, in order of first appearance.
    pub parts: Vec<SplitPart>,
    /// For each key in the original order: (part index, position of the key within that part).
    pub order: Vec<(u16, u32)>,
}

/// Divides a `Split` command (MGET, MSET, DEL, UNLINK, EXISTS, TOUCH) among groups.
pub fn plan_split<A: Args + ?Sized>(
    table: &RoutingTable,
    spec: &CommandSpec,
    args: &A,
) -> SplitPlan {
    let _ = (table, spec, args);
    unimplemented!("command table in progress")
}

/// Redis's reply to an unknown command (without the leading `-` and trailing CRLF).
pub fn unknown_command_error<A: Args + ?Sized>(args: &A) -> String {
    let _ = args;
    unimplemented!("command table in progress")
}

/// Redis's reply to a wrong number of arguments (without `-` and CRLF).
pub fn arity_error(spec: &CommandSpec) -> String {
    format!("ERR wrong number of arguments for '{}' command", spec.name)
}
