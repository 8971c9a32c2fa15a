//! Which arguments are keys, for every kind of key spec, and the syntax errors Redis gives.

use super::*;

#[test]
fn keys_of_fixed_position_commands() {
    let cases: &[(&[&str], &[usize])] = &[
        (&["GET", "k"], &[1]),
        (&["set", "k", "v", "EX", "10"], &[1]),
        (&["HSET", "h", "f", "v", "f2", "v2"], &[1]),
        (&["MGET", "a", "b", "c"], &[1, 2, 3]),
        (&["MSET", "a", "1", "b", "2"], &[1, 3]),
        (&["MSETNX", "a", "1", "b", "2"], &[1, 3]),
        (&["DEL", "a"], &[1]),
        (&["RENAME", "a", "b"], &[1, 2]),
        (&["SMOVE", "a", "b", "m"], &[1, 2]),
        (&["LMOVE", "a", "b", "LEFT", "RIGHT"], &[1, 2]),
        (&["BLMOVE", "a", "b", "LEFT", "RIGHT", "0"], &[1, 2]),
        (&["BLPOP", "a", "b", "0"], &[1, 2]),
        (&["BRPOPLPUSH", "a", "b", "0"], &[1, 2]),
        (&["SUNIONSTORE", "d", "a", "b"], &[1, 2, 3]),
        (&["SINTER", "a", "b"], &[1, 2]),
        (&["PFMERGE", "d", "a", "b"], &[1, 2, 3]),
        (&["PFCOUNT", "a", "b"], &[1, 2]),
        (&["BITOP", "AND", "d", "a", "b"], &[2, 3, 4]),
        (&["LCS", "a", "b", "LEN"], &[1, 2]),
        (&["COPY", "a", "b", "REPLACE"], &[1, 2]),
        (&["GEOSEARCHSTORE", "d", "s", "FROMMEMBER", "m", "BYRADIUS", "1", "m"], &[1, 2]),
        (&["ZRANGESTORE", "d", "s", "0", "-1"], &[1, 2]),
        (&["WATCH", "a", "b"], &[1, 2]),
        (&["OBJECT", "ENCODING", "k"], &[2]),
        (&["object", "freq", "k"], &[2]),
        (&["MEMORY", "USAGE", "k", "SAMPLES", "5"], &[2]),
        (&["XINFO", "STREAM", "s", "FULL"], &[2]),
        (&["XGROUP", "CREATE", "s", "g", "$"], &[2]),
        (&["PING"], &[]),
        (&["DBSIZE"], &[]),
        (&["CLIENT", "LIST"], &[]),
        (&["SPUBLISH", "ch", "msg"], &[]),
        (&["PUBLISH", "ch", "msg"], &[]),
        (&["SSUBSCRIBE", "a", "b"], &[]),
    ];
    for (args, want) in cases {
        assert_eq!(keys_of(args), Ok(want.to_vec()), "{args:?}");
    }
}

#[test]
fn keys_of_keynum_commands() {
    let cases: &[(&[&str], &[usize])] = &[
        (&["EVAL", "return 1", "2", "a", "b", "x"], &[3, 4]),
        (&["EVAL", "return 1", "0", "x"], &[]),
        (&["EVAL", "return 1", "0"], &[]),
        (&["EVALSHA_RO", "e0e1f9fabfc9d4800c877a703b823ac0578ff8db", "1", "a"], &[3]),
        (&["FCALL", "f", "1", "a", "b"], &[3]),
        (&["FCALL_RO", "f", "0"], &[]),
        (&["ZUNIONSTORE", "d", "2", "a", "b", "WEIGHTS", "1", "2"], &[1, 3, 4]),
        (&["ZINTERSTORE", "d", "1", "a"], &[1, 3]),
        (&["ZDIFFSTORE", "d", "2", "a", "b"], &[1, 3, 4]),
        (&["ZUNION", "2", "a", "b", "WITHSCORES"], &[2, 3]),
        (&["ZINTER", "1", "a"], &[2]),
        (&["ZDIFF", "2", "a", "b"], &[2, 3]),
        (&["ZINTERCARD", "2", "a", "b", "LIMIT", "1"], &[2, 3]),
        (&["SINTERCARD", "2", "a", "b"], &[2, 3]),
        (&["LMPOP", "2", "a", "b", "LEFT", "COUNT", "2"], &[2, 3]),
        (&["BLMPOP", "0", "1", "a", "RIGHT"], &[3]),
        (&["ZMPOP", "1", "a", "MIN"], &[2]),
        (&["BZMPOP", "1.5", "2", "a", "b", "MAX"], &[3, 4]),
    ];
    for (args, want) in cases {
        assert_eq!(keys_of(args), Ok(want.to_vec()), "{args:?}");
    }
}

