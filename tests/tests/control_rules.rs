//! Every product rule through `havipctl` against a running agent: the exact
//! refusal, naming the rule, and the store unchanged after it.

mod control_support;

use anyhow::{ensure, Result};
use control_support::Ctl;
use havip_api::view::Status;
use havip_lab::{netns::LabId, scenario::Lab};

/// Runs a verb that must be refused with `expected`, and checks that the
/// store's desired state (and its revision) did not move.
fn refused_unchanged(ctl: &Ctl, args: &[&str], expected: &str) -> Result<()> {
    let before = ctl.desired()?;
    let got = ctl.refused(args)?;
    let want = format!("havipctl: {expected}");
    ensure!(got == want, "havipctl {args:?}\n     got: {got}\nexpected: {want}");
    ensure!(ctl.desired()? == before, "havipctl {args:?} was refused but the store changed");
    Ok(())
}

#[test]
fn every_rule_refuses_through_the_cli_and_changes_nothing() -> Result<()> {
    let lab = Lab::create(LabId::unique("test"), true)?;
    lab.run(|lab| {
        lab.start_agent()?;
        let ctl = Ctl::of(lab)?;
        rules(&ctl)
    })
}

fn rules(ctl: &Ctl) -> Result<()> {
    // Beyond the lab's config: a second subnet with a vNIC, and eleven more
    // vNICs in the first (registered only: rules do not need their links).
    ctl.ok(&["subnet", "add", "vpc2", "198.18.2.0/24"])?;
    ctl.ok(&[
        "vnic",
        "add",
        "vnic-x",
        "--instance",
        "vm-x",
        "--subnet",
        "vpc2",
        "--ip",
        "198.18.2.11",
        "--mac",
        "02:00:c6:12:02:0b",
    ])?;
    let many: Vec<String> = (0..11).map(|i| format!("m{i}")).collect();
    for (i, name) in many.iter().enumerate() {
        let (instance, ip, mac) =
            (format!("i{i}"), format!("198.18.1.{}", 100 + i), format!("02:00:00:00:01:{i:02x}"));
        ctl.ok(&[
            "vnic",
            "add",
            name,
            "--instance",
            &instance,
            "--subnet",
            "vpc1",
            "--ip",
            &ip,
            "--mac",
            &mac,
        ])?;
    }

    let create = |vip: &str| ["create", "--subnet", "vpc1", "--vip", vip].map(str::to_owned).to_vec();
    let refuse_create = |vip: &str, expected: &str| {
        let args = create(vip);
        refused_unchanged(ctl, &args.iter().map(String::as_str).collect::<Vec<_>>(), expected)
    };
    refuse_create("2001:db8::50", "refused by rule ipv4-only: 2001:db8::50 is IPv6: only IPv4 is supported")?;
    refuse_create(
        "198.18.9.50",
        "refused by rule vip-in-subnet: HAVIP 198.18.9.50 is outside its subnet 198.18.1.0/24",
    )?;
    for vip in ["198.18.1.0", "198.18.1.255"] {
        refuse_create(
            vip,
            &format!(
                "refused by rule vip-not-network-or-broadcast: HAVIP {vip} is the network or broadcast address of 198.18.1.0/24"
            ),
        )?;
    }
    refuse_create(
        "198.18.1.11",
        "refused by rule vip-not-vnic-address: HAVIP 198.18.1.11 is vNIC vnic-a's own address",
    )?;
    refuse_create("198.18.1.50", "refused by rule vip-unique: HAVIP 198.18.1.50 exists already")?;

    refused_unchanged(
        ctl,
        &["associate", "198.18.1.50", "vnic-x"],
        "refused by rule member-in-subnet: HAVIP 198.18.1.50: member vnic-x is in subnet vpc2, \
         but a HAVIP and its members share one subnet (vpc1)",
    )?;
    // The same rule, from a file: one implementation for both.
    let file = std::env::temp_dir().join(format!("havip-rules-{}.toml", std::process::id()));
    std::fs::write(&file, "[[havips]]\nvip = \"198.18.1.70\"\nsubnet = \"vpc1\"\nmembers = [\"vnic-x\"]\n")?;
    let applied = refused_unchanged(
        ctl,
        &["apply", "-f", &file.to_string_lossy()],
        "refused by rule member-in-subnet: HAVIP 198.18.1.70: member vnic-x is in subnet vpc2, \
         but a HAVIP and its members share one subnet (vpc1)",
    );
    std::fs::remove_file(&file)?;
    applied?;

    let mut ten = create("198.18.1.60");
    for m in &many[..10] {
        ten.extend(["--member".to_owned(), m.clone()]);
    }
    ctl.ok(&ten.iter().map(String::as_str).collect::<Vec<_>>())?;
    refused_unchanged(
        ctl,
        &["associate", "198.18.1.60", "m10"],
        "refused by rule max-members-per-havip: HAVIP 198.18.1.60 would have 11 members; a HAVIP may have at most 10",
    )?;

    // vnic-a is a member of the lab's HAVIP: four more make five.
    for vip in ["198.18.1.61", "198.18.1.62", "198.18.1.63", "198.18.1.64"] {
        ctl.ok(&["create", "--subnet", "vpc1", "--vip", vip, "--member", "vnic-a"])?;
    }
    refused_unchanged(
        ctl,
        &["create", "--subnet", "vpc1", "--vip", "198.18.1.65", "--member", "vnic-a"],
        "refused by rule max-havips-per-instance: instance vm-a would be a member of 6 HAVIPs; \
         an instance may be a member of at most 5",
    )?;

    ctl.ok(&["bind-eip", "198.18.1.50", "203.0.113.10"])?;
    refused_unchanged(
        ctl,
        &["bind-eip", "198.18.1.50", "203.0.113.11"],
        "refused by rule max-eips-per-havip: HAVIP 198.18.1.50 has EIP 203.0.113.10 bound already; \
         a HAVIP may have at most 1 EIP",
    )?;
    refused_unchanged(
        ctl,
        &["bind-eip", "198.18.1.61", "203.0.113.10"],
        "refused by rule eip-bound-once: EIP 203.0.113.10 would be bound to HAVIP 198.18.1.50 and HAVIP \
         198.18.1.61: an EIP is bound to one HAVIP",
    )?;
    refused_unchanged(
        ctl,
        &["bind-eip", "198.18.1.61", "198.18.2.99"],
        "refused by rule eip-outside-vpc: EIP 198.18.2.99 is inside VPC subnet vpc2 (198.18.2.0/24): \
         an EIP is a public address outside the VPC",
    )?;

    refused_unchanged(
        ctl,
        &["delete", "198.18.1.50"],
        "refused by rule delete-only-unused: HAVIP 198.18.1.50 still has members vnic-a, vnic-b and \
         EIP 203.0.113.10: disassociate and unbind first, or delete with force",
    )?;
    refused_unchanged(
        ctl,
        &["describe", "198.18.1.99"],
        "refused by rule havip-exists: HAVIP 198.18.1.99 does not exist",
    )?;

    // What is allowed: the next free address (after the gateway, past the
    // vNICs), Available until it has a member, forced deletion.
    let h = ctl.json::<havip_api::view::HavipView>(&["create", "--subnet", "vpc1"])?;
    ensure!(h.vip.to_string() == "198.18.1.2" && h.status == Status::Available, "allocated {h:?}");
    let h = ctl.json::<havip_api::view::HavipView>(&["associate", "198.18.1.2", "m10"])?;
    ensure!(h.status == Status::InUse, "with a member: {:?}", h.status);
    ctl.ok(&["delete", "198.18.1.60", "--force"])?;
    let events = ctl.ok(&["--json", "events", "--vip", "198.18.1.60"])?;
    ensure!(
        events.lines().count() >= 2 && events.lines().all(|l| l.contains("\"vip\":\"198.18.1.60\"")),
        "events of 198.18.1.60 (created, deleted), and only those:\n{events}"
    );
    ensure!(!ctl.desired()?.state.havips.contains_key(&"198.18.1.60".parse()?), "198.18.1.60 still there");
    Ok(())
}
