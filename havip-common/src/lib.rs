//! The kernel/user ABI of havip, mirrored from `havip-ebpf/bpf/havip_abi.h`.
//!
//! Every type is `#[repr(C)]` with fixed-width fields and explicit padding.
//! The `const` asserts below pin sizes and offsets at compile time; the
//! `abi_layout` test compares each struct, field by field, with the BTF that
//! clang wrote into the compiled object, so C and Rust cannot drift apart.

#![warn(missing_docs)]

use std::{fmt, net::Ipv4Addr};

/// Bump together with `HAVIP_ABI_VERSION` in the header: pins move to `v<N>/`.
pub const ABI_VERSION: u32 = 6;

/// Default capacity of the `vips` map, in HAVIPs (`HAVIP_DEFAULT_MAX_VIPS`); the agent may size it per host.
pub const DEFAULT_MAX_VIPS: u32 = 16384;
/// Default capacity of the `members` map, in (VIP, vNIC) pairs (`HAVIP_DEFAULT_MAX_MEMBERS`).
pub const DEFAULT_MAX_MEMBERS: u32 = 65536;
/// Default capacity of the `tx_ports` devmap, in vNICs (`HAVIP_DEFAULT_MAX_VNICS`).
pub const DEFAULT_MAX_VNICS: u32 = 1024;
/// Capacity of the `vteps` map, in other hosts (`HAVIP_DEFAULT_MAX_HOSTS`).
pub const DEFAULT_MAX_HOSTS: u32 = 4096;
/// VXLAN overhead, in bytes: outer Ethernet 14, IPv4 20, UDP 8, VXLAN 8
/// (`HAVIP_VXLAN_OVERHEAD`). An inner IPv4 packet fits the underlay if its
/// length + 50 ≤ the underlay NIC's MTU.
pub const VXLAN_OVERHEAD: u32 = 50;
/// Size of the `events` ring buffer, in bytes (`HAVIP_EVENTS_BYTES`: 256 KiB).
pub const EVENTS_BYTES: u32 = 256 * 1024;
/// Broadcast-domain subnets one host serves at once (`HAVIP_DEFAULT_MAX_SUBNETS`): capacity of
/// the `bcast_*` maps.
pub const DEFAULT_MAX_SUBNETS: u32 = 1024;
/// Other hosts one broadcast-domain subnet's frames are replicated to, at most
/// (`HAVIP_MAX_REMOTE_HOSTS`): the head-end replication fan-out.
pub const MAX_REMOTE_HOSTS: usize = 64;
/// The replicator port: the end of the agent's veth pair that `bcast_flood` devmaps send a
/// frame to when other hosts must get it.
pub const REPLICATOR_PORT: &str = "havip-rep0";
/// The replicator port's peer, where `xdp_replicator` and `tc_replicate` (TC ingress) run.
pub const REPLICATOR_PEER: &str = "havip-rep1";

/// Map names, as in the C object and under the pin directory.
pub mod maps {
    /// `vips`: hash, VIP ([`VipKey`](super::VipKey)) to its slot ([`VipRef`](super::VipRef)).
    pub const VIPS: &str = "vips";
    /// `vip_state`: array by slot of [`VipState`](super::VipState) (holder, epoch).
    pub const VIP_STATE: &str = "vip_state";
    /// `vip_config`: array by slot of [`VipConfig`](super::VipConfig) (`VIP_F_*` flags).
    pub const VIP_CONFIG: &str = "vip_config";
    /// `members`: hash, [`MemberKey`](super::MemberKey) to [`MemberInfo`](super::MemberInfo): who may claim a
    /// VIP.
    pub const MEMBERS: &str = "members";
    /// `vrrp`: hash, [`MemberKey`](super::MemberKey) to [`VrrpSeen`](super::VrrpSeen): each member's last
    /// VRRP advert.
    pub const VRRP: &str = "vrrp";
    /// `tx_ports`: devmap of the interfaces XDP may redirect to (vNICs, the uplink), keyed by ifindex.
    pub const TX_PORTS: &str = "tx_ports";
    /// `vip_stats`: per-CPU array by slot of [`VipCounters`](super::VipCounters).
    pub const VIP_STATS: &str = "vip_stats";
    /// `global_stats`: per-CPU array indexed by [`GlobalCounter`](super::GlobalCounter), one `u64` each.
    pub const GLOBAL_STATS: &str = "global_stats";
    /// `events`: ring buffer of [`HavipEvent`](super::HavipEvent) records,
    /// [`EVENTS_BYTES`](super::EVENTS_BYTES) long.
    pub const EVENTS: &str = "events";
    /// `eips`: hash, EIP ([`EipKey`](super::EipKey)) to the VIP it is bound to
    /// ([`EipBinding`](super::EipBinding)).
    pub const EIPS: &str = "eips";
    /// `vip_nat`: hash, VIP ([`VipKey`](super::VipKey)) to its EIP and VPC subnet
    /// ([`VipNat`](super::VipNat)).
    pub const VIP_NAT: &str = "vip_nat";
    /// `uplink`: one-entry array, the host's uplink NIC ([`UplinkPort`](super::UplinkPort)).
    pub const UPLINK: &str = "uplink";
    /// `underlay`: one-entry array, the host's underlay NIC ([`UnderlayPort`](super::UnderlayPort)).
    pub const UNDERLAY: &str = "underlay";
    /// `vteps`: hash, another host's VTEP ([`VtepKey`](super::VtepKey)) to the underlay next hop's MAC
    /// ([`VtepInfo`](super::VtepInfo)).
    pub const VTEPS: &str = "vteps";
    /// `bcast_vnics`: hash, a vNIC's ifindex (`u32`) to [`BcastVnic`](super::BcastVnic): its
    /// broadcast-domain subnet's slot and storm bucket.
    pub const BCAST_VNICS: &str = "bcast_vnics";
    /// `bcast_subnets`: array by slot of [`BcastSubnet`](super::BcastSubnet).
    pub const BCAST_SUBNETS: &str = "bcast_subnets";
    /// `bcast_prefixes`: LPM trie, [`BcastPrefix`](super::BcastPrefix) to the subnet's slot (`u32`).
    pub const BCAST_PREFIXES: &str = "bcast_prefixes";
    /// `bcast_remotes`: array by slot of [`BcastRemotes`](super::BcastRemotes): the other hosts'
    /// VTEPs.
    pub const BCAST_REMOTES: &str = "bcast_remotes";
    /// `bcast_ports`: hash of maps, slot (`u32`) to a devmap of the subnet's vNICs on this host
    /// (what arrives from other hosts is replicated into it).
    pub const BCAST_PORTS: &str = "bcast_ports";
    /// `bcast_flood`: hash of maps, slot (`u32`) to a devmap of the subnet's vNICs on this host
    /// plus the replicator port when other hosts have vNICs in it (what a guest sends).
    pub const BCAST_FLOOD: &str = "bcast_flood";
    /// `subnet_stats`: per-CPU array by slot of [`SubnetCounters`](super::SubnetCounters).
    pub const SUBNET_STATS: &str = "subnet_stats";
}

