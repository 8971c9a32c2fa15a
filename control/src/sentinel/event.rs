//! Sentinel pub/sub events: the channels keyhop subscribes to and the parsing of their payloads.

use crate::config::join_host_port;

/// The channels subscribed on every sentinel.
pub(crate) const CHANNELS: [&str; 17] = [
    "+switch-master",
    "+slave",
    "+sdown",
    "-sdown",
    "+odown",
    "-odown",
    "+convert-to-slave",
    "+sentinel",
    "+failover-end",
    FAILOVER_STEPS[0],
    FAILOVER_STEPS[1],
    FAILOVER_STEPS[2],
    FAILOVER_STEPS[3],
    FAILOVER_STEPS[4],
    FAILOVER_ABORTS[0],
    FAILOVER_ABORTS[1],
    FAILOVER_ABORTS[2],
];

/// Events of the failover leader from choosing a replica until the new configuration is
/// announced. `+failover-state-select-slave` comes at least one Sentinel timer tick before
/// the replica is told `REPLICAOF NO ONE`: from then on the old master must take no writes.
pub(crate) const FAILOVER_STEPS: [&str; 5] = [
    "+failover-state-select-slave",
    "+selected-slave",
    "+failover-state-send-slaveof-noone",
    "+failover-state-wait-promotion",
    "+promoted-slave",
];

/// The leader gave the failover up: the old master stays master.
pub(crate) const FAILOVER_ABORTS: [&str; 3] = [
    "-failover-abort-no-good-slave",
    "-failover-abort-not-elected",
    "-failover-abort-slave-timeout",
];

/// Which kind of instance an event is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum InstanceKind {
    /// A monitored master.
    Master,
    /// A replica of a monitored master.
    Replica,
    /// Another sentinel.
    Sentinel,
}

/// A parsed Sentinel event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Event {
    /// `+switch-master <name> <old ip> <old port> <new ip> <new port>`.
    SwitchMaster { group: String, old: String, new: String },
    /// A failover of `group`'s `master` is under way (one of [`FAILOVER_STEPS`]), or was given
    /// up (`aborted`, one of [`FAILOVER_ABORTS`]). `replica` is the replica being promoted, when
    /// the event names it (from `+selected-slave` on).
    Failover { group: String, master: String, aborted: bool, replica: Option<String> },
    /// Any other event about an instance: `<type> <name> <ip> <port> [@ <master> <ip> <port>]`.
    Instance {
        /// The channel, e.g. `+sdown`.
        channel: String,
        /// What the instance is.
        kind: InstanceKind,
        /// `host:port` of the instance.
        addr: String,
        /// The master (group) name it belongs to.
        group: String,
    },
}

