//! Slot hashing exactly as Redis Cluster's `CLUSTER KEYSLOT`.

/// Number of hash slots (as in Redis Cluster).
pub const SLOT_COUNT: usize = 16384;

/// The bytes of `key` that are hashed: the first non-empty `{hash tag}`, or the whole key.
pub fn hash_tag(key: &[u8]) -> &[u8] {
    if let Some(open) = key.iter().position(|&b| b == b'{')
        && let Some(len) = key[open + 1..].iter().position(|&b| b == b'}')
        && len > 0
    {
        return &key[open + 1..open + 1 + len];
    }
    key
}

/// The slot (0..16384) that owns `key`, honouring hash tags.
#[inline]
pub fn key_slot(key: &[u8]) -> u16 {
    // redis-protocol's implementation is table-driven and as fast as a hand-written one
    // (rust-notes.md); it handles hash tags itself.
    redis_protocol::redis_keyslot(key)
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

    proptest::proptest! {
        #[test]
        fn tag_and_key_share_slot(tag in "[a-z0-9]{1,12}", a in "[a-z]{0,8}", b in "[a-z]{0,8}") {
            let key = format!("{a}{{{tag}}}{b}");
            proptest::prop_assert_eq!(key_slot(key.as_bytes()), key_slot(tag.as_bytes()));
            proptest::prop_assert_eq!(key_slot(key.as_bytes()), key_slot(hash_tag(key.as_bytes())));
        }
    }
}