/// The production XDP program, attached to every vNIC.
pub const PROG_VNIC: &str = "xdp_vnic";
/// The EIP program, attached to the host's uplink.
pub const PROG_UPLINK: &str = "xdp_uplink";
/// The underlay program (VXLAN from other hosts, probes), attached to the host's underlay NIC.
pub const PROG_UNDERLAY: &str = "xdp_underlay";
/// On the replicator peer: passes frames that carry a [`FloodMeta`] to TC, drops the rest.
pub const PROG_REPLICATOR: &str = "xdp_replicator";
/// TC ingress on the replicator peer: one VXLAN copy per other host (head-end replication).
pub const PROG_REPLICATE: &str = "tc_replicate";
/// The agent's holder writes (compare-and-swap on the epoch), run through
/// BPF_PROG_TEST_RUN, never attached; pinned under the same name.
pub const PROG_HOLDER_WRITE: &str = "xdp_holder_write";

/// The `vips` key (`struct vip_key`): one HAVIP's IPv4 address.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct VipKey {
    /// The VIP, network order.
    pub addr: [u8; 4],
}

impl From<Ipv4Addr> for VipKey {
    fn from(ip: Ipv4Addr) -> Self {
        Self { addr: ip.octets() }
    }
}

impl VipKey {
    /// The VIP as an [`Ipv4Addr`].
    pub fn ip(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.addr)
    }
}

/// The `vips` value: the VIP's slot in `vip_state` and `vip_stats`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VipRef {
    /// Index into `vip_state`, `vip_config` and `vip_stats`; fixed for the VIP's life.
    pub slot: u32,
}

/// The `vip_state` value, one cache line per slot.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VipState {
    /// `struct bpf_spin_lock`: the kernel owns it; userspace writes with BPF_F_LOCK.
    pub lock: u32,
    /// The holder's vNIC ifindex; 0: no holder yet, or the holder was cleared.
    pub holder_ifindex: u32,
    /// The MAC ARP for the VIP is answered with ([`vmac`] of the slot); never changes.
    pub vmac: [u8; 6],
    /// The holder's guest MAC (or the VRRP virtual MAC it claimed from, with [`VIP_F_VRRP_VMAC`]).
    pub holder_mac: [u8; 6],
    /// This entry's own index, also its index into `vip_stats`.
    pub slot: u32,
    /// Grows by one on every holder change; the CAS token of [`HolderWrite`].
    pub epoch: u64,
    /// When the claim that made this holder was accepted: ns of CLOCK_MONOTONIC (`bpf_ktime_get_ns`).
    pub since_ns: u64,
    /// When the last accepted claim (moving the holder or not) arrived: ns of CLOCK_MONOTONIC.
    pub last_claim_ns: u64,
    /// The VIP in this slot; all zero: a free slot.
    pub vip: [u8; 4],
    /// The underlay address (VTEP, network order) of the holder's host when the holder is on
    /// another host (then `holder_ifindex` is 0 and `holder_mac` is the remote holder's MAC).
    /// All zero: the holder is local, or there is none. A local claim zeroes it.
    pub holder_vtep: [u8; 4],
    /// With `holder_vtep`: the underlay next hop's MAC towards it (all zero:
    /// looked up in `vteps` per packet), so encapsulation needs no lookup.
    pub holder_next_hop: [u8; 6],
    /// Padding to 64 bytes: one entry, one cache line.
    pub _pad: [u8; 2],
}

