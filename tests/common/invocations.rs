//! Invocations of every command built from its arity alone, shared by the command-table tests
//! (keys against `COMMAND GETKEYS`) and the RESP3 sweep.

use keyhop_router::command::CommandSpec;

/// Argument lists derived from the arity: unique placeholders so each key is identifiable.
pub fn generated_invocations(spec: &CommandSpec) -> Vec<Vec<String>> {
    let words: Vec<String> = spec.name.split('|').map(str::to_string).collect();
    let min = spec.arity.unsigned_abs() as usize;
    let lens: Vec<usize> = if spec.arity > 0 { vec![min] } else { (min..min + 4).collect() };
    lens.into_iter()
        .filter(|&n| n >= words.len())
        .map(|n| {
            let mut v = words.clone();
            v.extend((words.len()..n).map(|i| format!("a{i}")));
            v
        })
        .collect()
}
