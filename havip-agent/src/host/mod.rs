//! This host's network, as the agent sees it through rtnetlink: links and
//! whether they are up ([`links`]), the uplink's next hop ([`uplink`]),
//! the underlay NIC and its next hops to other hosts ([`underlay`]),
//! what a veth vNIC's peer can take ([`vethpeer`]), and entering the
//! namespace that holds the vNICs ([`netns`]), asking a guest whether it has
//! an address ([`arp`]), the replicator veth pair that head-end replication
//! of broadcast goes through ([`replicator`]). Nothing here knows about
//! HAVIPs or the store.

pub mod arp;
pub mod links;
pub mod netns;
pub mod replicator;
pub mod underlay;
pub mod uplink;
pub mod vethpeer;
