//! The uplink's next hop is found through rtnetlink: the kernel is asked to
//! resolve it, and its MAC read from the neighbour table.

use std::time::{Duration, Instant};

use anyhow::Result;
use havip_agent::host::{
    links::connect,
    uplink::{resolve, UplinkSpec},
};
use havip_lab::{cmd::ip, netns};

#[test]
fn next_hop_mac_is_resolved_through_the_neighbour_table() -> Result<()> {
    let mut scratch = netns::Scratch::new("test")?;
    let (hv, inet) = (scratch.netns("hv")?, scratch.netns("inet")?);
    ip(&["-n", &hv, "link", "add", "uplink0", "type", "veth", "peer", "name", "nh0", "netns", &inet])?;
    ip(&["-n", &inet, "link", "set", "nh0", "address", "02:00:c6:33:64:02", "up"])?;
    ip(&["-n", &inet, "addr", "add", "198.51.100.2/24", "dev", "nh0"])?;
    ip(&["-n", &hv, "link", "set", "uplink0", "up"])?;
    ip(&["-n", &hv, "addr", "add", "198.51.100.1/24", "dev", "uplink0"])?;

    let found = netns::run_in(&hv, || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        rt.block_on(async {
            let handle = connect()?;
            let missing = UplinkSpec { name: "nope0".into(), next_hop: [198, 51, 100, 2].into() };
            assert_eq!(resolve(&handle, &missing).await?, None, "no such NIC: not ready");
            let spec = UplinkSpec { name: "uplink0".into(), next_hop: [198, 51, 100, 2].into() };
            let deadline = Instant::now() + Duration::from_secs(5);
            loop {
                if let Some(u) = resolve(&handle, &spec).await? {
                    return Ok(u);
                }
                assert!(Instant::now() < deadline, "next hop 198.51.100.2 not resolved within 5 s");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    })?;
    assert_eq!(found.next_hop_mac, [0x02, 0, 0xc6, 0x33, 0x64, 0x02]);
    let link = ip(&["-n", &hv, "-o", "link", "show", "uplink0"])?;
    let mac = havip_common::Mac(&found.mac).to_string();
    assert!(link.contains(&mac), "uplink MAC {mac} in {link}");
    Ok(())
}