impl VipState {
    /// The holder's host's VTEP when the holder is on another host.
    pub fn remote_holder(&self) -> Option<Ipv4Addr> {
        (self.holder_ifindex == 0 && self.holder_vtep != [0; 4]).then(|| Ipv4Addr::from(self.holder_vtep))
    }
}

/// The `vip_config` value (array by slot): the HAVIP's settings the kernel
/// applies on the claim path.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VipConfig {
    /// `VIP_F_*` bits.
    pub flags: u32,
}

/// The frame `xdp_holder_write` takes: set `vip_state[slot]`'s holder to
/// (`ifindex`, `vtep`, `mac`) if its epoch is still `expect_epoch`:
/// ifindex != 0 a local holder (vtep 0), ifindex 0 and vtep set a holder on
/// that host, both 0 none. Verdicts: XDP_PASS written (the epoch grew),
/// XDP_DROP the epoch had moved, XDP_ABORTED a malformed request or slot
/// (or ifindex and vtep both set).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HolderWrite {
    /// The `vip_state` slot to write.
    pub slot: u32,
    /// The new holder's vNIC ifindex; 0 clears the holder.
    pub ifindex: u32,
    /// The epoch the agent last read; the write happens only if it is still current.
    pub expect_epoch: u64,
    /// The new holder's MAC (all zero when clearing).
    pub mac: [u8; 6],
    /// Padding; zero.
    pub _pad: [u8; 2],
    /// The VTEP (network order) of the new holder's host when it is on another host
    /// (`ifindex` 0); all zero otherwise.
    pub vtep: [u8; 4],
    /// With `vtep`: the underlay next hop's MAC towards it (all zero: not known).
    pub next_hop: [u8; 6],
    /// Padding to 40 bytes; zero.
    pub _pad2: [u8; 6],
}

impl HolderWrite {
    /// The request as the bytes of a frame.
    pub fn to_bytes(&self) -> [u8; 40] {
        let mut b = [0u8; 40];
        b[0..4].copy_from_slice(&self.slot.to_ne_bytes());
        b[4..8].copy_from_slice(&self.ifindex.to_ne_bytes());
        b[8..16].copy_from_slice(&self.expect_epoch.to_ne_bytes());
        b[16..22].copy_from_slice(&self.mac);
        b[24..28].copy_from_slice(&self.vtep);
        b[28..34].copy_from_slice(&self.next_hop);
        b
    }
}

/// `VipConfig::flags`: a member's claim may come from a VRRP virtual router
/// MAC 00:00:5e:00:01:{VRID} (RFC 5798 §7.3, keepalived `use_vmac`); the
/// ingress vNIC stays the credential (`HAVIP_VIP_F_VRRP_VMAC`).
pub const VIP_F_VRRP_VMAC: u32 = 0x01;

/// The MAC the VIP in `slot` answers ARP with: locally administered,
/// `02:48:<slot, big-endian>` (`HAVIP_VMAC_*`), so frames sent to it name
/// the slot and the kernel finds the VIP without a hash lookup. It never
/// changes on failover.
pub fn vmac(slot: u32) -> [u8; 6] {
    let s = slot.to_be_bytes();
    [0x02, 0x48, s[0], s[1], s[2], s[3]]
}

/// The `members` and `vrrp` key (`struct member_key`): a VIP and one member's vNIC.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MemberKey {
    /// The VIP, network order.
    pub vip: [u8; 4],
    /// The member's vNIC ifindex (host side); a claim must arrive on it.
    pub ifindex: u32,
}

/// The `members` value (`struct member_info`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MemberInfo {
    /// The member's guest MAC: a claim's Ethernet source and ARP sender hardware address must both equal it.
    pub mac: [u8; 6],
    /// Padding to 8 bytes; zero.
    pub _pad: [u8; 2],
}

/// The `vrrp` value (`struct vrrp_seen`): the last VRRP advert a member sent for a VIP, the holder's
/// heartbeat as the platform sees it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VrrpSeen {
    /// IPv4 source of the advert, network order.
    pub advertiser: [u8; 4],
    /// Virtual router ID from the VRRP header (RFC 5798 §5.2.3).
    pub vrid: u8,
    /// Priority from the VRRP header, 0–255 (RFC 5798 §5.2.4; 0: the master is resigning).
    pub priority: u8,
    /// VRRP version from the header: 2 (RFC 3768) or 3 (RFC 5798); other versions are not recorded.
    pub version: u8,
    /// Padding; zero.
    pub _pad0: u8,
    /// The vNIC ifindex the advert arrived on.
    pub ifindex: u32,
    /// Padding to align `last_ns`; zero.
    pub _pad1: u32,
    /// When the advert arrived: ns of CLOCK_MONOTONIC (`bpf_ktime_get_ns`).
    pub last_ns: u64,
}

