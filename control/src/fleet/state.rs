//! The fleet's slot map as kept in etcd under `PREFIX/state`: the groups, which group owns each
//! slot, and the slots in flux (being handed over to another group).
//!
//! Every change is a pure function on [`FleetState`], written back with a compare-and-swap on
//! the key's revision, so two coordinators can never interleave their changes. The revision of
//! the key is the *fleet revision* that instances apply and acknowledge.

use keyhop_router::{
    FluxRange, FluxState, Group, GroupId, Replica, RoutingTable, SLOT_COUNT, TableError,
};
use serde::{Deserialize, Serialize};

/// Version of the JSON layout written by this build.
const VERSION: u32 = 1;

/// One group as the fleet knows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupDef {
    /// The group's name (the Sentinel master name in Sentinel mode).
    pub name: String,
    /// `host:port` of the master in static mode; absent in Sentinel mode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub master: Option<String>,
    /// Replicas in static mode.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub replicas: Vec<String>,
}

/// A range of slots being handed from one group to another by a migration job.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FluxEntry {
    /// First slot (inclusive).
    pub first: u16,
    /// Last slot (inclusive).
    pub last: u16,
    /// The group that owns the slots until the flip.
    pub from: String,
    /// The group that owns them after it.
    pub to: String,
    /// Locked (commands wait) or migrating (commands move their keys first).
    pub state: FluxState,
    /// The migration job that put the range in flux.
    pub job: String,
}

/// The slot map: groups, owners and slots in flux.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FleetState {
    /// The groups, in order.
    pub groups: Vec<GroupDef>,
    /// Index into `groups` of each slot's owner.
    owner: Vec<u16>,
    /// Ranges in flux, sorted by first slot, never overlapping.
    pub flux: Vec<FluxEntry>,
}

#[derive(Serialize, Deserialize)]
struct Json {
    version: u32,
    groups: Vec<GroupDef>,
    owners: Vec<OwnerJson>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    flux: Vec<FluxJson>,
}

#[derive(Serialize, Deserialize)]
struct OwnerJson {
    slots: String,
    group: String,
}

#[derive(Serialize, Deserialize)]
struct FluxJson {
    slots: String,
    from: String,
    to: String,
    state: String,
    job: String,
}

/// Formats an inclusive range as `"A-B"` or `"A"`.
pub fn range_text(first: u16, last: u16) -> String {
    if first == last { first.to_string() } else { format!("{first}-{last}") }
}

/// Parses `"A-B"` or `"A"` (slots 0-16383).
pub fn parse_range(text: &str) -> Result<(u16, u16), String> {
    let (a, b) = crate::config::parse_slot_spec(text)?;
    Ok((a as u16, b as u16))
}

/// Parses `"0-1023,4096,8192-9000"` into sorted, merged ranges.
pub fn parse_ranges(text: &str) -> Result<Vec<(u16, u16)>, String> {
    let mut out = Vec::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        out.push(parse_range(part)?);
    }
    if out.is_empty() {
        return Err(format!("{text:?} names no slots: write e.g. \"0-1023,8192-9215\""));
    }
    Ok(merge(out))
}

/// Sorts and merges overlapping or adjacent ranges.
pub fn merge(mut ranges: Vec<(u16, u16)>) -> Vec<(u16, u16)> {
    ranges.sort_unstable();
    let mut out: Vec<(u16, u16)> = Vec::with_capacity(ranges.len());
    for (a, b) in ranges {
        match out.last_mut() {
            Some(last) if u32::from(a) <= u32::from(last.1) + 1 => last.1 = last.1.max(b),
            _ => out.push((a, b)),
        }
    }
    out
}

impl FleetState {
    /// A state with `groups` owning `ranges` (one list per group, as the config file gives them).
    pub fn new(groups: Vec<GroupDef>, ranges: &[Vec<(u32, u32)>]) -> Result<FleetState, String> {
        let mut owner = vec![u16::MAX; SLOT_COUNT];
        for (g, list) in ranges.iter().enumerate() {
            for &(a, b) in list {
                for s in a..=b.min(SLOT_COUNT as u32 - 1) {
                    owner[s as usize] = g as u16;
                }
            }
        }
        let state = FleetState { groups, owner, flux: Vec::new() };
        state.check()?;
        Ok(state)
    }

