//! The JSON shapes of etcd's v3 gateway: requests are built here and responses decoded here, so
//! the gateway's quirks live in one place. Keys and values travel base64-encoded, int64 fields
//! travel as JSON strings, and a field at its default value (false, 0, empty) is omitted, so
//! every response field is `#[serde(default)]`.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Deserializer};
use serde_json::{Value, json};

use super::{Compare, Event, EventKind, Kv, Op};

/// Base64 of `bytes`, as the gateway wants keys and values.
pub(crate) fn b64(bytes: &[u8]) -> String {
    STANDARD.encode(bytes)
}

/// The end of the key range holding every key that starts with `prefix`: the prefix with its
/// last byte below 0xff incremented (and the rest dropped); `[0]` (no end: every key) when there
/// is no such byte.
pub(crate) fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

/// An int64 that the gateway sends as a string (and that we also accept as a number).
fn de_i64<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Num {
        S(String),
        N(i64),
    }
    match Num::deserialize(d)? {
        Num::N(n) => Ok(n),
        Num::S(s) => s.parse().map_err(serde::de::Error::custom),
    }
}

/// Base64 bytes.
fn de_b64<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
    let s = String::deserialize(d)?;
    STANDARD.decode(s.as_bytes()).map_err(serde::de::Error::custom)
}

/// `ResponseHeader`: only the revision matters to us.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct Header {
    #[serde(deserialize_with = "de_i64")]
    pub revision: i64,
}

/// `mvccpb.KeyValue`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RawKv {
    #[serde(deserialize_with = "de_b64")]
    key: Vec<u8>,
    #[serde(deserialize_with = "de_b64")]
    value: Vec<u8>,
    #[serde(deserialize_with = "de_i64")]
    create_revision: i64,
    #[serde(deserialize_with = "de_i64")]
    mod_revision: i64,
    #[serde(deserialize_with = "de_i64")]
    version: i64,
    #[serde(deserialize_with = "de_i64")]
    lease: i64,
}

impl From<RawKv> for Kv {
    fn from(r: RawKv) -> Kv {
        Kv {
            key: r.key,
            value: r.value,
            create_revision: r.create_revision,
            mod_revision: r.mod_revision,
            version: r.version,
            lease: r.lease,
        }
    }
}

/// `RangeResponse`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct RangeResponse {
    pub header: Header,
    kvs: Vec<RawKv>,
}

impl RangeResponse {
    /// The key-values, in key order.
    pub fn kvs(self) -> Vec<Kv> {
        self.kvs.into_iter().map(Kv::from).collect()
    }
}

/// Any response of which only the header is used (put, delete, compaction, revoke).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct HeaderOnly {
    pub header: Header,
}

/// One entry of `TxnResponse.responses`: only ranges carry data we return.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct ResponseOp {
    response_range: Option<RangeResponse>,
}

/// `TxnResponse`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct TxnResponse {
    pub header: Header,
    pub succeeded: bool,
    responses: Vec<ResponseOp>,
}

impl TxnResponse {
    /// The key-values of each range op of the branch taken, in order.
    pub fn gets(self) -> Vec<Vec<Kv>> {
        self.responses
            .into_iter()
            .filter_map(|r| r.response_range.map(RangeResponse::kvs))
            .collect()
    }
}

/// `LeaseGrantResponse`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct GrantResponse {
    #[serde(rename = "ID", deserialize_with = "de_i64")]
    pub id: i64,
    #[serde(rename = "TTL", deserialize_with = "de_i64")]
    pub ttl: i64,
    pub error: String,
}

/// `LeaseKeepAliveResponse` (the gateway streams it as `{"result": ...}`).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct KeepAliveResponse {
    #[serde(rename = "TTL", deserialize_with = "de_i64")]
    pub ttl: i64,
}

/// One message of a gateway stream: `{"result": T}` or `{"error": {...}}`.
#[derive(Debug, Deserialize)]
pub(crate) struct StreamMsg<T> {
    pub result: Option<T>,
    pub error: Option<Value>,
}

/// `mvccpb.Event`: the type is omitted for PUT (the enum's zero).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RawEvent {
    #[serde(rename = "type")]
    kind: String,
    kv: RawKv,
}

/// `WatchResponse`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct WatchResponse {
    pub header: Header,
    pub created: bool,
    pub canceled: bool,
    #[serde(deserialize_with = "de_i64")]
    pub compact_revision: i64,
    pub cancel_reason: String,
    events: Vec<RawEvent>,
}

