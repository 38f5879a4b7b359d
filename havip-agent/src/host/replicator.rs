//! The replicator port: a veth pair in the host namespace, `havip-rep0`
//! ([`REPLICATOR_PORT`]) and `havip-rep1` ([`REPLICATOR_PEER`]). A
//! broadcast-domain subnet's `bcast_flood` devmap sends a guest's broadcast
//! into `havip-rep0` (with 8 bytes of XDP metadata, `struct flood_meta`);
//! it comes out of `havip-rep1`, where `xdp_replicator` passes it to TC and
//! `tc_replicate` sends one VXLAN copy to each other host. Only a host with
//! an underlay (many hosts) has the pair. Nothing here knows about subnets:
//! the reconciler makes the pair ([`ensure`]), attaches the programs and puts
//! the port in the devmaps; teardown removes it ([`remove`]).
//!
//! Both ends are kept quiet: no IPv6 (no router solicitations, MLD or DAD
//! from the kernel, which `xdp_replicator` would count as frames without
//! metadata), and no IPv4 address.

use anyhow::{Context, Result};
use futures::TryStreamExt;
use havip_common::{REPLICATOR_PEER, REPLICATOR_PORT};
use netlink_packet_route::link::{
    InfoData, InfoKind, InfoVeth, LinkAttribute, LinkFlags, LinkInfo, LinkMessage,
};
use rtnetlink::{Handle, LinkMessageBuilder, LinkUnspec, LinkVeth};
use tracing::{info, warn};

/// The MTU of both ends, bytes. It must let through the largest frame a
/// guest sends (the vNIC's MTU; the 8 bytes of metadata ride in the XDP
/// headroom and do not count against it). It cannot be 9000: the veth
/// driver refuses an XDP program on `havip-rep1` while its peer's MTU is
/// above one page less the XDP headroom and `skb_shared_info` (3506 with
/// 4 KiB pages: "Peer MTU is too large to set XDP", tried on this kernel)
/// unless the program takes multi-buffer frames. 3500 takes every standard
/// guest frame and leaves that margin; larger (jumbo) broadcast would not
/// fit a 1550-byte underlay anyway (`TOO_BIG`), and VRRP/CARP adverts and
/// ARP are tens of bytes.
pub const REPLICATOR_MTU: u32 = 3500;

/// The pair as [`ensure`] left it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Replicator {
    /// `havip-rep0`'s ifindex: what goes in the `bcast_flood` devmaps.
    pub port: u32,
    /// `havip-rep1`'s ifindex: where the replicator programs run.
    pub peer: u32,
    /// The pair was made by this call (it was missing, or not a pair).
    pub made: bool,
}

/// One end as rtnetlink reports it.
#[derive(Clone, Copy, Debug)]
struct End {
    index: u32,
    up: bool,
    mtu: u32,
    veth: bool,
    /// A veth's peer ifindex (IFLA_LINK).
    peer: Option<u32>,
}

fn parse(msg: &LinkMessage) -> End {
    let mut end = End {
        index: msg.header.index,
        up: msg.header.flags.contains(LinkFlags::Up),
        mtu: 0,
        veth: false,
        peer: None,
    };
    for a in &msg.attributes {
        match a {
            LinkAttribute::Mtu(m) => end.mtu = *m,
            LinkAttribute::Link(i) => end.peer = Some(*i),
            LinkAttribute::LinkInfo(infos) => {
                end.veth |= infos.iter().any(|i| matches!(i, LinkInfo::Kind(InfoKind::Veth)))
            }
            _ => {}
        }
    }
    end
}

/// The link `name`, if there is one.
async fn end(handle: &Handle, name: &str) -> Result<Option<End>> {
    match handle.link().get().match_name(name.to_string()).execute().try_next().await {
        Ok(found) => Ok(found.as_ref().map(parse)),
        // The kernel answers ENODEV for a name it does not know.
        Err(rtnetlink::Error::NetlinkError(_)) => Ok(None),
        Err(e) => Err(e).with_context(|| format!("looking up link {name}")),
    }
}

/// Deletes the link `index`; already gone (the other end of a pair that went with it) is fine.
async fn delete(handle: &Handle, index: u32) -> Result<()> {
    match handle.link().del(index).execute().await {
        Ok(()) | Err(rtnetlink::Error::NetlinkError(_)) => Ok(()),
        Err(e) => Err(e).with_context(|| format!("deleting link {index}")),
    }
}

/// Turns IPv6 off on `name` (best effort: a kernel without IPv6 has nothing to turn off).
fn quiet(name: &str) {
    let path = format!("/proc/sys/net/ipv6/conf/{name}/disable_ipv6");
    if let Err(e) = std::fs::write(&path, "1") {
        if e.kind() != std::io::ErrorKind::NotFound {
            warn!(interface = name, error = %e, "turning IPv6 off: the kernel may send IPv6 frames into the replicator");
        }
    }
}

