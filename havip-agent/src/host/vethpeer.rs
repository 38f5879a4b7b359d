//! A veth vNIC delivers what XDP redirects into it (or sends back out of it,
//! the ARP answers) only if its peer can take XDP frames: an XDP program on
//! the peer, or GRO. Otherwise the kernel drops those frames silently and
//! the helper still reports success. The agent looks at the peer, wherever
//! its namespace, and says so by name rather than let the VIP go dark.

use anyhow::{Context, Result};
use futures::TryStreamExt;
use netlink_packet_route::link::{InfoKind, LinkAttribute, LinkInfo, LinkMessage, LinkXdp, XdpAttached};
use rtnetlink::Handle;

impl Peer {
    /// Why what havip forwards into `ifname` would be lost, if it would.
    pub fn problem(&self, ifname: &str) -> Option<String> {
        match self {
            Self::NoXdp { peer } => Some(format!(
                "{ifname} is a veth whose peer {peer} runs no XDP program: frames havip forwards into \
                 it (VIP traffic, ARP answers) are dropped unless GRO is on there; attach one to {peer} \
                 (XDP_PASS will do)"
            )),
            Self::Ready { .. } | Self::NotVeth => None,
        }
    }
}

/// What a vNIC's peer means for XDP delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Peer {
    /// Not a veth (a tap, say): delivery needs nothing of a peer.
    NotVeth,
    /// A veth whose peer runs an XDP program: native delivery.
    Ready {
        /// The peer interface's name.
        peer: String,
    },
    /// A veth whose peer has no XDP program: delivery depends on GRO there.
    NoXdp {
        /// The peer interface's name.
        peer: String,
    },
}

fn name(msg: &LinkMessage) -> String {
    msg.attributes
        .iter()
        .find_map(|a| match a {
            LinkAttribute::IfName(n) => Some(n.clone()),
            _ => None,
        })
        .unwrap_or_else(|| format!("ifindex {}", msg.header.index))
}

fn has_xdp(msg: &LinkMessage) -> bool {
    msg.attributes.iter().any(|a| match a {
        LinkAttribute::Xdp(x) => {
            x.iter().any(|x| matches!(x, LinkXdp::Attached(a) if *a != XdpAttached::None))
        }
        _ => false,
    })
}

fn is_veth(msg: &LinkMessage) -> bool {
    msg.attributes.iter().any(|a| match a {
        LinkAttribute::LinkInfo(infos) => infos.iter().any(|i| matches!(i, LinkInfo::Kind(InfoKind::Veth))),
        _ => false,
    })
}

/// Looks at the peer of the vNIC `ifname` (in the current namespace).
pub async fn inspect(handle: &Handle, ifname: &str) -> Result<Peer> {
    let vnic = handle
        .link()
        .get()
        .match_name(ifname.to_string())
        .execute()
        .try_next()
        .await
        .with_context(|| format!("looking up {ifname}"))?
        .with_context(|| format!("no link {ifname}"))?;
    if !is_veth(&vnic) {
        return Ok(Peer::NotVeth);
    }
    let mut peer_index = None;
    let mut peer_netns = None;
    for a in &vnic.attributes {
        match a {
            LinkAttribute::Link(i) => peer_index = Some(*i),
            LinkAttribute::LinkNetNsId(id) => peer_netns = Some(*id),
            _ => {}
        }
    }
    let peer_index = peer_index.with_context(|| format!("veth {ifname} names no peer"))?;
    let mut req = handle.link().get().match_index(peer_index);
    if let Some(id) = peer_netns {
        // IFLA_TARGET_NETNSID: ask about the link in the peer's namespace.
        req.message_mut().attributes.push(LinkAttribute::IfNetnsId(id));
    }
    let peer = req
        .execute()
        .try_next()
        .await
        .with_context(|| format!("looking up the peer of {ifname}"))?
        .with_context(|| format!("the peer of {ifname} is gone"))?;
    Ok(match has_xdp(&peer) {
        true => Peer::Ready { peer: name(&peer) },
        false => Peer::NoXdp { peer: name(&peer) },
    })
}
