//! The pinned life of the data plane: attach, reopen (a restart swaps the
//! program into the same links), refuse mismatched pins, and tear down to
//! nothing at all.

use anyhow::Result;
use havip_agent::datapath::loader::{teardown, versioned_dir, Attach, Dataplane};
use havip_lab::{cmd::ip, netns};
use havip_model::Capacity;

/// The XDP program id attached to `dev`, if any.
fn xdp_prog(ns: &str, dev: &str) -> Option<u64> {
    let out = ip(&["-n", ns, "-d", "-j", "link", "show", dev]).unwrap();
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    v[0]["xdp"]["prog"]["id"].as_u64()
}

#[test]
fn attach_reopen_swap_and_teardown_leave_nothing_behind() -> Result<()> {
    let mut scratch = netns::Scratch::new("test")?;
    let ns = scratch.netns("life")?;
    for dev in ["vnic-a", "uplink0"] {
        ip(&["-n", &ns, "link", "add", dev, "type", "veth", "peer", "name", &format!("p-{dev}")])?;
    }
    let name = ns.clone();
    let pin_root = scratch.pin_dir();
    let thread_root = pin_root.clone();
    std::thread::spawn(move || {
        netns::enter(&name).unwrap();
        let mut dp = Dataplane::open(&thread_root, Capacity::default()).unwrap();
        assert_eq!(dp.attach("vnic-a").unwrap(), Attach::New);
        assert_eq!(dp.attach_uplink("uplink0").unwrap(), Attach::New);
        let first = (xdp_prog(&name, "vnic-a").unwrap(), xdp_prog(&name, "uplink0").unwrap());
        drop(dp);
        assert!(xdp_prog(&name, "vnic-a").is_some(), "the program outlives the agent");

        let mut dp = Dataplane::open(&thread_root, Capacity::default()).unwrap();
        assert_eq!(dp.attach("vnic-a").unwrap(), Attach::Swapped);
        assert_eq!(dp.attach_uplink("uplink0").unwrap(), Attach::Swapped);
        let second = (xdp_prog(&name, "vnic-a").unwrap(), xdp_prog(&name, "uplink0").unwrap());
        assert_ne!(first, second, "a new program was swapped into the same links");
        drop(dp);

        let other = Capacity { max_vips: 1024, ..Capacity::default() };
        let err =
            format!("{:#}", Dataplane::open(&thread_root, other).err().expect("mismatched pins refused"));
        assert!(err.contains("does not match this agent"), "{err}");
    })
    .join()
    .unwrap();

    teardown(&pin_root)?;
    assert!(!versioned_dir(&pin_root).exists() && !pin_root.exists(), "no pin left");
    assert_eq!(xdp_prog(&ns, "vnic-a"), None, "detached from the vNIC");
    assert_eq!(xdp_prog(&ns, "uplink0"), None, "detached from the uplink");
    Ok(())
}
