//! Slot hashing exactly as Redis Cluster's `CLUSTER KEYSLOT`.

/// Number of hash slots (as in Redis Cluster).
pub const SLOT_COUNT: usize = 16384;

/// The bytes of `key` that are hashed: the first non-empty `{hash tag}`, or the whole key.
#[inline]
pub fn hash_tag(key: &[u8]) -> &[u8] {
    if let Some(open) = find_byte(key, b'{')
        && let Some(tag) = key.get(open + 1..)
        && let Some(len) = find_byte(tag, b'}')
        && len > 0
    {
        return &tag[..len];
    }
    key
}

/// Position of the first `needle` in `hay`.
///
/// Eight bytes at a time: most keys have no `{`, so the whole key is searched on every command,
/// and a byte loop costs as much as the CRC.
#[inline]
fn find_byte(hay: &[u8], needle: u8) -> Option<usize> {
    let (words, rest) = hay.as_chunks::<8>();
    for (i, w) in words.iter().enumerate() {
        if let Some(p) = find_in_word(*w, needle) {
            return Some(i * 8 + p);
        }
    }
    if rest.is_empty() {
        return None;
    }
    if let Some(last) = hay.last_chunk::<8>() {
        // Overlaps bytes already searched (no needle there), so a hit is the first in `rest`.
        return find_in_word(*last, needle).map(|p| hay.len() - 8 + p);
    }
    rest.iter().position(|&b| b == needle)
}

/// Position of the first `needle` in `w`: the classic "has zero byte" test on `w ^ needle`,
/// whose lowest flagged byte is always a true match (false flags only follow a true one).
#[inline(always)]
fn find_in_word(w: [u8; 8], needle: u8) -> Option<usize> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    let x = u64::from_le_bytes(w) ^ (ONES * u64::from(needle));
    let found = x.wrapping_sub(ONES) & !x & HIGHS;
    (found != 0).then(|| (found.trailing_zeros() / 8) as usize)
}

/// The slot (0..16384) that owns `key`, honouring hash tags.
#[inline]
pub fn key_slot(key: &[u8]) -> u16 {
    crc16(hash_tag(key)) & (SLOT_COUNT as u16 - 1)
}

/// CRC16-XMODEM (polynomial 0x1021, initial value 0), as Redis's `crc16`.
///
/// Slicing by 8: a byte-at-a-time table CRC is one dependent load per byte, and keys are
/// usually 8-40 bytes long, so this is most of the cost of routing a command.
#[inline]
pub fn crc16(data: &[u8]) -> u16 {
    let t = &CRC_TABLES;
    let mut crc: u16 = 0;
    let (words, mut rest) = data.as_chunks::<8>();
    for w in words {
        let [h, l] = crc.to_be_bytes();
        crc = t[7][usize::from(w[0] ^ h)]
            ^ t[6][usize::from(w[1] ^ l)]
            ^ t[5][usize::from(w[2])]
            ^ t[4][usize::from(w[3])]
            ^ t[3][usize::from(w[4])]
            ^ t[2][usize::from(w[5])]
            ^ t[1][usize::from(w[6])]
            ^ t[0][usize::from(w[7])];
    }
    if let Some((w, tail)) = rest.split_first_chunk::<4>() {
        let [h, l] = crc.to_be_bytes();
        crc = t[3][usize::from(w[0] ^ h)]
            ^ t[2][usize::from(w[1] ^ l)]
            ^ t[1][usize::from(w[2])]
            ^ t[0][usize::from(w[3])];
        rest = tail;
    }
    if let Some((w, tail)) = rest.split_first_chunk::<2>() {
        let [h, l] = crc.to_be_bytes();
        crc = t[1][usize::from(w[0] ^ h)] ^ t[0][usize::from(w[1] ^ l)];
        rest = tail;
    }
    if let [b] = rest {
        let [h, _] = crc.to_be_bytes();
        crc = (crc << 8) ^ t[0][usize::from(b ^ h)];
    }
    crc
}

/// `CRC_TABLES[k][b]`: the CRC16-XMODEM of byte `b` followed by `k` zero bytes. Row 0 is the
/// classic byte-at-a-time table; the others let 8 (or 4, or 2) bytes be folded in at once.
static CRC_TABLES: [[u16; 256]; 8] = crc_tables();

