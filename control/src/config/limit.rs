//! `pubsub_output_limit = "32mb 8mb 60"`: Redis's `client-output-buffer-limit` syntax (hard
//! bytes, soft bytes, soft seconds).

use std::fmt;
use std::str::FromStr;

/// An output buffer limit: past `hard` bytes, or past `soft` bytes for `soft_seconds`, the
/// client is disconnected. 0 disables a limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OutputLimit {
    /// Bytes that disconnect at once.
    pub hard_bytes: u64,
    /// Bytes that disconnect when exceeded for `soft_seconds`.
    pub soft_bytes: u64,
    /// How long `soft_bytes` may be exceeded.
    pub soft_seconds: u64,
}

impl OutputLimit {
    /// Redis's default for pub/sub clients.
    pub const PUBSUB: OutputLimit =
        OutputLimit { hard_bytes: 32 << 20, soft_bytes: 8 << 20, soft_seconds: 60 };
    /// keyhop's default for other clients: 64 MB hard, no soft limit (Redis's normal class is
    /// unbounded; a proxy holding many clients' replies must not be).
    pub const NORMAL: OutputLimit =
        OutputLimit { hard_bytes: 64 << 20, soft_bytes: 0, soft_seconds: 0 };
}

/// `123`, `4kb`, `8mb`, `1gb` (and `k`, `m`, `g` for powers of 1000), as Redis's memtoll.
fn parse_size(s: &str) -> Option<u64> {
    let s = s.to_ascii_lowercase();
    let (digits, mult) = [
        ("gb", 1u64 << 30),
        ("mb", 1 << 20),
        ("kb", 1 << 10),
        ("g", 1_000_000_000),
        ("m", 1_000_000),
        ("k", 1_000),
        ("b", 1),
    ]
    .iter()
    .find_map(|(suffix, m)| s.strip_suffix(suffix).map(|d| (d.to_string(), *m)))
    .unwrap_or((s.clone(), 1));
    digits.parse::<u64>().ok()?.checked_mul(mult)
}

impl FromStr for OutputLimit {
    type Err = String;

    fn from_str(s: &str) -> Result<OutputLimit, String> {
        let parts: Vec<&str> = s.split_whitespace().collect();
        let usage = || {
            format!(
                "{s:?} is not a limit: use \"HARD SOFT SECONDS\" as Redis's client-output-buffer-limit, e.g. \"32mb 8mb 60\" (0 disables)"
            )
        };
        let [hard, soft, secs] = parts.as_slice() else { return Err(usage()) };
        Ok(OutputLimit {
            hard_bytes: parse_size(hard).ok_or_else(usage)?,
            soft_bytes: parse_size(soft).ok_or_else(usage)?,
            soft_seconds: secs.parse().map_err(|_| usage())?,
        })
    }
}

/// Parses the limit set for `key`; a problem (and `fallback`) when it is malformed, or when it
/// has no hard limit though `require_hard`.
pub(super) fn setting(
    key: &str,
    text: &str,
    (fallback, require_hard): (OutputLimit, bool),
    problems: &mut Vec<super::Problem>,
) -> OutputLimit {
    let problem = |message: String| super::Problem { key: key.into(), message };
    match text.parse::<OutputLimit>() {
        Ok(l) if l.hard_bytes == 0 && require_hard => {
            problems.push(problem(format!(
                "{text:?} has no hard limit: one client that stops reading would make keyhop hold unbounded memory; set one, e.g. \"64mb 0 0\""
            )));
            fallback
        }
        Ok(l) => l,
        Err(e) => {
            problems.push(problem(e));
            fallback
        }
    }
}

impl fmt::Display for OutputLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} {}", self.hard_bytes, self.soft_bytes, self.soft_seconds)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_redis_syntax() {
        assert_eq!("32mb 8mb 60".parse::<OutputLimit>(), Ok(OutputLimit::PUBSUB));
        assert_eq!(
            "0 0 0".parse::<OutputLimit>(),
            Ok(OutputLimit { hard_bytes: 0, soft_bytes: 0, soft_seconds: 0 })
        );
        assert_eq!(
            "1k 2KB 3".parse::<OutputLimit>().map(|l| (l.hard_bytes, l.soft_bytes)),
            Ok((1000, 2048))
        );
        assert_eq!(OutputLimit::PUBSUB.to_string().parse::<OutputLimit>(), Ok(OutputLimit::PUBSUB));
        for bad in ["", "32mb 8mb", "32mb 8mb 60 1", "x 8mb 60", "32mb 8mb -1", "99999999999gb 0 0"]
        {
            assert!(bad.parse::<OutputLimit>().is_err(), "{bad:?}");
        }
    }
}
