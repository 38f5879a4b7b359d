//! Wire interop over a real underlay: two hosts (namespaces hv1, hv2)
//! joined by a veth with MTU 1500. On hv1 the data plane is loaded with the
//! agent's loader, `xdp_vnic` on vNIC vnic-c and `xdp_underlay` on the
//! underlay NIC, the VIP pointed at a holder on hv2. On hv2 a kernel `vxlan`
//! device (dstport 4789, VNI 1001) must receive and decapsulate what hv1
//! sends; the guest on vnic-c gets an ICMP fragmentation-needed for a frame
//! one byte too big. And the underlay NIC and a peer's next hop as the
//! agent reads them over rtnetlink (`host::underlay`). Needs root.

use std::{
    collections::BTreeMap,
    ffi::CString,
    sync::mpsc,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use havip_agent::{
    datapath::{
        loader::{self, Attach, Dataplane},
        maps::{HolderTarget, Maps},
        plan::{reconcile, MapTarget, UnderlayTarget},
    },
    host::underlay,
};
use havip_common::{vmac, VipCounter, VipKey};
use havip_lab::{arping::PacketSocket, cmd::ip, frames::*, netns, topology::prepare_far_end};
use havip_model::Capacity;

const VIP: [u8; 4] = [198, 18, 1, 50];
const IP_C: [u8; 4] = [198, 18, 1, 13];
const MAC_B: [u8; 6] = [0x02, 0, 0xc6, 0x12, 1, 0x0c];
const MAC_C: [u8; 6] = [0x02, 0, 0xc6, 0x12, 1, 0x0d];
const HV1_MAC: &str = "02:00:c6:12:00:01";
const HV2_MAC: [u8; 6] = [0x02, 0, 0xc6, 0x12, 0, 0x02];
const UNDERLAY_MTU: u16 = 1500;
const WAIT: Duration = Duration::from_secs(5);

fn ifindex(name: &str) -> Result<u32> {
    let c = CString::new(name)?;
    // SAFETY: a valid C string.
    match unsafe { libc::if_nametoindex(c.as_ptr()) } {
        0 => bail!("no interface {name}"),
        i => Ok(i),
    }
}

/// A UDP packet from the guest on vnic-c to the VIP, IPv4 length `ip_len`, DF.
fn to_vip(ip_len: usize) -> Vec<u8> {
    ipv4(MAC_C, vmac(0), IP_C, VIP, IPPROTO_UDP, &udp(40000, 5000, &vec![0x5a; ip_len - 28]))
}

/// The first frame on `sock` that `want` accepts, within [`WAIT`].
fn wait_for(sock: &PacketSocket, what: &str, want: impl Fn(&[u8]) -> bool) -> Result<Vec<u8>> {
    let deadline = Instant::now() + WAIT;
    let mut buf = vec![0u8; 2048];
    while Instant::now() < deadline {
        if let Some((n, outgoing)) = sock.recv(&mut buf)? {
            if !outgoing && want(&buf[..n]) {
                return Ok(buf[..n].to_vec());
            }
        }
    }
    bail!("no {what} within {WAIT:?}")
}

#[test]
fn a_kernel_vxlan_device_decapsulates_what_havip_encapsulates() -> Result<()> {
    let mut scratch = netns::Scratch::new("test")?;
    let (hv1, hv2) = (scratch.netns("hv1")?, scratch.netns("hv2")?);
    let mtu = UNDERLAY_MTU.to_string();
    ip(&["-n", &hv1, "link", "add", "vnic-c", "type", "veth", "peer", "name", "guest-c"])?;
    ip(&[
        "-n",
        &hv1,
        "link",
        "add",
        "ul0",
        "mtu",
        &mtu,
        "address",
        HV1_MAC,
        "type",
        "veth",
        "peer",
        "name",
        "ul0",
        "mtu",
        &mtu,
        "address",
        &havip_common::Mac(&HV2_MAC).to_string(),
        "netns",
        &hv2,
    ])?;
    ip(&["-n", &hv1, "addr", "add", "198.18.0.1/24", "dev", "ul0"])?;
    ip(&["-n", &hv2, "addr", "add", "198.18.0.2/24", "dev", "ul0"])?;
    let vxlan = ["type", "vxlan", "id", "1001", "dstport", "4789", "local", "198.18.0.2", "dev", "ul0"];
    ip(&[&["-n", &hv2, "link", "add", "vx0"][..], &vxlan].concat())?;
    for (ns, dev) in [(&hv1, "vnic-c"), (&hv1, "guest-c"), (&hv1, "ul0"), (&hv2, "ul0"), (&hv2, "vx0")] {
        ip(&["-n", ns, "link", "set", dev, "up"])?;
    }
    // The far ends take what XDP redirects or sends back, as in the lab.
    let obj = scratch.id.run_dir().join("lab.bpf.o");
    std::fs::create_dir_all(scratch.id.run_dir())?;
    std::fs::write(&obj, havip_ebpf::LAB_OBJ)?;
    prepare_far_end(&hv2, "ul0", &obj)?;
    prepare_far_end(&hv1, "guest-c", &obj)?;

    // hv2: what arrives on the vxlan device, decapsulated by the kernel.
    let (ready_tx, ready_rx) = mpsc::channel();
    let receiver = std::thread::spawn({
        let hv2 = hv2.clone();
        move || {
            netns::run_in(&hv2, move || {
                let sock = PacketSocket::open(&CString::new("vx0")?, ETH_P_IP)?;
                ready_tx.send(()).ok();
                let mut seen = Vec::new();
                for len in [100, usize::from(UNDERLAY_MTU) - 50] {
                    let want = to_vip(len);
                    seen.push(wait_for(&sock, "decapsulated frame", |f| {
                        f.len() == want.len() && f[12..] == want[12..]
                    })?);
                }
                Ok(seen)
            })
        }
    });
    ready_rx.recv_timeout(WAIT).context("the receiver on hv2 did not start")?;

    let pin_root = scratch.pin_dir();
    let sender = netns::run_in(&hv1, {
        let pin_root = pin_root.clone();
        move || {
            let (vnic, ul) = (ifindex("vnic-c")?, ifindex("ul0")?);
            let mut dp = Dataplane::open(&pin_root, Capacity::default())?;
            let mut maps = dp.take_maps()?;
            assert_eq!(dp.attach("vnic-c")?, Attach::New);
            assert_eq!(dp.attach_underlay("ul0")?, Attach::New);
            assert_eq!(dp.attach_underlay("ul0")?, Attach::Swapped, "a second attach swaps in place");
            let target = MapTarget {
                ports: [vnic].into(),
                vips: BTreeMap::from([(VipKey { addr: VIP }, BTreeMap::new())]),
                underlay: Some(UnderlayTarget {
                    ifindex: ul,
                    mac: [0x02, 0, 0xc6, 0x12, 0, 0x01],
                    mtu: UNDERLAY_MTU,
                    addr: [198, 18, 0, 1].into(),
                    vni: 1001,
                    vxlan_port: VXLAN_PORT,
                    probe_port: 4790,
                    gateway_vtep: None,
                }),
                vteps: BTreeMap::from([([198, 18, 0, 2].into(), HV2_MAC)]),
                ..MapTarget::default()
            };
            reconcile(&mut maps, &target)?;
            let st = maps.vip(&VipKey { addr: VIP }).context("the VIP")?;
            assert_eq!(st.vmac, vmac(0));
            let holder = HolderTarget::Remote { vtep: [198, 18, 0, 2].into(), mac: MAC_B, next_hop: HV2_MAC };
            assert!(maps.write_holder(st.slot, st.epoch, holder)?);

            let guest = PacketSocket::open(&CString::new("guest-c")?, ETH_P_IP)?;
            for len in [100, usize::from(UNDERLAY_MTU) - 50] {
                guest.send(&to_vip(len))?;
            }
            // One byte over: the guest hears why.
            let big = to_vip(usize::from(UNDERLAY_MTU) - 50 + 1);
            guest.send(&big)?;
            let icmp = wait_for(&guest, "ICMP fragmentation-needed", |f| {
                f.len() >= 42 && f[23] == IPPROTO_ICMP && f[34] == 3 && f[35] == 4
            })?;
            let counters = maps.vip_counters(st.slot)?;
            drop(maps);
            drop(dp);
            Ok((icmp, big, counters))
        }
    });
    let seen = receiver.join().map_err(|_| anyhow::anyhow!("receiver panicked"))?;
    let (icmp, big, counters) = sender?;
    let seen = seen?;

    for (frame, len) in seen.iter().zip([100, usize::from(UNDERLAY_MTU) - 50]) {
        let sent = to_vip(len);
        assert_eq!((&frame[0..6], &frame[6..12]), (&MAC_B[..], &vmac(0)[..]), "inner MACs: to the holder");
        assert_eq!(frame[12..], sent[12..], "the packet as the guest sent it");
    }
    assert_eq!(u16::from_be_bytes([icmp[40], icmp[41]]), UNDERLAY_MTU - 50, "next-hop MTU");
    assert_eq!((&icmp[26..30], &icmp[30..34]), (&VIP[..], &IP_C[..]));
    assert_eq!(checksum(&icmp[14..34]), 0);
    assert_eq!(checksum(&icmp[34..]), 0);
    assert_eq!(icmp[42..], big[14..42]);
    assert_eq!(counters.get(VipCounter::EncapPackets), 2);
    assert_eq!(counters.get(VipCounter::TooBigIcmp), 1);

    loader::teardown(&pin_root)?;
    let link = ip(&["-n", &hv1, "link", "show", "ul0"])?;
    assert!(!link.contains("xdp"), "teardown detached xdp_underlay: {link}");
    Ok(())
}

#[test]
fn the_underlay_nic_and_a_peers_next_hop_are_read_through_rtnetlink() -> Result<()> {
    let mut scratch = netns::Scratch::new("test")?;
    let (hv1, hv2) = (scratch.netns("hv1")?, scratch.netns("hv2")?);
    let hv2_mac = havip_common::Mac(&HV2_MAC).to_string();
    ip(&[
        "-n", &hv1, "link", "add", "ul0", "mtu", "1550", "address", HV1_MAC, "type", "veth", "peer", "name",
        "ul0", "address", &hv2_mac, "netns", &hv2,
    ])?;
    ip(&["-n", &hv1, "addr", "add", "198.18.0.1/24", "dev", "ul0"])?;
    ip(&["-n", &hv2, "addr", "add", "198.18.0.2/24", "dev", "ul0"])?;
    for ns in [&hv1, &hv2] {
        ip(&["-n", ns, "link", "set", "ul0", "up"])?;
    }
    let (nic, missing, hop) = netns::run_in(&hv1, || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        rt.block_on(async {
            let handle = havip_agent::host::links::connect()?;
            let missing = underlay::nic(&handle, "nope0").await?;
            let nic = underlay::nic(&handle, "ul0").await?.context("ul0 with its address")?;
            let peer = [198, 18, 0, 2].into();
            let deadline = Instant::now() + WAIT;
            loop {
                // The first call asks the kernel to resolve; a later one finds the entry.
                if let Some(mac) = underlay::next_hop_mac(&handle, nic.ifindex, peer).await? {
                    return Ok((nic, missing, mac));
                }
                if Instant::now() > deadline {
                    bail!("198.18.0.2 not resolved within {WAIT:?}");
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    })?;
    assert_eq!(missing, None, "no such NIC");
    assert_eq!(
        (havip_common::Mac(&nic.mac).to_string(), nic.mtu, nic.addr),
        (HV1_MAC.into(), 1550, [198, 18, 0, 1].into())
    );
    assert_eq!(hop, HV2_MAC);
    Ok(())
}
