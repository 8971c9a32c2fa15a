//! Key extraction: Redis 7.0's generic key-spec interpretation (`getKeysUsingKeySpecs` in db.c),
//! plus the command logic the specs cannot express (SORT's STORE, MIGRATE's KEYS, DEBUG's keyed
//! forms) and the argument checks whose failure Redis reports before touching any key (numkeys).

use super::policy::bytes_eq;
use super::{Args, BeginSearch, CommandSpec, FindKeys, KeySpec, RouteError, key_flags};

/// Command-specific key logic on top of the key specs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeysProc {
    /// The key specs find every key.
    Specs,
    /// EVAL, EVAL_RO, EVALSHA, EVALSHA_RO: numkeys at 2, checked as `evalGenericCommand` does.
    Eval,
    /// FCALL, FCALL_RO: like EVAL but a non-integer numkeys has its own message.
    Fcall,
    /// ZUNION/ZINTER/ZDIFF, their STORE forms and ZINTERCARD (`zunionInterDiffGenericCommand`).
    ZsetNumkeys,
    /// SINTERCARD.
    SinterCard,
    /// LMPOP, BLMPOP, ZMPOP, BZMPOP: numkeys, the keys, then a mandatory LEFT|RIGHT / MIN|MAX.
    Mpop,
    /// XREAD, XREADGROUP: keys after STREAMS, as many IDs as keys; BLOCK makes them block.
    Xread,
    /// SORT: `STORE dest` is a key; BY/GET patterns are not routed keys.
    Sort,
    /// SORT_RO: BY/GET patterns are not routed keys.
    SortRo,
    /// MIGRATE: the key at 3, or the keys after KEYS when the key at 3 is empty.
    Migrate,
    /// MSET, MSETNX: key value pairs; an odd count is Redis's arity error.
    Pairs,
}

/// Which command each special [`KeysProc`] belongs to; every other command uses the key specs.
const PROCS: &[(&str, KeysProc)] = &[
    ("eval", KeysProc::Eval),
    ("eval_ro", KeysProc::Eval),
    ("evalsha", KeysProc::Eval),
    ("evalsha_ro", KeysProc::Eval),
    ("fcall", KeysProc::Fcall),
    ("fcall_ro", KeysProc::Fcall),
    ("zunion", KeysProc::ZsetNumkeys),
    ("zunionstore", KeysProc::ZsetNumkeys),
    ("zinter", KeysProc::ZsetNumkeys),
    ("zinterstore", KeysProc::ZsetNumkeys),
    ("zdiff", KeysProc::ZsetNumkeys),
    ("zdiffstore", KeysProc::ZsetNumkeys),
    ("zintercard", KeysProc::ZsetNumkeys),
    ("sintercard", KeysProc::SinterCard),
    ("lmpop", KeysProc::Mpop),
    ("blmpop", KeysProc::Mpop),
    ("zmpop", KeysProc::Mpop),
    ("bzmpop", KeysProc::Mpop),
    ("xread", KeysProc::Xread),
    ("xreadgroup", KeysProc::Xread),
    ("sort", KeysProc::Sort),
    ("sort_ro", KeysProc::SortRo),
    ("migrate", KeysProc::Migrate),
    ("mset", KeysProc::Pairs),
    ("msetnx", KeysProc::Pairs),
];

impl KeysProc {
    /// The key logic of the command `name` (compile-time, for the generated table).
    pub const fn of(name: &str) -> KeysProc {
        let mut i = 0;
        while i < PROCS.len() {
            if bytes_eq(PROCS[i].0.as_bytes(), name.as_bytes()) {
                return PROCS[i].1;
            }
            i += 1;
        }
        KeysProc::Specs
    }

    /// Names with a special procedure, for tests.
    #[cfg(test)]
    pub(super) fn all() -> &'static [(&'static str, KeysProc)] {
        PROCS
    }
}

