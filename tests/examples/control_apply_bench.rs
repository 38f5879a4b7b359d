//! How the control plane copes with 1,000 HAVIPs applied from one file: the
//! time `havipctl apply -f` takes (one store transaction), the time until the
//! maps follow, describe/export of all of them, an agent restart with them
//! in the store, and the agent's memory. A measurement, not a test:
//!
//!     cargo build --release --workspace --bins
//!     cargo run --release -p havip-tests --example control_apply_bench
//!
//! It builds its own namespace with 20 veth vNICs (each HAVIP has two of
//! them as members, so the members map is filled too) and removes it after.

#[path = "../tests/control_support/mod.rs"]
mod control_support;

use std::{
    fmt::Write as _,
    fs,
    net::Ipv4Addr,
    time::{Duration, Instant},
};

use anyhow::{ensure, Result};
use control_support::Ctl;
use havip_api::view::{AgentStatus, Applied, HavipView};
use havip_lab::{
    agent::{self, Agent},
    cmd,
    netns::{LabId, Scratch},
    wait,
};

const HAVIPS: u32 = 1000;
const VNICS: u32 = 20;
/// HAVIPs that also get an EIP (the EIP range has 254 addresses).
const WITH_EIP: u32 = 250;

/// How long `f` took, and what it gave.
fn timed<T>(f: impl FnOnce() -> Result<T>) -> Result<(T, Duration)> {
    let start = Instant::now();
    let v = f()?;
    Ok((v, start.elapsed()))
}

fn config(dir: &std::path::Path) -> String {
    let mut c = format!(
        "[agent]\nstore = \"{}\"\napi_socket = \"{}\"\n\n[limits]\nmax_havips_per_instance = {HAVIPS}\n\n\
         [[subnets]]\nname = \"bench\"\ncidr = \"198.18.0.0/16\"\n",
        dir.join("state.redb").display(),
        dir.join("api.sock").display()
    );
    for i in 0..VNICS {
        let _ = write!(
            c,
            "\n[[vnics]]\nname = \"vb{i}\"\ninstance = \"inst{i}\"\nsubnet = \"bench\"\nip = \"198.18.0.{}\"\nmac = \"02:00:00:00:00:{i:02x}\"\n",
            10 + i
        );
    }
    c
}

fn havips_file() -> String {
    let mut f = String::new();
    let base = u32::from(Ipv4Addr::new(198, 18, 4, 1));
    for i in 0..HAVIPS {
        let vip = Ipv4Addr::from(base + i);
        let _ = write!(
            f,
            "[[havips]]\nvip = \"{vip}\"\nsubnet = \"bench\"\nmembers = [\"vb{}\", \"vb{}\"]\n",
            i % VNICS,
            (i + 1) % VNICS
        );
        if i < WITH_EIP {
            let _ = writeln!(f, "eip = \"203.0.113.{}\"", i + 1);
        }
        f.push('\n');
    }
    f
}

fn main() -> Result<()> {
    let mut scratch = Scratch::new("test")?;
    let ns = scratch.netns("bench")?;
    let dir = scratch.id.run_dir();
    fs::create_dir_all(&dir)?;
    // The agent is stopped and torn down inside; the files, the pins and the
    // namespace go with `scratch`.
    bench(&scratch.id, &ns, &dir)
}

fn bench(id: &LabId, ns: &str, dir: &std::path::Path) -> Result<()> {
    for i in 0..VNICS {
        cmd::ip(&[
            "-n",
            ns,
            "link",
            "add",
            &format!("vb{i}"),
            "type",
            "veth",
            "peer",
            "name",
            &format!("pb{i}"),
        ])?;
        cmd::ip(&["-n", ns, "link", "set", &format!("vb{i}"), "up"])?;
        cmd::ip(&["-n", ns, "link", "set", &format!("pb{i}"), "up"])?;
    }
    let spec = agent::Spec {
        bin: agent::locate_binary()?,
        config: dir.join("havip.toml"),
        netns: ns.to_owned(),
        pin_dir: id.pin_dir(),
        dir: dir.to_owned(),
    };
    fs::write(&spec.config, config(dir))?;
    let file = dir.join("havips.toml");
    fs::write(&file, havips_file())?;
    let ctl = Ctl::at(dir.join("api.sock"))?;
    let status = || ctl.json::<AgentStatus>(&["status"]);

    let mut agent = Agent::start(spec, None)?;
    let idle = status()?;
    let file_arg = file.to_string_lossy().into_owned();
    let start = Instant::now();
    let (applied, apply_took) = timed(|| ctl.json::<Applied>(&["apply", "-f", &file_arg]))?;
    let reconciled = wait::until("the maps to follow the apply", Duration::from_secs(60), || {
        Ok((status()?.reconciled_revision >= applied.revision).then(|| start.elapsed()))
    })?;
    let loaded = status()?;
    let (again, again_took) = timed(|| ctl.json::<Applied>(&["apply", "-f", &file_arg]))?;
    ensure!(again.revision == applied.revision, "applying the same file again changed the store");
    let (all, describe_took) = timed(|| ctl.json::<Vec<HavipView>>(&["describe"]))?;
    ensure!(all.len() == HAVIPS as usize, "{} HAVIPs described", all.len());
    let (_, export_took) = timed(|| ctl.json::<serde_json::Value>(&["export"]))?;
    let ((), restart_took) = timed(|| agent.restart())?;
    let after_restart = status()?;
    drop(agent);

    println!("1,000 HAVIPs applied from one file ({HAVIPS} HAVIPs, 2 members each, {WITH_EIP} with an EIP, {VNICS} vNICs)");
    println!("  havipctl apply -f (one transaction)  {:>8.1} ms", ms(apply_took));
    println!("  ... until the maps follow            {:>8.1} ms", ms(reconciled));
    println!("  apply again (no change)              {:>8.1} ms", ms(again_took));
    println!("  havipctl describe (all)              {:>8.1} ms", ms(describe_took));
    println!("  havipctl export                      {:>8.1} ms", ms(export_took));
    println!("  agent restart to READY=1             {:>8.1} ms", ms(restart_took));
    println!("  agent RSS idle (20 vNICs, 0 HAVIPs)  {:>8} KiB", idle.rss_kib);
    println!(
        "  agent RSS with 1,000 HAVIPs          {:>8} KiB (peak {} KiB)",
        loaded.rss_kib, loaded.peak_rss_kib
    );
    println!(
        "  agent RSS after a restart            {:>8} KiB (peak {} KiB)",
        after_restart.rss_kib, after_restart.peak_rss_kib
    );
    let store = fs::metadata(dir.join("state.redb")).map(|m| m.len() / 1024).unwrap_or(0);
    println!("  store file                           {store:>8} KiB");
    Ok(())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
