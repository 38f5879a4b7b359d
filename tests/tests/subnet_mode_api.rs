//! A subnet's mode (issue 11) through `havipctl` against a running agent:
//! set, shown (`subnet list`, `subnet describe`, `describe VIP`, /metrics),
//! refused by name with nothing changed, and kept across a restart.

mod control_support;

use anyhow::{ensure, Context, Result};
use control_support::{metrics, Ctl};
use havip_api::view::SubnetView;
use havip_lab::{netns::LabId, scenario::Lab, topology::VIP};
use havip_model::SubnetMode;

#[test]
fn a_subnet_mode_is_set_shown_refused_and_kept() -> Result<()> {
    let lab = Lab::create(LabId::unique("test"), true)?;
    lab.run(|lab| {
        lab.start_agent()?;
        let ctl = Ctl::of(lab)?;
        modes(lab, &ctl)
    })
}

fn modes(lab: &mut Lab, ctl: &Ctl) -> Result<()> {
    // The lab's vpc1 is unicast until told otherwise.
    let list = ctl.ok(&["subnet", "list"])?;
    ensure!(list.lines().next().unwrap_or("").contains("MODE"), "{list}");
    ensure!(list.lines().any(|l| l.starts_with("vpc1") && l.contains(" unicast ")), "{list}");
    let vpc1: SubnetView = ctl.json(&["subnet", "describe", "vpc1"])?;
    ensure!(vpc1.mode == SubnetMode::Unicast && vpc1.broadcast.is_none(), "{vpc1:?}");

    // Refused by name, nothing changed.
    let before = ctl.desired()?;
    for (args, want) in [
        (
            &["subnet", "mode", "vpc1", "multicast"][..],
            "havipctl: refused by rule well-formed: subnet vpc1: subnet mode \"multicast\": must be unicast or \
             broadcast-domain",
        ),
        (
            &["subnet", "mode", "vpc1", "broadcast-domain", "--storm-pps", "0"][..],
            "havipctl: refused by rule storm-control: subnet vpc1: storm_pps 0 is outside 1-1000000 (frames per \
             second per vNIC)",
        ),
        (&["subnet", "mode", "vpc9", "unicast"][..], "havipctl: refused by rule subnet-exists: subnet vpc9 does not exist"),
    ] {
        let got = ctl.refused(args)?;
        ensure!(got == want, "havipctl {args:?}\n     got: {got}\nexpected: {want}");
    }
    ensure!(ctl.run(&["subnet", "mode", "vpc1", "multicast"])?.status.code() == Some(1), "a refusal exits 1");
    ensure!(
        ctl.run(&["subnet", "mode", "vpc9", "unicast"])?.status.code() == Some(2),
        "no such subnet exits 2"
    );
    ensure!(ctl.desired()? == before, "a refused mode changed the store");

    // Set at runtime; shown everywhere.
    let text =
        ctl.ok(&["subnet", "mode", "vpc1", "broadcast-domain", "--storm-pps", "500", "--storm-burst", "50"])?;
    ensure!(
        text.contains("Mode:       broadcast-domain\n")
            && text.contains("Storm:      500 frames/s per vNIC, burst 50"),
        "{text}"
    );
    let vpc1: SubnetView = ctl.json(&["subnet", "describe", "vpc1"])?;
    ensure!(
        (vpc1.mode, vpc1.storm_pps, vpc1.storm_burst) == (SubnetMode::BroadcastDomain, 500, 50),
        "{vpc1:?}"
    );
    let b = vpc1.broadcast.context("a broadcast domain has its broadcast section")?;
    ensure!(!b.hosts.is_empty(), "the lab's vNICs live on a host: {b:?}");
    let detail = ctl.ok(&["describe", &VIP.to_string()])?;
    ensure!(detail.contains("Subnet:     vpc1 (broadcast-domain)\n"), "{detail}");
    let samples = metrics(lab)?;
    let has = |name: &str| samples.iter().any(|(n, v)| n == name && *v == 1.0);
    ensure!(has("havip_subnet_mode{subnet=\"vpc1\",mode=\"broadcast-domain\"}"), "{samples:?}");

    // A subnet made through the API keeps its mode across a restart (the config's own subnets
    // are what the config says after every start, as any object it names).
    ctl.ok(&["subnet", "add", "vpc2", "198.18.2.0/24", "--mode", "broadcast-domain", "--storm-burst", "9"])?;
    lab.agent()?.restart()?;
    let vpc2: SubnetView = ctl.json(&["subnet", "describe", "vpc2"])?;
    ensure!(
        (vpc2.mode, vpc2.storm_pps, vpc2.storm_burst) == (SubnetMode::BroadcastDomain, 1000, 9),
        "{vpc2:?}"
    );
    let list = ctl.ok(&["subnet", "list"])?;
    ensure!(list.lines().any(|l| l.starts_with("vpc2") && l.contains(" broadcast-domain ")), "{list}");

    // Unicast again, and a deleted subnet takes its settings along.
    ctl.ok(&["subnet", "mode", "vpc2", "unicast"])?;
    ctl.ok(&["subnet", "delete", "vpc2"])?;
    ensure!(!ctl.desired()?.state.subnet_settings.contains_key("vpc2"), "settings of a deleted subnet");
    Ok(())
}
