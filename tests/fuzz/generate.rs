//! The differential fuzzer's command generator: a seeded PRNG and random, valid (and some
//! deliberately invalid) commands over a small key space, so that commands meet existing keys of
//! every type and WRONGTYPE, arity and syntax errors happen as often as successes.

#[path = "commands.rs"]
mod commands;

/// splitmix64: small, seedable, and the same sequence on every platform, so a seed reproduces.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`n` > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    /// True `percent` times in 100.
    pub fn chance(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }

    pub fn pick<T: Clone>(&mut self, items: &[T]) -> T {
        items[self.below(items.len())].clone()
    }
}

/// How a reply is compared between keyhop and Redis.
#[derive(Clone, Debug, PartialEq)]
pub enum Cmp {
    /// Byte for byte.
    Exact,
    /// The aggregate's elements as a sorted multiset: a hashtable-encoded set or hash, or KEYS,
    /// iterates in an order that depends on each server's random hash seed.
    Unordered,
    /// Like `Unordered` over (field, value) pairs (HGETALL).
    UnorderedPairs,
    /// An integer within this distance (TTL-like replies: the two servers read their clocks a
    /// few milliseconds apart); negative replies (-1, -2) must be equal.
    Near(i64),
    /// EXEC's array: each queued command's reply compared its own way.
    Exec(Vec<Cmp>),
    /// HELLO's map: the same fields with the same values, except `id` (each server numbers its
    /// own connections).
    Hello,
}

/// One generated command.
#[derive(Clone, Debug)]
pub struct Cmd {
    pub args: Vec<Vec<u8>>,
    /// The arguments that are keys (keyhop routes on them).
    pub keys: Vec<Vec<u8>>,
    /// keyhop accepts the keys in different groups: split commands (MGET, DEL ...), and
    /// commands that fail on arity before routing.
    pub cross_ok: bool,
    pub cmp: Cmp,
}

impl Cmd {
    fn new(name: &str) -> Cmd {
        Cmd { args: vec![name.as_bytes().to_vec()], keys: vec![], cross_ok: false, cmp: Cmp::Exact }
    }
    fn k(mut self, key: Vec<u8>) -> Cmd {
        self.args.push(key.clone());
        self.keys.push(key);
        self
    }
    fn ks(self, keys: Vec<Vec<u8>>) -> Cmd {
        keys.into_iter().fold(self, Cmd::k)
    }
    fn a(mut self, arg: impl AsRef<[u8]>) -> Cmd {
        self.args.push(arg.as_ref().to_vec());
        self
    }
    fn opt(self, yes: bool, arg: impl AsRef<[u8]>) -> Cmd {
        if yes { self.a(arg) } else { self }
    }
    fn split(mut self) -> Cmd {
        self.cross_ok = true;
        self
    }
    fn cmp(mut self, cmp: Cmp) -> Cmd {
        self.cmp = cmp;
        self
    }
    pub fn name(&self) -> String {
        String::from_utf8_lossy(&self.args[0]).to_uppercase()
    }
}

/// The key space: a few plain keys (spread over both groups by their slots) and two hash-tagged
/// families, one per group.
pub struct Keys {
    pub plain: Vec<Vec<u8>>,
    pub tagged: [Vec<Vec<u8>>; 2],
}

impl Keys {
    /// `tags[g]` is a `{tag}` whose keys live in group `g`.
    pub fn new(tags: [&str; 2]) -> Keys {
        let plain = (0..8).map(|i| format!("k{i}").into_bytes()).collect();
        let family =
            |t: &str| (b'a'..=b'h').map(|c| format!("{t}{}", c as char).into_bytes()).collect();
        Keys { plain, tagged: [family(tags[0]), family(tags[1])] }
    }
}

/// Draws commands. `only_tag` confines every key to one tagged family (inside MULTI).
pub struct Gen<'a> {
    pub rng: Rng,
    keys: &'a Keys,
    pub only_tag: Option<usize>,
    /// The next stream entry ID's millisecond part: increasing, and the same on both sides.
    xid: u64,
}

const WORDS: [&str; 6] = ["a", "b", "c", "foo", "x1", "zz"];
const EDGE_INTS: [&str; 14] = [
    "9223372036854775807",
    "-9223372036854775808",
    "9223372036854775808",
    "-9223372036854775809",
    "-1",
    "0",
    "00",
    "1e3",
    " 1",
    "0x10",
    "3.5",
    "+1",
    "-0",
    "18446744073709551616",
];
const COUNTS: [&str; 10] =
    ["-1", "0", "1", "2", "3", "5", "100", "-100", "9223372036854775807", "x"];
