//! Real third-party clients at their default settings, through keyhop and straight to a
//! redis-server, reply by reply.
//!
//! redis-py 8 and node-redis 5+ open every connection with `HELLO 3` (RESP3) by default, so
//! these tests need keyhop to speak RESP3 and `SELECT n`. The client scripts live in
//! `tests/clients/` and print one JSON line per step; the clients themselves are installed into
//! `target/test-clients/` by `scripts/install-test-clients.sh` (run from here when missing).
//! redis-rs is driven in-process with `?protocol=resp3`.
//!
//! `KEYHOP_COMPAT_AGAINST_DIRECT=1` puts a second plain redis-server where keyhop would be: it
//! checks the harness and the scripts themselves (both sides must then match) while keyhop
//! cannot run them yet.

mod common;

use std::process::Command;
use std::time::Duration;

use common::clients::{UnderTest, assert_same, clients_dir, ensure_clients, repo, run_bounded};
use common::redis_server;
use keyhop_router::key_slot;
use redis::Value;

/// How long one client script may run before it is killed.
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Clone, Copy, Debug)]
enum Client {
    RedisPy,
    NodeRedis,
}

/// Runs the client's script against 127.0.0.1:`port`; returns its output lines, or why it
/// failed (with whatever it printed).
fn run_client(client: Client, port: u16, prefix: &str) -> Result<Vec<String>, String> {
    ensure_clients();
    let scripts = repo().join("tests").join("clients");
    let mut cmd = match client {
        Client::RedisPy => {
            let mut c = Command::new("python3");
            c.arg(scripts.join("compat.py")).env("PYTHONPATH", clients_dir().join("python"));
            c
        }
        Client::NodeRedis => {
            let mut c = Command::new(common::clients::node());
            c.arg(scripts.join("compat.mjs")).env("COMPAT_NODE_DIR", clients_dir().join("node"));
            c
        }
    };
    // Client defaults only: the manual RESP2 switch of the scripts stays off.
    cmd.env_remove("COMPAT_RESP").arg(port.to_string()).arg(prefix);
    let (status, out, err) = run_bounded(cmd, SCRIPT_TIMEOUT);
    let lines: Vec<String> = out.lines().map(str::to_owned).collect();
    match status {
        Some(s) if s.success() => Ok(lines),
        Some(s) => {
            Err(format!("{client:?} script exited with {s}\nstdout:\n{out}\nstderr:\n{err}"))
        }
        None => Err(format!(
            "{client:?} script killed after {SCRIPT_TIMEOUT:?}\nstdout:\n{out}\nstderr:\n{err}"
        )),
    }
}

fn parse(line: &str) -> serde_json::Value {
    serde_json::from_str(line).unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}"))
}

/// The `result` of step `name` in a script's output.
fn result_of(lines: &[String], name: &str) -> serde_json::Value {
    lines
        .iter()
        .map(|l| parse(l))
        .find(|v| v["step"] == name)
        .map(|v| v["result"].clone())
        .unwrap_or_else(|| panic!("no step {name:?} in:\n{}", lines.join("\n")))
}

/// Steps whose expected result is a server error.
const ERROR_STEPS: &[&str] = &["pipeline_error", "eval_error", "errors"];

/// Checks that the direct run itself is sane: it finished, no step failed unexpectedly, it
/// spoke RESP3, and the plain keys of the sequence span both halves of the slot space.
fn check_direct(client: Client, lines: &[String], expected_types: serde_json::Value) {
    assert!(lines.len() >= 40, "{client:?}: too few steps:\n{}", lines.join("\n"));
    for line in lines {
        let v = parse(line);
        let step = v["step"].as_str().unwrap_or_default();
        if !ERROR_STEPS.contains(&step) {
            assert!(
                !v["result"].to_string().contains("error:"),
                "{client:?}: step {step} failed against redis-server itself: {line}"
            );
        }
    }
    assert_eq!(result_of(lines, "types"), expected_types, "{client:?}: RESP3 reply types");
    let hello = result_of(lines, "hello").to_string();
    let proto_3 = ["[\"bytes:proto\",\"int:3\"]", "[\"string:proto\",\"number:3\"]"];
    assert!(proto_3.iter().any(|p| hello.contains(p)), "{client:?}: HELLO says proto 3: {hello}");
    let keys = result_of(lines, "keys");
    let spread: Vec<bool> = keys["spread"]
        .as_array()
        .expect("keys.spread is an array")
        .iter()
        .map(|k| key_slot(k.as_str().expect("a key name").as_bytes()) < 8192)
        .collect();
    assert!(
        spread.contains(&true) && spread.contains(&false),
        "{client:?}: the plain keys must land in both groups: {keys}"
    );
}

