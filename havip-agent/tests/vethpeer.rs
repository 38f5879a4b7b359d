//! The agent sees through a veth vNIC to its peer in the guest's namespace
//! and tells whether redirected frames can be delivered there.

use anyhow::Result;
use havip_agent::host::vethpeer::{inspect, Peer};
use havip_lab::{cmd::ip, netns};

fn inspect_in(ns: &str, ifname: &'static str) -> Result<Peer> {
    netns::run_in(ns, move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        rt.block_on(async { inspect(&havip_agent::host::links::connect()?, ifname).await })
    })
}

#[test]
fn a_veth_peer_without_xdp_is_named_and_one_with_xdp_is_ready() -> Result<()> {
    let mut scratch = netns::Scratch::new("test")?;
    let (hv, guest) = (scratch.netns("hv")?, scratch.netns("vm")?);
    ip(&["-n", &hv, "link", "add", "vnic-a", "type", "veth", "peer", "name", "eth0", "netns", &guest])?;

    assert_eq!(inspect_in(&hv, "vnic-a")?, Peer::NoXdp { peer: "eth0".into() });
    assert_eq!(inspect_in(&hv, "lo")?, Peer::NotVeth);

    // The object file lives in the test's run dir, which goes with `scratch`.
    let dir = scratch.id.run_dir();
    std::fs::create_dir_all(&dir)?;
    let obj = dir.join("lab.bpf.o");
    std::fs::write(&obj, havip_ebpf::LAB_OBJ)?;
    let obj = obj.to_str().unwrap();
    ip(&["-n", &guest, "link", "set", "eth0", "xdpdrv", "obj", obj, "program", "xdp_pass"])?;
    assert_eq!(inspect_in(&hv, "vnic-a")?, Peer::Ready { peer: "eth0".into() });
    Ok(())
}