const fn crc_tables() -> [[u16; 256]; 8] {
    let mut t = [[0u16; 256]; 8];
    let mut b = 0;
    while b < 256 {
        let mut crc = (b as u16) << 8;
        let mut bit = 0;
        while bit < 8 {
            crc = if crc & 0x8000 != 0 { (crc << 1) ^ 0x1021 } else { crc << 1 };
            bit += 1;
        }
        t[0][b] = crc;
        b += 1;
    }
    let mut k = 1;
    while k < 8 {
        let mut b = 0;
        while b < 256 {
            let prev = t[k - 1][b];
            t[k][b] = (prev << 8) ^ t[0][(prev >> 8) as usize];
            b += 1;
        }
        k += 1;
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Vectors from `CLUSTER KEYSLOT` on redis-server 7.0.15 (shared/redis-facts.md).
    const VECTORS: &[(&str, u16)] = &[
        ("foo", 12182),
        ("bar", 5061),
        ("hello", 866),
        ("{user1000}.following", 3443),
        ("{user1000}.followers", 3443),
        ("foo{}{bar}", 8363),
        ("foo{{bar}}zap", 4015),
        ("foo{bar}{zap}", 5061),
        ("{}", 15257),
        ("", 0),
    ];

    #[test]
    fn matches_cluster_keyslot() {
        for (key, slot) in VECTORS {
            assert_eq!(key_slot(key.as_bytes()), *slot, "key {key:?}");
        }
    }

    #[test]
    fn crc16_check_value() {
        // CRC16-XMODEM("123456789") = 0x31C3.
        assert_eq!(key_slot(b"123456789") as usize, 0x31C3 % SLOT_COUNT);
    }

    #[test]
    fn hash_tag_rules() {
        assert_eq!(hash_tag(b"{user}.x"), b"user");
        assert_eq!(hash_tag(b"a{}b{c}"), b"a{}b{c}");
        assert_eq!(hash_tag(b"foo{{bar}}zap"), b"{bar");
        assert_eq!(hash_tag(b"no-tag"), b"no-tag");
        assert_eq!(hash_tag(b"open{only"), b"open{only");
    }

    /// Bit-at-a-time CRC16-XMODEM: the definition the tables are checked against.
    fn crc16_bitwise(data: &[u8]) -> u16 {
        let mut crc: u16 = 0;
        for &b in data {
            crc ^= u16::from(b) << 8;
            for _ in 0..8 {
                crc = if crc & 0x8000 != 0 { (crc << 1) ^ 0x1021 } else { crc << 1 };
            }
        }
        crc
    }

    #[test]
    fn crc16_every_length_up_to_40() {
        let data: Vec<u8> = (0..40u32).map(|i| (i * 37 + 11) as u8).collect();
        for n in 0..=data.len() {
            assert_eq!(crc16(&data[..n]), crc16_bitwise(&data[..n]), "length {n}");
        }
    }

    #[test]
    fn find_byte_every_position() {
        for len in 0..40 {
            let mut hay = vec![b'a'; len];
            assert_eq!(find_byte(&hay, b'{'), None, "len {len}");
            for at in (0..len).rev() {
                hay[at] = b'{';
                assert_eq!(find_byte(&hay, b'{'), Some(at), "len {len} at {at}");
            }
        }
        // Bytes just above and below the needle must not match (borrows in the SWAR test).
        assert_eq!(find_byte(b"zzzz|zzz{", b'{'), Some(8));
        assert_eq!(find_byte(b"\x7a\x7c\x00\xfb\x7b", b'{'), Some(4));
    }

    proptest::proptest! {
        #[test]
        fn find_byte_matches_position(
            hay in proptest::collection::vec(proptest::sample::select(b"{}za\x00\xfb\x7c\x7a".to_vec()), 0..40),
        ) {
            proptest::prop_assert_eq!(find_byte(&hay, b'{'), hay.iter().position(|&b| b == b'{'));
            proptest::prop_assert_eq!(find_byte(&hay, b'}'), hay.iter().position(|&b| b == b'}'));
        }

        #[test]
        fn matches_redis_protocol(key in proptest::collection::vec(proptest::num::u8::ANY, 0..80)) {
            proptest::prop_assert_eq!(key_slot(&key), redis_protocol::redis_keyslot(&key));
        }

        #[test]
        fn matches_redis_protocol_with_braces(
            key in proptest::collection::vec(proptest::sample::select(b"{}ab\0\xff".to_vec()), 0..24),
        ) {
            proptest::prop_assert_eq!(key_slot(&key), redis_protocol::redis_keyslot(&key));
        }

        #[test]
        fn crc16_matches_bitwise(data in proptest::collection::vec(proptest::num::u8::ANY, 0..80)) {
            proptest::prop_assert_eq!(crc16(&data), crc16_bitwise(&data));
        }

        #[test]
        fn tag_and_key_share_slot(tag in "[a-z0-9]{1,12}", a in "[a-z]{0,8}", b in "[a-z]{0,8}") {
            let key = format!("{a}{{{tag}}}{b}");
            proptest::prop_assert_eq!(key_slot(key.as_bytes()), key_slot(tag.as_bytes()));
            proptest::prop_assert_eq!(key_slot(key.as_bytes()), key_slot(hash_tag(key.as_bytes())));
        }
    }
}