/// The `eips` key (`struct eip_key`): an EIP (public address, 1:1 NAT on the uplink).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EipKey {
    /// The EIP, network order.
    pub addr: [u8; 4],
}

/// The `eips` value (`struct eip_binding`): the VIP an EIP is DNATed to.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EipBinding {
    /// The VIP, network order.
    pub vip: [u8; 4],
}

/// The `vip_nat` value (`struct vip_nat`): traffic from the VIP to outside `subnet`/`mask` is SNATed to
/// `eip`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VipNat {
    /// The EIP bound to the VIP, network order.
    pub eip: [u8; 4],
    /// The VPC subnet's network address, network order.
    pub subnet: [u8; 4],
    /// The VPC subnet's mask, network order (e.g. `255.255.255.0` for a /24).
    pub mask: [u8; 4],
}

/// The `uplink` value (`struct uplink_port`): the host's uplink NIC; ifindex 0: none yet.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UplinkPort {
    /// The uplink's ifindex; 0: no uplink known yet.
    pub ifindex: u32,
    /// The uplink's own MAC: the source of SNATed frames.
    pub mac: [u8; 6],
    /// The next hop's MAC: the destination of frames to the outside.
    pub next_hop_mac: [u8; 6],
}

/// The `underlay` value (`struct underlay_port`): the host's underlay NIC, over which VXLAN to
/// and from the other hosts goes; ifindex 0: no underlay (a single host).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UnderlayPort {
    /// The underlay NIC's ifindex; 0: none.
    pub ifindex: u32,
    /// The underlay NIC's own MAC: the outer Ethernet source.
    pub mac: [u8; 6],
    /// The underlay NIC's MTU, in bytes (bounds the outer IPv4 packet).
    pub mtu: u16,
    /// This host's VTEP (the underlay NIC's IPv4 address), network order: the outer source.
    pub addr: [u8; 4],
    /// The VPC's VXLAN network identifier, host order, 24 bits.
    pub vni: u32,
    /// UDP port of VXLAN, **network order** (4789 by default).
    pub vxlan_port: u16,
    /// UDP port underlay probes are answered on, **network order** (4790 by default).
    pub probe_port: u16,
    /// The VTEP of the gateway host (the one with the uplink) when it is not this host, network
    /// order; all zero otherwise.
    pub gateway_vtep: [u8; 4],
}

/// The `vteps` key (`struct vtep_key`): another host's VTEP.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct VtepKey {
    /// The VTEP, network order.
    pub addr: [u8; 4],
}

impl From<Ipv4Addr> for VtepKey {
    fn from(ip: Ipv4Addr) -> Self {
        Self { addr: ip.octets() }
    }
}

/// The `vteps` value (`struct vtep_info`): where frames to that VTEP go on the underlay.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VtepInfo {
    /// The MAC of the underlay next hop towards the VTEP (the VTEP's own on one segment).
    pub next_hop_mac: [u8; 6],
    /// Padding to 8 bytes; zero.
    pub _pad: [u8; 2],
}

/// An underlay probe's payload (`struct underlay_probe`, 16 bytes), UDP to a host's VTEP at
/// its probe port: [`PROBE_REQUEST`] magic, zero, a nonce the answer echoes. `xdp_underlay`
/// answers with [`PROBE_ANSWER`] magic, addresses and ports swapped.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UnderlayProbe {
    /// [`PROBE_REQUEST`] or [`PROBE_ANSWER`].
    pub magic: [u8; 4],
    /// Zero.
    pub zero: u32,
    /// Any value (any byte order); echoed.
    pub nonce: u64,
}

/// Magic of an underlay probe request (`HAVIP_PROBE_REQUEST`).
pub const PROBE_REQUEST: [u8; 4] = *b"HVPR";
/// Magic of an underlay probe answer (`HAVIP_PROBE_ANSWER`).
pub const PROBE_ANSWER: [u8; 4] = *b"HVPA";

impl UnderlayProbe {
    /// The payload as sent.
    pub fn to_bytes(&self) -> [u8; 16] {
        let mut b = [0u8; 16];
        b[0..4].copy_from_slice(&self.magic);
        b[4..8].copy_from_slice(&self.zero.to_ne_bytes());
        b[8..16].copy_from_slice(&self.nonce.to_ne_bytes());
        b
    }

    /// A payload as received; `None` if shorter than 16 bytes.
    pub fn from_bytes(b: &[u8]) -> Option<Self> {
        let b: &[u8; 16] = b.get(..16)?.try_into().ok()?;
        Some(Self {
            magic: b[0..4].try_into().ok()?,
            zero: u32::from_ne_bytes(b[4..8].try_into().ok()?),
            nonce: u64::from_ne_bytes(b[8..16].try_into().ok()?),
        })
    }
}