#[test]
fn keys_of_keyword_and_special_commands() {
    let cases: &[(&[&str], &[usize])] = &[
        (&["XREAD", "STREAMS", "a", "0"], &[2]),
        (&["XREAD", "COUNT", "2", "BLOCK", "0", "STREAMS", "a", "b", "0", "0"], &[6, 7]),
        (&["XREAD", "STREAMS", "streams", "streams", "0", "0"], &[2, 3]),
        (&["XREADGROUP", "GROUP", "g", "c", "STREAMS", "a", ">"], &[5]),
        (&["XREADGROUP", "GROUP", "g", "c", "COUNT", "1", "STREAMS", "a", "b", ">", ">"], &[7, 8]),
        (&["SORT", "k"], &[1]),
        (&["SORT", "k", "BY", "w_*", "GET", "#", "GET", "o_*"], &[1]),
        (&["SORT", "k", "LIMIT", "0", "10", "STORE", "d"], &[1, 6]),
        (&["sort", "k", "store", "d1", "ALPHA", "STORE", "d2"], &[1, 6]),
        (&["SORT", "k", "BY", "store"], &[1]),
        (&["SORT", "k", "STORE"], &[1]),
        (&["SORT_RO", "k", "BY", "w_*", "GET", "o_*"], &[1]),
        (&["GEORADIUS", "k", "0", "0", "1", "m"], &[1]),
        (&["GEORADIUS", "k", "0", "0", "1", "m", "STORE", "d"], &[1, 7]),
        (&["GEORADIUS", "k", "0", "0", "1", "m", "STORE", "d", "STOREDIST", "e"], &[1, 7, 9]),
        (&["GEORADIUS", "k", "0", "0", "1", "m", "COUNT", "5", "store"], &[1]),
        (&["GEORADIUSBYMEMBER", "k", "m", "1", "km", "STOREDIST", "d"], &[1, 6]),
        (&["MIGRATE", "h", "6379", "k", "0", "5000"], &[3]),
        (&["MIGRATE", "h", "6379", "k", "0", "5000", "COPY", "REPLACE"], &[3]),
        (&["MIGRATE", "h", "6379", "", "0", "5000", "KEYS", "a", "b"], &[7, 8]),
        (&["MIGRATE", "h", "6379", "", "0", "5000", "AUTH", "keys", "KEYS", "a"], &[9]),
        (&["MIGRATE", "h", "6379", "", "0", "5000", "AUTH2", "u", "p", "KEYS", "a"], &[10]),
        (&["MIGRATE", "h", "6379", "x", "0", "5000", "KEYS", "a"], &[]),
    ];
    for (args, want) in cases {
        assert_eq!(keys_of(args), Ok(want.to_vec()), "{args:?}");
    }
}

