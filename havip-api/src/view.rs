//! What the API answers with: the same types on both ends (agent and
//! `havipctl`), so the JSON cannot drift between them.

use std::{collections::BTreeMap, fmt, net::Ipv4Addr};

use serde::{Deserialize, Serialize};

use havip_model::{state::Claim, DesiredState, HavipSettings, StormControl, SubnetMode};

/// The cloud's status words: Available (no members) / InUse.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Status {
    /// No members.
    Available,
    /// At least one member.
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
    /// The interface exists on this host and is up.
    Up,
    /// The interface exists on this host but is down.
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

/// One member of a HAVIP, as `GET /v1/havips` shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberView {
    /// The member's [`Vnic::name`](havip_model::Vnic::name).
    pub vnic: String,
    /// The vNIC's instance (guest); empty if the vNIC is not registered.
    pub instance: String,
    /// Its link as the answering agent's host sees it.
    pub link: LinkState,
}

/// One HAVIP: its desired state, what was observed of it, and the data plane's view (`GET
/// /v1/havips[/{vip}]`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HavipView {
    /// The virtual IP.
    pub vip: Ipv4Addr,
    /// Name of the subnet the VIP is in.
    pub subnet: String,
    /// The subnet's mode: in a broadcast domain the members' VRRP multicast reaches each other.
    /// Unicast from an agent that predates modes.
    #[serde(default)]
    pub subnet_mode: SubnetMode,
    /// `InUse` when it has members, else `Available`.
    pub status: Status,
    /// Its members, in the order they were associated.
    pub members: Vec<MemberView>,
    /// The EIP bound to it (1:1 NAT), if any.
    pub eip: Option<Ipv4Addr>,
    /// The vNIC holding the VIP, as observed.
    pub holder: Option<String>,
    /// The host whose data plane saw the holder take over.
    pub holder_host: Option<String>,
    /// The holder vNIC's instance (guest), if a holder is known and registered.
    pub holder_instance: Option<String>,
    /// Since when the holder (or the absence of one) holds, RFC 3339.
    pub since: Option<String>,
    /// The kernel's holder epoch: grows by one on every holder change, a clear too.
    pub epoch: u64,
    /// Many hosts: the revision of the holder record this host follows
    /// (etcd's mod_revision, the fencing token); 0 on one host.
    #[serde(default)]
    pub revision: u64,
    /// Times the VIP moved to another vNIC than the one that last held it.
    pub failovers: u64,
    /// The last claims seen (at most [`LAST_CLAIMS`](havip_model::state::LAST_CLAIMS)), newest first.
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
    /// The members holding it, with their VRRP priorities.
    pub members: Vec<ContestedMember>,
    /// Since when, RFC 3339.
    pub since: String,
    /// What the platform does about it (the HAVIP's split-brain policy).
    pub policy: String,
}

/// One of the members of a split brain.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContestedMember {
    /// The member's [`Vnic::name`](havip_model::Vnic::name).
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
    /// Rounds whose probes were answered, since the agent started.
    pub rounds_answered: u64,
    /// Corrections made, by reason.
    pub corrections: BTreeMap<String, u64>,
}

/// A member's last VRRP advert for a VIP, as the data plane recorded it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VrrpView {
    /// The member's [`Vnic::name`](havip_model::Vnic::name) (a member on the answering agent's host).
    pub vnic: String,
    /// The advert's IPv4 source.
    pub advertiser: Ipv4Addr,
    /// Virtual router ID from the advert (RFC 5798 §5.2.3).
    pub vrid: u8,
    /// Priority from the advert, 0-255 (RFC 5798 §5.2.4).
    pub priority: u8,
    /// VRRP version of the advert: 2 or 3.
    pub version: u8,
    /// How long ago, ms.
    pub age_ms: u64,
}

/// One vNIC (`GET /v1/vnics`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VnicView {
    /// Unique in the VPC.
    pub name: String,
    /// The [`Host::id`](havip_model::Host::id) it lives on.
    pub host: String,
    /// Its host-side interface name on that host (≤ 15 bytes).
    pub ifname: String,
    /// The instance (guest) it belongs to.
    pub instance: String,
    /// Name of the subnet it is in.
    pub subnet: String,
    /// Its own IPv4 address.
    pub ip: Ipv4Addr,
    /// The guest's MAC, `aa:bb:cc:dd:ee:ff` text.
    pub mac: String,
    /// Its link as the answering agent's host sees it.
    pub link: LinkState,
    /// The host-side interface's ifindex, when it lives on the answering agent's host and exists.
    pub ifindex: Option<u32>,
    /// HAVIPs it is a member of.
    pub havips: Vec<Ipv4Addr>,
}

