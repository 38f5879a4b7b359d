//! The kernel/user ABI of havip, mirrored from `havip-ebpf/bpf/havip_abi.h`.
//!
//! Every type is `#[repr(C)]` with fixed-width fields and explicit padding.
//! The `const` asserts below pin sizes and offsets at compile time; the
//! `abi_layout` test compares each struct, field by field, with the BTF that
//! clang wrote into the compiled object, so C and Rust cannot drift apart.

use std::{fmt, net::Ipv4Addr};

/// Bump together with `HAVIP_ABI_VERSION` in the header: pins move to `v<N>/`.
pub const ABI_VERSION: u32 = 3;

pub const DEFAULT_MAX_VIPS: u32 = 16384;
pub const DEFAULT_MAX_MEMBERS: u32 = 65536;
pub const DEFAULT_MAX_VNICS: u32 = 1024;
pub const EVENTS_BYTES: u32 = 256 * 1024;

/// Map names, as in the C object and under the pin directory.
pub mod maps {
    pub const VIPS: &str = "vips";
    pub const VIP_STATE: &str = "vip_state";
    pub const VIP_CONFIG: &str = "vip_config";
    pub const MEMBERS: &str = "members";
    pub const VRRP: &str = "vrrp";
    pub const TX_PORTS: &str = "tx_ports";
    pub const VIP_STATS: &str = "vip_stats";
    pub const GLOBAL_STATS: &str = "global_stats";
    pub const EVENTS: &str = "events";
    pub const EIPS: &str = "eips";
    pub const VIP_NAT: &str = "vip_nat";
    pub const UPLINK: &str = "uplink";
}

/// The production XDP program, attached to every vNIC.
pub const PROG_VNIC: &str = "xdp_vnic";
/// The EIP program, attached to the host's uplink.
pub const PROG_UPLINK: &str = "xdp_uplink";
/// The agent's holder writes (compare-and-swap on the epoch), run through
/// BPF_PROG_TEST_RUN, never attached; pinned under the same name.
pub const PROG_HOLDER_WRITE: &str = "xdp_holder_write";

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct VipKey {
    pub addr: [u8; 4],
}

impl From<Ipv4Addr> for VipKey {
    fn from(ip: Ipv4Addr) -> Self {
        Self { addr: ip.octets() }
    }
}

impl VipKey {
    pub fn ip(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.addr)
    }
}

/// The `vips` value: the VIP's slot in `vip_state` and `vip_stats`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VipRef {
    pub slot: u32,
}

/// The `vip_state` value, one cache line per slot.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VipState {
    /// `struct bpf_spin_lock`: the kernel owns it; userspace writes with BPF_F_LOCK.
    pub lock: u32,
    pub holder_ifindex: u32,
    pub vmac: [u8; 6],
    pub holder_mac: [u8; 6],
    pub slot: u32,
    pub epoch: u64,
    pub since_ns: u64,
    pub last_claim_ns: u64,
    /// The VIP in this slot; all zero: a free slot.
    pub vip: [u8; 4],
    pub _pad: [u8; 12],
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
/// (`ifindex`, `mac`) — ifindex 0: none — if its epoch is still
/// `expect_epoch`. Verdicts: XDP_PASS written (the epoch grew), XDP_DROP the
/// epoch had moved, XDP_ABORTED a bad slot.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HolderWrite {
    pub slot: u32,
    pub ifindex: u32,
    pub expect_epoch: u64,
    pub mac: [u8; 6],
    pub _pad: [u8; 2],
}