/// Makes the replicator pair if it is missing (or what has its names is not
/// that pair: made again), with IPv6 off, [`REPLICATOR_MTU`], both ends up.
/// Idempotent: an existing pair is only brought up and to the MTU if needed.
pub async fn ensure(handle: &Handle) -> Result<Replicator> {
    let (port, peer) = (end(handle, REPLICATOR_PORT).await?, end(handle, REPLICATOR_PEER).await?);
    let made = match (port, peer) {
        (Some(p), Some(q)) if p.veth && q.veth && p.peer == Some(q.index) => false,
        (p, q) => {
            for stale in [p, q].into_iter().flatten() {
                warn!(index = stale.index, "the replicator's names are taken by something else: made again");
                delete(handle, stale.index).await?;
            }
            let peer_msg = LinkMessageBuilder::<LinkUnspec>::new()
                .name(REPLICATOR_PEER.to_string())
                .mtu(REPLICATOR_MTU)
                .build();
            let pair = LinkVeth::new(REPLICATOR_PORT, REPLICATOR_PEER)
                .set_info_data(InfoData::Veth(InfoVeth::Peer(peer_msg)))
                .mtu(REPLICATOR_MTU)
                .build();
            handle
                .link()
                .add(pair)
                .execute()
                .await
                .with_context(|| format!("making the veth pair {REPLICATOR_PORT}/{REPLICATOR_PEER}"))?;
            info!(
                port = REPLICATOR_PORT,
                peer = REPLICATOR_PEER,
                mtu = REPLICATOR_MTU,
                "replicator pair made"
            );
            true
        }
    };
    let mut found = [0; 2];
    for (i, name) in [REPLICATOR_PORT, REPLICATOR_PEER].into_iter().enumerate() {
        // Before it is up: no IPv6 link-local address, no frame from the kernel.
        quiet(name);
        let e = end(handle, name).await?.with_context(|| format!("{name} vanished as it was made"))?;
        if !e.up || e.mtu != REPLICATOR_MTU {
            let msg = LinkUnspec::new_with_index(e.index).mtu(REPLICATOR_MTU).up().build();
            handle.link().set(msg).execute().await.with_context(|| format!("bringing {name} up"))?;
        }
        found[i] = e.index;
    }
    Ok(Replicator { port: found[0], peer: found[1], made })
}

/// Deletes the replicator pair if it exists (with [`REPLICATOR_PORT`], its
/// peer goes too), over `handle`.
pub async fn remove_with(handle: &Handle) -> Result<bool> {
    let mut removed = false;
    for name in [REPLICATOR_PORT, REPLICATOR_PEER] {
        if let Some(e) = end(handle, name).await? {
            delete(handle, e.index).await?;
            removed = true;
        }
    }
    if removed {
        info!(port = REPLICATOR_PORT, "replicator pair removed");
    }
    Ok(removed)
}

/// Deletes the replicator pair if it exists, for teardown (no async runtime
/// needed: one of its own runs on a thread, so it may be called from
/// anywhere, in or out of a runtime). `Ok(false)`: there was none.
pub fn remove() -> Result<bool> {
    std::thread::spawn(|| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("a runtime for rtnetlink")?;
        rt.block_on(async {
            let (conn, handle, _) = rtnetlink::new_connection().context("opening an rtnetlink socket")?;
            tokio::spawn(conn);
            remove_with(&handle).await
        })
    })
    .join()
    .map_err(|_| anyhow::anyhow!("the thread removing the replicator pair panicked"))?
}

/// Needs CAP_NET_ADMIN/CAP_SYS_ADMIN (a namespace of its own, on a thread of
/// its own): skipped, and says so, without them.
#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `body` on a thread in a new, empty network namespace; `false` if
    /// one cannot be made here (not root).
    fn in_new_netns(body: impl FnOnce() + Send + 'static) -> bool {
        std::thread::spawn(move || {
            // SAFETY: unshare(2) on this thread only; no memory is involved.
            if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
                eprintln!("skipped: no network namespace ({})", std::io::Error::last_os_error());
                return false;
            }
            body();
            true
        })
        .join()
        .expect("the test thread")
    }

    #[test]
    fn the_pair_is_made_once_quiet_up_at_its_mtu_and_removed() {
        in_new_netns(|| {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async {
                let (conn, handle, _) = rtnetlink::new_connection().unwrap();
                tokio::spawn(conn);
                let made = ensure(&handle).await.unwrap();
                assert!(made.made);
                let again = ensure(&handle).await.unwrap();
                assert_eq!((again.port, again.peer, again.made), (made.port, made.peer, false), "idempotent");
                for name in [REPLICATOR_PORT, REPLICATOR_PEER] {
                    let e = end(&handle, name).await.unwrap().unwrap();
                    assert!(e.veth && e.up && e.mtu == REPLICATOR_MTU, "{name}: {e:?}");
                    let v6 = std::fs::read_to_string(format!("/proc/sys/net/ipv6/conf/{name}/disable_ipv6"));
                    assert!(v6.map_or(true, |v| v.trim() == "1"), "{name}: IPv6 off");
                }
                // Half of it gone (the peer's name taken by nothing): made again.
                delete(&handle, made.port).await.unwrap();
                assert!(ensure(&handle).await.unwrap().made);
            });
            drop(rt);
            assert!(remove().unwrap(), "removed");
            assert!(!remove().unwrap(), "nothing left");
        });
    }
}
