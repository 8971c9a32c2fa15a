//! Routing a command to a group and splitting multi-key commands per group.

use super::*;

#[test]
fn route_by_group() {
    let t = two_groups();
    let mut scratch = Vec::new();
    let r = |args: &[&str], scratch: &mut Vec<usize>| {
        let v = a(args);
        let s = lookup(&v[0]).expect("known").resolve(&v).expect("known sub");
        route(&t, s, &v, scratch)
    };
    assert_eq!(r(&["GET", "foo"], &mut scratch), Ok(Some(1)));
    assert_eq!(scratch, vec![1]);
    assert_eq!(r(&["GET", "bar"], &mut scratch), Ok(Some(0)));
    // Different slots, same group: fine for keyhop.
    assert_eq!(r(&["RENAME", "bar", "hello"], &mut scratch), Ok(Some(0)));
    assert_eq!(r(&["RENAME", "bar", "foo"], &mut scratch), Err(RouteError::CrossGroup));
    assert_eq!(r(&["MSETNX", "bar", "1", "foo", "2"], &mut scratch), Err(RouteError::CrossGroup));
    assert_eq!(r(&["MSETNX", "{foo}a", "1", "foo", "2"], &mut scratch), Ok(Some(1)));
    assert_eq!(r(&["EVAL", "s", "0"], &mut scratch), Ok(None));
    assert_eq!(r(&["EVAL", "s", "2", "bar", "hello", "foo"], &mut scratch), Ok(Some(0)));
    assert_eq!(r(&["EVAL", "s", "2", "bar", "foo"], &mut scratch), Err(RouteError::CrossGroup));
    assert_eq!(r(&["SORT", "bar", "STORE", "foo"], &mut scratch), Err(RouteError::CrossGroup));
    assert_eq!(r(&["SORT", "bar", "BY", "foo_*"], &mut scratch), Ok(Some(0)));
    assert_eq!(r(&["OBJECT", "ENCODING", "foo"], &mut scratch), Ok(Some(1)));
    assert_eq!(r(&["PING"], &mut scratch), Ok(None));
    assert_eq!(r(&["PUBLISH", "foo", "m"], &mut scratch), Ok(Some(1)));
    assert_eq!(r(&["SPUBLISH", "bar", "m"], &mut scratch), Ok(Some(0)));
    assert!(matches!(r(&["EVAL", "s", "3", "a"], &mut scratch), Err(RouteError::Syntax(_))));
}

#[test]
fn split_mget_order() {
    let t = two_groups();
    let v = a(&["MGET", "foo", "bar", "foo", "hello", "{foo}x"]);
    let plan = plan_split(&t, spec("mget"), &v);
    assert_eq!(
        plan.parts,
        vec![SplitPart { group: 1, args: vec![1, 3, 5] }, SplitPart { group: 0, args: vec![2, 4] }]
    );
    assert_eq!(plan.order, vec![(0, 0), (1, 0), (0, 1), (1, 1), (0, 2)]);
}

#[test]
fn split_mset_pairs() {
    let t = two_groups();
    let v = a(&["MSET", "bar", "1", "foo", "2", "hello", "3"]);
    let plan = plan_split(&t, spec("mset"), &v);
    assert_eq!(
        plan.parts,
        vec![
            SplitPart { group: 0, args: vec![1, 2, 5, 6] },
            SplitPart { group: 1, args: vec![3, 4] }
        ]
    );
    assert_eq!(plan.order, vec![(0, 0), (1, 0), (0, 1)]);
    // A trailing key without value (keys() refuses it first) is carried alone.
    let v = a(&["MSET", "bar", "1", "foo"]);
    let plan = plan_split(&t, spec("mset"), &v);
    assert_eq!(plan.parts[1].args, vec![3]);
}

#[test]
fn split_single_group() {
    let t = two_groups();
    for name in ["del", "unlink", "exists", "touch"] {
        let v = a(&[name, "bar", "hello"]);
        let plan = plan_split(&t, spec(name), &v);
        assert_eq!(plan.parts, vec![SplitPart { group: 0, args: vec![1, 2] }], "{name}");
        assert_eq!(plan.order, vec![(0, 0), (0, 1)]);
    }
}

proptest::proptest! {
    #[test]
    fn split_plan_properties(
        keys in proptest::collection::vec("[a-z{}]{0,6}", 1..80),
        groups in 1usize..24,
        mset in proptest::bool::ANY,
    ) {
        let names: Vec<Group> = (0..groups)
            .map(|i| Group { name: format!("g{i}"), master: "m".into(), replicas: vec![] })
            .collect();
        let t = RoutingTable::new(1, names, &RoutingTable::even_ranges(groups)).expect("valid");
        let step = if mset { 2 } else { 1 };
        let mut args: Vec<Vec<u8>> = vec![if mset { b"MSET".to_vec() } else { b"MGET".to_vec() }];
        for (i, k) in keys.iter().enumerate() {
            args.push(k.as_bytes().to_vec());
            if mset {
                args.push(format!("v{i}").into_bytes());
            }
        }
        let s = spec(if mset { "mset" } else { "mget" });
        let plan = plan_split(&t, s, &args);
        proptest::prop_assert_eq!(plan.order.len(), keys.len());
        // Every argument (name excluded) lands in exactly one part.
        let mut seen = vec![0u32; args.len()];
        for p in &plan.parts {
            proptest::prop_assert!(!p.args.is_empty());
            for &i in &p.args {
                proptest::prop_assert!(i >= 1 && i < args.len());
                seen[i] += 1;
            }
            // The part's group owns every key it carries.
            for &k in p.args.iter().step_by(step) {
                proptest::prop_assert_eq!(t.group_for_key(&args[k]), p.group);
            }
        }
        proptest::prop_assert!(seen[1..].iter().all(|&c| c == 1));
        // Groups are distinct and in order of first appearance.
        let mut firsts: Vec<GroupId> = Vec::new();
        for k in (1..args.len()).step_by(step) {
            let g = t.group_for_key(&args[k]);
            if !firsts.contains(&g) {
                firsts.push(g);
            }
        }
        let groups_in_plan: Vec<GroupId> = plan.parts.iter().map(|p| p.group).collect();
        proptest::prop_assert_eq!(groups_in_plan, firsts);
        // `order` round-trips: following it re-assembles the keys in their original order.
        for (n, &(part, pos)) in plan.order.iter().enumerate() {
            let p = &plan.parts[usize::from(part)];
            let idx = p.args[pos as usize * step];
            proptest::prop_assert_eq!(idx, 1 + n * step);
            if mset {
                proptest::prop_assert_eq!(p.args[pos as usize * step + 1], 2 + n * step);
            }
        }
    }
}
