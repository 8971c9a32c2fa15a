//! More of the generator's commands: several keys at once (split, same-group, CROSSSLOT),
//! streams, scripts, blocking commands with short timeouts, geo, SORT, and keyless or odd commands.

use super::{Cmd, Cmp, Gen};

/// A script loaded with SCRIPT LOAD (on every group through keyhop) and run with EVALSHA; never
/// run with EVAL, which would cache it on one group only (as in Redis Cluster).
const LOADED: &str = "return 'x'";
const LOADED_SHA: &str = "573cd020e2fc941d149285df8b681959190edd09";

impl Gen<'_> {
    /// Commands over several keys: split ones (any groups) and same-group ones (CROSSSLOT when
    /// the keys span both groups).
    pub(super) fn multi_key(&mut self) -> Cmd {
        let n = self.rng.below(23);
        if n < 6 {
            let keys = self.keys_some(5);
            return match n {
                0 => Cmd::new("MGET").ks(keys).split(),
                1 => Cmd::new(self.rng.pick(&["DEL", "UNLINK"])).ks(keys).split(),
                2 => Cmd::new("EXISTS").ks(keys).split(),
                3 => Cmd::new("TOUCH").ks(keys).split(),
                _ => {
                    let mut c = Cmd::new("MSET").split();
                    for k in keys {
                        c = c.k(k).a(self.val());
                    }
                    // An odd argument count: Redis's arity error, before any routing.
                    c.opt(self.rng.chance(5), "odd")
                }
            };
        }
        let keys = self.keys_some(3);
        let two = self.keys_n(2);
        let (a, b) = (two[0].clone(), two[1].clone());
        let nk = keys.len().to_string();
        match n {
            6 => {
                Cmd::new(self.rng.pick(&["SINTER", "SUNION", "SDIFF"])).ks(keys).cmp(Cmp::Unordered)
            }
            7 => {
                Cmd::new(self.rng.pick(&["SINTERSTORE", "SUNIONSTORE", "SDIFFSTORE"])).k(a).ks(keys)
            }
            8 => Cmd::new("SMOVE").k(a).k(b).a(self.member()),
            9 => {
                let c = Cmd::new("SINTERCARD").a(&nk).ks(keys);
                if self.rng.chance(30) { c.a("LIMIT").a(self.count()) } else { c }
            }
            10 => {
                let c = Cmd::new(self.rng.pick(&["ZUNIONSTORE", "ZINTERSTORE", "ZDIFFSTORE"]))
                    .k(a)
                    .a(&nk)
                    .ks(keys);
                if self.rng.chance(20) {
                    c.a("AGGREGATE").a(self.rng.pick(&["MIN", "MAX", "SUM", "AVG"]))
                } else {
                    c
                }
            }
            11 => Cmd::new(self.rng.pick(&["ZUNION", "ZINTER", "ZDIFF"]))
                .a(&nk)
                .ks(keys)
                .opt(self.rng.chance(50), "WITHSCORES"),
            12 => Cmd::new("ZRANGESTORE").k(a).k(b).a("0").a("-1"),
            13 => Cmd::new("LMOVE").k(a).k(b).a(self.side()).a(self.side()),
            14 => Cmd::new("RPOPLPUSH").k(a).k(b),
            15 => {
                let c = Cmd::new("LMPOP").a(&nk).ks(keys).a(self.side());
                if self.rng.chance(40) { c.a("COUNT").a(self.count()) } else { c }
            }
            16 => Cmd::new(self.rng.pick(&["RENAME", "RENAMENX"])).k(a).k(b),
            17 => Cmd::new("COPY").k(a).k(b).opt(self.rng.chance(50), "REPLACE"),
            18 => Cmd::new("BITOP").a(self.rng.pick(&["AND", "OR", "XOR", "NOT"])).k(a).ks(keys),
            19 => Cmd::new("PFMERGE").k(a).ks(keys),
            20 => Cmd::new("LCS").k(a).k(b),
            21 => {
                let mut c = Cmd::new("MSETNX");
                for k in keys {
                    c = c.k(k).a(self.val());
                }
                c
            }
            _ => {
                // numkeys that disagrees with the keys given (one group's keys): Redis's own
                // syntax errors, which keyhop's key extraction must give word for word.
                let bad = self.rng.pick(&["0", "-1", "9", "x"]);
                let t = self.only_tag.unwrap_or_else(|| self.rng.below(2));
                let (d, k) = (self.keys.tagged[t][0].clone(), self.keys.tagged[t][1].clone());
                match self.rng.below(4) {
                    0 => Cmd::new("ZUNIONSTORE").k(d).a(bad).k(k),
                    1 => Cmd::new("SINTERCARD").a(bad).k(k),
                    2 => Cmd::new("LMPOP").a(bad).k(k).a("LEFT"),
                    _ => Cmd::new("ZINTER").a(bad).k(k),
                }
            }
        }
    }

    /// Keyless, unknown and oddly shaped commands.
    pub(super) fn odd(&mut self) -> Cmd {
        match self.rng.below(9) {
            6 => {
                Cmd::new(self.rng.pick(&["OBJECT", "XGROUP", "CLIENT", "SCRIPT", "CONFIG"])).a(self
                    .rng
                    .pick(&[&b"FOO"[..], b"nosuch", b"Help2", b"\xff\xfe", b"x\r\ny\xe9\x00z"]))
            }
            // A protocol switch (or RESET back to RESP2 and database 0) in the middle of a
            // pipeline: keyhop holds the rest of the pipeline until the earlier replies are in.
            7 => Cmd::new("HELLO").a(self.rng.pick(&["2", "3", "3", "4", "x"])).cmp(Cmp::Hello),
            8 => Cmd::new("RESET"),
            0 => Cmd::new("ECHO").a(self.val()),
            1 => Cmd::new("PING").opt(self.rng.chance(50), "hello"),
            2 => Cmd::new(self.rng.pick(&["FOOBAR", "GETT", "xyzzy"])).a(self.val()).a("b"),
            3 => Cmd::new("EXISTS").split(),
            4 => Cmd::new("SELECT").a(self.rng.pick(&["0", "1", "0", "99", "x"])),
            _ => Cmd::new("DBSIZE"),
        }
    }

    /// Lua scripts: keys like any command (CROSSSLOT across groups), errors raised inside, and
    /// EVALSHA of a script loaded everywhere or of one never loaded.
    pub(super) fn script(&mut self) -> Cmd {
        let two = self.keys_n(2);
        let k = two[0].clone();
        match self.rng.below(8) {
            0 => Cmd::new("EVAL").a("return redis.call('GET', KEYS[1])").a("1").k(k),
            1 => Cmd::new("EVAL")
                .a("return {KEYS[1], ARGV[1], redis.call('INCR', KEYS[1])}")
                .a("1")
                .k(k)
                .a(self.val()),
            2 => Cmd::new("EVAL").a("return redis.call('MGET', KEYS[1], KEYS[2])").a("2").ks(two),
            3 => Cmd::new("EVAL").a("return {1, 'two', 3.5, false, {err = 'E x'}}").a("0"),
            4 => Cmd::new("SCRIPT").a("LOAD").a(LOADED).split(),
            5 => Cmd::new("EVALSHA").a(LOADED_SHA).a("1").k(k),
            6 => Cmd::new("EVALSHA").a("ffffffffffffffffffffffffffffffffffffffff").a("0"),
            _ => Cmd::new("EVAL")
                .a("return redis.call('SET', KEYS[1], ARGV[1])")
                .a("1")
                .k(k)
                .a(self.val()),
        }
    }

    /// Blocking commands with a 10 ms timeout: served at once when there is data, nil after the
    /// timeout otherwise; either way on a connection keyhop pins for the command.
    pub(super) fn blocking(&mut self) -> Cmd {
        let keys = self.keys_some(2);
        let two = self.keys_n(2);
        match self.rng.below(5) {
            0 => Cmd::new(self.rng.pick(&["BLPOP", "BRPOP"])).ks(keys).a("0.01"),
            1 => Cmd::new("BLMOVE").ks(two).a(self.side()).a(self.side()).a("0.01"),
            2 => Cmd::new(self.rng.pick(&["BZPOPMIN", "BZPOPMAX"])).ks(keys).a("0.01"),
            3 => Cmd::new("BLMPOP").a("0.01").a(keys.len().to_string()).ks(keys).a(self.side()),
            _ => Cmd::new("BRPOPLPUSH").ks(two).a("0.01"),
        }
    }

    /// Geo commands (sorted sets underneath): distances and positions as the server prints them.
    pub(super) fn geo(&mut self) -> Cmd {
        let k = self.typed_key(4);
        let lon = self.rng.pick(&["13.361389", "15.087269", "-122.27652", "0", "180.1", "x"]);
        let lat = self.rng.pick(&["38.115556", "37.502669", "37.805186", "0", "85.06", "-86"]);
        match self.rng.below(6) {
            0 | 1 => Cmd::new("GEOADD").k(k).a(lon).a(lat).a(self.member()),
            2 => Cmd::new("GEODIST")
                .k(k)
                .a(self.member())
                .a(self.member())
                .opt(self.rng.chance(50), "km"),
            3 => Cmd::new("GEOPOS").k(k).a(self.member()).a(self.member()),
            4 => Cmd::new("GEOSEARCH")
                .k(k)
                .a("FROMLONLAT")
                .a(lon)
                .a(lat)
                .a("BYRADIUS")
                .a(self.rng.pick(&["200", "5000", "-1"]))
                .a("km")
                .a("ASC")
                .opt(self.rng.chance(50), "WITHDIST"),
            _ => {
                let two = self.keys_n(2);
                Cmd::new("GEOSEARCHSTORE")
                    .ks(two)
                    .a("FROMLONLAT")
                    .a("15")
                    .a("37")
                    .a("BYBOX")
                    .a("400")
                    .a("400")
                    .a("km")
                    .a("ASC")
            }
        }
    }

    /// SORT by string order (ties are equal strings, so the order is the same on every server;
    /// a numeric sort of a set could order equal scores by each server's hash order).
    pub(super) fn sort(&mut self) -> Cmd {
        let ty = if self.rng.chance(50) { 1 } else { 3 };
        let k = self.typed_key(ty);
        let c = Cmd::new(self.rng.pick(&["SORT", "SORT_RO"])).k(k).a("ALPHA");
        let c = c.opt(self.rng.chance(40), "DESC");
        let c = if self.rng.chance(30) { c.a("LIMIT").a(self.index()).a(self.count()) } else { c };
        if self.rng.chance(30) && c.name() == "SORT" {
            let dest = self.keys_n(1).remove(0);
            return c.a("STORE").k(dest);
        }
        c
    }

    /// Commands keyhop answers itself, or routes by channel, or that only echo.
    pub(super) fn local(&mut self) -> Cmd {
        match self.rng.below(6) {
            0 => {
                Cmd::new("CLIENT").a("SETNAME").a(self.rng.pick(&["app", "a b", "", "x\ny", "n1"]))
            }
            1 => Cmd::new("CLIENT").a("GETNAME"),
            // The channel counts as a key: keyhop publishes on the group owning its slot (where
            // its subscribers are), so inside MULTI it must be in the transaction's group.
            2 => {
                let channel = self.key();
                Cmd::new("PUBLISH").k(channel).a(self.val())
            }
            3 => Cmd::new("SCRIPT")
                .a("EXISTS")
                .a(LOADED_SHA)
                .a("ffffffffffffffffffffffffffffffffffffffff"),
            4 => Cmd::new("XPENDING").k(self.typed_key(5)).a("g"),
            _ => Cmd::new("XACK").k(self.typed_key(5)).a("g").a(self.stream_id()),
        }
    }

    /// Streams with explicit, increasing IDs (the same on both sides), and a consumer group.
    pub(super) fn stream(&mut self) -> Cmd {
        let k = self.typed_key(5);
        match self.rng.below(11) {
            0..=3 => {
                let c = Cmd::new("XADD").k(k);
                let c = if self.rng.chance(15) {
                    c.a("MAXLEN").a(self.rng.pick(&["2", "0", "-1"]))
                } else {
                    c
                };
                let id = self.stream_id();
                c.a(id).a(self.field()).a(self.val())
            }
            4 => Cmd::new("XLEN").k(k),
            5 => {
                let c = Cmd::new("XRANGE").k(k).a("-").a("+");
                if self.rng.chance(30) { c.a("COUNT").a(self.count()) } else { c }
            }
            6 => Cmd::new("XREVRANGE")
                .k(k)
                .a("+")
                .a("-")
                .a("COUNT")
                .a(self.rng.pick(&["1", "2", "0"])),
            7 => Cmd::new("XTRIM").k(k).a("MAXLEN").a(self.rng.pick(&["1", "3", "0", "-1"])),
            8 => Cmd::new("XGROUP")
                .a("CREATE")
                .k(k)
                .a("g")
                .a("0")
                .opt(self.rng.chance(50), "MKSTREAM"),
            9 => Cmd::new("XREADGROUP")
                .a("GROUP")
                .a("g")
                .a("c1")
                .a("COUNT")
                .a("2")
                .a("STREAMS")
                .k(k)
                .a(">"),
            _ => {
                Cmd::new("XREAD").a("COUNT").a(self.rng.pick(&["1", "5"])).a("STREAMS").k(k).a("0")
            }
        }
    }
}