fn compare(client: Client, groups: usize, prefix: &str, expected_types: serde_json::Value) {
    let reference = redis_server(&[]);
    let ut = UnderTest::start(groups);
    let direct = run_client(client, reference.port, prefix).unwrap_or_else(|e| panic!("{e}"));
    check_direct(client, &direct, expected_types);
    let proxied = match run_client(client, ut.port, prefix) {
        Ok(lines) => lines,
        Err(e) => panic!("{client:?} through keyhop: {e}{}", ut.log_tail()),
    };
    assert_same(&format!("{client:?}, {groups} group(s)"), &direct, &proxied, &ut);
}

fn python_types() -> serde_json::Value {
    serde_json::json!({"dict": [
        ["str:get_missing", "str:NoneType"],
        ["str:hello", "str:dict"],
        ["str:hgetall", "str:dict"],
        ["str:incr", "str:int"],
        ["str:raw_hgetall", "str:dict"],
        ["str:raw_smembers", "str:list"],
        ["str:raw_zscore", "str:float"],
        ["str:smembers", "str:set"],
        ["str:zrange_withscores", {"list": ["str:bytes", "str:float"]}],
        ["str:zscore", "str:float"],
    ]})
}

fn node_types() -> serde_json::Value {
    serde_json::json!({"Object": [
        ["string:get_missing", "string:null"],
        ["string:hello", "string:Object"],
        ["string:hgetall", "string:Object"],
        ["string:incr", "string:number"],
        ["string:mapped_hgetall", "string:Map"],
        ["string:mapped_smembers", "string:Set"],
        ["string:mapped_zscore", "string:string"],
        ["string:raw_hgetall", "string:Object"],
        ["string:raw_smembers", "string:Array"],
        ["string:raw_zscore", "string:number"],
        ["string:smembers", "string:Array"],
        ["string:zrange_withscores", {"Array": ["string:Object", "string:string", "string:number"]}],
        ["string:zscore", "string:number"],
    ]})
}

#[test]
fn redis_py_defaults_match_redis_server_two_groups() {
    compare(Client::RedisPy, 2, "compat-py", python_types());
}

#[test]
fn redis_py_defaults_match_redis_server_one_group() {
    compare(Client::RedisPy, 1, "compat-py", python_types());
}

#[test]
fn node_redis_defaults_match_redis_server_two_groups() {
    compare(Client::NodeRedis, 2, "compat-js", node_types());
}

#[test]
fn node_redis_defaults_match_redis_server_one_group() {
    compare(Client::NodeRedis, 1, "compat-js", node_types());
}

// ---- redis-rs over RESP3 ----------------------------------------------------------------------

/// A reply (or the error) as compared between the two endpoints: RESP3 sets sorted, since their
/// order is the server's hash order.
fn norm(v: Value) -> Value {
    match v {
        Value::Set(items) => {
            let mut items: Vec<Value> = items.into_iter().map(norm).collect();
            items.sort_by_key(|x| format!("{x:?}"));
            Value::Set(items)
        }
        Value::Array(items) => Value::Array(items.into_iter().map(norm).collect()),
        Value::Map(kv) => Value::Map(kv.into_iter().map(|(k, x)| (norm(k), norm(x))).collect()),
        other => other,
    }
}