/// Indices into [`VipCounters::c`] (`enum vip_counter`).
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VipCounter {
    /// Packets forwarded to the holder.
    RedirectPackets = 0,
    /// Bytes forwarded to the holder.
    RedirectBytes,
    /// Claims (GARP or ARP reply from a member) accepted.
    ClaimsAccepted,
    /// Claims rejected (not a member, or not the member's MAC).
    ClaimsRejected,
    /// Packets dropped: no holder, or the holder's vNIC is not in `tx_ports`.
    NoHolderDrops,
    /// ARP requests for the VIP answered in XDP.
    ArpReplies,
    /// VRRP adverts seen from members for this VIP.
    VrrpAdverts,
    /// Packets to the EIP, DNATed and sent to the holder.
    EipInPackets,
    /// Bytes to the EIP, DNATed and sent to the holder.
    EipInBytes,
    /// Packets from the holder, SNATed out of the uplink.
    EipOutPackets,
    /// Bytes from the holder, SNATed out of the uplink.
    EipOutBytes,
    /// Packets from the VIP by a non-holder: dropped.
    EipOutNotHolder,
    /// Packets dropped because the uplink or its next hop is unknown.
    EipOutNoUplink,
    /// Packets whose TTL would expire: left to the kernel, which sends the ICMP.
    EipTtlExceeded,
    /// ARP requests from the VIP for another address: passed to the kernel.
    NeighbourLookups,
    /// RFC 5227 probes (sender 0.0.0.0) answered: the VIP is held.
    ProbesAnswered,
    /// Probes from the holder, or for a VIP nobody holds: dropped.
    ProbesUnanswered,
    /// Packets to the VIP from the holder's own vNIC: dropped, never sent back.
    HairpinDrops,
    /// Packets VXLAN-encapsulated to the holder's (or the gateway's) host.
    EncapPackets,
    /// Their bytes before encapsulation.
    EncapBytes,
    /// Packets decapsulated from the underlay and delivered (to the holder, or SNATed out).
    DecapPackets,
    /// Decapsulated packets for a VIP whose holder is not on this host: dropped, never re-sent.
    DecapNotLocal,
    /// Too big for the underlay with DF set: ICMP fragmentation-needed sent back.
    TooBigIcmp,
    /// Too big for the underlay without DF (or with IPv4 options, or tagged): dropped.
    TooBigDrops,
    /// Remote holder, but no underlay or no next hop for its VTEP: dropped.
    NoVtepDrops,
    /// The holder's packets to outside the VPC, encapsulated to the gateway host.
    EipOutToGateway,
}

impl VipCounter {
    /// Number of counters (`VIP_CTR__MAX`).
    pub const MAX: usize = 26;
    /// Every counter, in index order.
    pub const ALL: [VipCounter; Self::MAX] = [
        Self::RedirectPackets,
        Self::RedirectBytes,
        Self::ClaimsAccepted,
        Self::ClaimsRejected,
        Self::NoHolderDrops,
        Self::ArpReplies,
        Self::VrrpAdverts,
        Self::EipInPackets,
        Self::EipInBytes,
        Self::EipOutPackets,
        Self::EipOutBytes,
        Self::EipOutNotHolder,
        Self::EipOutNoUplink,
        Self::EipTtlExceeded,
        Self::NeighbourLookups,
        Self::ProbesAnswered,
        Self::ProbesUnanswered,
        Self::HairpinDrops,
        Self::EncapPackets,
        Self::EncapBytes,
        Self::DecapPackets,
        Self::DecapNotLocal,
        Self::TooBigIcmp,
        Self::TooBigDrops,
        Self::NoVtepDrops,
        Self::EipOutToGateway,
    ];

    /// Metric-style name, as operators see it.
    pub fn name(self) -> &'static str {
        match self {
            Self::RedirectPackets => "redirect_packets",
            Self::RedirectBytes => "redirect_bytes",
            Self::ClaimsAccepted => "claims_accepted",
            Self::ClaimsRejected => "claims_rejected",
            Self::NoHolderDrops => "no_holder_drops",
            Self::ArpReplies => "arp_replies",
            Self::VrrpAdverts => "vrrp_adverts",
            Self::EipInPackets => "eip_in_packets",
            Self::EipInBytes => "eip_in_bytes",
            Self::EipOutPackets => "eip_out_packets",
            Self::EipOutBytes => "eip_out_bytes",
            Self::EipOutNotHolder => "eip_out_not_holder",
            Self::EipOutNoUplink => "eip_out_no_uplink",
            Self::EipTtlExceeded => "eip_ttl_exceeded",
            Self::NeighbourLookups => "neighbour_lookups",
            Self::ProbesAnswered => "probes_answered",
            Self::ProbesUnanswered => "probes_unanswered",
            Self::HairpinDrops => "hairpin_drops",
            Self::EncapPackets => "encap_packets",
            Self::EncapBytes => "encap_bytes",
            Self::DecapPackets => "decap_packets",
            Self::DecapNotLocal => "decap_not_local",
            Self::TooBigIcmp => "too_big_icmp",
            Self::TooBigDrops => "too_big_drops",
            Self::NoVtepDrops => "no_vtep_drops",
            Self::EipOutToGateway => "eip_out_to_gateway",
        }
    }
}