const ERR_SYNTAX: &str = "ERR syntax error";
const ERR_NOT_INTEGER: &str = "ERR value is not an integer or out of range";
const ERR_TOO_MANY_KEYS: &str = "ERR Number of keys can't be greater than number of args";
const ERR_NEGATIVE_KEYS: &str = "ERR Number of keys can't be negative";
const ERR_NUMKEYS_POSITIVE: &str = "ERR numkeys should be greater than 0";
const ERR_XREAD_UNBALANCED: &str =
    "ERR Unbalanced XREAD list of streams: for each stream key an ID or '$' must be specified.";

fn syntax(msg: &str) -> RouteError {
    RouteError::Syntax(msg.to_string())
}

/// Parses an integer exactly as Redis's `string2ll`: optional `-`, no `+`, no leading zeros, no
/// spaces, at most 20 characters, within i64.
pub fn parse_i64(s: &[u8]) -> Option<i64> {
    if s.is_empty() || s.len() > 20 {
        return None;
    }
    if s == b"0" {
        return Some(0);
    }
    let (negative, digits) = match s.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, s),
    };
    match digits.first() {
        Some(b'1'..=b'9') => {}
        _ => return None,
    }
    let mut v: u64 = 0;
    for &b in digits {
        if !b.is_ascii_digit() {
            return None;
        }
        v = v.checked_mul(10)?.checked_add(u64::from(b - b'0'))?;
    }
    if negative {
        // -2^63 is representable; its magnitude is not.
        if v > i64::MAX as u64 + 1 { None } else { Some((v as i64).wrapping_neg()) }
    } else if v > i64::MAX as u64 {
        None
    } else {
        Some(v as i64)
    }
}

/// Why one key spec could not be applied (Redis's `invalid_spec`).
struct InvalidSpec;

impl CommandSpec {
    /// Keys of this command into `out` (already cleared). See [`CommandSpec::keys`].
    pub(super) fn find_keys<A: Args + ?Sized>(
        &self,
        args: &A,
        out: &mut Vec<usize>,
    ) -> Result<(), RouteError> {
        let argc = args.count();
        match self.keys_proc {
            KeysProc::Specs | KeysProc::SortRo => {}
            KeysProc::Migrate => {
                migrate_keys(args, out);
                return Ok(());
            }
            KeysProc::Pairs => {
                if argc.is_multiple_of(2) {
                    return Err(RouteError::Syntax(super::arity_error(self)));
                }
            }
            KeysProc::Xread => self.check_xread(args)?,
            KeysProc::Eval | KeysProc::Fcall | KeysProc::ZsetNumkeys => self.check_numkeys(args)?,
            KeysProc::SinterCard | KeysProc::Mpop => self.check_numkeys(args)?,
            KeysProc::Sort => {}
        }
        let arity_negative = self.arity < 0;
        for spec in self.key_specs {
            if spec.flags & key_flags::NOT_KEY != 0 {
                continue;
            }
            if matches!(spec.begin, BeginSearch::Unknown) && self.keys_proc != KeysProc::Specs {
                // The procedure below (or, for SORT_RO's BY/GET patterns, nobody) handles it.
                continue;
            }
            if spec_keys(spec, args, arity_negative, out).is_err() {
                // Unreachable for 7.0's table once arity and numkeys are checked; refusing is
                // safer than sending a command whose keys are unknown to an arbitrary group.
                out.clear();
                return Err(syntax(ERR_SYNTAX));
            }
        }
        if self.keys_proc == KeysProc::Sort
            && let Some(dest) = sort_store(args)
        {
            out.push(dest);
        }
        Ok(())
    }

    /// Index of the numkeys argument of a keynum key spec.
    fn numkeys_index(&self) -> Option<usize> {
        self.key_specs.iter().find_map(|ks| match (ks.begin, ks.find) {
            (BeginSearch::Index(b), FindKeys::Keynum { keynumidx, .. }) => {
                usize::try_from(b + keynumidx).ok()
            }
            _ => None,
        })
    }

