//! Property tests for the two resumable scanners (issue 12). keyhop reads requests and replies in
//! whatever pieces the kernel hands it and resumes scanning where it stopped, so the scanners must
//! give the same frames whatever the cut points, and must never panic or claim bytes they were not
//! given, whatever a client (or a broken backend) sends.

use bytes::Bytes;
use proptest::prelude::*;

use super::*;

/// What a request scanner made of its input: each command's arguments (inline commands decoded
/// through their multibulk re-encoding), then the error that stopped it, if any.
#[derive(Debug, PartialEq, Eq)]
struct Requests {
    commands: Vec<Vec<Vec<u8>>>,
    error: Option<ProtocolError>,
    /// Bytes consumed by complete frames (commands and empty frames).
    consumed: usize,
}

fn args_of(s: &RequestScanner, frame: &[u8]) -> Vec<Vec<u8>> {
    s.args.iter().map(|r| frame[r.clone()].to_vec()).collect()
}

fn inline_args(frame: &Bytes) -> Vec<Vec<u8>> {
    let mut s = RequestScanner::default();
    match s.scan(frame) {
        Ok(Some(Scanned::Command { len })) if len == frame.len() => args_of(&s, frame),
        other => panic!("inline re-encoding is not one multibulk frame: {other:?}"),
    }
}

/// Handles every complete frame at the start of `buf[*off..]`; `true` once an error stopped it.
fn drain_requests(s: &mut RequestScanner, buf: &[u8], off: &mut usize, out: &mut Requests) -> bool {
    loop {
        let rest = &buf[*off..];
        match s.scan(rest) {
            Ok(None) => return false,
            Ok(Some(scanned)) => {
                let len = match &scanned {
                    Scanned::Command { len }
                    | Scanned::Inline { len, .. }
                    | Scanned::Empty { len } => *len,
                };
                assert!(
                    len > 0 && len <= rest.len(),
                    "frame of {len} bytes claimed from {} bytes",
                    rest.len()
                );
                match scanned {
                    Scanned::Command { len } => out.commands.push(args_of(s, &rest[..len])),
                    Scanned::Inline { frame, .. } => out.commands.push(inline_args(&frame)),
                    Scanned::Empty { .. } => {}
                }
                *off += len;
                out.consumed = *off;
            }
            Err(e) => {
                out.error = Some(e);
                return true;
            }
        }
    }
}

/// Scans `input` as one buffer.
fn requests_whole(input: &[u8]) -> Requests {
    let mut out = Requests { commands: vec![], error: None, consumed: 0 };
    let mut s = RequestScanner::default();
    drain_requests(&mut s, input, &mut 0, &mut out);
    out
}

/// Scans `input` as a session does when it arrives in pieces ending at `cuts` (ascending): the
/// buffer grows, and the scanner resumes at the start of the first unfinished request.
fn requests_in_pieces(input: &[u8], cuts: &[usize]) -> Requests {
    let mut out = Requests { commands: vec![], error: None, consumed: 0 };
    let mut s = RequestScanner::default();
    let mut off = 0;
    for &end in cuts.iter().chain(std::iter::once(&input.len())) {
        if drain_requests(&mut s, &input[..end.min(input.len())], &mut off, &mut out) {
            break;
        }
    }
    out
}

/// Arguments of any bytes (CR, LF, NUL and all), empty ones included.
fn any_args() -> impl Strategy<Value = Vec<Vec<u8>>> {
    prop::collection::vec(
        prop_oneof![
            3 => prop::collection::vec(any::<u8>(), 0..24),
            1 => Just(b"\r\n".to_vec()),
            1 => Just(Vec::new()),
            1 => prop::collection::vec(any::<u8>(), 200..1200),
        ],
        1..7,
    )
}

/// One request frame and the arguments it carries: multibulk, or an inline line whose arguments
/// are plain words, 'single-quoted', or "double-quoted" with every byte escaped as \xHH.
#[derive(Clone, Debug)]
struct Request {
    bytes: Vec<u8>,
    args: Option<Vec<Vec<u8>>>,
}

fn multibulk() -> impl Strategy<Value = Request> {
    any_args().prop_map(|args| {
        let bytes = command(args.iter().map(|a| a.as_slice())).to_vec();
        Request { bytes, args: Some(args) }
    })
}

