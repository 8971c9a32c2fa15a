//! Merging the replies of a split or fanned-out command into the one reply the client expects.
//! Off the hot path: only MGET/MSET/DEL... across groups and the fan-out commands get here.

use bytes::{Bytes, BytesMut};
use keyhop_router::Merge;

use crate::resp::{self, parse_int};

/// True when the reply frame is an error (simple, or a RESP3 blob error).
pub fn is_error(frame: &[u8]) -> bool {
    matches!(frame.first(), Some(b'-' | b'!'))
}

/// The value of an integer reply.
pub fn int_value(frame: &[u8]) -> Option<i64> {
    let body = frame.strip_prefix(b":")?.strip_suffix(b"\r\n")?;
    parse_int(body)
}

/// The element frames of an array reply (`None` for anything else, including a null array).
pub fn array_elements(frame: &Bytes) -> Option<Vec<Bytes>> {
    if frame.first() != Some(&b'*') {
        return None;
    }
    resp::elements(frame)
}

/// The first error among `parts`, if any.
fn first_error(parts: &[Bytes]) -> Option<Bytes> {
    parts.iter().find(|p| is_error(p)).cloned()
}

/// An array reply made of element frames.
pub fn array(elements: &[Bytes]) -> Bytes {
    let mut out = BytesMut::with_capacity(16 + elements.iter().map(|e| e.len()).sum::<usize>());
    resp::push_array_len(&mut out, elements.len());
    for e in elements {
        out.extend_from_slice(e);
    }
    out.freeze()
}

fn unexpected(what: &str) -> Bytes {
    resp::error(&format!("ERR keyhop: unexpected reply from a backend while merging {what}"))
}

/// Merges one reply per part with `kind`. `order` (for [`Merge::Mget`]) maps each key in the
/// client's order to (part, position in that part's reply).
pub fn merge(kind: Merge, parts: &[Bytes], order: &[(u16, u32)]) -> Bytes {
    if let Some(e) = first_error(parts) {
        return e;
    }
    match kind {
        Merge::SumIntegers => {
            let mut sum = 0i64;
            for p in parts {
                match int_value(p) {
                    Some(v) => sum = sum.saturating_add(v),
                    None => return unexpected("integers"),
                }
            }
            resp::int(sum)
        }
        Merge::AllOk => match parts.iter().find(|p| p.as_ref() != resp::OK) {
            Some(other) => other.clone(),
            None => Bytes::from_static(resp::OK),
        },
        Merge::First => parts.first().cloned().unwrap_or_else(|| unexpected("replies")),
        Merge::ConcatArrays => {
            let mut all = Vec::new();
            for p in parts {
                match array_elements(p) {
                    Some(items) => all.extend(items),
                    None => return unexpected("arrays"),
                }
            }
            array(&all)
        }
        Merge::Mget => {
            let mut arrays = Vec::with_capacity(parts.len());
            for p in parts {
                match array_elements(p) {
                    Some(items) => arrays.push(items),
                    None => return unexpected("MGET"),
                }
            }
            let mut out = Vec::with_capacity(order.len());
            for &(part, pos) in order {
                match arrays.get(part as usize).and_then(|a| a.get(pos as usize)) {
                    Some(item) => out.push(item.clone()),
                    None => return unexpected("MGET"),
                }
            }
            array(&out)
        }
        Merge::MinElementwise => {
            let mut acc: Option<Vec<i64>> = None;
            for p in parts {
                let Some(items) = array_elements(p) else { return unexpected("arrays") };
                let Some(vals) = items.iter().map(|i| int_value(i)).collect::<Option<Vec<i64>>>()
                else {
                    return unexpected("integer arrays");
                };
                acc = Some(match acc {
                    None => vals,
                    Some(prev) => prev.iter().zip(vals.iter()).map(|(a, b)| *a.min(b)).collect(),
                });
            }
            let vals = acc.unwrap_or_default();
            let items: Vec<Bytes> = vals.iter().map(|v| resp::int(*v)).collect();
            array(&items)
        }
        Merge::UnionArrays => {
            let mut seen = std::collections::HashSet::new();
            let mut all = Vec::new();
            for p in parts {
                let Some(items) = array_elements(p) else { return unexpected("arrays") };
                all.extend(items.into_iter().filter(|i| seen.insert(i.clone())));
            }
            array(&all)
        }
        Merge::SumPairs => sum_pairs(parts),
        Merge::MaxInteger => {
            let mut max = None;
            for p in parts {
                let Some(v) = int_value(p) else { return unexpected("integers") };
                max = max.max(Some(v));
            }
            resp::int(max.unwrap_or(0))
        }
    }
}