/// The `vip_stats` value (`struct vip_counters`): one CPU's counters for one slot.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VipCounters {
    /// Counts indexed by [`VipCounter`]; packets or bytes as each counter's name says.
    pub c: [u64; VipCounter::MAX],
}

impl VipCounters {
    /// One counter's value (this CPU's, or a sum the caller made).
    pub fn get(&self, counter: VipCounter) -> u64 {
        self.c[counter as usize]
    }
}

/// The `bcast_vnics` value (`struct bcast_vnic`): a vNIC of a broadcast-domain subnet, its
/// subnet's slot and its storm bucket (GCRA: each replicated frame costs 1e9 / `rate_pps` ns; at
/// most `burst` frames ahead of the rate).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BcastVnic {
    /// `struct bpf_spin_lock`: the kernel owns it.
    pub lock: u32,
    /// The subnet's slot.
    pub subnet: u32,
    /// Frames per second it may have replicated; 0: none.
    pub rate_pps: u32,
    /// Frames it may send at once above the rate.
    pub burst: u32,
    /// The bucket (theoretical arrival time, CLOCK_MONOTONIC ns); the kernel's, written 0.
    pub tat_ns: u64,
    /// Its frames over the storm limit since the entry was written (who floods); the kernel's,
    /// written 0.
    pub storm_drops: u64,
}

/// The `bcast_subnets` value (`struct bcast_subnet`): a broadcast-domain subnet on this host.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BcastSubnet {
    /// Network address, network order.
    pub network: [u8; 4],
    /// Netmask, network order.
    pub mask: [u8; 4],
    /// Its vNICs on this host (entries of its `bcast_ports` devmap).
    pub local_ports: u32,
    /// Other hosts with vNICs in it (`bcast_remotes[slot].count`).
    pub remote_hosts: u32,
}

/// The `bcast_prefixes` key (`struct bcast_prefix`): an LPM trie key, prefix length in bits
/// then the address.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct BcastPrefix {
    /// Prefix length, bits.
    pub prefixlen: u32,
    /// The network address, network order.
    pub addr: [u8; 4],
}

/// The `bcast_remotes` value (`struct bcast_remotes`): the VTEPs of the other hosts with vNICs in
/// the subnet.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BcastRemotes {
    /// Valid entries of `vteps`, at most [`MAX_REMOTE_HOSTS`].
    pub count: u32,
    /// VTEPs, network order.
    pub vteps: [[u8; 4]; MAX_REMOTE_HOSTS],
}

impl Default for BcastRemotes {
    fn default() -> Self {
        Self { count: 0, vteps: [[0; 4]; MAX_REMOTE_HOSTS] }
    }
}

/// The XDP metadata (`struct flood_meta`) in front of a frame sent to the replicator port.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FloodMeta {
    /// The subnet's slot.
    pub subnet: u32,
    /// The vNIC the frame came from.
    pub ifindex: u32,
}

/// Indices into [`SubnetCounters::c`] (`enum subnet_counter`).
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SubnetCounter {
    /// Frames from guests replicated.
    Flooded = 0,
    /// Copies to this host's vNICs of the subnet (sent and received).
    LocalCopies,
    /// Copies sent to other hosts, one per host.
    RemoteCopies,
    /// Frames over the sending vNIC's storm limit: dropped.
    StormDrops,
    /// Frames from other hosts, decapsulated and replicated here.
    Received,
    /// IPv4 source outside the subnet: replicated on this host only.
    LocalOnly,
    /// Would not fit the underlay: not sent to other hosts.
    TooBig,
    /// Copies not sent to another host: no next hop for its VTEP (`vteps`), or the underlay NIC
    /// refused the copy.
    NoVtep,
}

impl SubnetCounter {
    /// Number of counters (`SUBNET_CTR__MAX`).
    pub const MAX: usize = 8;
    /// Every counter, in index order.
    pub const ALL: [SubnetCounter; Self::MAX] = [
        Self::Flooded,
        Self::LocalCopies,
        Self::RemoteCopies,
        Self::StormDrops,
        Self::Received,
        Self::LocalOnly,
        Self::TooBig,
        Self::NoVtep,
    ];

    /// Metric-style name, as operators see it.
    pub fn name(self) -> &'static str {
        match self {
            Self::Flooded => "flooded",
            Self::LocalCopies => "local_copies",
            Self::RemoteCopies => "remote_copies",
            Self::StormDrops => "storm_drops",
            Self::Received => "received",
            Self::LocalOnly => "local_only",
            Self::TooBig => "too_big",
            Self::NoVtep => "no_vtep",
        }
    }
}

/// The `subnet_stats` value (`struct subnet_counters`): one CPU's counters for one subnet slot.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SubnetCounters {
    /// Frame counts indexed by [`SubnetCounter`].
    pub c: [u64; SubnetCounter::MAX],
}

impl SubnetCounters {
    /// One counter's value (this CPU's, or a sum the caller made).
    pub fn get(&self, counter: SubnetCounter) -> u64 {
        self.c[counter as usize]
    }
}