#[test]
fn keys_errors_match_redis() {
    let too_many = "ERR Number of keys can't be greater than number of args";
    let cases: &[(&[&str], &str)] = &[
        (&["EVAL", "s", "5", "a"], too_many),
        (&["EVAL", "s", "-1", "a"], "ERR Number of keys can't be negative"),
        (&["EVAL", "s", "x", "a"], "ERR value is not an integer or out of range"),
        (&["EVAL", "s", "99999999999999999999"], "ERR value is not an integer or out of range"),
        (&["EVAL", "s", "+1", "a"], "ERR value is not an integer or out of range"),
        (&["EVAL", "s", "01", "a"], "ERR value is not an integer or out of range"),
        (&["EVALSHA", "e0e1f9fabfc9d4800c877a703b823ac0578ff8db", "2", "a"], too_many),
        // A digest of the wrong length is refused before numkeys is read.
        (&["EVALSHA", "s", "2", "a"], "NOSCRIPT No matching script. Please use EVAL."),
        (&["FCALL", "f", "x", "a"], "ERR Bad number of keys provided"),
        (&["FCALL_RO", "f", "3", "a"], too_many),
        (&["FCALL", "f", "-2", "a"], "ERR Number of keys can't be negative"),
        (&["ZUNIONSTORE", "d", "5", "a"], "ERR syntax error"),
        (
            &["ZUNIONSTORE", "d", "0", "a"],
            "ERR at least 1 input key is needed for 'zunionstore' command",
        ),
        (&["ZINTER", "-1", "a"], "ERR at least 1 input key is needed for 'zinter' command"),
        (&["ZDIFF", "x", "a"], "ERR value is not an integer or out of range"),
        (&["ZINTERCARD", "3", "a"], "ERR syntax error"),
        (&["SINTERCARD", "5", "a"], too_many),
        (&["SINTERCARD", "0", "a"], "ERR numkeys should be greater than 0"),
        (&["SINTERCARD", "x", "a"], "ERR numkeys should be greater than 0"),
        (&["LMPOP", "5", "a", "LEFT"], "ERR syntax error"),
        (&["LMPOP", "2", "a", "b"], "ERR syntax error"),
        (&["LMPOP", "0", "a", "LEFT"], "ERR numkeys should be greater than 0"),
        (&["ZMPOP", "x", "a", "MIN"], "ERR numkeys should be greater than 0"),
        (&["BLMPOP", "0", "-1", "a", "LEFT"], "ERR numkeys should be greater than 0"),
        (&["BZMPOP", "0", "3", "a", "MIN"], "ERR syntax error"),
        (&["MSET", "a", "1", "b"], "ERR wrong number of arguments for 'mset' command"),
        (&["MSETNX", "a", "1", "b"], "ERR wrong number of arguments for 'msetnx' command"),
        (
            &["XREAD", "STREAMS", "a", "b", "0"],
            "ERR Unbalanced XREAD list of streams: for each stream key an ID or '$' must be specified.",
        ),
        (
            &["XREADGROUP", "GROUP", "g", "c", "STREAMS", "a", "b", ">"],
            "ERR Unbalanced XREAD list of streams: for each stream key an ID or '$' must be specified.",
        ),
        (&["XREAD", "COUNT", "1", "a", "b"], "ERR syntax error"),
        (&["XREAD", "COUNT", "1", "STREAMS"], "ERR syntax error"),
        (&["GET"], "ERR wrong number of arguments for 'get' command"),
        (&["GET", "a", "b"], "ERR wrong number of arguments for 'get' command"),
        (&["OBJECT", "ENCODING"], "ERR wrong number of arguments for 'object|encoding' command"),
    ];
    for (args, want) in cases {
        assert_eq!(syntax(args), *want, "{args:?}");
    }
}

#[test]
fn parse_i64_is_string2ll() {
    assert_eq!(parse_i64(b"0"), Some(0));
    assert_eq!(parse_i64(b"12"), Some(12));
    assert_eq!(parse_i64(b"-12"), Some(-12));
    assert_eq!(parse_i64(b"9223372036854775807"), Some(i64::MAX));
    assert_eq!(parse_i64(b"-9223372036854775808"), Some(i64::MIN));
    for bad in
        [&b""[..], b"-", b"-0", b"00", b"01", b"+1", b" 1", b"1 ", b"1a", b"9223372036854775808"]
    {
        assert_eq!(parse_i64(bad), None, "{bad:?}");
    }
    assert_eq!(parse_i64(b"-9223372036854775809"), None);
    assert_eq!(parse_i64(b"123456789012345678901"), None);
}