    /// Checks numkeys as the command itself does, with its error texts.
    fn check_numkeys<A: Args + ?Sized>(&self, args: &A) -> Result<(), RouteError> {
        let argc = args.count() as i64;
        let Some(idx) = self.numkeys_index() else { return Ok(()) };
        if idx >= args.count() {
            return Err(RouteError::Syntax(super::arity_error(self)));
        }
        let n = parse_i64(args.arg(idx));
        let after = argc - idx as i64 - 1; // arguments after numkeys
        match self.keys_proc {
            // EVALSHA refuses a digest of the wrong length before it reads numkeys.
            KeysProc::Eval if self.name.starts_with("evalsha") && args.arg(1).len() != 40 => {
                return Err(syntax("NOSCRIPT No matching script. Please use EVAL."));
            }
            KeysProc::Eval | KeysProc::Fcall => {
                let Some(n) = n else {
                    return Err(syntax(if self.keys_proc == KeysProc::Fcall {
                        "ERR Bad number of keys provided"
                    } else {
                        ERR_NOT_INTEGER
                    }));
                };
                if n > after {
                    return Err(syntax(ERR_TOO_MANY_KEYS));
                }
                if n < 0 {
                    return Err(syntax(ERR_NEGATIVE_KEYS));
                }
            }
            KeysProc::ZsetNumkeys => {
                let Some(n) = n else { return Err(syntax(ERR_NOT_INTEGER)) };
                if n < 1 {
                    return Err(RouteError::Syntax(format!(
                        "ERR at least 1 input key is needed for '{}' command",
                        self.name
                    )));
                }
                if n > after {
                    return Err(syntax(ERR_SYNTAX));
                }
            }
            KeysProc::SinterCard => match n {
                Some(n) if n >= 1 => {
                    if n > after {
                        return Err(syntax(ERR_TOO_MANY_KEYS));
                    }
                }
                _ => return Err(syntax(ERR_NUMKEYS_POSITIVE)),
            },
            KeysProc::Mpop => match n {
                // The keys must leave room for LEFT|RIGHT or MIN|MAX.
                Some(n) if n >= 1 => {
                    if n >= after {
                        return Err(syntax(ERR_SYNTAX));
                    }
                }
                _ => return Err(syntax(ERR_NUMKEYS_POSITIVE)),
            },
            _ => {}
        }
        Ok(())
    }

    /// XREAD/XREADGROUP need STREAMS and one ID per key.
    fn check_xread<A: Args + ?Sized>(&self, args: &A) -> Result<(), RouteError> {
        let Some(first) = self.key_specs.iter().find_map(|ks| keyword_position(ks, args)) else {
            return Err(syntax(ERR_SYNTAX));
        };
        let rest = args.count().saturating_sub(first);
        if rest == 0 {
            return Err(syntax(ERR_SYNTAX));
        }
        if rest % 2 != 0 {
            return Err(syntax(ERR_XREAD_UNBALANCED));
        }
        Ok(())
    }
}

/// For a keyword key spec, the index right after the keyword (as Redis searches for it).
fn keyword_position<A: Args + ?Sized>(spec: &KeySpec, args: &A) -> Option<usize> {
    let BeginSearch::Keyword { keyword, startfrom } = spec.begin else { return None };
    let found = keyword_search(keyword, startfrom, args);
    (found > 0).then_some(found as usize)
}