fn inline() -> impl Strategy<Value = Request> {
    let word = prop_oneof![
        prop::collection::vec(prop::sample::select(b"abcXYZ019-_.:{}$*".to_vec()), 1..12)
            .prop_map(|w| (w.clone(), w)),
        prop::collection::vec(prop::sample::select(b"ab c\"\t*".to_vec()), 0..12).prop_map(|w| {
            let mut q = vec![b'\''];
            q.extend_from_slice(&w);
            q.push(b'\'');
            (q, w)
        }),
        prop::collection::vec(any::<u8>(), 0..12).prop_map(|w| {
            let mut q = b"\"".to_vec();
            for b in &w {
                q.extend_from_slice(format!("\\x{b:02x}").as_bytes());
            }
            q.push(b'"');
            (q, w)
        }),
    ];
    (prop::collection::vec(word, 1..6), prop::sample::select(vec![" ", "  ", "\t"]), any::<bool>())
        .prop_filter_map("an inline line must not start with '*'", |(words, sep, crlf)| {
            let mut line = Vec::new();
            for (i, (text, _)) in words.iter().enumerate() {
                if i > 0 {
                    line.extend_from_slice(sep.as_bytes());
                }
                line.extend_from_slice(text);
            }
            if line.first() == Some(&b'*') {
                return None;
            }
            line.extend_from_slice(if crlf { b"\r\n" } else { b"\n" });
            Some(Request { bytes: line, args: Some(words.into_iter().map(|(_, w)| w).collect()) })
        })
}

/// Frames that carry no command: Redis skips them, so must keyhop.
fn empty_frame() -> impl Strategy<Value = Request> {
    prop::sample::select(vec![&b"*0\r\n"[..], b"*-1\r\n", b"\r\n", b"\n", b"   \r\n"])
        .prop_map(|b| Request { bytes: b.to_vec(), args: None })
}

fn request() -> impl Strategy<Value = Request> {
    prop_oneof![4 => multibulk(), 2 => inline(), 1 => empty_frame()]
}

fn expected(reqs: &[Request]) -> Requests {
    Requests {
        commands: reqs.iter().filter_map(|r| r.args.clone()).collect(),
        error: None,
        consumed: reqs.iter().map(|r| r.bytes.len()).sum(),
    }
}

/// Ascending cut points inside `0..len`, from fractions (so shrinking keeps them valid).
fn cuts_of(len: usize, fractions: &[f64]) -> Vec<usize> {
    let mut cuts: Vec<usize> = fractions.iter().map(|f| (f * len as f64) as usize).collect();
    cuts.sort_unstable();
    cuts
}

/// A RESP2/RESP3 reply tree, as servers send them.
#[derive(Clone, Debug)]
enum Reply {
    /// `+ - : _ # , (` and their text (no CR or LF).
    Line(u8, Vec<u8>),
    /// `$ ! =`: bulk, blob error, verbatim (its `txt:` prefix included in the body).
    Blob(u8, Vec<u8>),
    /// `$-1` or `*-1` (RESP2 nulls).
    Nil(u8),
    /// `* ~ >`: array, set, push.
    Agg(u8, Vec<Reply>),
    Map(Vec<(Reply, Reply)>),
    /// An attribute and the reply it annotates: one reply to the scanner.
    Attr(Vec<(Reply, Reply)>, Box<Reply>),
}

fn encode_reply(r: &Reply, out: &mut Vec<u8>) {
    let header = |out: &mut Vec<u8>, kind: u8, n: i64| {
        out.push(kind);
        out.extend_from_slice(format!("{n}\r\n").as_bytes());
    };
    match r {
        Reply::Line(kind, text) => {
            out.push(*kind);
            out.extend_from_slice(text);
            out.extend_from_slice(b"\r\n");
        }
        Reply::Blob(kind, body) => {
            header(out, *kind, body.len() as i64);
            out.extend_from_slice(body);
            out.extend_from_slice(b"\r\n");
        }
        Reply::Nil(kind) => header(out, *kind, -1),
        Reply::Agg(kind, items) => {
            header(out, *kind, items.len() as i64);
            items.iter().for_each(|i| encode_reply(i, out));
        }
        Reply::Map(pairs) | Reply::Attr(pairs, _) => {
            header(out, if matches!(r, Reply::Map(_)) { b'%' } else { b'|' }, pairs.len() as i64);
            for (k, v) in pairs {
                encode_reply(k, out);
                encode_reply(v, out);
            }
            if let Reply::Attr(_, inner) = r {
                encode_reply(inner, out);
            }
        }
    }
}