/// Parses the payload of a message on `channel`; `None` for anything not understood.
pub(crate) fn parse(channel: &str, payload: &str) -> Option<Event> {
    let words: Vec<&str> = payload.split_whitespace().collect();
    if channel == "+switch-master" {
        let [group, oip, oport, nip, nport] = words.get(..5)? else { return None };
        return Some(Event::SwitchMaster {
            group: group.to_string(),
            old: join_host_port(oip, oport.parse().ok()?),
            new: join_host_port(nip, nport.parse().ok()?),
        });
    }
    let aborted = FAILOVER_ABORTS.contains(&channel);
    if aborted || FAILOVER_STEPS.contains(&channel) {
        // `master <name> <ip> <port>` or `slave <name> <ip> <port> @ <master> <ip> <port>`.
        let (group, ip, port, replica) = match *words.first()? {
            "master" => (words.get(1)?, words.get(2)?, words.get(3)?, None),
            _ => {
                let at = words.iter().position(|w| *w == "@")?;
                // A replica that cannot be read only costs the fast promotion check, not the fence.
                let replica = match (words.get(2), words.get(3).and_then(|p| p.parse().ok())) {
                    (Some(ip), Some(port)) if at > 3 => Some(join_host_port(ip, port)),
                    _ => None,
                };
                (words.get(at + 1)?, words.get(at + 2)?, words.get(at + 3)?, replica)
            }
        };
        return Some(Event::Failover {
            group: group.to_string(),
            master: join_host_port(ip, port.parse().ok()?),
            aborted,
            replica,
        });
    }
    let kind = match *words.first()? {
        "master" => InstanceKind::Master,
        "slave" | "replica" => InstanceKind::Replica,
        "sentinel" => InstanceKind::Sentinel,
        _ => return None,
    };
    let addr = join_host_port(words.get(2)?, words.get(3)?.parse().ok()?);
    let group = match kind {
        InstanceKind::Master => words.get(1)?.to_string(),
        // Replicas and sentinels name their master after an `@`.
        _ => {
            let at = words.iter().position(|w| *w == "@")?;
            words.get(at + 1)?.to_string()
        }
    };
    Some(Event::Instance { channel: channel.to_string(), kind, addr, group })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn switch_master() {
        assert_eq!(
            parse("+switch-master", "g1 127.0.0.1 17201 127.0.0.1 17202"),
            Some(Event::SwitchMaster {
                group: "g1".into(),
                old: "127.0.0.1:17201".into(),
                new: "127.0.0.1:17202".into()
            })
        );
        assert_eq!(parse("+switch-master", "g1 127.0.0.1 17201 127.0.0.1"), None);
        assert_eq!(parse("+switch-master", "g1 127.0.0.1 x 127.0.0.1 1"), None);
    }

    #[test]
    fn failover_steps_and_aborts() {
        let fenced = |group: &str, master: &str, aborted, replica: Option<&str>| {
            Some(Event::Failover {
                group: group.into(),
                master: master.into(),
                aborted,
                replica: replica.map(String::from),
            })
        };
        assert_eq!(
            parse("+failover-state-select-slave", "master g1 127.0.0.1 17201"),
            fenced("g1", "127.0.0.1:17201", false, None)
        );
        assert_eq!(
            parse("+selected-slave", "slave 127.0.0.1:17202 127.0.0.1 17202 @ g1 127.0.0.1 17201"),
            fenced("g1", "127.0.0.1:17201", false, Some("127.0.0.1:17202"))
        );
        assert_eq!(
            parse("+failover-state-send-slaveof-noone", "slave [::1]:7002 ::1 7002 @ g2 ::1 7001"),
            fenced("g2", "[::1]:7001", false, Some("[::1]:7002"))
        );
        assert_eq!(
            parse("-failover-abort-no-good-slave", "master g2 ::1 7001"),
            fenced("g2", "[::1]:7001", true, None)
        );
        assert_eq!(
            parse("+selected-slave", "slave 1.2.3.4:5 1.2.3.4 x @ g1 1.2.3.4 6"),
            fenced("g1", "1.2.3.4:6", false, None),
            "a bad replica port still fences"
        );
        assert_eq!(parse("+promoted-slave", "slave 1.2.3.4:5 1.2.3.4 5"), None, "no @ master");
        for c in FAILOVER_STEPS.iter().chain(&FAILOVER_ABORTS) {
            assert!(CHANNELS.contains(c), "{c} is not subscribed");
        }
    }

    #[test]
    fn instances() {
        assert_eq!(
            parse("+sdown", "master g1 127.0.0.1 17201"),
            Some(Event::Instance {
                channel: "+sdown".into(),
                kind: InstanceKind::Master,
                addr: "127.0.0.1:17201".into(),
                group: "g1".into()
            })
        );
        assert_eq!(
            parse("+odown", "master g1 127.0.0.1 17201 #quorum 3/2"),
            Some(Event::Instance {
                channel: "+odown".into(),
                kind: InstanceKind::Master,
                addr: "127.0.0.1:17201".into(),
                group: "g1".into()
            })
        );
        assert_eq!(
            parse("+slave", "slave 127.0.0.1:17201 127.0.0.1 17201 @ g1 127.0.0.1 17202"),
            Some(Event::Instance {
                channel: "+slave".into(),
                kind: InstanceKind::Replica,
                addr: "127.0.0.1:17201".into(),
                group: "g1".into()
            })
        );
        assert_eq!(
            parse("+sentinel", "sentinel 8f0c 127.0.0.1 26380 @ g1 127.0.0.1 17201"),
            Some(Event::Instance {
                channel: "+sentinel".into(),
                kind: InstanceKind::Sentinel,
                addr: "127.0.0.1:26380".into(),
                group: "g1".into()
            })
        );
        assert_eq!(parse("+sdown", "slave 1.2.3.4:5 1.2.3.4 5"), None, "no @ master");
        assert_eq!(parse("+sdown", "widget g1 1.2.3.4 5"), None);
        assert_eq!(parse("+sdown", ""), None);
    }
}
