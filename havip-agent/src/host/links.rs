//! The host's links, by name, as rtnetlink reports them: one dump at start,
//! then every RTNLGRP_LINK notification, so a vNIC that appears, vanishes or
//! changes state is seen at once. The socket is opened in the agent's
//! network namespace (entered before the runtime started).

use std::collections::BTreeMap;

use anyhow::{bail, Context, Result};
use futures::{Future, StreamExt, TryStreamExt};
use netlink_packet_core::NetlinkPayload;
use netlink_packet_route::{
    link::{LinkAttribute, LinkFlags, LinkMessage},
    RouteNetlinkMessage,
};
use rtnetlink::{Handle, MulticastGroup};
use tokio::sync::watch;
use tracing::warn;

/// One link of the host, as rtnetlink last reported it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Link {
    /// The kernel's interface index (changes when the interface is made again).
    pub ifindex: u32,
    /// The host end's own MAC (not the guest's).
    pub mac: [u8; 6],
    /// Administratively up with carrier: it can carry the VIP's traffic.
    pub up: bool,
}

/// Opens an rtnetlink connection for requests, in the current namespace.
pub fn connect() -> Result<Handle> {
    let (conn, handle, _) = rtnetlink::new_connection().context("opening an rtnetlink socket")?;
    tokio::spawn(conn);
    Ok(handle)
}

/// Links by interface name.
pub type Links = BTreeMap<String, Link>;

type ByIndex = BTreeMap<u32, (String, Link)>;

fn parse(m: &LinkMessage) -> Option<(String, Link)> {
    let mut name = None;
    let mut mac = [0u8; 6];
    for a in &m.attributes {
        match a {
            LinkAttribute::IfName(n) => name = Some(n.clone()),
            LinkAttribute::Address(a) if a.len() == 6 => mac.copy_from_slice(a),
            _ => {}
        }
    }
    let up = m.header.flags.contains(LinkFlags::Up | LinkFlags::LowerUp);
    Some((name?, Link { ifindex: m.header.index, mac, up }))
}

async fn dump(handle: &Handle) -> Result<ByIndex> {
    let mut links = ByIndex::new();
    let mut stream = handle.link().get().execute();
    while let Some(m) = stream.try_next().await.context("listing links over rtnetlink")? {
        if let Some(entry) = parse(&m) {
            links.insert(m.header.index, entry);
        }
    }
    Ok(links)
}

fn by_name(links: &ByIndex) -> Links {
    links.values().cloned().collect()
}

/// Subscribes to link notifications and dumps the links; returns the links
/// as a watch, and the future that keeps it current (run it; it returns only
/// on failure).
pub async fn watch_links() -> Result<(watch::Receiver<Links>, impl Future<Output = Result<()>>)> {
    let (conn, handle, mut messages) = rtnetlink::new_multicast_connection(&[MulticastGroup::Link])
        .context("opening an rtnetlink socket")?;
    tokio::spawn(conn);
    // Subscribed before the dump: a change during it is applied after it.
    let mut links = dump(&handle).await?;
    let (tx, rx) = watch::channel(by_name(&links));
    let follow = async move {
        while let Some((msg, _)) = messages.next().await {
            match msg.payload {
                NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewLink(m)) => {
                    if let Some(entry) = parse(&m) {
                        links.insert(m.header.index, entry);
                    }
                }
                NetlinkPayload::InnerMessage(RouteNetlinkMessage::DelLink(m)) => {
                    links.remove(&m.header.index);
                }
                // Notifications were lost: start again from a dump.
                NetlinkPayload::Overrun(_) => {
                    warn!("rtnetlink notifications overran; listing links again");
                    links = dump(&handle).await?;
                }
                _ => continue,
            }
            let now = by_name(&links);
            tx.send_if_modified(|cur| (*cur != now).then(|| *cur = now).is_some());
        }
        bail!("the rtnetlink link feed ended")
    };
    Ok((rx, follow))
}
