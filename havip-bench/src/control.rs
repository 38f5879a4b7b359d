//! Control plane: the real agent started on one config file with 10,000
//! HAVIPs (2 members each, at most 5 HAVIPs per instance, so 4,000 vNICs),
//! timed from spawn to READY=1 (config parsed and checked, store written,
//! program loaded, first reconcile done), then its resident memory.
//!
//! None of the 4,000 vNICs exists in the agent's namespace: one host does
//! not carry 2,000 instances. So the vips map gets every HAVIP but the
//! members map and the attachments stay empty; what is timed is the store,
//! the rules and the vips side of the reconcile.

use std::{
    fmt::Write,
    fs,
    path::{Path, PathBuf},
    time::Instant,
};

use anyhow::{ensure, Context, Result};
use aya::maps::{HashMap, Map, MapData};
use havip_agent::datapath::loader::versioned_dir;
use havip_common::{maps, VipKey, VipRef};
use havip_lab::agent::{self, Agent, Spec};
use serde::Serialize;

use crate::{fill, topo};

const PER_INSTANCE: u32 = 5;
const MEMBERS: u32 = 2;

#[derive(Serialize)]
pub struct ControlPlane {
    pub havips: u32,
    pub vnics: u32,
    pub config_bytes: usize,
    /// Spawn -> READY=1 (polled every 20 ms).
    pub ready_ms: f64,
    pub vips_in_map: usize,
    pub rss_kib: u64,
    pub peak_rss_kib: u64,
}

/// A directory removed on drop.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        if let Err(e) = fs::remove_dir_all(&self.0) {
            eprintln!("havip-bench: cleanup: removing {}: {e}", self.0.display());
        }
    }
}

fn config(dir: &Path, havips: u32) -> String {
    let vnics = havips.div_ceil(PER_INSTANCE) * MEMBERS;
    let mut c = format!(
        "[agent]\nstore = \"{}\"\napi_socket = \"{}\"\n\n[dataplane]\nmax_vips = {}\nmax_vnics = {}\n\n\
         [[subnets]]\nname = \"vpc1\"\ncidr = \"198.18.0.0/15\"\n",
        dir.join("state.redb").display(),
        dir.join("api.sock").display(),
        topo::CAPACITY.max_vips,
        // The agent refuses more configured vNICs than tx_ports holds.
        vnics.next_power_of_two(),
    );
    for k in 0..vnics {
        let ip = std::net::Ipv4Addr::from(u32::from(std::net::Ipv4Addr::new(198, 19, 128, 0)) + k);
        let [_, _, hi, lo] = k.to_be_bytes();
        let _ = write!(
            c,
            "\n[[vnics]]\nname = \"vnic-{k}\"\ninstance = \"i-{k}\"\nsubnet = \"vpc1\"\nip = \"{ip}\"\nmac = \"02:00:c6:13:{hi:02x}:{lo:02x}\"\n"
        );
    }
    for i in 0..havips {
        // HAVIPs 5g..5g+4 share the vNICs 2g, 2g+1: five HAVIPs per instance.
        let g = i / PER_INSTANCE;
        let _ = write!(
            c,
            "\n[[havips]]\nvip = \"{}\"\nsubnet = \"vpc1\"\nmembers = [\"vnic-{}\", \"vnic-{}\"]\n",
            fill::vip_addr(i + 2),
            g * MEMBERS,
            g * MEMBERS + 1
        );
    }
    c
}

fn status_kib(pid: u32, field: &str) -> Result<u64> {
    let text = fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = text.lines().find(|l| l.starts_with(field)).with_context(|| format!("no {field}"))?;
    Ok(line.split_whitespace().nth(1).context("malformed status")?.parse()?)
}

/// The pid of the process whose command line names `config`.
fn pid_of(config: &Path) -> Result<u32> {
    let needle = config.as_os_str().as_encoded_bytes();
    for e in fs::read_dir("/proc")?.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else { continue };
        let cmdline = fs::read(e.path().join("cmdline")).unwrap_or_default();
        if cmdline.split(|&b| b == 0).any(|arg| arg == needle) {
            return Ok(pid);
        }
    }
    anyhow::bail!("no process runs with {}", config.display())
}

pub fn run(havips: u32, pin_root: &Path) -> Result<ControlPlane> {
    let ns = topo::netns("cp")?;
    let dir = TempDir(topo::run_id().run_dir());
    fs::create_dir_all(&dir.0).with_context(|| format!("creating {}", dir.0.display()))?;
    let cfg_path = dir.0.join("havip.toml");
    let text = config(&dir.0, havips);
    fs::write(&cfg_path, &text).with_context(|| format!("writing {}", cfg_path.display()))?;
    let spec = Spec {
        bin: agent::locate_binary()?,
        config: cfg_path.clone(),
        netns: ns.name().to_owned(),
        pin_dir: pin_root.to_owned(),
        dir: dir.0.clone(),
    };

    let start = Instant::now();
    let agent = Agent::start(spec, None).context("starting the agent on 10,000 HAVIPs")?;
    let ready = start.elapsed();
    let pid = pid_of(&cfg_path)?;
    let (rss, peak) = (status_kib(pid, "VmRSS:")?, status_kib(pid, "VmHWM:")?);
    let vips_path = versioned_dir(pin_root).join(maps::VIPS);
    let vips: HashMap<_, VipKey, VipRef> =
        HashMap::try_from(Map::HashMap(MapData::from_pin(&vips_path).context("opening the pinned vips")?))?;
    let vips_in_map = vips.keys().count();
    ensure!(vips_in_map == havips as usize, "the agent put {vips_in_map} of {havips} HAVIPs in the vips map");
    // Stops the agent and tears its pins down before the namespace goes.
    drop(agent);
    Ok(ControlPlane {
        havips,
        vnics: havips.div_ceil(PER_INSTANCE) * MEMBERS,
        config_bytes: text.len(),
        ready_ms: ready.as_secs_f64() * 1e3,
        vips_in_map,
        rss_kib: rss,
        peak_rss_kib: peak,
    })
}
