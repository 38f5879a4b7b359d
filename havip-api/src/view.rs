//! What the API answers with: the same types on both ends (agent and
//! `havipctl`), so the JSON cannot drift between them.

use std::{collections::BTreeMap, fmt, net::Ipv4Addr};

use serde::{Deserialize, Serialize};

use havip_model::{state::Claim, DesiredState, HavipSettings};

/// The cloud's status words: Available (no members) / InUse.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Status {
    Available,
    InUse,
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// A vNIC's link as the answering agent's host sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LinkState {
    Up,
    Down,
    /// Registered on this host, but no such interface exists (yet).
    Absent,
    /// The vNIC lives on another host.
    Remote,
}

impl fmt::Display for LinkState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Up => "up",
            Self::Down => "down",
            Self::Absent => "absent",
            Self::Remote => "remote",
        })
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberView {
    pub vnic: String,
    pub instance: String,
    pub link: LinkState,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HavipView {
    pub vip: Ipv4Addr,
    pub subnet: String,
    pub status: Status,
    pub members: Vec<MemberView>,
    pub eip: Option<Ipv4Addr>,
    /// The vNIC holding the VIP, as observed.
    pub holder: Option<String>,
    /// The host whose data plane saw the holder take over.
    pub holder_host: Option<String>,
    pub holder_instance: Option<String>,
    /// Since when the holder (or the absence of one) holds, RFC 3339.
    pub since: Option<String>,
    pub epoch: u64,
    pub failovers: u64,
    pub last_claims: Vec<Claim>,
    /// The data plane's per-VIP counters, by name.
    pub counters: BTreeMap<String, u64>,
    /// How the platform settles who holds it.
    pub settings: HavipSettings,
    /// Why there is no holder, when there is none.
    pub no_holder_reason: Option<String>,
    /// Two members holding it at once, if they do now.
    pub contested: Option<Contested>,
    /// What the holder verification sees now.
    pub verification: Option<VerificationView>,
    /// The last VRRP advert each member sent for the VIP, newest first.
    pub vrrp: Vec<VrrpView>,
}

/// A split brain: the members that hold a VIP at once.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Contested {
    pub members: Vec<ContestedMember>,
    /// Since when, RFC 3339.
    pub since: String,
    /// What the platform does about it (the HAVIP's split-brain policy).
    pub policy: String,
}

/// One of the members of a split brain.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContestedMember {
    pub vnic: String,
    /// Its advertised VRRP priority, if it advertises.
    pub priority: Option<u8>,
}

/// The holder verification of one HAVIP.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerificationView {
    /// `ok` (the holder answers), `unresponsive` (it stopped: every member
    /// is asked), `searching` (no holder: every member is asked).
    pub state: String,
    /// Probes the holder missed in a row.
    pub misses: u32,
    /// Probes sent for this HAVIP, and rounds in which they were answered,
    /// since the agent started.
    pub probes_sent: u64,
    pub rounds_answered: u64,
    /// Corrections made, by reason.
    pub corrections: BTreeMap<String, u64>,
}

/// A member's last VRRP advert for a VIP, as the data plane recorded it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VrrpView {
    pub vnic: String,
    pub advertiser: Ipv4Addr,
    pub vrid: u8,
    pub priority: u8,
    pub version: u8,
    /// How long ago, ms.
    pub age_ms: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VnicView {
    pub name: String,
    pub host: String,
    pub ifname: String,
    pub instance: String,
    pub subnet: String,
    pub ip: Ipv4Addr,
    pub mac: String,
    pub link: LinkState,
    pub ifindex: Option<u32>,
    /// HAVIPs it is a member of.
    pub havips: Vec<Ipv4Addr>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubnetView {
    pub name: String,
    pub cidr: String,
    pub vnics: usize,
    pub havips: usize,
}

/// The whole desired state and the revision that committed it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DesiredView {
    pub revision: u64,
    pub state: DesiredState,
}

/// The agent itself: what it runs, how far it got, what it costs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentStatus {
    pub version: String,
    /// This host's id (`[agent] host_id`, by default the hostname).
    pub host: String,
    pub pid: u32,
    pub started: String,
    /// The store's desired-state revision.
    pub revision: u64,
    /// The revision the data plane's maps were last brought to.
    pub reconciled_revision: u64,
    pub subnets: usize,
    pub vnics: usize,
    /// Registered vNICs that live on this host.
    pub vnics_local: usize,
    /// Of those, the ones whose link exists.
    pub vnics_present: usize,
    pub havips: usize,
    pub rss_kib: u64,
    pub peak_rss_kib: u64,
}

/// What an apply did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Applied {
    pub revision: u64,
    pub subnets: usize,
    pub vnics: usize,
    pub havips: usize,
}

/// Every refusal and failure, as the API sends it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: String,
    /// The rule that refused the request, if one did.
    pub rule: Option<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct EipRequest {
    pub eip: String,
}

/// What the agent's event feed reports (`havipctl events`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// A member claimed the VIP and now holds it.
    HolderChanged,
    /// The VIP has no holder any more (its vNIC went away, went down, or left).
    HolderCleared,
    /// A claim the data plane dropped (not a member, wrong MAC).
    ClaimRejected,
    VnicUp,
    VnicDown,
    VnicGone,
    /// A veth vNIC whose peer cannot take XDP frames: what havip redirects
    /// into it would be dropped.
    PeerWithoutXdp,
    /// The desired state changed (an operation or an apply).
    Changed,
    /// The holder stopped answering the agent's probes: every member is
    /// asked until one answers.
    HolderUnresponsive,
    /// The platform re-pointed the VIP itself; the detail says why (a
    /// holder that stopped answering while another member answered, VRRP
    /// adverts contradicting the holder, a split-brain policy).
    HolderCorrected,
    /// Two members hold the VIP at once (both advertise VRRP as master, or
    /// both keep claiming): a split brain, named with their priorities.
    Contested,
    /// The VIP keeps moving back and forth between live members.
    HolderFlapping,
}

impl EventKind {
    /// What an operator should look at: logged as a warning.
    pub fn is_warning(self) -> bool {
        matches!(
            self,
            Self::HolderCleared
                | Self::ClaimRejected
                | Self::PeerWithoutXdp
                | Self::HolderUnresponsive
                | Self::HolderCorrected
                | Self::Contested
                | Self::HolderFlapping
        )
    }
}

/// One event of the agent's feed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// Grows by one per event of this agent run.
    pub seq: u64,
    /// Unix ms.
    pub at_ms: u64,
    pub kind: EventKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vip: Option<Ipv4Addr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vnic: Option<String>,
    pub detail: String,
}
