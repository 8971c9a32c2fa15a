//! keyhop's etcd client (`keyhop_control::etcd`) against a real etcd: the key-value calls,
//! transactions, leases, watches (including compaction) and what callers see while etcd restarts.

mod common;

use std::time::Duration;

use common::etcd::Etcd as EtcdProc;
use keyhop_control::etcd::{Compare, Etcd, EtcdError, EventKind, Op, WatchMsg};
use tokio::time::{Instant, timeout};

fn client(e: &EtcdProc) -> Etcd {
    Etcd::new(vec![e.endpoint.clone()], Duration::from_secs(2)).expect("client")
}

/// The next watch message within 10 s (a watch that should speak must not leave the test hanging).
async fn next_msg(w: &mut keyhop_control::etcd::Watch) -> WatchMsg {
    timeout(Duration::from_secs(10), w.next())
        .await
        .expect("a watch message within 10 s")
        .expect("watch ok")
        .expect("watch still open")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_get_prefix_and_delete() {
    let e = EtcdProc::start();
    let c = client(&e);
    assert_eq!(c.get(b"/t/a").await.expect("get").0, None);
    let r1 = c.put(b"/t/a", b"1", 0).await.expect("put");
    let r2 = c.put(b"/t/b", b"2", 0).await.expect("put");
    let r3 = c.put(b"/u/c", b"3", 0).await.expect("put");
    assert_eq!((r2, r3), (r1 + 1, r1 + 2));
    let r4 = c.put(b"/t/a", b"11", 0).await.expect("overwrite");

    let (kv, rev) = c.get(b"/t/a").await.expect("get");
    let kv = kv.expect("present");
    assert_eq!(rev, r4);
    assert_eq!(
        (kv.value.as_slice(), kv.create_revision, kv.mod_revision, kv.version, kv.lease),
        (&b"11"[..], r1, r4, 2, 0)
    );

    let (kvs, rev) = c.get_prefix(b"/t/").await.expect("get_prefix");
    assert_eq!(rev, r4);
    let pairs: Vec<(&[u8], &[u8])> =
        kvs.iter().map(|k| (k.key.as_slice(), k.value.as_slice())).collect();
    assert_eq!(pairs, vec![(&b"/t/a"[..], &b"11"[..]), (&b"/t/b"[..], &b"2"[..])]);

    let r5 = c.delete(b"/t/a").await.expect("delete");
    assert_eq!(r5, r4 + 1);
    assert_eq!(c.get(b"/t/a").await.expect("get"), (None, r5));
    // Deleting an absent key is not an error and changes nothing.
    assert_eq!(c.delete(b"/t/nothing").await.expect("delete absent"), r5);
    assert_eq!(c.get_prefix(b"/t/").await.expect("get_prefix").0.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn txn_compares_pick_the_branch_and_return_its_gets() {
    let e = EtcdProc::start();
    let c = client(&e);
    let put_if_absent = |v: &[u8]| {
        (
            vec![Compare::CreateRevision(b"/t/lock".to_vec(), 0)],
            vec![Op::Put { key: b"/t/lock".to_vec(), value: v.to_vec(), lease: 0 }],
            vec![Op::Get { key: b"/t/lock".to_vec() }],
        )
    };
    let (cmp, ok, fail) = put_if_absent(b"first");
    let t = c.txn(cmp, ok, fail).await.expect("txn");
    assert!(t.succeeded);
    assert!(t.gets.is_empty(), "the success branch had no get: {:?}", t.gets);
    let created = t.revision;

    let (cmp, ok, fail) = put_if_absent(b"second");
    let t = c.txn(cmp, ok, fail).await.expect("txn");
    assert!(!t.succeeded, "put-if-absent must fail on a present key");
    assert_eq!(t.revision, created, "a failed txn with only reads changes nothing");
    assert_eq!(t.gets.len(), 1);
    assert_eq!(t.gets[0].len(), 1);
    assert_eq!(
        (t.gets[0][0].value.as_slice(), t.gets[0][0].mod_revision),
        (&b"first"[..], created)
    );

    // ModRevision: a stale revision fails and the failure branch reads the prefix.
    c.put(b"/t/x", b"1", 0).await.expect("put");
    let stale = Compare::ModRevision(b"/t/lock".to_vec(), created - 1);
    let t = c
        .txn(
            vec![stale],
            vec![Op::Delete { key: b"/t/lock".to_vec() }],
            vec![Op::GetPrefix { prefix: b"/t/".to_vec() }, Op::Get { key: b"/t/none".to_vec() }],
        )
        .await
        .expect("txn");
    assert!(!t.succeeded);
    let keys: Vec<&[u8]> = t.gets[0].iter().map(|k| k.key.as_slice()).collect();
    assert_eq!(keys, vec![&b"/t/lock"[..], &b"/t/x"[..]]);
    assert!(t.gets[1].is_empty(), "an absent key reads as no kv");
    assert_eq!(t.gets.len(), 2);

    // The right revision and value: the success branch deletes a prefix, writes and reads.
    // (etcd refuses a txn whose puts and deletes overlap, so the put goes elsewhere.)
    let t = c
        .txn(
            vec![
                Compare::ModRevision(b"/t/lock".to_vec(), created),
                Compare::Value(b"/t/lock".to_vec(), b"first".to_vec()),
            ],
            vec![
                Op::DeletePrefix { prefix: b"/t/".to_vec() },
                Op::Put { key: b"/u/new".to_vec(), value: b"v".to_vec(), lease: 0 },
                Op::GetPrefix { prefix: b"/u/".to_vec() },
            ],
            vec![],
        )
        .await
        .expect("txn");
    assert!(t.succeeded);
    assert_eq!(t.gets.len(), 1);
    let keys: Vec<&[u8]> = t.gets[0].iter().map(|k| k.key.as_slice()).collect();
    assert_eq!(keys, vec![&b"/u/new"[..]]);
    assert_eq!(c.get_prefix(b"/t/").await.expect("get"), (vec![], t.revision));
    match c
        .txn(
            vec![],
            vec![
                Op::DeletePrefix { prefix: b"/u/".to_vec() },
                Op::Put { key: b"/u/x".to_vec(), value: b"v".to_vec(), lease: 0 },
            ],
            vec![],
        )
        .await
    {
        Err(EtcdError::Server(m)) => assert_eq!(
            m,
            format!(
                "etcd at {} refused /v3/kv/txn: 400 Bad Request: etcdserver: duplicate key given in txn request",
                e.endpoint
            )
        ),
        other => panic!("an overlapping txn: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leases_keep_keys_alive_expire_and_revoke() {
    let e = EtcdProc::start();
    let c = client(&e);
    let (id, ttl) = c.grant(2).await.expect("grant");
    assert!(id != 0);
    assert_eq!(ttl, 2);
    c.put(b"/t/inst", b"alive", id).await.expect("put with lease");
    assert_eq!(c.get(b"/t/inst").await.expect("get").0.expect("present").lease, id);
    assert_eq!(c.keep_alive(id).await.expect("keep_alive"), 2);

    // Without keepalives the key goes when the lease expires (2 s TTL; etcd may take a few more).
    let start = Instant::now();
    loop {
        if c.get(b"/t/inst").await.expect("get").0.is_none() {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(15), "leased key still there after 15 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        start.elapsed() >= Duration::from_millis(1500),
        "expired too early: {:?}",
        start.elapsed()
    );
    assert_eq!(c.keep_alive(id).await.expect("keep_alive of an expired lease"), 0);

    let (id2, _) = c.grant(60).await.expect("grant");
    c.put(b"/t/other", b"x", id2).await.expect("put with lease");
    c.revoke(id2).await.expect("revoke");
    assert_eq!(c.get(b"/t/other").await.expect("get").0, None, "revoke deletes the lease's keys");
    assert_eq!(c.keep_alive(id2).await.expect("keep_alive of a revoked lease"), 0);
    c.revoke(id2).await.expect("revoking a lease that is gone is fine");

    // A key on a lease that does not exist is refused, with etcd's reason.
    match c.put(b"/t/bad", b"x", 12345).await {
        Err(EtcdError::Server(m)) => assert_eq!(
            m,
            format!(
                "etcd at {} refused /v3/kv/put: 404 Not Found: etcdserver: requested lease not found",
                e.endpoint
            )
        ),
        other => panic!("put on a missing lease: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_from_a_revision_sees_puts_and_deletes_in_order() {
    let e = EtcdProc::start();
    let c = client(&e);
    let r1 = c.put(b"/p/a", b"1", 0).await.expect("put");
    c.put(b"/q/other", b"x", 0).await.expect("put outside the prefix");
    c.put(b"/p/b", b"2", 0).await.expect("put");
    c.delete(b"/p/a").await.expect("delete");

    let mut w = c.watch_prefix(b"/p/", r1).await.expect("watch");
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while seen.len() < 3 && Instant::now() < deadline {
        if let WatchMsg::Events { events, .. } = next_msg(&mut w).await {
            seen.extend(
                events.into_iter().map(|ev| (ev.kind, ev.kv.key, ev.kv.value, ev.kv.mod_revision)),
            );
        }
    }
    assert_eq!(
        seen,
        vec![
            (EventKind::Put, b"/p/a".to_vec(), b"1".to_vec(), r1),
            (EventKind::Put, b"/p/b".to_vec(), b"2".to_vec(), r1 + 2),
            (EventKind::Delete, b"/p/a".to_vec(), vec![], r1 + 3),
        ]
    );

    // Changes made after the watch started arrive too, with their revision in the message.
    let r5 = c.put(b"/p/c", b"3", 0).await.expect("put");
    match next_msg(&mut w).await {
        WatchMsg::Events { revision, events } => {
            assert_eq!(revision, r5);
            assert_eq!(events.len(), 1);
            assert_eq!(
                (events[0].kind.clone(), events[0].kv.key.as_slice()),
                (EventKind::Put, &b"/p/c"[..])
            );
        }
        other => panic!("expected the put of /p/c, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quiet_watch_gets_progress_notifications() {
    let e = EtcdProc::start_with(&["--experimental-watch-progress-notify-interval", "1s"]);
    let c = client(&e);
    let rev = c.put(b"/q/k", b"1", 0).await.expect("put outside the watched prefix");
    let mut w = c.watch_prefix(b"/p/", rev + 1).await.expect("watch");
    assert_eq!(next_msg(&mut w).await, WatchMsg::Progress { revision: rev });
    let rev2 = c.put(b"/q/k", b"2", 0).await.expect("put");
    // Progress follows the store's revision, even for changes outside the prefix.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut last = 0;
    while last != rev2 && Instant::now() < deadline {
        match next_msg(&mut w).await {
            WatchMsg::Progress { revision } => last = revision,
            other => panic!("only progress is expected on a quiet prefix, got {other:?}"),
        }
    }
    assert_eq!(last, rev2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_from_a_compacted_revision_reports_compacted() {
    let e = EtcdProc::start();
    let c = client(&e);
    let first = c.put(b"/p/k", b"1", 0).await.expect("put");
    c.put(b"/p/k", b"2", 0).await.expect("put");
    let last = c.put(b"/p/k", b"3", 0).await.expect("put");
    c.compact(last).await.expect("compact");

    let mut w = c.watch_prefix(b"/p/", first).await.expect("watch");
    assert_eq!(next_msg(&mut w).await, WatchMsg::Compacted { compact_revision: last });
    let end = timeout(Duration::from_secs(5), w.next()).await.expect("bounded");
    assert!(matches!(end, Ok(None)), "a compacted watch is over: {end:?}");

    // From the compact revision on, the watch works.
    let mut w = c.watch_prefix(b"/p/", last).await.expect("watch");
    match next_msg(&mut w).await {
        WatchMsg::Events { events, .. } => assert_eq!(events[0].kv.value, b"3".to_vec()),
        other => panic!("expected the last put, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_etcd_is_down_calls_fail_unreachable_and_work_again_after() {
    let mut e = EtcdProc::start();
    let c = client(&e);
    let rev = c.put(b"/p/k", b"before", 0).await.expect("put");
    let mut w = c.watch_prefix(b"/p/", rev + 1).await.expect("watch");

    e.stop();
    match c.get(b"/p/k").await {
        Err(err @ EtcdError::Unreachable(_)) => {
            let text = err.to_string();
            let head = format!("etcd at {}: cannot connect: ", e.endpoint);
            assert!(text.starts_with(&head), "{text}");
            assert!(
                text.ends_with("(check [etcd] endpoints and that etcd is running there)"),
                "{text}"
            );
        }
        other => panic!("get while etcd is down: {other:?}"),
    }
    assert!(matches!(c.grant(5).await, Err(EtcdError::Unreachable(_))));
    // The watch notices: it ends or errs, and does not hang.
    let end = timeout(Duration::from_secs(5), w.next()).await.expect("the watch ends within 5 s");
    assert!(matches!(end, Ok(None) | Err(EtcdError::Unreachable(_))), "{end:?}");
    let after =
        timeout(Duration::from_secs(1), w.next()).await.expect("an ended watch stays ended");
    assert!(matches!(after, Ok(None)), "{after:?}");

    e.restart();
    let (kv, now) = c.get(b"/p/k").await.expect("get after restart");
    assert_eq!(kv.expect("kept across the restart").value, b"before".to_vec());
    assert_eq!(now, rev);
    let mut w = c.watch_prefix(b"/p/", now + 1).await.expect("re-watch");
    let r = c.put(b"/p/k", b"after", 0).await.expect("put after restart");
    match next_msg(&mut w).await {
        WatchMsg::Events { revision, events } => {
            assert_eq!((revision, events[0].kv.value.as_slice()), (r, &b"after"[..]))
        }
        other => panic!("expected the put after the restart, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_endpoint_is_skipped_and_bad_endpoints_are_refused() {
    let e = EtcdProc::start();
    let dead = format!("http://127.0.0.1:{}", common::free_port());
    let c = Etcd::new(vec![dead, e.endpoint.clone()], Duration::from_secs(2)).expect("client");
    let rev = c.put(b"/t/k", b"v", 0).await.expect("put through the second endpoint");
    assert_eq!(c.get(b"/t/k").await.expect("get").1, rev);

    // An endpoint that accepts connections but never answers costs one timeout, then the
    // client sticks to the endpoint that answered.
    let hung = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let hung_url = format!("http://{}", hung.local_addr().expect("addr"));
    let c = Etcd::new(vec![hung_url.clone()], Duration::from_millis(500)).expect("client");
    let start = Instant::now();
    let r = c.get(b"/t/k").await;
    assert!(matches!(r, Err(EtcdError::Timeout)), "{r:?}");
    assert!(start.elapsed() < Duration::from_secs(3), "took {:?}", start.elapsed());
    let c = Etcd::new(vec![hung_url, e.endpoint.clone()], Duration::from_secs(2)).expect("client");
    assert_eq!(c.get(b"/t/k").await.expect("get after one timeout").1, rev);
    let start = Instant::now();
    assert_eq!(c.get(b"/t/k").await.expect("get").1, rev);
    assert!(
        start.elapsed() < Duration::from_millis(1500),
        "the client went back to the hung endpoint first: {:?}",
        start.elapsed()
    );

    for (bad, why) in [
        ("https://127.0.0.1:2379", "https is not supported yet; use an http:// endpoint"),
        ("127.0.0.1:2379", "must look like http://host:port"),
    ] {
        match Etcd::new(vec![bad.to_string()], Duration::from_secs(1)) {
            Err(EtcdError::Server(m)) => assert!(m.ends_with(why), "{bad}: {m}"),
            other => panic!("{bad} accepted: {other:?}"),
        }
    }
}