/// PUBSUB NUMSUB's `[name, count, ...]` from every group (an array; a map in RESP3 servers
/// that answer one): the first part's names and shape, each count summed over the parts.
fn sum_pairs(parts: &[Bytes]) -> Bytes {
    let Some(first) = parts.first() else { return unexpected("PUBSUB NUMSUB") };
    let shape = first.first().copied();
    let mut acc: Option<Vec<Bytes>> = None;
    for p in parts {
        if p.first().copied() != shape || !matches!(shape, Some(b'*' | b'%')) {
            return unexpected("PUBSUB NUMSUB");
        }
        let Some(items) = resp::elements(p) else { return unexpected("PUBSUB NUMSUB") };
        acc = Some(match acc {
            None => items,
            Some(mut prev) => {
                if prev.len() != items.len() {
                    return unexpected("PUBSUB NUMSUB");
                }
                for (i, item) in items.iter().enumerate().skip(1).step_by(2) {
                    match (int_value(&prev[i]), int_value(item)) {
                        (Some(a), Some(b)) => prev[i] = resp::int(a.saturating_add(b)),
                        _ => return unexpected("PUBSUB NUMSUB"),
                    }
                }
                prev
            }
        });
    }
    let items = acc.unwrap_or_default();
    if shape == Some(b'%') {
        let mut out = BytesMut::new();
        resp::Proto::Resp3.push_map_len(&mut out, items.len() / 2);
        items.iter().for_each(|i| out.extend_from_slice(i));
        return out.freeze();
    }
    array(&items)
}

/// Rewrites a backend's SCAN reply `[cursor, keys]` to carry keyhop's cursor for `group`.
pub fn scan_reply(frame: &Bytes, group: usize, groups: usize) -> Bytes {
    if is_error(frame) {
        return frame.clone();
    }
    let Some(items) = array_elements(frame) else { return unexpected("SCAN") };
    let [cursor, keys] = items.as_slice() else { return unexpected("SCAN") };
    let Some(text) = cursor.strip_prefix(b"$").and_then(|c| {
        let cr = c.iter().position(|&b| b == b'\r')?;
        c.get(cr + 2..c.len().checked_sub(2)?)
    }) else {
        return unexpected("SCAN");
    };
    let Some(backend_cursor) = std::str::from_utf8(text).ok().and_then(|t| t.parse::<u64>().ok())
    else {
        return unexpected("SCAN");
    };
    let next = crate::local::encode_scan_cursor(backend_cursor, group, groups);
    array(&[resp::bulk(next.to_string().as_bytes()), keys.clone()])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(s: &str) -> Bytes {
        Bytes::from(s.to_string())
    }

    #[test]
    fn sums_and_errors() {
        assert_eq!(merge(Merge::SumIntegers, &[b(":2\r\n"), b(":3\r\n")], &[]), b(":5\r\n"));
        assert_eq!(
            merge(Merge::SumIntegers, &[b(":2\r\n"), b("-ERR x\r\n")], &[]),
            b("-ERR x\r\n")
        );
        assert_eq!(merge(Merge::AllOk, &[b("+OK\r\n"), b("+OK\r\n")], &[]), b("+OK\r\n"));
    }

    #[test]
    fn mget_order() {
        let p0 = b("*2\r\n$1\r\na\r\n$-1\r\n");
        let p1 = b("*1\r\n$1\r\nc\r\n");
        let order = [(0, 0), (1, 0), (0, 1)];
        assert_eq!(merge(Merge::Mget, &[p0, p1], &order), b("*3\r\n$1\r\na\r\n$1\r\nc\r\n$-1\r\n"));
    }

    #[test]
    fn concat_and_min() {
        let out = merge(Merge::ConcatArrays, &[b("*1\r\n$1\r\na\r\n"), b("*0\r\n")], &[]);
        assert_eq!(out, b("*1\r\n$1\r\na\r\n"));
        let out =
            merge(Merge::MinElementwise, &[b("*2\r\n:1\r\n:1\r\n"), b("*2\r\n:0\r\n:1\r\n")], &[]);
        assert_eq!(out, b("*2\r\n:0\r\n:1\r\n"));
    }

    #[test]
    fn pubsub_views() {
        let out = merge(
            Merge::UnionArrays,
            &[b("*2\r\n$1\r\na\r\n$1\r\nb\r\n"), b("*2\r\n$1\r\nb\r\n$1\r\nc\r\n"), b("*0\r\n")],
            &[],
        );
        assert_eq!(out, b("*3\r\n$1\r\na\r\n$1\r\nb\r\n$1\r\nc\r\n"));
        let p0 = b("*4\r\n$1\r\na\r\n:1\r\n$1\r\nb\r\n:0\r\n");
        let p1 = b("*4\r\n$1\r\na\r\n:0\r\n$1\r\nb\r\n:2\r\n");
        assert_eq!(
            merge(Merge::SumPairs, &[p0, p1], &[]),
            b("*4\r\n$1\r\na\r\n:1\r\n$1\r\nb\r\n:2\r\n")
        );
        let m0 = b("%1\r\n$1\r\na\r\n:1\r\n");
        let m1 = b("%1\r\n$1\r\na\r\n:3\r\n");
        assert_eq!(merge(Merge::SumPairs, &[m0, m1], &[]), b("%1\r\n$1\r\na\r\n:4\r\n"));
        assert_eq!(merge(Merge::SumPairs, &[b("*0\r\n"), b("*0\r\n")], &[]), b("*0\r\n"));
        // Different names or shapes are not summed blindly.
        let bad = merge(Merge::SumPairs, &[b("*2\r\n$1\r\na\r\n:1\r\n"), b("*0\r\n")], &[]);
        assert!(is_error(&bad));
        assert_eq!(
            merge(Merge::MaxInteger, &[b(":2\r\n"), b(":5\r\n"), b(":0\r\n")], &[]),
            b(":5\r\n")
        );
        assert_eq!(merge(Merge::MaxInteger, &[b(":2\r\n"), b("-ERR x\r\n")], &[]), b("-ERR x\r\n"));
    }
}