fn reply_leaf() -> impl Strategy<Value = Reply> {
    let text = prop::collection::vec(
        any::<u8>().prop_filter("no CR/LF", |b| *b != b'\r' && *b != b'\n'),
        0..20,
    );
    prop_oneof![
        text.clone().prop_map(|t| Reply::Line(b'+', t)),
        text.prop_map(|t| Reply::Line(b'-', t)),
        any::<i64>().prop_map(|n| Reply::Line(b':', n.to_string().into_bytes())),
        Just(Reply::Line(b'_', vec![])),
        prop::sample::select(vec!["t", "f"]).prop_map(|t| Reply::Line(b'#', t.into())),
        prop::sample::select(vec!["1.5", "-0", "inf", "-inf", "nan", "3.14159e+300"])
            .prop_map(|d| Reply::Line(b',', d.into())),
        "-?[1-9][0-9]{0,60}".prop_map(|n| Reply::Line(b'(', n.into_bytes())),
        prop::collection::vec(any::<u8>(), 0..40).prop_map(|b| Reply::Blob(b'$', b)),
        prop::collection::vec(any::<u8>(), 1000..3000).prop_map(|b| Reply::Blob(b'$', b)),
        prop::collection::vec(any::<u8>(), 0..20).prop_map(|b| Reply::Blob(b'!', b)),
        prop::collection::vec(any::<u8>(), 0..20).prop_map(|b| {
            let mut body = b"txt:".to_vec();
            body.extend_from_slice(&b);
            Reply::Blob(b'=', body)
        }),
        prop::sample::select(vec![b'$', b'*']).prop_map(Reply::Nil),
    ]
}

fn reply() -> impl Strategy<Value = Reply> {
    reply_leaf().prop_recursive(4, 48, 6, |inner| {
        let pairs = prop::collection::vec((inner.clone(), inner.clone()), 0..4);
        prop_oneof![
            (
                prop::sample::select(vec![b'*', b'~', b'>']),
                prop::collection::vec(inner.clone(), 0..6)
            )
                .prop_map(|(k, items)| Reply::Agg(k, items)),
            pairs.clone().prop_map(Reply::Map),
            (pairs, inner).prop_map(|(p, r)| Reply::Attr(p, Box::new(r))),
        ]
    })
}

/// Reply lengths found in `input` arriving in pieces ending at `cuts`, as a backend connection's
/// reader scans them; then whether the scanner rejected the stream.
fn replies_in_pieces(input: &[u8], cuts: &[usize]) -> (Vec<usize>, bool) {
    let mut s = ReplyScanner::default();
    let mut lens = Vec::new();
    let mut pos = 0;
    for &end in cuts.iter().chain(std::iter::once(&input.len())) {
        let buf = &input[..end.min(input.len())];
        loop {
            match s.scan(&buf[pos..]) {
                Ok(Some(len)) => {
                    assert!(
                        len > 0 && len <= buf.len() - pos,
                        "reply of {len} bytes claimed from {}",
                        buf.len() - pos
                    );
                    lens.push(len);
                    pos += len;
                }
                Ok(None) => break,
                Err(BadReply) => return (lens, true),
            }
        }
    }
    (lens, false)
}

/// Counts at the edges: i64 and u64 bounds, 2^62, Redis's bulk and multibulk limits.
const COUNTS: [&str; 12] = [
    "0",
    "1",
    "2",
    "-1",
    "-2",
    "9223372036854775807",
    "-9223372036854775808",
    "18446744073709551615",
    "4611686018427387904",
    "536870913",
    "1048577",
    "99999999999999999999",
];