/// Redis's keyword search: from `startfrom` (negative: from the end) towards the other end,
/// exclusive of the last argument (forward) or of argument 1 (backward). 0 when not found.
fn keyword_search<A: Args + ?Sized>(keyword: &str, startfrom: i32, args: &A) -> i64 {
    let argc = args.count() as i64;
    let startfrom = i64::from(startfrom);
    let (start, end) = if startfrom > 0 { (startfrom, argc - 1) } else { (argc + startfrom, 1) };
    let mut i = start;
    // Bounded: every step moves `i` towards `end` or leaves 1..argc.
    while i != end {
        if i >= argc || i < 1 {
            break;
        }
        if args.arg(i as usize).eq_ignore_ascii_case(keyword.as_bytes()) {
            return i + 1;
        }
        i = if start <= end { i + 1 } else { i - 1 };
    }
    0
}

/// One key spec's keys, appended to `out`, as `getKeysUsingKeySpecs` finds them.
fn spec_keys<A: Args + ?Sized>(
    spec: &KeySpec,
    args: &A,
    arity_negative: bool,
    out: &mut Vec<usize>,
) -> Result<(), InvalidSpec> {
    let argc = args.count() as i64;
    let mut first = match spec.begin {
        BeginSearch::Index(i) => i64::from(i),
        BeginSearch::Keyword { keyword, startfrom } => {
            let found = keyword_search(keyword, startfrom, args);
            if found == 0 {
                // An absent optional keyword (e.g. GEORADIUS without STORE) means no keys.
                return Ok(());
            }
            found
        }
        BeginSearch::Unknown => return Err(InvalidSpec),
    };
    let (last, step) = match spec.find {
        FindKeys::Range { lastkey, step, limit } => {
            let lastkey = i64::from(lastkey);
            let last = if lastkey >= 0 {
                first + lastkey
            } else if limit == 0 {
                argc + lastkey
            } else {
                first + ((argc - first) / i64::from(limit) + lastkey)
            };
            (last, i64::from(step))
        }
        FindKeys::Keynum { keynumidx, firstkey, step } => {
            let keynumidx = i64::from(keynumidx);
            if keynumidx >= argc - first {
                return Err(InvalidSpec);
            }
            let n = parse_i64(args.arg((first + keynumidx) as usize)).ok_or(InvalidSpec)?;
            if n < 0 {
                return Err(InvalidSpec);
            }
            if n == 0 {
                // EVAL with no keys (the only keynum commands accepting 0 are the script ones).
                return Ok(());
            }
            first += i64::from(firstkey);
            (first.saturating_add(n - 1), i64::from(step))
        }
        FindKeys::Unknown => return Err(InvalidSpec),
    };
    // A trailing range that starts past the end after earlier specs found keys (PFMERGE dest
    // with no sources): the command runs with those keys; GETKEYS alone calls it invalid.
    if arity_negative
        && first >= argc
        && !out.is_empty()
        && matches!(spec.find, FindKeys::Range { .. })
    {
        return Ok(());
    }
    if step <= 0 || last >= argc || last < first || first >= argc {
        return Err(InvalidSpec);
    }
    let mut i = first;
    while i <= last {
        if i >= argc || i < first {
            if arity_negative {
                i += step;
                continue;
            }
            return Err(InvalidSpec);
        }
        out.push(i as usize);
        i += step;
    }
    if spec.flags & key_flags::INCOMPLETE != 0 {
        return Err(InvalidSpec);
    }
    Ok(())
}

/// SORT's `STORE dest`, parsed as `sortCommandGeneric` does (the last STORE wins); parsing stops
/// at the first unknown option, which the server refuses anyway.
fn sort_store<A: Args + ?Sized>(args: &A) -> Option<usize> {
    let argc = args.count();
    let mut store = None;
    let mut j = 2;
    while j < argc {
        let a = args.arg(j);
        let left = argc - j - 1;
        let is = |kw: &str| a.eq_ignore_ascii_case(kw.as_bytes());
        if is("asc") || is("desc") || is("alpha") {
        } else if is("limit") && left >= 2 {
            j += 2;
        } else if is("store") && left >= 1 {
            store = Some(j + 1);
            j += 1;
        } else if (is("by") || is("get")) && left >= 1 {
            j += 1;
        } else {
            break;
        }
        j += 1;
    }
    store
}

