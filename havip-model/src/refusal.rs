//! Refusals: every rule by the name operators see, and the error that names
//! it. The bottom of the model: the objects' text forms and the rules both
//! refuse with these.

use std::fmt;

/// The rules, by the name a refusal shows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rule {
    /// Text that is not what it should be (CIDR, MAC, a name of any object,
    /// an interface name); see [`check_name`], [`check_ifname`].
    WellFormed,
    /// An IPv6 address where only IPv4 is supported.
    Ipv4Only,
    /// A subnet named that does not exist (HTTP 404).
    UnknownSubnet,
    /// A vNIC named that does not exist, or is not a member where one was named (HTTP 404).
    UnknownVnic,
    /// A HAVIP named that does not exist (HTTP 404).
    UnknownHavip,
    /// Every address (VIP, vNIC address, EIP, subnet) is one a host may
    /// use: not unspecified, "this network", loopback, link-local,
    /// multicast, broadcast or reserved ([`address_class`]).
    AddressClass,
    /// A VPC subnet is /8 to /32 ([`MIN_SUBNET_PREFIX`]).
    SubnetPrefix,
    /// No two subnets share an address.
    SubnetsDisjoint,
    /// `unbind-eip` needs an EIP bound to the HAVIP.
    EipBound,
    /// `disassociate` needs the vNIC to be a member of the HAVIP.
    MemberExists,
    /// A vNIC's address must lie in its subnet.
    VnicInSubnet,
    /// No two vNICs share an address.
    VnicAddressUnique,
    /// No two vNICs share a host-side interface on one host.
    VnicInterfaceUnique,
    /// A VIP must lie in its subnet.
    VipInSubnet,
    /// A VIP is neither its subnet's network nor its broadcast address (prefixes shorter than /31).
    VipNotNetworkOrBroadcast,
    /// A VIP is not any vNIC's own address.
    VipNotVnicAddress,
    /// No two HAVIPs share a VIP.
    VipUnique,
    /// `create` without a VIP needs a free address left in the subnet.
    SubnetHasFreeAddress,
    /// A HAVIP and its members share one subnet.
    MemberInSubnet,
    /// A vNIC is a member of a HAVIP at most once.
    MemberOnce,
    /// At most [`Limits::max_members_per_havip`] members per HAVIP.
    MaxMembersPerHavip,
    /// An instance is a member of at most [`Limits::max_havips_per_instance`] HAVIPs.
    MaxHavipsPerInstance,
    /// At most [`Limits::max_eips_per_havip`] EIPs per HAVIP (0 or 1).
    MaxEipsPerHavip,
    /// An EIP is a public address: in none of the VPC's subnets.
    EipOutsideVpc,
    /// An EIP is bound to one HAVIP at most.
    EipBoundOnce,
    /// A HAVIP with members or an EIP is deleted only with force.
    DeleteInUse,
    /// A vNIC that is a HAVIP's member cannot be deleted.
    VnicInUse,
    /// A subnet that vNICs or HAVIPs use cannot be deleted.
    SubnetInUse,
    /// The desired state would not fit the data plane's maps ([`Capacity`]).
    DataplaneCapacity,
    /// A subnet's storm control is within its bounds
    /// ([`StormControl::PPS`](crate::state::StormControl::PPS),
    /// [`StormControl::BURST`](crate::state::StormControl::BURST)).
    StormControl,
}

impl Rule {
    /// The rule's name, as refusals, the API's `rule` field and the README
    /// show it.
    pub fn name(self) -> &'static str {
        match self {
            Self::WellFormed => "well-formed",
            Self::Ipv4Only => "ipv4-only",
            Self::UnknownSubnet => "subnet-exists",
            Self::UnknownVnic => "vnic-exists",
            Self::UnknownHavip => "havip-exists",
            Self::AddressClass => "address-class",
            Self::SubnetPrefix => "subnet-prefix",
            Self::SubnetsDisjoint => "subnets-disjoint",
            Self::EipBound => "eip-bound",
            Self::MemberExists => "member-exists",
            Self::VnicInSubnet => "vnic-in-subnet",
            Self::VnicAddressUnique => "vnic-address-unique",
            Self::VnicInterfaceUnique => "vnic-interface-unique",
            Self::VipInSubnet => "vip-in-subnet",
            Self::VipNotNetworkOrBroadcast => "vip-not-network-or-broadcast",
            Self::VipNotVnicAddress => "vip-not-vnic-address",
            Self::VipUnique => "vip-unique",
            Self::SubnetHasFreeAddress => "subnet-has-free-address",
            Self::MemberInSubnet => "member-in-subnet",
            Self::MemberOnce => "member-once",
            Self::MaxMembersPerHavip => "max-members-per-havip",
            Self::MaxHavipsPerInstance => "max-havips-per-instance",
            Self::MaxEipsPerHavip => "max-eips-per-havip",
            Self::EipOutsideVpc => "eip-outside-vpc",
            Self::EipBoundOnce => "eip-bound-once",
            Self::DeleteInUse => "delete-only-unused",
            Self::VnicInUse => "vnic-unused",
            Self::SubnetInUse => "subnet-unused",
            Self::DataplaneCapacity => "dataplane-capacity",
            Self::StormControl => "storm-control",
        }
    }

    /// Whether the refusal is about something that does not exist (HTTP 404)
    /// rather than a rule the request breaks.
    pub fn is_not_found(self) -> bool {
        matches!(self, Self::UnknownSubnet | Self::UnknownVnic | Self::UnknownHavip)
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A request refused by a rule; nothing was changed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    /// The rule the request breaks.
    pub rule: Rule,
    /// What was refused and why, for an operator (names the object).
    pub message: String,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "refused by rule {}: {}", self.rule, self.message)
    }
}

impl std::error::Error for Refusal {}

/// `Err(Refusal { rule, message })`.
pub fn refuse<T>(rule: Rule, message: impl Into<String>) -> Result<T, Refusal> {
    Err(Refusal { rule, message: message.into() })
}

/// Text an operator sent, for a refusal: quoted with every control
/// character escaped, and at most 40 characters of it (a 1 MB name is not
/// echoed into a log line).
pub fn shown(text: &str) -> String {
    const MAX: usize = 40;
    match text.char_indices().nth(MAX) {
        None => format!("{text:?}"),
        Some((end, _)) => format!("{:?}… ({} bytes)", &text[..end], text.len()),
    }
}