    /// Parses the JSON kept in etcd.
    pub fn parse(bytes: &[u8]) -> Result<FleetState, String> {
        let j: Json = serde_json::from_slice(bytes)
            .map_err(|e| format!("the fleet state in etcd is not valid JSON: {e}"))?;
        if j.version != VERSION {
            return Err(format!(
                "the fleet state in etcd has layout version {}, this keyhop reads {VERSION}: upgrade keyhop",
                j.version
            ));
        }
        let index = |name: &str| {
            j.groups
                .iter()
                .position(|g| g.name == name)
                .ok_or_else(|| format!("the fleet state names an unknown group {name:?}"))
        };
        let mut owner = vec![u16::MAX; SLOT_COUNT];
        for o in &j.owners {
            let g = index(&o.group)? as u16;
            let (a, b) = parse_range(&o.slots)?;
            for s in a..=b {
                owner[s as usize] = g;
            }
        }
        let mut flux = Vec::new();
        for f in &j.flux {
            index(&f.from)?;
            index(&f.to)?;
            let (first, last) = parse_range(&f.slots)?;
            let state = match f.state.as_str() {
                "locked" => FluxState::Locked,
                "migrating" => FluxState::Migrating,
                other => {
                    return Err(format!("the fleet state has an unknown flux state {other:?}"));
                }
            };
            flux.push(FluxEntry {
                first,
                last,
                from: f.from.clone(),
                to: f.to.clone(),
                state,
                job: f.job.clone(),
            });
        }
        flux.sort_by_key(|f| f.first);
        let state = FleetState { groups: j.groups, owner, flux };
        state.check()?;
        Ok(state)
    }

    /// The JSON to keep in etcd.
    pub fn to_json(&self) -> Vec<u8> {
        let owners = self
            .owner_ranges()
            .into_iter()
            .map(|(a, b, g)| OwnerJson {
                slots: range_text(a, b),
                group: self.groups[g as usize].name.clone(),
            })
            .collect();
        let flux = self
            .flux
            .iter()
            .map(|f| FluxJson {
                slots: range_text(f.first, f.last),
                from: f.from.clone(),
                to: f.to.clone(),
                state: match f.state {
                    FluxState::Locked => "locked".into(),
                    FluxState::Migrating => "migrating".into(),
                },
                job: f.job.clone(),
            })
            .collect();
        let j = Json { version: VERSION, groups: self.groups.clone(), owners, flux };
        serde_json::to_vec(&j).unwrap_or_default()
    }

    /// Every slot owned once, names unique, flux ranges disjoint and owned by their `from`.
    fn check(&self) -> Result<(), String> {
        if self.groups.is_empty() {
            return Err("the fleet has no groups".into());
        }
        for (i, g) in self.groups.iter().enumerate() {
            if self.groups[..i].iter().any(|o| o.name == g.name) {
                return Err(format!("the fleet state names group {:?} twice", g.name));
            }
        }
        if let Some(s) = self.owner.iter().position(|&o| o as usize >= self.groups.len()) {
            return Err(format!("slot {s} has no owner in the fleet state"));
        }
        let mut prev: Option<u16> = None;
        for f in &self.flux {
            if f.first > f.last || prev.is_some_and(|p| f.first <= p) {
                return Err(format!("flux ranges overlap at {}", range_text(f.first, f.last)));
            }
            prev = Some(f.last);
            let from = self.group_index(&f.from);
            if (f.first..=f.last).any(|s| Some(self.owner[s as usize]) != from) {
                return Err(format!(
                    "slots {} are in flux from {} but it does not own them all",
                    range_text(f.first, f.last),
                    f.from
                ));
            }
        }
        Ok(())
    }

    /// Index of the group named `name`.
    pub fn group_index(&self, name: &str) -> Option<u16> {
        self.groups.iter().position(|g| g.name == name).map(|i| i as u16)
    }

    /// The owner of `slot`.
    pub fn owner_of(&self, slot: u16) -> &str {
        &self.groups[self.owner[slot as usize] as usize].name
    }

    /// Runs of slots with the same owner: (first, last, group index).
    pub fn owner_ranges(&self) -> Vec<(u16, u16, GroupId)> {
        let mut out: Vec<(u16, u16, GroupId)> = Vec::new();
        for (s, &g) in self.owner.iter().enumerate() {
            match out.last_mut() {
                Some(last) if last.2 == g => last.1 = s as u16,
                _ => out.push((s as u16, s as u16, g)),
            }
        }
        out
    }

    /// The ranges `group` owns.
    pub fn ranges_of(&self, group: &str) -> Vec<(u16, u16)> {
        let Some(g) = self.group_index(group) else { return Vec::new() };
        self.owner_ranges().into_iter().filter(|r| r.2 == g).map(|(a, b, _)| (a, b)).collect()
    }

