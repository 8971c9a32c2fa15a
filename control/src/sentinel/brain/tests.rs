use super::*;

const S: [&str; 3] = ["s1:1", "s2:2", "s3:3"];

fn brain() -> Brain {
    Brain::new(vec!["g1".into(), "g2".into()], S.iter().map(|s| s.to_string()).collect())
}

fn view(master: &str, epoch: u64, replicas: &[(&str, bool)]) -> Option<GroupView> {
    Some(GroupView {
        master: master.into(),
        config_epoch: epoch,
        replicas: replicas.iter().map(|&(a, h)| Replica { addr: a.into(), healthy: h }).collect(),
    })
}

fn poll(b: &mut Brain, s: &str, groups: Vec<Option<GroupView>>) -> Vec<Action> {
    b.handle(
        Msg::Poll { sentinel: s.into(), report: PollReport { groups, sentinels: vec![] } },
        Instant::now(),
    )
}

fn up(b: &mut Brain, s: &str) {
    assert!(b.handle(Msg::Up { sentinel: s.into() }, Instant::now()).is_empty());
}

fn role(b: &mut Brain, group: GroupId, addr: &str, via: AdoptedVia, role: Role) -> Vec<Action> {
    b.handle(Msg::Role { group, addr: addr.into(), via, role }, Instant::now())
}

fn event(b: &mut Brain, s: &str, event: Event) -> Vec<Action> {
    b.handle(Msg::Event { sentinel: s.into(), event, at: Instant::now() }, Instant::now())
}

fn checks(actions: &[Action]) -> Vec<(GroupId, String, AdoptedVia)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::CheckRole { group, addr, via } => Some((*group, addr.clone(), *via)),
            _ => None,
        })
        .collect()
}

fn adoptions(actions: &[Action]) -> Vec<Adoption> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Adopted(a) => Some(a.clone()),
            _ => None,
        })
        .collect()
}

/// A brain that has adopted m1 (g1, replica r1) and m2 (g2) from three agreeing sentinels.
fn started() -> Brain {
    let mut b = brain();
    for s in S {
        up(&mut b, s);
        poll(&mut b, s, vec![view("m1", 0, &[("r1", true)]), view("m2", 0, &[])]);
    }
    for (g, m) in [(0, "m1"), (1, "m2")] {
        let a = role(&mut b, g, m, AdoptedVia::Startup, Role::Master);
        assert_eq!(adoptions(&a).len(), 1);
    }
    assert_eq!(b.start_state(), StartState::Ready);
    b
}

#[test]
fn startup_adopts_the_majority_after_role() {
    let mut b = brain();
    up(&mut b, S[0]);
    let a = poll(&mut b, S[0], vec![view("m1", 0, &[("r1", true)]), view("m2", 0, &[])]);
    // One sentinel of one reachable is a majority.
    assert_eq!(
        checks(&a),
        vec![
            (0, "m1".to_string(), AdoptedVia::Startup),
            (1, "m2".to_string(), AdoptedVia::Startup)
        ]
    );
    assert!(matches!(b.start_state(), StartState::Waiting(_)));
    assert!(b.groups().is_none());
    let a = role(&mut b, 0, "m1", AdoptedVia::Startup, Role::Master);
    assert_eq!(adoptions(&a)[0].old, None);
    // An unreachable candidate is still adopted at start-up: the sentinels agree on it.
    role(&mut b, 1, "m2", AdoptedVia::Startup, Role::Unknown("refused".into()));
    let groups = b.groups().expect("all masters known");
    assert_eq!(groups[0].master, "m1");
    assert_eq!(groups[0].replicas, vec![Replica { addr: "r1".into(), healthy: true }]);
    assert_eq!(groups[1].master, "m2");
    assert_eq!(b.start_state(), StartState::Ready);
}

#[test]
fn startup_never_adopts_a_replica() {
    let mut b = brain();
    up(&mut b, S[0]);
    poll(&mut b, S[0], vec![view("m1", 0, &[]), view("m2", 0, &[])]);
    role(&mut b, 0, "m1", AdoptedVia::Startup, Role::Replica);
    assert_eq!(b.groups[0].master, None);
    // Re-checked on a later poll, once the pause has passed.
    let later = Instant::now() + RECHECK_NEGATIVE_AFTER * 2;
    let a = b.handle(
        Msg::Poll {
            sentinel: S[0].into(),
            report: PollReport {
                groups: vec![view("m1", 0, &[]), view("m2", 0, &[])],
                sentinels: vec![],
            },
        },
        later,
    );
    assert_eq!(checks(&a), vec![(0, "m1".to_string(), AdoptedVia::Startup)]);
}