/// One subnet (`GET /v1/subnets`, `GET /v1/subnets/{name}`, `PUT /v1/subnets/{name}/mode`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubnetView {
    /// Unique in the VPC.
    pub name: String,
    /// `network/prefix` text.
    pub cidr: String,
    /// Number of vNICs in it.
    pub vnics: usize,
    /// Number of HAVIPs in it.
    pub havips: usize,
    /// `unicast` (ENS: "Only unicast is supported. Broadcast and multicast are not supported") or
    /// `broadcast-domain` (ZEC: "A HAVIP works because it sits inside a single layer-2 broadcast
    /// domain"); unicast from an agent that predates modes.
    #[serde(default)]
    pub mode: SubnetMode,
    /// Storm control: broadcast and multicast frames per second each vNIC may have replicated
    /// (applied in broadcast-domain mode, kept in unicast).
    #[serde(default = "default_storm_pps")]
    pub storm_pps: u32,
    /// Storm control: frames a vNIC may send back to back above `storm_pps`.
    #[serde(default = "default_storm_burst")]
    pub storm_burst: u32,
    /// A broadcast-domain subnet as this host's data plane serves it (`GET
    /// /v1/subnets/{name}` and `PUT …/mode` only; absent for a unicast subnet).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub broadcast: Option<BroadcastView>,
}

fn default_storm_pps() -> u32 {
    StormControl::default().pps
}

fn default_storm_burst() -> u32 {
    StormControl::default().burst
}

/// A broadcast-domain subnet on the answering agent's host: its data plane's per-subnet
/// counters (frames, summed over CPUs since the subnet was last given a slot on this host;
/// `subnet_stats` in the ABI), and the hosts the subnet spans.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BroadcastView {
    /// Whether this host's data plane replicates for the subnet now (it has a slot): false while
    /// none of its vNICs lives here, or until the maps follow the change; the counters are 0 then.
    pub programmed: bool,
    /// Broadcast and multicast frames from this host's guests that were replicated.
    pub flooded: u64,
    /// Copies delivered to this host's vNICs of the subnet (from its guests and from other hosts).
    pub local_copies: u64,
    /// Copies sent to other hosts over the underlay: one per host per frame.
    pub remote_copies: u64,
    /// Frames over the sending vNIC's storm limit: dropped, not replicated.
    pub storm_drops: u64,
    /// Frames from other hosts, decapsulated and replicated to this host's vNICs.
    pub received: u64,
    /// Frames whose IPv4 source is outside the subnet: replicated on this host only.
    pub local_only: u64,
    /// Frames too big for the underlay MTU with the VXLAN header: not sent to other hosts.
    pub too_big: u64,
    /// Copies to another host not sent: no underlay next hop known for its VTEP yet (or the
    /// underlay NIC refused the copy).
    #[serde(default)]
    pub no_vtep: u64,
    /// This host's vNICs that went over their storm limit, by vNIC name: frames dropped since
    /// the vNIC's storm setting was last written (who floods).
    #[serde(default)]
    pub storm_drops_by_vnic: BTreeMap<String, u64>,
    /// The hosts that have vNICs in the subnet ([`Host::id`](havip_model::Host::id)), sorted:
    /// the hosts a frame is replicated to.
    pub hosts: Vec<String>,
}

/// The whole desired state and the revision that committed it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DesiredView {
    /// The store revision that committed `state`.
    pub revision: u64,
    /// Subnets, vNICs and HAVIPs as stored.
    pub state: DesiredState,
}

/// The agent itself: what it runs, how far it got, what it costs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentStatus {
    /// The agent's crate version (`CARGO_PKG_VERSION`).
    pub version: String,
    /// This host's id (`[agent] host_id`, by default the hostname).
    pub host: String,
    /// The agent's process id.
    pub pid: u32,
    /// When the agent started, RFC 3339.
    pub started: String,
    /// The store's desired-state revision.
    pub revision: u64,
    /// The revision the data plane's maps were last brought to.
    pub reconciled_revision: u64,
    /// Subnets in the desired state.
    pub subnets: usize,
    /// vNICs in the desired state, on every host.
    pub vnics: usize,
    /// Registered vNICs that live on this host.
    pub vnics_local: usize,
    /// Of those, the ones whose link exists.
    pub vnics_present: usize,
    /// HAVIPs in the desired state.
    pub havips: usize,
    /// Resident set size, KiB (`VmRSS` of `/proc/self/status`; 0 if unreadable).
    pub rss_kib: u64,
    /// Peak resident set size, KiB (`VmHWM` of `/proc/self/status`; 0 if unreadable).
    pub peak_rss_kib: u64,
    /// Whether the store writes.
    pub store: StoreStatus,
    /// Whether the maps follow the store.
    pub sync: SyncStatus,
    /// Many hosts: the shared store and the other hosts as this one sees
    /// them; absent on a host that runs alone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<ClusterStatusView>,
}

/// The shared store (etcd) and the other hosts, as one host sees them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterStatusView {
    /// Whether the shared store answers.
    pub reachable: bool,
    /// The last store revision this host has seen.
    pub revision: u64,
    /// Every other host.
    pub hosts: Vec<PeerHostView>,
    /// This host's claim commits won, lost (the winner applied), refused for
    /// a lost registration (retried), and failed attempts (retried).
    pub commits_won: u64,
    /// See `commits_won`.
    pub commits_lost: u64,
    /// See `commits_won`.
    pub commits_fenced: u64,
    /// See `commits_won`.
    pub commit_retries: u64,
    /// Holder records from the store applied to the data plane.
    pub records_applied: u64,
    /// Hints sent to peers, received and applied, received and ignored.
    pub hints_sent: u64,
    /// See `hints_sent`.
    pub hints_applied: u64,
    /// See `hints_sent`.
    pub hints_ignored: u64,
    /// Underlay liveness probes sent and answered.
    pub probes_sent: u64,
    /// See `probes_sent`.
    pub probes_answered: u64,
}