/// Bytes that look like RESP often enough to reach deep into both scanners: type bytes, whole
/// headers with edge counts (i64 bounds), stray CR/LF, quotes, and random bytes.
fn garbage() -> impl Strategy<Value = Vec<u8>> {
    let token = prop::sample::select([&b"*$%|~>!=+-:_#,("[..], b"\r\n\0 \"'\\x0"].concat())
        .prop_map(|b| vec![b]);
    let header =
        (prop::sample::select(b"*%|~>$!=+:".to_vec()), prop::sample::select(COUNTS.to_vec()))
            .prop_map(|(kind, n)| [&[kind][..], n.as_bytes(), b"\r\n"].concat());
    // Mostly whole headers: a scanner only goes deep when the bytes before were valid.
    let piece = prop_oneof![
        1 => prop::collection::vec(any::<u8>(), 0..8),
        1 => token,
        1 => Just(b"\r\n".to_vec()),
        6 => header,
    ];
    prop::collection::vec(piece, 0..40).prop_map(|p| p.concat())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Every request frame, multibulk or inline, cut at every byte boundary: nothing until the
    /// last byte, then the same arguments as the whole frame.
    #[test]
    fn request_cut_at_every_byte(req in request()) {
        let whole = requests_whole(&req.bytes);
        prop_assert_eq!(&whole, &expected(std::slice::from_ref(&req)));
        for cut in 0..req.bytes.len() {
            // A fresh scanner given the prefix, then the whole frame (one read, then another).
            let mut s = RequestScanner::default();
            let mut out = Requests { commands: vec![], error: None, consumed: 0 };
            let mut off = 0;
            drain_requests(&mut s, &req.bytes[..cut], &mut off, &mut out);
            prop_assert_eq!(out.consumed, 0, "frame completed early at byte {}", cut);
            drain_requests(&mut s, &req.bytes, &mut off, &mut out);
            prop_assert_eq!(&out, &whole, "cut at byte {}", cut);
        }
        // And one byte at a time with one scanner, as a slow client sends it.
        let every: Vec<usize> = (1..req.bytes.len()).collect();
        prop_assert_eq!(requests_in_pieces(&req.bytes, &every), whole);
    }

    /// Several frames back to back, arriving in random pieces: the same commands, in order.
    #[test]
    fn request_stream_in_random_pieces(
        reqs in prop::collection::vec(request(), 1..12),
        fractions in prop::collection::vec(0.0..1.0f64, 0..30),
    ) {
        let input: Vec<u8> = reqs.iter().flat_map(|r| r.bytes.clone()).collect();
        let want = expected(&reqs);
        prop_assert_eq!(&requests_whole(&input), &want);
        prop_assert_eq!(requests_in_pieces(&input, &cuts_of(input.len(), &fractions)), want);
    }

    /// Any bytes: no panic, no frame longer than the input, and the same commands and error
    /// whether the bytes arrive whole, in random pieces or one at a time.
    #[test]
    fn request_garbage(data in garbage(), fractions in prop::collection::vec(0.0..1.0f64, 0..20)) {
        let whole = requests_whole(&data);
        prop_assert!(whole.consumed <= data.len());
        prop_assert_eq!(&requests_in_pieces(&data, &cuts_of(data.len(), &fractions)), &whole);
        let every: Vec<usize> = (1..data.len()).collect();
        prop_assert_eq!(requests_in_pieces(&data, &every), whole);
    }

    /// Every reply (RESP2 and RESP3, nested aggregates, maps, attributes, push, big numbers,
    /// verbatim strings) cut at every byte boundary: incomplete until its last byte, then its
    /// exact length, with one scanner resuming.
    #[test]
    fn reply_cut_at_every_byte(r in reply()) {
        let mut bytes = Vec::new();
        encode_reply(&r, &mut bytes);
        prop_assert_eq!(ReplyScanner::default().scan(&bytes), Ok(Some(bytes.len())));
        for cut in 0..bytes.len() {
            let mut s = ReplyScanner::default();
            prop_assert_eq!(s.scan(&bytes[..cut]), Ok(None), "complete early at byte {}", cut);
            prop_assert_eq!(s.scan(&bytes), Ok(Some(bytes.len())), "after a cut at byte {}", cut);
        }
        let every: Vec<usize> = (1..bytes.len()).collect();
        prop_assert_eq!(replies_in_pieces(&bytes, &every), (vec![bytes.len()], false));
    }

    /// A pipeline's replies back to back, arriving in random pieces: the same lengths, in order.
    #[test]
    fn reply_stream_in_random_pieces(
        rs in prop::collection::vec(reply(), 1..10),
        fractions in prop::collection::vec(0.0..1.0f64, 0..30),
    ) {
        let frames: Vec<Vec<u8>> = rs.iter().map(|r| { let mut b = Vec::new(); encode_reply(r, &mut b); b }).collect();
        let input = frames.concat();
        let want: Vec<usize> = frames.iter().map(Vec::len).collect();
        prop_assert_eq!(replies_in_pieces(&input, &[]), (want.clone(), false));
        prop_assert_eq!(replies_in_pieces(&input, &cuts_of(input.len(), &fractions)), (want, false));
    }

    /// Any bytes from a backend: no panic (absurd counts included), no reply longer than the
    /// input, and the same replies and verdict whole, in random pieces or byte by byte.
    #[test]
    fn reply_garbage(data in garbage(), fractions in prop::collection::vec(0.0..1.0f64, 0..20)) {
        let whole = replies_in_pieces(&data, &[]);
        prop_assert!(whole.0.iter().sum::<usize>() <= data.len());
        prop_assert_eq!(&replies_in_pieces(&data, &cuts_of(data.len(), &fractions)), &whole);
        let every: Vec<usize> = (1..data.len()).collect();
        prop_assert_eq!(replies_in_pieces(&data, &every), whole);
    }
}

/// Found by `reply_garbage`: aggregate counts near i64::MAX overflowed the count of elements
/// still missing (a panic in debug builds, a wrapped count in release).
#[test]
fn reply_absurd_counts_are_rejected_not_overflowed() {
    for input in [
        &b"%9223372036854775807\r\n%9223372036854775807\r\n"[..],
        b"|9223372036854775807\r\n|9223372036854775807\r\n",
        b"*9223372036854775807\r\n*9223372036854775807\r\n*9223372036854775807\r\n",
    ] {
        let mut s = ReplyScanner::default();
        assert_eq!(s.scan(input), Err(BadReply), "{}", String::from_utf8_lossy(input));
    }
    // A bulk whose length is absurd is incomplete (its bytes never arrive), not a panic.
    assert_eq!(ReplyScanner::default().scan(b"$9223372036854775807\r\nab"), Ok(None));
}