    /// How many slots `group` owns.
    pub fn slot_count(&self, group: &str) -> usize {
        self.ranges_of(group).iter().map(|&(a, b)| usize::from(b - a) + 1).sum()
    }

    /// The flux entry holding `slot`, if any.
    pub fn flux_of(&self, slot: u16) -> Option<&FluxEntry> {
        self.flux.iter().find(|f| f.first <= slot && slot <= f.last)
    }

    /// Adds a group that owns nothing yet.
    pub fn add_group(&mut self, def: GroupDef) -> Result<(), String> {
        if def.name.is_empty() || def.name.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(format!("{:?} is not a group name: use a name without spaces", def.name));
        }
        if self.group_index(&def.name).is_some() {
            return Err(format!("group {:?} is already in the fleet", def.name));
        }
        if self.groups.len() >= keyhop_router::table::MAX_GROUPS {
            return Err(TableError::TooManyGroups(self.groups.len() + 1).to_string());
        }
        self.groups.push(def);
        Ok(())
    }

    /// Removes a group that owns no slot and is in no migration.
    pub fn remove_group(&mut self, name: &str) -> Result<(), String> {
        let Some(g) = self.group_index(name) else {
            return Err(format!("group {name:?} is not in the fleet (see `keyhop slots show`)"));
        };
        let owned = self.slot_count(name);
        if owned > 0 {
            return Err(format!(
                "group {name:?} still owns {owned} slots: move them first with `keyhop slots migrate --slots ... --to OTHER` or `keyhop slots rebalance`"
            ));
        }
        if self.flux.iter().any(|f| f.to == name || f.from == name) {
            return Err(format!("group {name:?} is in a running migration: let it finish first"));
        }
        self.groups.remove(g as usize);
        for o in &mut self.owner {
            if *o > g {
                *o -= 1;
            }
        }
        Ok(())
    }

    /// Puts `first..=last` in flux to `to` for `job` as locked. Every slot must have one owner
    /// other than `to`, and none may be in flux already.
    pub fn lock(&mut self, first: u16, last: u16, to: &str, job: &str) -> Result<(), String> {
        if self.group_index(to).is_none() {
            return Err(format!(
                "group {to:?} is not in the fleet: add it with `keyhop group add`"
            ));
        }
        let from = self.owner_of(first).to_string();
        for s in first..=last {
            if self.owner_of(s) != from {
                return Err(format!(
                    "slots {} have more than one owner: lock them per owner",
                    range_text(first, last)
                ));
            }
            if self.flux_of(s).is_some() {
                return Err(format!("slot {s} is already being migrated"));
            }
        }
        if from == to {
            return Err(format!("slots {} already belong to {to}", range_text(first, last)));
        }
        self.flux.push(FluxEntry {
            first,
            last,
            from,
            to: to.into(),
            state: FluxState::Locked,
            job: job.into(),
        });
        self.flux.sort_by_key(|f| f.first);
        Ok(())
    }

    fn entry_mut(&mut self, first: u16, job: &str) -> Result<&mut FluxEntry, String> {
        self.flux
            .iter_mut()
            .find(|f| f.first == first && f.job == job)
            .ok_or_else(|| format!("slots from {first} are not in flux for job {job}"))
    }

    /// Moves a locked range to migrating.
    pub fn start_migrating(&mut self, first: u16, job: &str) -> Result<(), String> {
        self.entry_mut(first, job)?.state = FluxState::Migrating;
        Ok(())
    }

    /// Ends a range's migration: its slots now belong to the target.
    pub fn flip(&mut self, first: u16, job: &str) -> Result<(), String> {
        let e = self.entry_mut(first, job)?.clone();
        let to = self.group_index(&e.to).ok_or_else(|| format!("unknown group {}", e.to))?;
        for s in e.first..=e.last {
            self.owner[s as usize] = to;
        }
        self.flux.retain(|f| !(f.first == first && f.job == job));
        Ok(())
    }

    /// Gives a locked range back to its owner (nothing moved yet).
    pub fn unlock(&mut self, first: u16, job: &str) -> Result<(), String> {
        let e = self.entry_mut(first, job)?;
        if e.state != FluxState::Locked {
            return Err(format!("slots from {first} are migrating; they cannot be unlocked"));
        }
        self.flux.retain(|f| !(f.first == first && f.job == job));
        Ok(())
    }

    /// The routing table for this state: `resolve` gives each group's addresses by name.
    pub fn table(
        &self,
        epoch: u64,
        revision: u64,
        resolve: impl Fn(&GroupDef) -> Option<Group>,
    ) -> Result<RoutingTable, String> {
        let mut groups = Vec::with_capacity(self.groups.len());
        for g in &self.groups {
            groups.push(
                resolve(g)
                    .ok_or_else(|| format!("the master of group {:?} is not known yet", g.name))?,
            );
        }
        let flux = self
            .flux
            .iter()
            .map(|f| FluxRange {
                first: f.first,
                last: f.last,
                from: self.group_index(&f.from).unwrap_or(0),
                to: self.group_index(&f.to).unwrap_or(0),
                state: f.state,
            })
            .collect();
        RoutingTable::from_parts(epoch, groups, &self.owner_ranges(), flux, revision)
            .map_err(|e| e.to_string())
    }
}