/// Indices into the `global_stats` per-CPU array (`enum global_counter`).
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GlobalCounter {
    /// Frames not ours: handed to the kernel untouched.
    Passed = 0,
    /// Truncated or malformed Ethernet, ARP, IPv4 or VRRP: passed untouched.
    ParseErrors,
    /// Events dropped because the ring buffer was full (agent stopped or slow).
    EventsLost,
    /// Claims in a VLAN-tagged frame (VID != 0): not ours, passed.
    TaggedClaims,
    /// Underlay probes answered in XDP.
    UnderlayProbes,
    /// VXLAN of our VNI to our VTEP, for no VIP or EIP here: dropped.
    DecapUnknown,
    /// Broadcast from the underlay for no subnet here, or a frame at the replicator without its
    /// metadata: dropped.
    FloodUnknown,
}

impl GlobalCounter {
    /// Number of counters (`GLB_CTR__MAX`).
    pub const MAX: usize = 7;
    /// Every counter, in index order.
    pub const ALL: [GlobalCounter; Self::MAX] = [
        Self::Passed,
        Self::ParseErrors,
        Self::EventsLost,
        Self::TaggedClaims,
        Self::UnderlayProbes,
        Self::DecapUnknown,
        Self::FloodUnknown,
    ];

    /// Metric-style name, as operators see it.
    pub fn name(self) -> &'static str {
        match self {
            Self::Passed => "passed",
            Self::ParseErrors => "parse_errors",
            Self::EventsLost => "events_lost",
            Self::TaggedClaims => "tagged_claims",
            Self::UnderlayProbes => "underlay_probes",
            Self::DecapUnknown => "decap_unknown",
            Self::FloodUnknown => "flood_unknown",
        }
    }
}

/// `HAVIP_EV_CLAIM` (`enum havip_event_kind`): a member claimed;
/// [`HavipEvent::changed`] says whether the holder moved.
pub const EV_CLAIM: u32 = 1;
/// `HAVIP_EV_CLAIM_REJECTED`: a claim was dropped; [`HavipEvent::reason`] says why.
pub const EV_CLAIM_REJECTED: u32 = 2;

/// `enum havip_reject_reason`.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RejectReason {
    /// The claim was accepted.
    None = 0,
    /// The vNIC is not a member of the VIP.
    NotMember = 1,
    /// A member's vNIC, but a MAC that is not the member's.
    MacMismatch = 2,
}

impl RejectReason {
    /// The reason for a raw `havip_event.reason`; `None` for a value this build does not know.
    pub fn from_raw(raw: u8) -> Option<Self> {
        match raw {
            0 => Some(Self::None),
            1 => Some(Self::NotMember),
            2 => Some(Self::MacMismatch),
            _ => None,
        }
    }
}

impl fmt::Display for RejectReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::None => "accepted",
            Self::NotMember => "vNIC is not a member of the HAVIP",
            Self::MacMismatch => "source MAC is not the member's MAC",
        })
    }
}

/// An `events` ring buffer record (`struct havip_event`, 40 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HavipEvent {
    /// When the claim arrived: ns of CLOCK_MONOTONIC (`bpf_ktime_get_ns`).
    pub ts_ns: u64,
    /// The VIP's epoch after this claim.
    pub epoch: u64,
    /// [`EV_CLAIM`] or [`EV_CLAIM_REJECTED`].
    pub kind: u32,
    /// The VIP claimed, network order.
    pub vip: [u8; 4],
    /// The vNIC ifindex the claim arrived on.
    pub ifindex: u32,
    /// The holder before the claim; 0: none.
    pub prev_ifindex: u32,
    /// Ethernet source MAC of the claim.
    pub mac: [u8; 6],
    /// A [`RejectReason`] as its raw `u8`.
    pub reason: u8,
    /// 1: the claim moved the holder; 0: it did not.
    pub changed: u8,
}

impl HavipEvent {
    /// Reads a record from the ring buffer; `None` if it is not one of ours.
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        if bytes.len() < size_of::<Self>() {
            return None;
        }
        // SAFETY: HavipEvent is plain old data and the length was checked.
        Some(unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<Self>()) })
    }
}

/// A MAC address printed the usual way.
pub struct Mac<'a>(pub &'a [u8; 6]);

impl fmt::Display for Mac<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = self.0;
        write!(f, "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}", m[0], m[1], m[2], m[3], m[4], m[5])
    }
}

// SAFETY: all of these are #[repr(C)] plain old data with explicit padding.
#[cfg(feature = "aya")]
mod pod {
    use super::*;
    unsafe impl aya::Pod for VipKey {}
    unsafe impl aya::Pod for VipRef {}
    unsafe impl aya::Pod for VipState {}
    unsafe impl aya::Pod for VipConfig {}
    unsafe impl aya::Pod for MemberKey {}
    unsafe impl aya::Pod for MemberInfo {}
    unsafe impl aya::Pod for VrrpSeen {}
    unsafe impl aya::Pod for VipCounters {}
    unsafe impl aya::Pod for EipKey {}
    unsafe impl aya::Pod for EipBinding {}
    unsafe impl aya::Pod for VipNat {}
    unsafe impl aya::Pod for UplinkPort {}
    unsafe impl aya::Pod for UnderlayPort {}
    unsafe impl aya::Pod for VtepKey {}
    unsafe impl aya::Pod for VtepInfo {}
    unsafe impl aya::Pod for BcastVnic {}
    unsafe impl aya::Pod for BcastSubnet {}
    unsafe impl aya::Pod for BcastPrefix {}
    unsafe impl aya::Pod for BcastRemotes {}
    unsafe impl aya::Pod for SubnetCounters {}
}