impl WatchResponse {
    /// The events, in revision order; an unknown type is reported as an error.
    pub fn events(&mut self) -> Result<Vec<Event>, String> {
        std::mem::take(&mut self.events)
            .into_iter()
            .map(|e| {
                let kind = match e.kind.as_str() {
                    "" | "PUT" => EventKind::Put,
                    "DELETE" => EventKind::Delete,
                    other => return Err(format!("unknown watch event type {other:?}")),
                };
                Ok(Event { kind, kv: e.kv.into() })
            })
            .collect()
    }
}

/// The text of a gateway error body (`{"error": "...", "message": "...", "code": N}`), or the
/// body itself when it is not one.
pub(crate) fn error_text(body: &[u8]) -> String {
    let text = || String::from_utf8_lossy(body).trim().to_string();
    match serde_json::from_slice::<Value>(body) {
        Ok(v) => error_of(&v).unwrap_or_else(text),
        Err(_) => text(),
    }
}

/// The message of an error object (`message`, else `error`), if it has one.
pub(crate) fn error_of(v: &Value) -> Option<String> {
    ["message", "error"].iter().find_map(|f| v.get(f).and_then(Value::as_str)).map(str::to_string)
}

/// `RangeRequest` for one key, or for every key in `[key, end)`.
pub(crate) fn range(key: &[u8], end: Option<&[u8]>) -> Value {
    match end {
        Some(end) => json!({ "key": b64(key), "range_end": b64(end) }),
        None => json!({ "key": b64(key) }),
    }
}

/// `PutRequest`.
pub(crate) fn put(key: &[u8], value: &[u8], lease: i64) -> Value {
    json!({ "key": b64(key), "value": b64(value), "lease": lease.to_string() })
}

/// `DeleteRangeRequest`.
pub(crate) fn delete(key: &[u8], end: Option<&[u8]>) -> Value {
    range(key, end)
}

/// One `Compare` of a txn.
pub(crate) fn compare(c: &Compare) -> Value {
    match c {
        Compare::ModRevision(key, rev) => json!({
            "key": b64(key), "target": "MOD", "result": "EQUAL", "mod_revision": rev.to_string()
        }),
        Compare::CreateRevision(key, rev) => json!({
            "key": b64(key), "target": "CREATE", "result": "EQUAL",
            "create_revision": rev.to_string()
        }),
        Compare::Value(key, value) => json!({
            "key": b64(key), "target": "VALUE", "result": "EQUAL", "value": b64(value)
        }),
    }
}

/// One `RequestOp` of a txn.
pub(crate) fn op(o: &Op) -> Value {
    match o {
        Op::Put { key, value, lease } => json!({ "request_put": put(key, value, *lease) }),
        Op::Delete { key } => json!({ "request_delete_range": delete(key, None) }),
        Op::DeletePrefix { prefix } => {
            json!({ "request_delete_range": delete(prefix, Some(&prefix_end(prefix))) })
        }
        Op::Get { key } => json!({ "request_range": range(key, None) }),
        Op::GetPrefix { prefix } => {
            json!({ "request_range": range(prefix, Some(&prefix_end(prefix))) })
        }
    }
}

/// `TxnRequest`.
pub(crate) fn txn(compare_: &[Compare], success: &[Op], failure: &[Op]) -> Value {
    json!({
        "compare": compare_.iter().map(compare).collect::<Vec<_>>(),
        "success": success.iter().map(op).collect::<Vec<_>>(),
        "failure": failure.iter().map(op).collect::<Vec<_>>(),
    })
}

