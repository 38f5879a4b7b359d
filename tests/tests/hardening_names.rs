//! Issue 12 (hardening), through `havipctl` against a running agent: every
//! address is checked for its class, every name goes through one validation
//! on every path in (a verb and `apply` refuse it by the same rule, with the
//! same words), every refusal names the rule actually broken, and what
//! `apply` creates the verbs can delete. Each refusal leaves the store as it
//! was.

mod control_support;

use std::{path::PathBuf, process::Output};

use anyhow::{ensure, Context, Result};
use control_support::Ctl;
use havip_lab::{netns::LabId, scenario::Lab};

/// A temporary file, removed when dropped (a failed test included).
struct TempFile(PathBuf);

impl TempFile {
    fn new(tag: &str, text: &str) -> Result<Self> {
        let path = std::env::temp_dir().join(format!("havip-hardening-{}-{tag}.toml", std::process::id()));
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
        Ok(Self(path))
    }

    fn arg(&self) -> String {
        self.0.to_string_lossy().into_owned()
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn text(out: &[u8]) -> String {
    String::from_utf8_lossy(out).trim().to_owned()
}

/// Runs a verb that must be refused with exit status `status` by rule
/// `rule`; checks the store did not move; returns the refusal's text
/// (after `refused by rule RULE: `).
fn refused(ctl: &Ctl, args: &[&str], status: i32, rule: &str) -> Result<String> {
    let before = ctl.desired()?;
    let out: Output = ctl.run(args)?;
    let shown: Vec<String> = args.iter().map(|a| format!("{:.60?}", a)).collect();
    let err = text(&out.stderr);
    ensure!(
        out.status.code() == Some(status),
        "havipctl {shown:?}: exit {:?}, expected {status}: {err:.300}",
        out.status.code()
    );
    let prefix = format!("havipctl: refused by rule {rule}: ");
    let Some(message) = err.strip_prefix(&prefix) else {
        anyhow::bail!("havipctl {shown:?}\n     got: {err:.300}\nexpected: {prefix}…");
    };
    ensure!(!message.contains('\n') && message.len() < 300, "an unbounded or multi-line refusal: {err:.300}");
    ensure!(ctl.desired()? == before, "havipctl {shown:?} was refused but the store changed");
    Ok(message.to_owned())
}

fn vnic_add<'a>(name: &'a str, instance: &'a str, ip: &'a str, mac: &'a str) -> Vec<&'a str> {
    vec!["vnic", "add", name, "--instance", instance, "--subnet", "vpc1", "--ip", ip, "--mac", mac]
}

#[test]
fn addresses_and_names_are_checked_on_every_path_in() -> Result<()> {
    let lab = Lab::create(LabId::unique("test"), true)?;
    lab.run(|lab| {
        lab.start_agent()?;
        let ctl = Ctl::of(lab)?;
        addresses(&ctl)?;
        names(&ctl)?;
        refusals_name_their_rule(&ctl)?;
        apply_then_delete(&ctl)
    })
}

/// Every address is checked for what it may be.
fn addresses(ctl: &Ctl) -> Result<()> {
    // A VRRP multicast group as a HAVIP would swallow every guest's adverts.
    let m = refused(ctl, &["create", "--subnet", "vpc1", "--vip", "224.0.0.18"], 1, "address-class")?;
    ensure!(
        m == "HAVIP 224.0.0.18 is a multicast address (224.0.0.0/4): a VIP must be a unicast address",
        "{m}"
    );
    let m = refused(ctl, &["create", "--subnet", "vpc1", "--vip", "127.0.0.1"], 1, "address-class")?;
    ensure!(m.starts_with("HAVIP 127.0.0.1 is a loopback address"), "{m}");
    ctl.ok(&["create", "--subnet", "vpc1", "--vip", "198.18.1.70"])?;
    let m = refused(ctl, &["bind-eip", "198.18.1.70", "255.255.255.255"], 1, "address-class")?;
    ensure!(m.contains("EIP 255.255.255.255 is the limited broadcast address"), "{m}");
    let m =
        refused(ctl, &vnic_add("vnic-z", "vm-z", "169.254.1.1", "02:00:00:00:09:01"), 1, "address-class")?;
    ensure!(m.starts_with("vNIC vnic-z: address 169.254.1.1 is a link-local address"), "{m}");

    let m = refused(ctl, &["subnet", "add", "vpc0", "198.18.0.0/16"], 1, "subnets-disjoint")?;
    ensure!(m == "subnet vpc0 (198.18.0.0/16) overlaps subnet vpc1 (198.18.1.0/24)", "{m}");
    let m = refused(ctl, &["subnet", "add", "all", "0.0.0.0/0"], 1, "subnet-prefix")?;
    ensure!(m == "subnet all (0.0.0.0/0): a VPC subnet is /8 to /32", "{m}");
    let m = refused(ctl, &["subnet", "add", "lo", "127.0.0.0/8"], 1, "address-class")?;
    ensure!(m.starts_with("subnet lo (127.0.0.0/8) holds loopback addresses"), "{m}");
    // The same rule from a file.
    let file = TempFile::new("overlap", "[[subnets]]\nname = \"vpc0\"\ncidr = \"198.18.1.128/25\"\n")?;
    refused(ctl, &["apply", "-f", &file.arg()], 1, "subnets-disjoint")?;
    Ok(())
}

/// One validation for every name, through a verb and through `apply` alike.
fn names(ctl: &Ctl) -> Result<()> {
    // One argv string holds at most 128 KiB (MAX_ARG_STRLEN): the CLI gets
    // 100 kB, the file the full megabyte.
    let cli_long = "i".repeat(100_000);
    let file_long = "i".repeat(1 << 20);
    for (cli, file) in [("vm\nz", "vm\nz"), (cli_long.as_str(), file_long.as_str())] {
        let by_verb =
            refused(ctl, &vnic_add("vnic-z", cli, "198.18.1.99", "02:00:00:00:09:01"), 1, "well-formed")?;
        ensure!(by_verb.starts_with("vNIC vnic-z: instance name "), "{by_verb}");
        let toml = format!(
            "[[vnics]]\nname = \"vnic-z\"\ninstance = {}\nsubnet = \"vpc1\"\nip = \"198.18.1.99\"\nmac = \"02:00:00:00:09:01\"\n",
            serde_json::to_string(file)?
        );
        let f = TempFile::new("name", &toml)?;
        let by_file = refused(ctl, &["apply", "-f", &f.arg()], 1, "well-formed")?;
        if cli == file {
            ensure!(by_file == by_verb, "one validation, one message:\n verb: {by_verb}\n file: {by_file}");
        } else {
            ensure!(by_file.starts_with("vNIC vnic-z: instance name "), "{by_file}");
        }
    }
    // Names of subnets from a file, and member references, too.
    let f = TempFile::new("subnet", "[[subnets]]\nname = \"a b\"\ncidr = \"10.9.0.0/24\"\n")?;
    refused(ctl, &["apply", "-f", &f.arg()], 1, "well-formed")?;
    let f = TempFile::new(
        "member",
        "[[havips]]\nvip = \"198.18.1.71\"\nsubnet = \"vpc1\"\nmembers = [\"vnic-a\\n\"]\n",
    )?;
    refused(ctl, &["apply", "-f", &f.arg()], 1, "well-formed")?;
    // Whatever was refused, the tables still list.
    ctl.ok(&["vnic", "list"])?;
    ctl.ok(&["subnet", "list"])?;
    Ok(())
}

/// A refusal names the rule actually broken: the HAVIP exists, it just has
/// no EIP; the vNIC exists, it just is not a member.
fn refusals_name_their_rule(ctl: &Ctl) -> Result<()> {
    // 198.18.1.70 was created without an EIP, by addresses().
    let m = refused(ctl, &["unbind-eip", "198.18.1.70"], 1, "eip-bound")?;
    ensure!(m == "HAVIP 198.18.1.70 has no EIP bound", "{m}");
    let m = refused(ctl, &["disassociate", "198.18.1.70", "vnic-a"], 1, "member-exists")?;
    ensure!(m == "vNIC vnic-a is not a member of HAVIP 198.18.1.70", "{m}");
    // What does not exist is still a 404.
    refused(ctl, &["unbind-eip", "198.18.1.72"], 2, "havip-exists")?;
    refused(ctl, &["disassociate", "198.18.1.70", "vnic-nope"], 2, "vnic-exists")?;
    ctl.ok(&["delete", "198.18.1.70"])?;
    Ok(())
}

/// Everything `apply` can create, with names at their longest, the verbs
/// can delete, leaving the store as it was.
fn apply_then_delete(ctl: &Ctl) -> Result<()> {
    let before = ctl.desired()?.state;
    let n = |c: char| format!("{c}.Z_9-{}", "a".repeat(57));
    let (subnet, vnic, host, instance) = (n('s'), n('v'), n('h'), n('i'));
    let toml = format!(
        "[[subnets]]\nname = \"{subnet}\"\ncidr = \"198.18.7.0/24\"\n\
         [[vnics]]\nname = \"{vnic}\"\nhost = \"{host}\"\nifname = \"tap.Z_9-0123456\"\ninstance = \"{instance}\"\n\
         subnet = \"{subnet}\"\nip = \"198.18.7.11\"\nmac = \"02:00:00:00:07:0b\"\n\
         [[havips]]\nvip = \"198.18.7.50\"\nsubnet = \"{subnet}\"\nmembers = [\"{vnic}\"]\neip = \"203.0.113.77\"\n"
    );
    let f = TempFile::new("full", &toml)?;
    ctl.ok(&["apply", "-f", &f.arg()])?;
    ensure!(ctl.desired()?.state != before, "apply changed nothing");
    ctl.ok(&["vnic", "list"])?;
    ctl.ok(&["unbind-eip", "198.18.7.50"])?;
    ctl.ok(&["disassociate", "198.18.7.50", &vnic])?;
    ctl.ok(&["delete", "198.18.7.50"])?;
    ctl.ok(&["vnic", "delete", &vnic])?;
    ctl.ok(&["subnet", "delete", &subnet])?;
    ensure!(ctl.desired()?.state == before, "not everything apply created could be deleted");
    Ok(())
}