/// One shared struct as Rust lays it out: C name, size, `(field, offset)`s.
pub type Layout = (&'static str, usize, Vec<(&'static str, usize)>);

/// Every shared struct: the table the BTF layout test walks.
pub fn layouts() -> Vec<Layout> {
    use std::mem::offset_of;
    macro_rules! layout {
        ($c:literal, $t:ty, [$($f:ident),*]) => {
            ($c, size_of::<$t>(), vec![$((stringify!($f), offset_of!($t, $f))),*])
        };
    }
    vec![
        layout!("vip_key", VipKey, [addr]),
        layout!(
            "vip_state",
            VipState,
            [
                lock,
                holder_ifindex,
                vmac,
                holder_mac,
                slot,
                epoch,
                since_ns,
                last_claim_ns,
                vip,
                holder_vtep,
                holder_next_hop,
                _pad
            ]
        ),
        layout!("vip_ref", VipRef, [slot]),
        layout!("vip_config", VipConfig, [flags]),
        layout!("holder_write", HolderWrite, [slot, ifindex, expect_epoch, mac, _pad, vtep, next_hop, _pad2]),
        layout!("member_key", MemberKey, [vip, ifindex]),
        layout!("member_info", MemberInfo, [mac, _pad]),
        layout!("vrrp_seen", VrrpSeen, [advertiser, vrid, priority, version, _pad0, ifindex, _pad1, last_ns]),
        layout!("vip_counters", VipCounters, [c]),
        layout!("eip_key", EipKey, [addr]),
        layout!("eip_binding", EipBinding, [vip]),
        layout!("vip_nat", VipNat, [eip, subnet, mask]),
        layout!("uplink_port", UplinkPort, [ifindex, mac, next_hop_mac]),
        layout!(
            "underlay_port",
            UnderlayPort,
            [ifindex, mac, mtu, addr, vni, vxlan_port, probe_port, gateway_vtep]
        ),
        layout!("vtep_key", VtepKey, [addr]),
        layout!("vtep_info", VtepInfo, [next_hop_mac, _pad]),
        layout!("underlay_probe", UnderlayProbe, [magic, zero, nonce]),
        layout!("bcast_vnic", BcastVnic, [lock, subnet, rate_pps, burst, tat_ns, storm_drops]),
        layout!("bcast_subnet", BcastSubnet, [network, mask, local_ports, remote_hosts]),
        layout!("bcast_prefix", BcastPrefix, [prefixlen, addr]),
        layout!("bcast_remotes", BcastRemotes, [count, vteps]),
        layout!("flood_meta", FloodMeta, [subnet, ifindex]),
        layout!("subnet_counters", SubnetCounters, [c]),
        layout!(
            "havip_event",
            HavipEvent,
            [ts_ns, epoch, kind, vip, ifindex, prev_ifindex, mac, reason, changed]
        ),
    ]
}

const _: () = {
    assert!(size_of::<VipKey>() == 4);
    assert!(size_of::<VipRef>() == 4);
    assert!(size_of::<VipState>() == 64);
    assert!(std::mem::offset_of!(VipState, epoch) == 24);
    assert!(std::mem::offset_of!(VipState, vip) == 48);
    assert!(size_of::<VipConfig>() == 4);
    assert!(std::mem::offset_of!(VipState, holder_vtep) == 52);
    assert!(std::mem::offset_of!(VipState, holder_next_hop) == 56);
    assert!(size_of::<HolderWrite>() == 40);
    assert!(size_of::<MemberKey>() == 8);
    assert!(size_of::<MemberInfo>() == 8);
    assert!(size_of::<VrrpSeen>() == 24);
    assert!(size_of::<VipCounters>() == 8 * VipCounter::MAX);
    assert!(size_of::<HavipEvent>() == 40);
    assert!(size_of::<EipKey>() == 4);
    assert!(size_of::<EipBinding>() == 4);
    assert!(size_of::<VipNat>() == 12);
    assert!(size_of::<UplinkPort>() == 16);
    assert!(size_of::<UnderlayPort>() == 28);
    assert!(size_of::<VtepKey>() == 4);
    assert!(size_of::<VtepInfo>() == 8);
    assert!(size_of::<UnderlayProbe>() == 16);
    assert!(size_of::<BcastVnic>() == 32);
    assert!(size_of::<BcastSubnet>() == 16);
    assert!(size_of::<BcastPrefix>() == 8);
    assert!(size_of::<BcastRemotes>() == 4 + 4 * MAX_REMOTE_HOSTS);
    assert!(size_of::<FloodMeta>() == 8);
    assert!(size_of::<SubnetCounters>() == 8 * SubnetCounter::MAX);
};
