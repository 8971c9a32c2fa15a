//! Slot range syntax of `[[groups]] slots`: `"0-8191"` or `"42"`.

use keyhop_router::SLOT_COUNT;

/// Parses one slot spec (`"FIRST-LAST"` inclusive, or a single `"N"`); the error says what is
/// wrong and how to write it.
pub fn parse_slot_spec(spec: &str) -> Result<(u32, u32), String> {
    let max = SLOT_COUNT as u32 - 1;
    let num = |s: &str| -> Result<u32, String> {
        let s = s.trim();
        let n: u64 = s.parse().map_err(|_| {
            format!("\"{spec}\" is not a slot or a range: write \"N\" or \"FIRST-LAST\" with slots 0-{max}")
        })?;
        if n > u64::from(max) {
            return Err(format!("\"{spec}\": slot {n} is out of range (slots are 0-{max})"));
        }
        Ok(n as u32)
    };
    match spec.split_once('-') {
        Some((a, b)) => {
            let (a, b) = (num(a)?, num(b)?);
            if a > b {
                return Err(format!("\"{spec}\" is reversed: write \"{b}-{a}\""));
            }
            Ok((a, b))
        }
        None => {
            let n = num(spec)?;
            Ok((n, n))
        }
    }
}

/// Number of slots in inclusive ranges (overlaps counted once per range, as written).
pub fn count_slots(ranges: &[(u16, u16)]) -> usize {
    ranges.iter().map(|&(a, b)| usize::from(b) - usize::from(a) + 1).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ranges_and_single_slots() {
        assert_eq!(parse_slot_spec("0-8191"), Ok((0, 8191)));
        assert_eq!(parse_slot_spec("9000"), Ok((9000, 9000)));
        assert_eq!(parse_slot_spec(" 1 - 2 "), Ok((1, 2)));
        assert_eq!(parse_slot_spec("16383"), Ok((16383, 16383)));
        assert_eq!(parse_slot_spec("7-7"), Ok((7, 7)));
    }

    #[test]
    fn rejects_bad_specs_with_a_fix() {
        let cases = [
            ("8191-0", "reversed: write \"0-8191\""),
            ("16384", "slot 16384 is out of range"),
            ("0-16384", "slot 16384 is out of range"),
            ("99999999999999999999", "not a slot or a range"),
            ("a-b", "not a slot or a range"),
            ("", "not a slot or a range"),
            ("-5", "not a slot or a range"),
            ("1-2-3", "not a slot or a range"),
        ];
        for (spec, want) in cases {
            let err = parse_slot_spec(spec).expect_err(spec);
            assert!(err.contains(want), "{spec}: {err}");
        }
    }

    #[test]
    fn counts() {
        assert_eq!(count_slots(&[(0, 8191), (9000, 9000)]), 8193);
    }
}
