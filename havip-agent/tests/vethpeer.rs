//! The agent sees through a veth vNIC to its peer in the guest's namespace
//! and tells whether redirected frames can be delivered there.

use std::process::Command;

use havip_agent::host::vethpeer::{inspect, Peer};

struct Netns(String);

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("running ip");
    assert!(out.status.success(), "ip {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

fn inspect_in(ns: &str, ifname: &'static str) -> Peer {
    let ns = ns.to_owned();
    std::thread::spawn(move || {
        havip_agent::host::netns::enter(&ns).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async { inspect(&havip_agent::host::links::connect().unwrap(), ifname).await.unwrap() })
    })
    .join()
    .unwrap()
}

#[test]
fn a_veth_peer_without_xdp_is_named_and_one_with_xdp_is_ready() {
    let id = std::process::id();
    let (hv, guest) = (Netns(format!("havip-vp-{id}-hv")), Netns(format!("havip-vp-{id}-vm")));
    ip(&["netns", "add", &hv.0]);
    ip(&["netns", "add", &guest.0]);
    ip(&["-n", &hv.0, "link", "add", "vnic-a", "type", "veth", "peer", "name", "eth0", "netns", &guest.0]);

    assert_eq!(inspect_in(&hv.0, "vnic-a"), Peer::NoXdp { peer: "eth0".into() });
    assert_eq!(inspect_in(&hv.0, "lo"), Peer::NotVeth);

    let obj = std::env::temp_dir().join(format!("havip-vp-{id}.bpf.o"));
    std::fs::write(&obj, havip_ebpf::LAB_OBJ).unwrap();
    let attached = Command::new("ip")
        .args([
            "-n",
            &guest.0,
            "link",
            "set",
            "eth0",
            "xdpdrv",
            "obj",
            obj.to_str().unwrap(),
            "program",
            "xdp_pass",
        ])
        .status();
    std::fs::remove_file(&obj).unwrap();
    assert!(attached.unwrap().success(), "attaching xdp_pass to the peer");
    assert_eq!(inspect_in(&hv.0, "vnic-a"), Peer::Ready { peer: "eth0".into() });
}