type Step = (&'static str, Result<Value, String>);

async fn bounded<T>(
    f: impl std::future::Future<Output = redis::RedisResult<T>>,
) -> Result<T, String> {
    match tokio::time::timeout(Duration::from_secs(10), f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("timed out after 10 s".into()),
    }
}

async fn connect(url: &str) -> Result<redis::aio::MultiplexedConnection, String> {
    let client = redis::Client::open(url).map_err(|e| e.to_string())?;
    bounded(client.get_multiplexed_async_connection()).await
}

/// The redis-rs sequence against 127.0.0.1:`port`, over RESP3.
async fn redis_rs_sequence(port: u16) -> Vec<Step> {
    let base = format!("redis://127.0.0.1:{port}");
    let mut steps: Vec<Step> = Vec::new();
    let con = connect(&format!("{base}/?protocol=resp3")).await;
    let con1 = connect(&format!("{base}/1?protocol=resp3")).await;
    steps.push(("connect", con.as_ref().map(|_| Value::Okay).map_err(Clone::clone)));
    steps.push(("connect_db1", con1.as_ref().map(|_| Value::Okay).map_err(Clone::clone)));
    let (Ok(mut con), Ok(mut con1)) = (con, con1) else { return steps };

    let p = "compat-rs";
    let spread: Vec<String> = (0..8).map(|i| format!("{p}:s:{i}")).collect();
    assert!(
        spread.iter().any(|k| key_slot(k.as_bytes()) < 8192)
            && spread.iter().any(|k| key_slot(k.as_bytes()) >= 8192),
        "the redis-rs keys must land in both groups"
    );
    let (h, s, z, tag_a, tag_b) =
        (format!("{p}:h"), format!("{p}:set"), format!("{p}:z"), "{rs}:a", "{rs}:b");
    let missing = format!("{p}:missing");

    let mut mset = redis::cmd("MSET");
    for (i, k) in spread.iter().enumerate() {
        mset.arg(k).arg(format!("v{i}"));
    }
    let cmds: Vec<(&'static str, redis::Cmd)> = vec![
        ("hello", redis::cmd("HELLO").arg(3).clone()),
        ("hset", redis::cmd("HSET").arg(&h).arg("f1").arg("a").arg("f2").arg("b").clone()),
        ("hgetall", redis::cmd("HGETALL").arg(&h).clone()),
        ("hgetall_missing", redis::cmd("HGETALL").arg(&missing).clone()),
        ("sadd", redis::cmd("SADD").arg(&s).arg("x").arg("y").arg("z").clone()),
        ("smembers", redis::cmd("SMEMBERS").arg(&s).clone()),
        ("sismember", redis::cmd("SISMEMBER").arg(&s).arg("x").clone()),
        ("zadd", redis::cmd("ZADD").arg(&z).arg(1.5).arg("m1").arg(3).arg("m2").clone()),
        ("zscore", redis::cmd("ZSCORE").arg(&z).arg("m1").clone()),
        ("zscore_missing", redis::cmd("ZSCORE").arg(&z).arg("nope").clone()),
        (
            "zrange_withscores",
            redis::cmd("ZRANGE").arg(&z).arg(0).arg(-1).arg("WITHSCORES").clone(),
        ),
        ("get_missing", redis::cmd("GET").arg(&missing).clone()),
        ("mset", mset),
        ("mget", redis::cmd("MGET").arg(&spread).arg(&missing).clone()),
        ("exists", redis::cmd("EXISTS").arg(&spread).clone()),
        (
            "eval",
            redis::cmd("EVAL")
                .arg("return redis.call('MGET', KEYS[1], KEYS[2])")
                .arg(2)
                .arg(tag_a)
                .arg(tag_b)
                .clone(),
        ),
        ("incrbyfloat", redis::cmd("INCRBYFLOAT").arg(tag_a).arg(0.5).clone()),
        ("wrongtype", redis::cmd("INCR").arg(&h).clone()),
    ];
    for (name, cmd) in cmds {
        let r = bounded(cmd.query_async::<Value>(&mut con)).await;
        steps.push((name, r.map(norm)));
    }

    let mut pipe = redis::pipe();
    for (i, k) in spread.iter().enumerate() {
        pipe.cmd("SET").arg(k).arg(format!("p{i}"));
    }
    pipe.cmd("GET").arg(&spread[3]);
    pipe.cmd("HGETALL").arg(&h);
    pipe.cmd("SMEMBERS").arg(&s);
    pipe.cmd("ZSCORE").arg(&z).arg("m2");
    pipe.cmd("GET").arg(&missing);
    pipe.cmd("MGET").arg(&spread);
    let r = bounded(pipe.query_async::<Value>(&mut con)).await;
    steps.push(("pipeline", r.map(norm)));

    // SELECT 1 through the URL: written in db 1, invisible in db 0.
    let dbkey = format!("{p}:db");
    let db_steps: Vec<(&'static str, bool, redis::Cmd)> = vec![
        ("db1_set", true, redis::cmd("SET").arg(&dbkey).arg("in-db1").clone()),
        ("db1_get", true, redis::cmd("GET").arg(&dbkey).clone()),
        ("db0_get", false, redis::cmd("GET").arg(&dbkey).clone()),
        ("db0_exists", false, redis::cmd("EXISTS").arg(&dbkey).clone()),
        ("db1_hgetall", true, redis::cmd("HGETALL").arg(&h).clone()),
        ("db1_del", true, redis::cmd("DEL").arg(&dbkey).clone()),
    ];
    for (name, in_db1, cmd) in db_steps {
        let c = if in_db1 { &mut con1 } else { &mut con };
        let r = bounded(cmd.query_async::<Value>(c)).await;
        steps.push((name, r.map(norm)));
    }
    steps
}

fn hello_field<'a>(v: &'a Value, field: &str) -> Option<&'a Value> {
    let Value::Map(kv) = v else { return None };
    kv.iter().find(|(k, _)| *k == Value::BulkString(field.as_bytes().to_vec())).map(|(_, x)| x)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_rs_resp3_values_match_redis_server() {
    let reference = redis_server(&[]);
    let ut = UnderTest::start(2);
    let direct = redis_rs_sequence(reference.port).await;
    let proxied = redis_rs_sequence(ut.port).await;

    // The direct run is RESP3 and every step worked (except the deliberate WRONGTYPE).
    let get = |name: &str| -> &Value {
        let (_, r) = direct.iter().find(|(n, _)| *n == name).expect("step present");
        match r {
            Ok(v) => v,
            Err(e) => panic!("step {name} failed against redis-server itself: {e}"),
        }
    };
    assert!(matches!(get("hgetall"), Value::Map(m) if m.len() == 2), "{:?}", get("hgetall"));
    assert!(matches!(get("smembers"), Value::Set(s) if s.len() == 3), "{:?}", get("smembers"));
    assert_eq!(get("zscore"), &Value::Double(1.5));
    assert_eq!(get("get_missing"), &Value::Nil);
    assert_eq!(get("db0_get"), &Value::Nil);
    assert_eq!(get("db1_get"), &Value::BulkString(b"in-db1".to_vec()));
    assert_eq!(hello_field(get("hello"), "proto"), Some(&Value::Int(3)));
    assert!(
        direct.iter().find(|(n, _)| *n == "wrongtype").is_some_and(|(_, r)| r.is_err()),
        "INCR on a hash fails"
    );
    assert!(
        direct.iter().all(|(n, r)| *n == "wrongtype" || r.is_ok()),
        "the direct run has no other errors: {direct:?}"
    );

    // HELLO's id is the connection's: it legitimately differs.
    let strip_id = |steps: Vec<Step>| -> Vec<Step> {
        steps
            .into_iter()
            .map(|(n, r)| {
                let r = r.map(|v| match v {
                    Value::Map(kv) if n == "hello" => Value::Map(
                        kv.into_iter()
                            .filter(|(k, _)| *k != Value::BulkString(b"id".to_vec()))
                            .collect(),
                    ),
                    v => v,
                });
                (n, r)
            })
            .collect()
    };
    let lines = |steps: Vec<Step>| -> Vec<String> {
        strip_id(steps).iter().map(|(n, r)| format!("{n}: {r:?}")).collect()
    };
    assert_same("redis-rs over RESP3", &lines(direct), &lines(proxied), &ut);
}