const INDEXES: [&str; 8] = ["-1", "0", "1", "2", "-2", "-100", "100", "9223372036854775807"];
const SCORES: [&str; 13] = [
    "1",
    "2.5",
    "-3",
    "0",
    "inf",
    "-inf",
    "+inf",
    "1e308",
    "nan",
    "abc",
    "-0",
    "(1",
    "1.0000000000000002",
];
const MEMBERS: [&str; 9] = ["m1", "m2", "m3", "m4", "m5", "1", "2", "300", "-7"];
const FIELDS: [&str; 6] = ["f1", "f2", "f3", "f4", "", "9"];

impl<'a> Gen<'a> {
    pub fn new(seed: u64, keys: &'a Keys) -> Gen<'a> {
        Gen { rng: Rng::new(seed), keys, only_tag: None, xid: 1 }
    }

    pub fn key(&mut self) -> Vec<u8> {
        if let Some(t) = self.only_tag {
            return self.rng.pick(&self.keys.tagged[t]);
        }
        match self.rng.below(3) {
            0 => self.rng.pick(&self.keys.plain),
            g => self.rng.pick(&self.keys.tagged[g - 1]),
        }
    }

    /// Mostly the keys that commands of type `ty` (0 string, 1 list, 2 hash, 3 set, 4 zset,
    /// 5 stream, 6 bitmap/HyperLogLog) prefer, so that most commands meet a key of their own type;
    /// otherwise any key (WRONGTYPE).
    fn typed_key(&mut self, ty: usize) -> Vec<u8> {
        if !self.rng.chance(90) {
            return self.key();
        }
        match self.only_tag {
            Some(t) => self.keys.tagged[t][ty].clone(),
            None if self.rng.chance(34) => self.keys.plain[ty].clone(),
            None => self.keys.tagged[self.rng.below(2)][ty].clone(),
        }
    }

    /// `n` keys: usually of one tagged family (one group), sometimes any (often two groups).
    fn keys_n(&mut self, n: usize) -> Vec<Vec<u8>> {
        if self.only_tag.is_none() && self.rng.chance(30) {
            return (0..n).map(|_| self.key()).collect();
        }
        let t = self.only_tag.unwrap_or_else(|| self.rng.below(2));
        (0..n).map(|_| self.rng.pick(&self.keys.tagged[t])).collect()
    }

    fn keys_some(&mut self, max: usize) -> Vec<Vec<u8>> {
        let n = 1 + self.rng.below(max);
        self.keys_n(n)
    }

    /// Mostly short values that collide, plus edge values: empty, binary with CR/LF/NUL, integer
    /// bounds, and now and then ~100 KB.
    pub fn val(&mut self) -> Vec<u8> {
        match self.rng.below(100) {
            0..=29 => self.rng.pick(&WORDS).as_bytes().to_vec(),
            30..=44 => (self.rng.below(24) as i64 - 3).to_string().into_bytes(),
            45..=54 => self.rng.pick(&EDGE_INTS).as_bytes().to_vec(),
            55..=59 => Vec::new(),
            60..=69 => {
                let n = self.rng.below(20);
                let mut v: Vec<u8> = (0..n).map(|_| self.rng.next_u64() as u8).collect();
                v.extend_from_slice(b"\r\n\0");
                v
            }
            70 if self.rng.chance(50) => {
                let n = 90_000 + self.rng.below(20_000);
                let b = b'a' + self.rng.below(26) as u8;
                vec![b; n]
            }
            _ => {
                let n = 1 + self.rng.below(10);
                (0..n).map(|_| b'a' + self.rng.below(26) as u8).collect()
            }
        }
    }

    /// A set, sorted set or list member: mostly from a few, sometimes any value but without NUL
    /// (SORT ... ALPHA compares with strcoll, which stops at NUL: two members equal up to it
    /// would tie, and a set's ties come out in each server's hash order).
    fn member(&mut self) -> Vec<u8> {
        if !self.rng.chance(10) {
            return self.rng.pick(&MEMBERS).as_bytes().to_vec();
        }
        let mut v = self.val();
        v.retain(|&b| b != 0);
        v
    }
    fn field(&mut self) -> &'static str {
        self.rng.pick(&FIELDS)
    }
    fn int(&mut self) -> String {
        if self.rng.chance(20) {
            self.rng.pick(&EDGE_INTS).to_string()
        } else {
            (self.rng.below(200) as i64 - 50).to_string()
        }
    }
    fn count(&mut self) -> &'static str {
        self.rng.pick(&COUNTS)
    }
    fn index(&mut self) -> &'static str {
        self.rng.pick(&INDEXES)
    }
    fn score(&mut self) -> &'static str {
        self.rng.pick(&SCORES)
    }
    fn side(&mut self) -> &'static str {
        self.rng.pick(&["LEFT", "RIGHT", "left", "UP"])
    }
    fn stream_id(&mut self) -> String {
        if self.rng.chance(10) {
            return self.rng.pick(&["0-1", "0-0", "1-1", "bad", "-1"]).to_string();
        }
        self.xid += 1 + self.rng.below(3) as u64;
        format!("{}-{}", self.xid, self.rng.below(3))
    }

    /// A random command of any kind, keys drawn from the key space.
    pub fn command(&mut self) -> Cmd {
        let c = match self.rng.below(100) {
            0..=14 => self.string(),
            15..=22 => self.keyspace(),
            23..=32 => self.list(),
            33..=41 => self.hash(),
            42..=49 => self.set(),
            50..=58 => self.zset(),
            59..=64 => self.stream(),
            65..=70 => self.bits(),
            71..=82 => self.multi_key(),
            83..=86 => self.odd(),
            87..=90 => self.script(),
            91 => self.blocking(),
            92..=94 => self.geo(),
            95..=96 => self.sort(),
            _ => self.local(),
        };
        if !c.keys.is_empty() && self.rng.chance(3) {
            // Wrong arity: the name alone. keyhop checks arity before routing.
            let mut bare = Cmd::new(&c.name().to_lowercase()).split();
            bare.cmp = Cmp::Exact;
            return bare;
        }
        c
    }

    fn string(&mut self) -> Cmd {
        let k = self.typed_key(0);
        match self.rng.below(19) {
            0..=2 => {
                let mut c = Cmd::new("SET").k(k).a(self.val());
                for opt in ["NX", "XX", "GET", "KEEPTTL"] {
                    c = c.opt(self.rng.chance(8), opt);
                }
                if self.rng.chance(10) {
                    // Expiry far in the future (a day or more), or invalid: a key that expires
                    // during a run would vanish from each server at its own moment (and Redis
                    // 7.0 keeps a key SET with a past EXAT, counted by DBSIZE until its
                    // expiry cycle happens to find it).
                    let (opt, time) = self.rng.pick(&[
                        ("EX", "100000"),
                        ("PX", "100000000"),
                        ("EXAT", "4102444800"),
                        ("EX", "0"),
                        ("PX", "-5"),
                        ("EXAT", "x"),
                    ]);
                    c = c.a(opt).a(time);
                }
                c
            }
            3 => Cmd::new("GET").k(k),
            4 => Cmd::new("GETSET").k(k).a(self.val()),
            5 => Cmd::new("GETDEL").k(k),
            6 => Cmd::new("GETRANGE").k(k).a(self.index()).a(self.index()),
            7 => {
                let off = self.rng.pick(&["0", "1", "5", "100", "100000", "536870912", "-1"]);
                Cmd::new("SETRANGE").k(k).a(off).a(self.val())
            }
            8 => Cmd::new("APPEND").k(k).a(self.val()),
            9 => Cmd::new("STRLEN").k(k),
            10 => Cmd::new(self.rng.pick(&["INCR", "DECR"])).k(k),
            11 => Cmd::new(self.rng.pick(&["INCRBY", "DECRBY"])).k(k).a(self.int()),
            12 => Cmd::new("INCRBYFLOAT").k(k).a(self.score()),
            13 => Cmd::new("SETNX").k(k).a(self.val()),
            14 => Cmd::new("GETEX").k(k).opt(self.rng.chance(50), "PERSIST"),
            15 => Cmd::new("GET").k(k).a("extra"),
            16 => Cmd::new("SETEX").k(k).a(self.rng.pick(&["100000", "0", "-1"])).a(self.val()),
            17 => Cmd::new("OBJECT").a("ENCODING").k(k),
            _ => Cmd::new("TYPE").k(k),
        }
    }

    fn keyspace(&mut self) -> Cmd {
        let k = self.key();
        match self.rng.below(11) {
            0 => Cmd::new("EXPIRE").k(k).a(self.rng.pick(&["100000", "200000", "-1", "x"])),
            1 => Cmd::new("PEXPIRE").k(k).a("100000000"),
            // NX/XX/GT/LT only with absolute times: `EXPIRE k 100000 GT` over an expiry set the
            // same way a moment earlier depends on whether a millisecond passed in between.
            2 => Cmd::new("EXPIREAT")
                .k(k)
                .a(self.rng.pick(&["4102444800", "4102444900", "4102444700"]))
                .opt(self.rng.chance(40), self.rng.pick(&["NX", "XX", "GT", "LT", "BOGUS"])),
            3 => Cmd::new("PERSIST").k(k),
            4 => Cmd::new("TTL").k(k).cmp(Cmp::Near(2)),
            5 => Cmd::new("PTTL").k(k).cmp(Cmp::Near(2000)),
            6 => Cmd::new("EXPIRETIME").k(k).cmp(Cmp::Near(2)),
            7 => Cmd::new("EXISTS").k(k),
            8 => Cmd::new("DBSIZE"),
            9 => Cmd::new("KEYS")
                .a(self.rng.pick(&["*", "k*", "{*", "*a", "[k]?"]))
                .cmp(Cmp::Unordered),
            _ => Cmd::new("TYPE").k(k),
        }
    }

    fn list(&mut self) -> Cmd {
        let k = self.typed_key(1);
        match self.rng.below(16) {
            0..=2 => {
                let n = 1 + self.rng.below(4);
                let mut c = Cmd::new(self.rng.pick(&["LPUSH", "RPUSH", "LPUSHX", "RPUSHX"])).k(k);
                for _ in 0..n {
                    c = c.a(self.member());
                }
                c
            }
            3 => Cmd::new(self.rng.pick(&["LPOP", "RPOP"]))
                .k(k)
                .opt(self.rng.chance(40), self.count()),
            4 | 5 => Cmd::new("LRANGE").k(k).a(self.index()).a(self.index()),
            6 => Cmd::new("LINDEX").k(k).a(self.index()),
            7 => Cmd::new("LSET").k(k).a(self.index()).a(self.member()),
            8 => Cmd::new("LINSERT")
                .k(k)
                .a(self.rng.pick(&["BEFORE", "AFTER", "NEAR"]))
                .a(self.member())
                .a(self.member()),
            9 => Cmd::new("LLEN").k(k),
            10 => Cmd::new("LREM").k(k).a(self.index()).a(self.member()),
            11 => Cmd::new("LTRIM").k(k).a(self.index()).a(self.index()),
            12 => {
                let mut c = Cmd::new("LPOS").k(k).a(self.member());
                if self.rng.chance(40) {
                    c = c.a("RANK").a(self.index());
                }
                if self.rng.chance(40) {
                    c = c.a("COUNT").a(self.count());
                }
                c
            }
            _ => Cmd::new("LLEN").k(k),
        }
    }

    fn hash(&mut self) -> Cmd {
        let k = self.typed_key(2);
        match self.rng.below(14) {
            0..=2 => {
                let mut c = Cmd::new(self.rng.pick(&["HSET", "HMSET"])).k(k);
                for _ in 0..1 + self.rng.below(3) {
                    c = c.a(self.field()).a(self.val());
                }
                c.opt(self.rng.chance(5), "dangling")
            }
            3 => Cmd::new("HGET").k(k).a(self.field()),
            4 => Cmd::new("HMGET").k(k).a(self.field()).a(self.field()),
            5 => Cmd::new("HDEL").k(k).a(self.field()).opt(self.rng.chance(50), self.field()),
            6 => Cmd::new("HLEN").k(k),
            7 => Cmd::new("HEXISTS").k(k).a(self.field()),
            8 => Cmd::new("HINCRBY").k(k).a(self.field()).a(self.int()),
            9 => Cmd::new("HINCRBYFLOAT").k(k).a(self.field()).a(self.score()),
            10 => Cmd::new("HGETALL").k(k).cmp(Cmp::UnorderedPairs),
            11 => Cmd::new(self.rng.pick(&["HKEYS", "HVALS"])).k(k).cmp(Cmp::Unordered),
            12 => Cmd::new("HSETNX").k(k).a(self.field()).a(self.val()),
            _ => Cmd::new("HSTRLEN").k(k).a(self.field()),
        }
    }

    fn set(&mut self) -> Cmd {
        let k = self.typed_key(3);
        match self.rng.below(9) {
            0..=2 => {
                let mut c = Cmd::new("SADD").k(k);
                for _ in 0..1 + self.rng.below(4) {
                    c = c.a(self.member());
                }
                c
            }
            3 => Cmd::new("SREM").k(k).a(self.member()).a(self.member()),
            4 => Cmd::new("SMEMBERS").k(k).cmp(Cmp::Unordered),
            5 => Cmd::new("SISMEMBER").k(k).a(self.member()),
            6 => Cmd::new("SMISMEMBER").k(k).a(self.member()).a(self.member()),
            7 => Cmd::new("SCARD").k(k),
            _ => Cmd::new("SMEMBERS").k(k).cmp(Cmp::Unordered),
        }
    }

    fn zset(&mut self) -> Cmd {
        let k = self.typed_key(4);
        match self.rng.below(16) {
            0..=2 => {
                let mut c = Cmd::new("ZADD").k(k);
                for opt in ["NX", "XX", "GT", "LT", "CH", "INCR"] {
                    c = c.opt(self.rng.chance(6), opt);
                }
                for _ in 0..1 + self.rng.below(3) {
                    c = c.a(self.score()).a(self.member());
                }
                c
            }
            3 => Cmd::new("ZSCORE").k(k).a(self.member()),
            4 => Cmd::new("ZMSCORE").k(k).a(self.member()).a(self.member()),
            5 => Cmd::new("ZINCRBY").k(k).a(self.score()).a(self.member()),
            6 => Cmd::new("ZCARD").k(k),
            7 => Cmd::new("ZCOUNT").k(k).a(self.score()).a(self.score()),
            8 => Cmd::new("ZRANGE")
                .k(k)
                .a(self.index())
                .a(self.index())
                .opt(self.rng.chance(50), "WITHSCORES"),
            9 => {
                let c = Cmd::new("ZRANGE").k(k).a(self.score()).a(self.score()).a("BYSCORE");
                let c = c.opt(self.rng.chance(30), "REV");
                let c = if self.rng.chance(30) {
                    c.a("LIMIT").a(self.index()).a(self.count())
                } else {
                    c
                };
                c.opt(self.rng.chance(50), "WITHSCORES")
            }
            // Lex bounds only from end to end: over members of different scores a bounded lex
            // range is unspecified and follows the skiplist's random levels (two redis-servers
            // differed on `ZRANGEBYLEX k (m1 +`).
            10 => Cmd::new("ZRANGEBYLEX")
                .k(k)
                .a("-")
                .a("+")
                .a("LIMIT")
                .a(self.index())
                .a(self.count()),
            11 => Cmd::new(self.rng.pick(&["ZRANK", "ZREVRANK"])).k(k).a(self.member()),
            12 => Cmd::new("ZREM").k(k).a(self.member()),
            13 => Cmd::new(self.rng.pick(&["ZPOPMIN", "ZPOPMAX"]))
                .k(k)
                .opt(self.rng.chance(50), self.count()),
            14 => Cmd::new("ZREVRANGE")
                .k(k)
                .a(self.index())
                .a(self.index())
                .opt(self.rng.chance(50), "WITHSCORES"),
            _ => Cmd::new("ZRANGEBYSCORE").k(k).a(self.score()).a(self.score()),
        }
    }

    fn bits(&mut self) -> Cmd {
        let k = self.typed_key(6);
        match self.rng.below(8) {
            0 | 1 => {
                let off = self.rng.pick(&["0", "7", "8", "100", "100000", "4294967296", "-1"]);
                Cmd::new("SETBIT").k(k).a(off).a(self.rng.pick(&["0", "1", "2"]))
            }
            2 => Cmd::new("GETBIT").k(k).a(self.rng.pick(&["0", "7", "100"])),
            3 => {
                let c = Cmd::new("BITCOUNT").k(k);
                if self.rng.chance(50) {
                    c.a(self.index())
                        .a(self.index())
                        .opt(self.rng.chance(50), self.rng.pick(&["BYTE", "BIT"]))
                } else {
                    c
                }
            }
            4 => Cmd::new("BITPOS")
                .k(k)
                .a(self.rng.pick(&["0", "1"]))
                .opt(self.rng.chance(50), self.index()),
            5 => Cmd::new("BITFIELD")
                .k(k)
                .a("INCRBY")
                .a("i5")
                .a("100")
                .a("7")
                .a("GET")
                .a("u4")
                .a("0"),
            6 => {
                let mut c = Cmd::new("PFADD").k(k);
                for _ in 0..self.rng.below(4) {
                    c = c.a(self.member());
                }
                c
            }
            _ => Cmd::new("PFCOUNT").k(k),
        }
    }
}