/// MIGRATE's keys as `migrateGetKeys` finds them.
fn migrate_keys<A: Args + ?Sized>(args: &A, out: &mut Vec<usize>) {
    let argc = args.count();
    if argc < 4 {
        return;
    }
    let (mut first, mut num) = (3, 1);
    if argc > 6 {
        let mut i = 6;
        while i < argc {
            let a = args.arg(i);
            if a.eq_ignore_ascii_case(b"keys") {
                if !args.arg(3).is_empty() {
                    // Redis refuses KEYS with a non-empty key argument: no keys.
                    return;
                }
                first = i + 1;
                num = argc - first;
                break;
            }
            for (kw, skip) in [("copy", 0), ("replace", 0), ("auth", 1), ("auth2", 2)] {
                if a.eq_ignore_ascii_case(kw.as_bytes()) {
                    i += skip;
                    break;
                }
            }
            i += 1;
        }
    }
    out.extend(first..first + num);
}

/// True when XREAD/XREADGROUP arguments ask to block (a BLOCK option before STREAMS).
pub(super) fn xread_blocks<A: Args + ?Sized>(args: &A) -> bool {
    let argc = args.count();
    let mut i = 1;
    while i < argc {
        let a = args.arg(i);
        if a.eq_ignore_ascii_case(b"streams") {
            return false;
        }
        if a.eq_ignore_ascii_case(b"block") {
            return true;
        }
        i += if a.eq_ignore_ascii_case(b"count") {
            2
        } else if a.eq_ignore_ascii_case(b"group") {
            3
        } else {
            1
        };
    }
    false
}

/// What a DEBUG subcommand does with keys.
pub(super) enum DebugForm {
    /// Reads the keys whose indexes were pushed.
    Keyed,
    /// POPULATE: writes keys the server names itself.
    CreatesKeys,
    /// Acts on the server as a whole.
    Server,
}

/// DEBUG subcommands reading one key at index 2, with the argument counts `debugCommand`
/// accepts for them (command name and subcommand included).
const DEBUG_ONE_KEY: &[(&str, usize, usize)] = &[
    ("object", 3, 3),
    ("sdslen", 3, 3),
    ("listpack", 3, 3),
    ("htstats-key", 3, 3),
    ("quicklist", 3, 4),
];

/// Finds the keys of DEBUG `args` into `out` (cleared first). DIGEST-VALUE takes any number of
/// keys, including none. A keyed form with another argument count is refused with the text
/// `debugCommand` gives (`addReplySubcommandSyntaxError`).
pub(super) fn debug_keys<A: Args + ?Sized>(
    args: &A,
    out: &mut Vec<usize>,
) -> Result<DebugForm, RouteError> {
    out.clear();
    let argc = args.count();
    if argc < 2 {
        return Ok(DebugForm::Server);
    }
    let sub = args.arg(1);
    if sub.eq_ignore_ascii_case(b"digest-value") {
        out.extend(2..argc);
        return Ok(DebugForm::Keyed);
    }
    if sub.eq_ignore_ascii_case(b"populate") {
        return Ok(DebugForm::CreatesKeys);
    }
    let Some(&(_, min, max)) =
        DEBUG_ONE_KEY.iter().find(|(name, _, _)| sub.eq_ignore_ascii_case(name.as_bytes()))
    else {
        return Ok(DebugForm::Server);
    };
    if !(min..=max).contains(&argc) {
        let mut msg = b"ERR unknown subcommand or wrong number of arguments for '".to_vec();
        msg.extend_from_slice(super::errors::c_prefix(sub, 128));
        msg.extend_from_slice(b"'. Try DEBUG HELP.");
        return Err(RouteError::Syntax(super::errors::reply_text(msg)));
    }
    out.push(2);
    Ok(DebugForm::Keyed)
}