/// Another host as this one sees it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerHostView {
    /// Its host id.
    pub id: String,
    /// Its underlay address (its VTEP).
    pub underlay: Ipv4Addr,
    /// Whether it has the uplink (the gateway host of EIPs).
    pub gateway: bool,
    /// `up` (registered), `suspect` (its lease expired; probed), `down`.
    pub state: String,
    /// Probes in a row it left unanswered.
    pub misses: u32,
    /// The agent version it registered.
    pub version: String,
}

/// How the store is doing.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoreStatus {
    /// The last write failed: observations are kept in memory and retried.
    pub failing: bool,
    /// Writes that failed since the agent started.
    pub write_failures: u64,
    /// Times the store was reopened after a failed write.
    pub reopens: u64,
    /// HAVIPs whose observations are in memory, not yet on disk.
    pub pending: u64,
    /// The last write error, kept after recovery.
    pub last_error: Option<String>,
    /// Why the config file's desired state was not applied at start (the
    /// agent runs on the store's state), if it was not.
    pub config_not_applied: Option<String>,
}

/// Whether the data plane's maps follow the store.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncStatus {
    /// The last reconcile pass's error, if it failed (retried with backoff).
    pub last_error: Option<String>,
    /// Reconcile passes that failed since the agent started.
    pub failed_passes: u64,
    /// vNICs of this host that are present but not attached, and why.
    pub unattached: BTreeMap<String, String>,
    /// Many hosts: why the replicator port (`havip-rep0`, broadcast-domain subnets' frames to
    /// other hosts) is not ready, if it is not; those subnets then reach this host's vNICs only.
    #[serde(default)]
    pub replicator: Option<String>,
    /// Broadcast-domain subnets programmed only in part on this host, by name, and why (more than
    /// 64 other hosts with vNICs in it, or no free slot).
    #[serde(default)]
    pub broadcast_limited: BTreeMap<String, String>,
}

/// What an apply did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Applied {
    /// The store revision the apply committed.
    pub revision: u64,
    /// Subnets in the applied file.
    pub subnets: usize,
    /// vNICs in the applied file.
    pub vnics: usize,
    /// HAVIPs in the applied file.
    pub havips: usize,
}

/// Every refusal and failure, as the API sends it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// What was refused or failed, for an operator.
    pub error: String,
    /// The rule that refused the request, if one did.
    pub rule: Option<String>,
}

/// The body of `PUT /v1/havips/{vip}/eip`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct EipRequest {
    /// The EIP to bind, dotted-quad text.
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
    /// A vNIC on this host appeared up, came up, or was made again up.
    VnicUp,
    /// A vNIC on this host appeared down, went down, or was made again down.
    VnicDown,
    /// A vNIC's interface disappeared from this host.
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
    /// A reconcile pass failed: the maps no longer follow the store (retried
    /// with backoff).
    ReconcileFailed,
    /// A vNIC of this host is present but XDP could not be attached to it
    /// (retried with backoff).
    AttachFailed,
    /// Store writes fail (a full disk, an I/O error): observations wait in
    /// memory and are retried; the data plane is not affected.
    StoreFailed,
    /// Store writes work again: every observation is on disk.
    StoreRecovered,
    /// The config file's desired state conflicts with the store's and was
    /// not applied at start; the agent runs on the store's state.
    ConfigNotApplied,
    /// Another host registered in the shared store (or came back after it
    /// was declared down).
    HostUp,
    /// A host's lease in the shared store expired: it is probed over the
    /// underlay; its VIPs stay where they are while it answers.
    HostSuspect,
    /// A host's lease expired and it stopped answering the underlay probe:
    /// it is gone, and every VIP it held is cleared.
    HostDown,
    /// The shared store (etcd) cannot be reached: the data plane keeps
    /// forwarding on what it has; claims are committed when it returns.
    ClusterUnreachable,
    /// The shared store is reachable again; this host caught up with it.
    ClusterReachable,
    /// Not an event but a marker in a follower's stream: it read more slowly
    /// than events came, and missed some. `seq` is the first one missed;
    /// the detail starts with how many.
    Missed,
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
                | Self::ReconcileFailed
                | Self::AttachFailed
                | Self::StoreFailed
                | Self::ConfigNotApplied
                | Self::HostSuspect
                | Self::HostDown
                | Self::ClusterUnreachable
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
    /// What happened.
    pub kind: EventKind,
    /// The HAVIP it is about, if one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vip: Option<Ipv4Addr>,
    /// The vNIC it is about ([`Vnic::name`](havip_model::Vnic::name)), if one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vnic: Option<String>,
    /// What happened, in words for an operator.
    pub detail: String,
}