/// A group's addresses as static mode knows them (from the fleet state).
pub fn static_group(def: &GroupDef) -> Option<Group> {
    Some(Group {
        name: def.name.clone(),
        master: def.master.clone()?,
        replicas: def.replicas.iter().map(|r| Replica { addr: r.clone(), healthy: true }).collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn g(name: &str) -> GroupDef {
        GroupDef {
            name: name.into(),
            master: Some(format!("127.0.0.1:{}", name.len())),
            replicas: vec![],
        }
    }

    fn two() -> FleetState {
        FleetState::new(vec![g("g1"), g("g2")], &[vec![(0, 8191)], vec![(8192, 16383)]]).unwrap()
    }

    #[test]
    fn json_round_trip_keeps_owners_and_flux() {
        let mut s = two();
        s.add_group(g("g3")).unwrap();
        s.lock(0, 255, "g3", "j1").unwrap();
        s.lock(8192, 8447, "g3", "j1").unwrap();
        s.start_migrating(0, "j1").unwrap();
        let back = FleetState::parse(&s.to_json()).unwrap();
        assert_eq!(back, s);
        assert_eq!(back.flux_of(100).unwrap().state, FluxState::Migrating);
        assert_eq!(back.flux_of(8300).unwrap().state, FluxState::Locked);
    }

    #[test]
    fn flip_moves_ownership_and_clears_flux() {
        let mut s = two();
        s.add_group(g("g3")).unwrap();
        s.lock(0, 255, "g3", "j1").unwrap();
        s.start_migrating(0, "j1").unwrap();
        s.flip(0, "j1").unwrap();
        assert_eq!(s.ranges_of("g3"), vec![(0, 255)]);
        assert_eq!(s.ranges_of("g1"), vec![(256, 8191)]);
        assert!(s.flux.is_empty());
    }

    #[test]
    fn refusals_name_the_fix() {
        let mut s = two();
        assert!(s.lock(0, 10, "g9", "j").unwrap_err().contains("keyhop group add"));
        assert!(s.lock(8000, 8300, "g2", "j").unwrap_err().contains("more than one owner"));
        s.lock(0, 10, "g2", "j").unwrap();
        assert!(s.lock(5, 5, "g2", "k").unwrap_err().contains("already being migrated"));
        assert!(s.remove_group("g1").unwrap_err().contains("still owns 8192 slots"));
        s.start_migrating(0, "j").unwrap();
        assert!(s.unlock(0, "j").is_err());
    }

    #[test]
    fn remove_group_reindexes_owners() {
        let mut s = two();
        s.add_group(g("g0")).unwrap();
        s.groups.swap(0, 2); // g0 first, owning nothing
        s.owner.iter_mut().for_each(|o| {
            *o = match *o {
                0 => 2,
                2 => 0,
                x => x,
            }
        });
        s.remove_group("g0").unwrap();
        assert_eq!(s.owner_of(0), "g1");
        assert_eq!(s.owner_of(16383), "g2");
    }

    #[test]
    fn parse_rejects_bad_state() {
        assert!(FleetState::parse(b"{").unwrap_err().contains("not valid JSON"));
        let hole = br#"{"version":1,"groups":[{"name":"g1","master":"a:1"}],"owners":[{"slots":"0-100","group":"g1"}]}"#;
        assert!(FleetState::parse(hole).unwrap_err().contains("slot 101 has no owner"));
        let v2 = br#"{"version":2,"groups":[],"owners":[]}"#;
        assert!(FleetState::parse(v2).unwrap_err().contains("upgrade keyhop"));
    }

    #[test]
    fn parse_ranges_merges() {
        assert_eq!(parse_ranges("0-10, 11-20,100").unwrap(), vec![(0, 20), (100, 100)]);
        assert!(parse_ranges("").is_err());
        assert!(parse_ranges("5-1").is_err());
    }
}
