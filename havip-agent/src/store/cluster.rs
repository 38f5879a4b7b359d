//! TEMPORARY: part E's types, for compiling the control part before the merge.
use std::{collections::BTreeMap, net::Ipv4Addr};

use havip_model::Holder;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostRecord {
    pub id: String,
    pub underlay: Ipv4Addr,
    pub vxlan_port: u16,
    pub probe_port: u16,
    pub hint_port: u16,
    pub gateway: bool,
    pub version: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HolderRecord {
    pub vip: Ipv4Addr,
    pub holder: Option<Holder>,
    pub revision: u64,
    pub reason: String,
    pub committed_by: String,
}

#[derive(Clone, Debug, Default)]
pub struct ClusterView {
    pub revision: u64,
    pub hosts: BTreeMap<String, HostRecord>,
    pub holders: BTreeMap<Ipv4Addr, HolderRecord>,
}

#[derive(Clone, Debug)]
pub enum ClusterEvent {
    Resynced(ClusterView),
    Holder(HolderRecord),
    HostJoined(HostRecord),
    HostLeft { id: String, revision: u64 },
    Reachable(bool),
}

#[derive(Clone, Debug)]
pub enum CommitOutcome {
    Committed(HolderRecord),
    Lost(HolderRecord),
    Fenced,
}
