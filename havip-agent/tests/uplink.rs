//! The uplink's next hop is found through rtnetlink: the kernel is asked to
//! resolve it, and its MAC read from the neighbour table.

use std::{
    process::Command,
    time::{Duration, Instant},
};

use havip_agent::host::{
    links::connect,
    uplink::{resolve, UplinkSpec},
};

struct Netns(String);

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

fn ip(args: &[&str]) -> String {
    let out = Command::new("ip").args(args).output().expect("running ip");
    assert!(out.status.success(), "ip {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn next_hop_mac_is_resolved_through_the_neighbour_table() {
    let id = std::process::id();
    let (hv, inet) = (Netns(format!("havip-up-{id}-hv")), Netns(format!("havip-up-{id}-inet")));
    for ns in [&hv.0, &inet.0] {
        ip(&["netns", "add", ns]);
    }
    ip(&["-n", &hv.0, "link", "add", "uplink0", "type", "veth", "peer", "name", "nh0", "netns", &inet.0]);
    ip(&["-n", &inet.0, "link", "set", "nh0", "address", "02:00:c6:33:64:02", "up"]);
    ip(&["-n", &inet.0, "addr", "add", "198.51.100.2/24", "dev", "nh0"]);
    ip(&["-n", &hv.0, "link", "set", "uplink0", "up"]);
    ip(&["-n", &hv.0, "addr", "add", "198.51.100.1/24", "dev", "uplink0"]);

    let hv_name = hv.0.clone();
    let found = std::thread::spawn(move || {
        havip_agent::host::netns::enter(&hv_name).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let handle = connect().unwrap();
            let missing = UplinkSpec { name: "nope0".into(), next_hop: [198, 51, 100, 2].into() };
            assert_eq!(resolve(&handle, &missing).await.unwrap(), None, "no such NIC: not ready");
            let spec = UplinkSpec { name: "uplink0".into(), next_hop: [198, 51, 100, 2].into() };
            let deadline = Instant::now() + Duration::from_secs(5);
            loop {
                if let Some(u) = resolve(&handle, &spec).await.unwrap() {
                    return u;
                }
                assert!(Instant::now() < deadline, "next hop 198.51.100.2 not resolved within 5 s");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    })
    .join()
    .unwrap();
    assert_eq!(found.next_hop_mac, [0x02, 0, 0xc6, 0x33, 0x64, 0x02]);
    let link = ip(&["-n", &hv.0, "-o", "link", "show", "uplink0"]);
    let mac = havip_common::Mac(&found.mac).to_string();
    assert!(link.contains(&mac), "uplink MAC {mac} in {link}");
}