impl HolderWrite {
    /// The request as the bytes of a frame.
    pub fn to_bytes(&self) -> [u8; 24] {
        let mut b = [0u8; 24];
        b[0..4].copy_from_slice(&self.slot.to_ne_bytes());
        b[4..8].copy_from_slice(&self.ifindex.to_ne_bytes());
        b[8..16].copy_from_slice(&self.expect_epoch.to_ne_bytes());
        b[16..22].copy_from_slice(&self.mac);
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

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MemberKey {
    pub vip: [u8; 4],
    pub ifindex: u32,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MemberInfo {
    pub mac: [u8; 6],
    pub _pad: [u8; 2],
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VrrpSeen {
    pub advertiser: [u8; 4],
    pub vrid: u8,
    pub priority: u8,
    pub version: u8,
    pub _pad0: u8,
    pub ifindex: u32,
    pub _pad1: u32,
    pub last_ns: u64,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EipKey {
    pub addr: [u8; 4],
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EipBinding {
    pub vip: [u8; 4],
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VipNat {
    pub eip: [u8; 4],
    pub subnet: [u8; 4],
    pub mask: [u8; 4],
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UplinkPort {
    pub ifindex: u32,
    pub mac: [u8; 6],
    pub next_hop_mac: [u8; 6],
}

/// Indices into [`VipCounters::c`] (`enum vip_counter`).
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VipCounter {
    RedirectPackets = 0,
    RedirectBytes,
    ClaimsAccepted,
    ClaimsRejected,
    NoHolderDrops,
    ArpReplies,
    VrrpAdverts,
    EipInPackets,
    EipInBytes,
    EipOutPackets,
    EipOutBytes,
    EipOutNotHolder,
    EipOutNoUplink,
    EipTtlExceeded,
    NeighbourLookups,
    ProbesAnswered,
    ProbesUnanswered,
    HairpinDrops,
}

impl VipCounter {
    pub const MAX: usize = 18;
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
        }
    }
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VipCounters {
    pub c: [u64; VipCounter::MAX],
}

impl VipCounters {
    pub fn get(&self, counter: VipCounter) -> u64 {
        self.c[counter as usize]
    }
}

/// Indices into the `global_stats` per-CPU array (`enum global_counter`).
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GlobalCounter {
    Passed = 0,
    ParseErrors,
    EventsLost,
    TaggedClaims,
}

impl GlobalCounter {
    pub const MAX: usize = 4;
    pub const ALL: [GlobalCounter; Self::MAX] =
        [Self::Passed, Self::ParseErrors, Self::EventsLost, Self::TaggedClaims];

    pub fn name(self) -> &'static str {
        match self {
            Self::Passed => "passed",
            Self::ParseErrors => "parse_errors",
            Self::EventsLost => "events_lost",
            Self::TaggedClaims => "tagged_claims",
        }
    }
}

/// `enum havip_event_kind`.
pub const EV_CLAIM: u32 = 1;
pub const EV_CLAIM_REJECTED: u32 = 2;

/// `enum havip_reject_reason`.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RejectReason {
    None = 0,
    NotMember = 1,
    MacMismatch = 2,
}

impl RejectReason {
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

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HavipEvent {
    pub ts_ns: u64,
    pub epoch: u64,
    pub kind: u32,
    pub vip: [u8; 4],
    pub ifindex: u32,
    pub prev_ifindex: u32,
    pub mac: [u8; 6],
    pub reason: u8,
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
            [lock, holder_ifindex, vmac, holder_mac, slot, epoch, since_ns, last_claim_ns, vip, _pad]
        ),
        layout!("vip_ref", VipRef, [slot]),
        layout!("vip_config", VipConfig, [flags]),
        layout!("holder_write", HolderWrite, [slot, ifindex, expect_epoch, mac, _pad]),
        layout!("member_key", MemberKey, [vip, ifindex]),
        layout!("member_info", MemberInfo, [mac, _pad]),
        layout!("vrrp_seen", VrrpSeen, [advertiser, vrid, priority, version, _pad0, ifindex, _pad1, last_ns]),
        layout!("vip_counters", VipCounters, [c]),
        layout!("eip_key", EipKey, [addr]),
        layout!("eip_binding", EipBinding, [vip]),
        layout!("vip_nat", VipNat, [eip, subnet, mask]),
        layout!("uplink_port", UplinkPort, [ifindex, mac, next_hop_mac]),
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
    assert!(size_of::<HolderWrite>() == 24);
    assert!(size_of::<MemberKey>() == 8);
    assert!(size_of::<MemberInfo>() == 8);
    assert!(size_of::<VrrpSeen>() == 24);
    assert!(size_of::<VipCounters>() == 8 * VipCounter::MAX);
    assert!(size_of::<HavipEvent>() == 40);
    assert!(size_of::<EipKey>() == 4);
    assert!(size_of::<EipBinding>() == 4);
    assert!(size_of::<VipNat>() == 12);
    assert!(size_of::<UplinkPort>() == 16);
};