/// `WatchRequest` creating a watch on every key under `prefix` from `start_revision`.
pub(crate) fn watch_create(prefix: &[u8], start_revision: i64) -> Value {
    json!({ "create_request": {
        "key": b64(prefix),
        "range_end": b64(&prefix_end(prefix)),
        "start_revision": start_revision.to_string(),
        "progress_notify": true,
    }})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_end_increments_the_last_byte_below_0xff() {
        assert_eq!(prefix_end(b"/keyhop/a"), b"/keyhop/b".to_vec());
        assert_eq!(prefix_end(&[b'a', 0xff, 0xff]), vec![b'b']);
        assert_eq!(prefix_end(&[0xff]), vec![0]);
        assert_eq!(prefix_end(b""), vec![0]);
    }

    #[test]
    fn a_range_response_decodes_base64_and_string_ints_with_omitted_defaults() {
        let body = br#"{"header":{"cluster_id":"1","revision":"7"},"kvs":[
            {"key":"YQ==","create_revision":"2","mod_revision":"5","version":"3","value":"MQ==","lease":"9"},
            {"key":"Yg==","create_revision":"6","mod_revision":"6","version":"1"}],"count":"2"}"#;
        let r: RangeResponse = serde_json::from_slice(body).expect("decode");
        assert_eq!(r.header.revision, 7);
        let kvs = r.kvs();
        assert_eq!(
            kvs[0],
            Kv {
                key: b"a".to_vec(),
                value: b"1".to_vec(),
                create_revision: 2,
                mod_revision: 5,
                version: 3,
                lease: 9
            }
        );
        assert_eq!(kvs[1].value, b"".to_vec());
        assert_eq!(kvs[1].lease, 0);
        let empty: RangeResponse =
            serde_json::from_slice(br#"{"header":{"revision":"1"}}"#).expect("decode");
        assert!(empty.kvs().is_empty());
    }

    #[test]
    fn a_failed_txn_has_no_succeeded_field_and_its_gets_come_in_order() {
        let body = br#"{"header":{"revision":"3"},"responses":[
            {"response_range":{"header":{"revision":"2"},"kvs":[{"key":"YQ==","mod_revision":"2"}],"count":"1"}},
            {"response_put":{"header":{"revision":"3"}}},
            {"response_range":{"header":{"revision":"3"}}}]}"#;
        let t: TxnResponse = serde_json::from_slice(body).expect("decode");
        assert!(!t.succeeded);
        assert_eq!(t.header.revision, 3);
        let gets = t.gets();
        assert_eq!(gets.len(), 2);
        assert_eq!(gets[0][0].key, b"a".to_vec());
        assert_eq!(gets[0][0].mod_revision, 2);
        assert!(gets[1].is_empty());
    }

    #[test]
    fn txn_requests_encode_compares_and_ops_as_the_gateway_wants() {
        let req = txn(
            &[
                Compare::ModRevision(b"a".to_vec(), 0),
                Compare::CreateRevision(b"b".to_vec(), 4),
                Compare::Value(b"c".to_vec(), b"1".to_vec()),
            ],
            &[
                Op::Put { key: b"a".to_vec(), value: b"1".to_vec(), lease: 5 },
                Op::DeletePrefix { prefix: b"p/".to_vec() },
            ],
            &[Op::Get { key: b"a".to_vec() }, Op::GetPrefix { prefix: b"p/".to_vec() }],
        );
        let want = json!({
            "compare": [
                {"key":"YQ==","target":"MOD","result":"EQUAL","mod_revision":"0"},
                {"key":"Yg==","target":"CREATE","result":"EQUAL","create_revision":"4"},
                {"key":"Yw==","target":"VALUE","result":"EQUAL","value":"MQ=="},
            ],
            "success": [
                {"request_put":{"key":"YQ==","value":"MQ==","lease":"5"}},
                {"request_delete_range":{"key":"cC8=","range_end":"cDA="}},
            ],
            "failure": [
                {"request_range":{"key":"YQ=="}},
                {"request_range":{"key":"cC8=","range_end":"cDA="}},
            ],
        });
        assert_eq!(req, want);
    }

    #[test]
    fn lease_responses_decode_upper_case_fields_and_a_gone_lease_has_no_ttl() {
        let g: GrantResponse = serde_json::from_slice(
            br#"{"header":{"revision":"2"},"ID":"5007618088681209353","TTL":"5"}"#,
        )
        .expect("decode");
        assert_eq!((g.id, g.ttl), (5007618088681209353, 5));
        let k: StreamMsg<KeepAliveResponse> =
            serde_json::from_slice(br#"{"result":{"header":{"revision":"3"},"ID":"77"}}"#)
                .expect("decode");
        assert_eq!(k.result.expect("result").ttl, 0);
    }

    #[test]
    fn watch_events_default_to_put_and_compaction_is_read() {
        let mut w: WatchResponse = serde_json::from_slice(
            br#"{"header":{"revision":"4"},"events":[{"kv":{"key":"Yg==","mod_revision":"3","value":"MQ=="}},
               {"type":"DELETE","kv":{"key":"YQ==","mod_revision":"4"}}]}"#,
        )
        .expect("decode");
        let events = w.events().expect("events");
        assert_eq!(events.len(), 2);
        assert_eq!(
            (events[0].kind.clone(), events[0].kv.key.clone()),
            (EventKind::Put, b"b".to_vec())
        );
        assert_eq!((events[1].kind.clone(), events[1].kv.mod_revision), (EventKind::Delete, 4));
        let c: WatchResponse = serde_json::from_slice(
            br#"{"header":{"raft_term":"2"},"canceled":true,"compact_revision":"3"}"#,
        )
        .expect("decode");
        assert!(c.canceled);
        assert_eq!(c.compact_revision, 3);
    }

    #[test]
    fn gateway_errors_yield_their_message() {
        let body = br#"{"error":"etcdserver: requested lease not found","message":"etcdserver: requested lease not found","code":5}"#;
        assert_eq!(error_text(body), "etcdserver: requested lease not found");
        assert_eq!(error_text(b"404 page not found\n"), "404 page not found");
    }
}