#[test]
fn unknown_group_once_every_sentinel_reported() {
    let mut b = brain();
    up(&mut b, S[0]);
    poll(&mut b, S[0], vec![view("m1", 0, &[]), None]);
    assert!(matches!(b.start_state(), StartState::Waiting(_)), "others not heard yet");
    b.handle(Msg::Down { sentinel: S[1].into(), error: "refused".into() }, Instant::now());
    up(&mut b, S[2]);
    poll(&mut b, S[2], vec![view("m1", 0, &[]), None]);
    assert_eq!(
        b.start_state(),
        StartState::UnknownGroup { group: "g2".into(), asked: vec![S[0].into(), S[2].into()] }
    );
}

#[test]
fn no_sentinel_reachable_says_why() {
    let mut b = brain();
    for s in S {
        b.handle(
            Msg::Down { sentinel: s.into(), error: "connection refused".into() },
            Instant::now(),
        );
    }
    match b.start_state() {
        StartState::Waiting(why) => {
            assert!(
                why.contains("no sentinel answered") && why.contains("s1:1: connection refused"),
                "{why}"
            )
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn fast_path_switch_event_and_role_master() {
    let mut b = started();
    let a = event(
        &mut b,
        S[0],
        Event::SwitchMaster { group: "g1".into(), old: "m1".into(), new: "r1".into() },
    );
    assert_eq!(checks(&a), vec![(0, "r1".to_string(), AdoptedVia::SwitchEvent)]);
    assert!(a.contains(&Action::Recheck));
    // The same event from another sentinel does not start a second check.
    let a = event(
        &mut b,
        S[1],
        Event::SwitchMaster { group: "g1".into(), old: "m1".into(), new: "r1".into() },
    );
    assert!(checks(&a).is_empty());
    let a = role(&mut b, 0, "r1", AdoptedVia::SwitchEvent, Role::Master);
    let ad = adoptions(&a);
    assert_eq!(ad.len(), 1);
    assert_eq!(ad[0].old.as_deref(), Some("m1"));
    assert_eq!(ad[0].new, "r1");
    assert!(ad[0].event_at.is_some());
    let groups = b.groups().expect("groups");
    assert_eq!(groups[0].master, "r1");
    // The old master is listed as an unhealthy replica by the sentinels that switched.
    assert_eq!(groups[0].replicas, vec![Replica { addr: "m1".into(), healthy: false }]);
    assert_eq!(groups[1].master, "m2");
}

#[test]
fn fast_path_refuses_a_replica_or_unreachable() {
    let mut b = started();
    event(
        &mut b,
        S[0],
        Event::SwitchMaster { group: "g1".into(), old: "m1".into(), new: "r1".into() },
    );
    let a = role(&mut b, 0, "r1", AdoptedVia::SwitchEvent, Role::Replica);
    assert!(adoptions(&a).is_empty());
    event(
        &mut b,
        S[0],
        Event::SwitchMaster { group: "g1".into(), old: "m1".into(), new: "r9".into() },
    );
    let a = role(&mut b, 0, "r9", AdoptedVia::SwitchEvent, Role::Unknown("timeout".into()));
    assert!(adoptions(&a).is_empty());
    assert_eq!(b.groups[0].master.as_deref(), Some("m1"));
}

#[test]
fn stale_majority_does_not_undo_a_fast_switch() {
    let mut b = started();
    poll(&mut b, S[0], vec![view("m1", 4, &[("r1", true)]), view("m2", 0, &[])]);
    event(
        &mut b,
        S[0],
        Event::SwitchMaster { group: "g1".into(), old: "m1".into(), new: "r1".into() },
    );
    role(&mut b, 0, "r1", AdoptedVia::SwitchEvent, Role::Master);
    assert_eq!(b.groups[0].master.as_deref(), Some("r1"));
    // S2 and S3 have not heard of the failover yet: two of three still say m1 (epoch 0).
    let a = poll(&mut b, S[0], vec![view("r1", 5, &[("m1", false)]), view("m2", 0, &[])]);
    assert!(checks(&a).is_empty(), "{a:?}");
    let a = poll(&mut b, S[1], vec![view("m1", 0, &[("r1", true)]), view("m2", 0, &[])]);
    assert!(checks(&a).is_empty(), "{a:?}");
    assert_eq!(b.groups[0].master.as_deref(), Some("r1"));
    // Replicas come only from sentinels that agree with the adopted master.
    assert_eq!(b.groups[0].replicas, vec![Replica { addr: "m1".into(), healthy: false }]);
}

#[test]
fn majority_path_adopts_after_role() {
    let mut b = started();
    poll(&mut b, S[0], vec![view("r1", 1, &[("m1", false)]), view("m2", 0, &[])]);
    let a = poll(&mut b, S[1], vec![view("r1", 1, &[("m1", false)]), view("m2", 0, &[])]);
    assert_eq!(checks(&a), vec![(0, "r1".to_string(), AdoptedVia::Majority)]);
    // While the check runs, further polls do not start another one.
    let a = poll(&mut b, S[2], vec![view("r1", 1, &[("m1", false)]), view("m2", 0, &[])]);
    assert!(checks(&a).is_empty());
    // It answers replica: not adopted, and not asked again right away.
    let a = role(&mut b, 0, "r1", AdoptedVia::Majority, Role::Replica);
    assert!(adoptions(&a).is_empty());
    let a = poll(&mut b, S[2], vec![view("r1", 1, &[("m1", false)]), view("m2", 0, &[])]);
    assert!(checks(&a).is_empty());
    // The next poll, after the pause, checks again; this time it answers master.
    let later = Instant::now() + RECHECK_NEGATIVE_AFTER * 2;
    let a = b.handle(
        Msg::Poll {
            sentinel: S[2].into(),
            report: PollReport {
                groups: vec![view("r1", 1, &[("m1", false)]), view("m2", 0, &[])],
                sentinels: vec![],
            },
        },
        later,
    );
    assert_eq!(checks(&a), vec![(0, "r1".to_string(), AdoptedVia::Majority)]);
    let a = role(&mut b, 0, "r1", AdoptedVia::Majority, Role::Master);
    let ad = adoptions(&a);
    assert_eq!(ad.len(), 1);
    assert_eq!(ad[0].via, AdoptedVia::Majority);
    assert_eq!(ad[0].event_at, None);
    assert_eq!(b.groups[0].epoch, 1);
}

#[test]
fn majority_adopts_an_unreachable_candidate_but_one_event_does_not() {
    let mut b = started();
    event(
        &mut b,
        S[0],
        Event::SwitchMaster { group: "g1".into(), old: "m1".into(), new: "r1".into() },
    );
    let a = role(&mut b, 0, "r1", AdoptedVia::SwitchEvent, Role::Unknown("NOAUTH".into()));
    assert!(adoptions(&a).is_empty());
    // The failed fast-path check does not hold the majority path back.
    let a = poll(&mut b, S[1], vec![view("r1", 1, &[("m1", false)]), view("m2", 0, &[])]);
    assert_eq!(checks(&a), vec![(0, "r1".to_string(), AdoptedVia::Majority)]);
    let a = role(&mut b, 0, "r1", AdoptedVia::Majority, Role::Unknown("NOAUTH".into()));
    assert_eq!(adoptions(&a).len(), 1);
    assert_eq!(b.groups[0].master.as_deref(), Some("r1"));
}

#[test]
fn no_majority_no_check() {
    let mut b = started();
    poll(&mut b, S[0], vec![view("x", 1, &[]), view("m2", 0, &[])]);
    let a = poll(&mut b, S[1], vec![view("y", 1, &[]), view("m2", 0, &[])]);
    assert!(checks(&a).is_empty());
}

#[test]
fn replica_events_and_health() {
    let mut b = started();
    let replica_event = |channel: &str, addr: &str| Event::Instance {
        channel: channel.into(),
        kind: InstanceKind::Replica,
        addr: addr.into(),
        group: "g1".into(),
    };
    // A new replica reported by one sentinel appears (healthy) in the table.
    event(&mut b, S[0], replica_event("+slave", "r2"));
    let r = &b.groups().expect("groups")[0].replicas;
    assert_eq!(
        r,
        &vec![
            Replica { addr: "r1".into(), healthy: true },
            Replica { addr: "r2".into(), healthy: true }
        ]
    );
    // One sentinel's +sdown is enough to stop reading from it.
    event(&mut b, S[1], replica_event("+sdown", "r1"));
    assert!(!b.groups[0].replicas[0].healthy);
    event(&mut b, S[1], replica_event("-sdown", "r1"));
    assert!(b.groups[0].replicas[0].healthy);
    // A poll reporting flags replaces the sentinel's view.
    poll(&mut b, S[2], vec![view("m1", 0, &[("r1", false)]), view("m2", 0, &[])]);
    assert!(!b.groups[0].replicas[0].healthy);
    // Events about unknown groups are ignored.
    let a = event(
        &mut b,
        S[0],
        Event::Instance {
            channel: "+slave".into(),
            kind: InstanceKind::Replica,
            addr: "zz".into(),
            group: "other".into(),
        },
    );
    assert!(a.is_empty());
}

#[test]
fn losing_every_sentinel_keeps_the_topology() {
    let mut b = started();
    let before = b.groups();
    for s in S {
        let a = b.handle(Msg::Down { sentinel: s.into(), error: "gone".into() }, Instant::now());
        assert!(checks(&a).is_empty());
    }
    assert_eq!(b.groups(), before);
    assert!(b.sentinels.values().all(|s| !s.up));
}

#[test]
fn discovers_sentinels_once() {
    let mut b = started();
    let report = PollReport {
        groups: vec![view("m1", 0, &[("r1", true)]), view("m2", 0, &[])],
        sentinels: vec!["s4:4".into(), S[1].into()],
    };
    let a = b.handle(Msg::Poll { sentinel: S[0].into(), report: report.clone() }, Instant::now());
    assert_eq!(a.iter().filter(|a| matches!(a, Action::AddSentinel(_))).count(), 1);
    assert!(a.contains(&Action::AddSentinel("s4:4".into())));
    let a = b.handle(Msg::Poll { sentinel: S[1].into(), report }, Instant::now());
    assert!(!a.iter().any(|a| matches!(a, Action::AddSentinel(_))));
    let a = event(
        &mut b,
        S[0],
        Event::Instance {
            channel: "+sentinel".into(),
            kind: InstanceKind::Sentinel,
            addr: "s5:5".into(),
            group: "g1".into(),
        },
    );
    assert_eq!(a, vec![Action::AddSentinel("s5:5".into())]);
}

#[test]
fn master_down_time_is_measured_from_the_first_report() {
    let mut b = started();
    let t0 = Instant::now();
    b.handle(
        Msg::Event {
            sentinel: S[0].into(),
            event: Event::Instance {
                channel: "+sdown".into(),
                kind: InstanceKind::Master,
                addr: "m1".into(),
                group: "g1".into(),
            },
            at: t0,
        },
        t0,
    );
    event(
        &mut b,
        S[1],
        Event::Instance {
            channel: "+odown".into(),
            kind: InstanceKind::Master,
            addr: "m1".into(),
            group: "g1".into(),
        },
    );
    event(
        &mut b,
        S[0],
        Event::SwitchMaster { group: "g1".into(), old: "m1".into(), new: "r1".into() },
    );
    let a = role(&mut b, 0, "r1", AdoptedVia::SwitchEvent, Role::Master);
    assert_eq!(adoptions(&a)[0].down_at, Some(t0));
}

#[test]
fn a_check_that_raced_with_a_newer_change_does_not_win() {
    let mut b = started();
    event(
        &mut b,
        S[0],
        Event::SwitchMaster { group: "g1".into(), old: "m1".into(), new: "a".into() },
    );
    // Before ROLE answers, every sentinel already moved on to b (a newer failover).
    for s in S {
        poll(&mut b, s, vec![view("b", 7, &[]), view("m2", 0, &[])]);
    }
    let a = role(&mut b, 0, "b", AdoptedVia::Majority, Role::Master);
    assert_eq!(adoptions(&a).len(), 1);
    let a = role(&mut b, 0, "a", AdoptedVia::SwitchEvent, Role::Master);
    assert!(adoptions(&a).is_empty());
    assert_eq!(b.groups[0].master.as_deref(), Some("b"));
}

#[test]
fn failover_steps_fence_the_adopted_master_and_aborts_lift_it() {
    let mut b = started();
    let fences = |a: &[Action]| -> Vec<(GroupId, String, bool)> {
        a.iter()
            .filter_map(|a| match a {
                Action::Fence { group, addr, on } => Some((*group, addr.clone(), *on)),
                _ => None,
            })
            .collect()
    };
    let step = |master: &str, aborted| Event::Failover {
        group: "g1".into(),
        master: master.into(),
        aborted,
        replica: None,
    };
    let a = event(&mut b, S[0], step("m1", false));
    assert_eq!(fences(&a), vec![(0, "m1".to_string(), true)]);
    assert!(adoptions(&a).is_empty(), "a failover step alone adopts nothing");
    // Not the master keyhop routes to: nothing to fence.
    assert!(fences(&event(&mut b, S[0], step("old", false))).is_empty());
    let unknown = Event::Failover {
        group: "nope".into(),
        master: "m1".into(),
        aborted: false,
        replica: None,
    };
    assert!(event(&mut b, S[0], unknown).is_empty());
    let a = event(&mut b, S[0], step("m1", true));
    assert_eq!(fences(&a), vec![(0, "m1".to_string(), false)]);
    assert!(a.contains(&Action::Recheck));
}

/// A failover step of g1's `m1` naming the replica `r1` being promoted (or an abort).
fn promoting(aborted: bool) -> Event {
    let replica = (!aborted).then(|| "r1".to_string());
    Event::Failover { group: "g1".into(), master: "m1".into(), aborted, replica }
}

fn watches(actions: &[Action]) -> Vec<Action> {
    actions
        .iter()
        .filter(|a| matches!(a, Action::WatchPromotion { .. } | Action::StopWatching { .. }))
        .cloned()
        .collect()
}

/// [`started`], with `r1` adopted on its `ROLE` while `S[0]` leads g1's failover.
fn adopted_on_role() -> Brain {
    let mut b = started();
    let a = event(&mut b, S[0], promoting(false));
    assert!(a.contains(&Action::Fence { group: 0, addr: "m1".into(), on: true }));
    assert_eq!(watches(&a), vec![Action::WatchPromotion { group: 0, addr: "r1".into() }]);
    assert_eq!(b.groups[0].replicas, vec![Replica { addr: "r1".into(), healthy: false }]);
    // Later steps of the same failover renew the fence and start no second watch.
    assert_eq!(watches(&event(&mut b, S[0], promoting(false))), vec![]);
    let a = role(&mut b, 0, "r1", AdoptedVia::RolePoll, Role::Master);
    let got = adoptions(&a);
    assert_eq!(got.len(), 1, "{a:?}");
    assert_eq!((got[0].old.as_deref(), got[0].new.as_str()), (Some("m1"), "r1"));
    assert_eq!(got[0].via, AdoptedVia::RolePoll);
    // The sentinels still name m1 on the old epoch: it is not a candidate.
    assert_eq!(checks(&a), vec![], "{a:?}");
    b
}

#[test]
fn the_promoted_replica_is_adopted_on_its_role_and_the_old_majority_is_not_followed() {
    let mut b = adopted_on_role();
    assert_eq!(b.groups[0].master.as_deref(), Some("r1"));
    // Every sentinel still names m1 (they learn of the promotion a second later): not followed.
    for s in S {
        let a = poll(&mut b, s, vec![view("m1", 0, &[("r1", true)]), view("m2", 0, &[])]);
        assert_eq!(checks(&a), vec![], "{a:?}");
    }
    assert_eq!(b.groups[0].master.as_deref(), Some("r1"));
    // The announcement confirms it: a later abort by the leader undoes nothing.
    let sw = Event::SwitchMaster { group: "g1".into(), old: "m1".into(), new: "r1".into() };
    let a = event(&mut b, S[0], sw);
    assert_eq!(checks(&a), vec![], "already the master");
    assert_eq!(b.groups[0].promotion, None);
    let a = event(&mut b, S[0], promoting(true));
    assert!(!a.iter().any(|a| matches!(a, Action::Fence { .. })), "{a:?}");
    assert_eq!(b.groups[0].master.as_deref(), Some("r1"));
}

#[test]
fn a_watch_that_ends_without_master_adopts_nothing() {
    for answer in [Role::Replica, Role::Unknown("ROLE on r1 timed out".into())] {
        let mut b = started();
        event(&mut b, S[0], promoting(false));
        let a = role(&mut b, 0, "r1", AdoptedVia::RolePoll, answer);
        assert!(adoptions(&a).is_empty(), "{a:?}");
        assert_eq!(b.groups[0].master.as_deref(), Some("m1"));
        assert_eq!(b.groups[0].promotion, None);
        assert_eq!(b.groups[0].replicas, vec![Replica { addr: "r1".into(), healthy: true }]);
    }
}

#[test]
fn an_abort_before_the_promotion_stops_the_watch_and_lifts_the_fence() {
    let mut b = started();
    event(&mut b, S[0], promoting(false));
    assert_eq!(b.groups[0].replicas, vec![Replica { addr: "r1".into(), healthy: false }]);
    let a = event(&mut b, S[0], promoting(true));
    assert_eq!(watches(&a), vec![Action::StopWatching { group: 0 }]);
    assert!(a.contains(&Action::Fence { group: 0, addr: "m1".into(), on: false }));
    // Reads may go to it again.
    assert_eq!(b.groups[0].replicas, vec![Replica { addr: "r1".into(), healthy: true }]);
    // A report the abort raced with is ignored.
    let a = role(&mut b, 0, "r1", AdoptedVia::RolePoll, Role::Master);
    assert!(adoptions(&a).is_empty(), "{a:?}");
    assert_eq!(b.groups[0].master.as_deref(), Some("m1"));
}

#[test]
fn the_leader_giving_up_after_the_adoption_goes_back_to_the_old_master() {
    let mut b = adopted_on_role();
    // Another sentinel's abort (e.g. it lost the election) is not the leader's.
    let a = event(&mut b, S[1], promoting(true));
    assert!(!a.iter().any(|a| matches!(a, Action::Fence { .. })), "{a:?}");
    assert_eq!(b.groups[0].master.as_deref(), Some("r1"));
    // The leader's: the promoted replica is fenced (Sentinel turns it back into a replica) and
    // the sentinels' majority, still on m1, is followed again.
    let a = event(&mut b, S[0], promoting(true));
    assert!(a.contains(&Action::Fence { group: 0, addr: "r1".into(), on: true }), "{a:?}");
    assert_eq!(watches(&a), vec![Action::StopWatching { group: 0 }]);
    assert_eq!(checks(&a), vec![(0, "m1".to_string(), AdoptedVia::Majority)]);
    let a = role(&mut b, 0, "m1", AdoptedVia::Majority, Role::Master);
    let got = adoptions(&a);
    assert_eq!(got.len(), 1, "{a:?}");
    assert_eq!((got[0].old.as_deref(), got[0].new.as_str()), (Some("r1"), "m1"));
}

#[test]
fn sentinel_announcing_another_master_than_the_adopted_replica_is_followed() {
    let mut b = adopted_on_role();
    let sw = Event::SwitchMaster { group: "g1".into(), old: "m1".into(), new: "r9".into() };
    let a = event(&mut b, S[1], sw);
    assert_eq!(checks(&a), vec![(0, "r9".to_string(), AdoptedVia::SwitchEvent)]);
    let a = role(&mut b, 0, "r9", AdoptedVia::SwitchEvent, Role::Master);
    let got = adoptions(&a);
    assert_eq!(got.len(), 1, "{a:?}");
    assert_eq!((got[0].old.as_deref(), got[0].new.as_str()), (Some("r1"), "r9"));
}

#[test]
fn a_sentinel_turning_the_adopted_replica_back_goes_back_to_the_old_master() {
    let mut b = adopted_on_role();
    // E.g. the leader died before announcing the promotion: another sentinel, still on m1's
    // configuration, reconfigures r1 as a replica.
    let converted = Event::Instance {
        channel: "+convert-to-slave".into(),
        kind: InstanceKind::Replica,
        addr: "r1".into(),
        group: "g1".into(),
    };
    let a = event(&mut b, S[1], converted);
    assert!(a.contains(&Action::Fence { group: 0, addr: "r1".into(), on: true }), "{a:?}");
    assert_eq!(checks(&a), vec![(0, "m1".to_string(), AdoptedVia::Majority)]);
    let a = role(&mut b, 0, "m1", AdoptedVia::Majority, Role::Master);
    assert_eq!(adoptions(&a).len(), 1, "{a:?}");
    assert_eq!(b.groups[0].master.as_deref(), Some("m1"));
}
