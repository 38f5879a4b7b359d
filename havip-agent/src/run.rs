//! `havip-agent run`: bring the data plane to the configured state, then
//! report claims until told to stop. Stopping leaves everything attached.

use std::{collections::HashMap, ffi::CString, path::Path};

use anyhow::{Context, Result};
use havip_common::{Mac, VipKey, VipState};
use tokio::signal::unix::{signal, SignalKind};
use tracing::{info, warn};

use crate::{
    config::Config,
    dataplane::{Attach, Dataplane},
    events::{self, PortNames},
    notify,
    reconcile::{reconcile, Desired},
};

fn ifindex_of(name: &str) -> Option<u32> {
    let c = CString::new(name).ok()?;
    // SAFETY: a valid C string; returns 0 when there is no such interface.
    let i = unsafe { libc::if_nametoindex(c.as_ptr()) };
    (i != 0).then_some(i)
}

/// Attaches to every configured vNIC that exists, detaches from the ones no
/// longer configured; returns vNIC name -> ifindex.
fn attach_vnics(dp: &mut Dataplane, cfg: &Config) -> Result<HashMap<String, u32>> {
    let mut present = HashMap::new();
    for name in cfg.vnics.keys() {
        let Some(ifindex) = ifindex_of(name) else {
            warn!(vnic = %name, "vNIC not present: its memberships wait until it appears");
            continue;
        };
        let how = dp.attach(name)?;
        info!(vnic = %name, ifindex, hitless = how == Attach::Swapped, "attached");
        present.insert(name.clone(), ifindex);
    }
    for name in dp.attached()? {
        if !cfg.vnics.contains_key(&name) {
            dp.detach(&name)?;
            info!(vnic = %name, "detached: no longer configured");
        }
    }
    Ok(present)
}

fn log_holders(vips: impl Iterator<Item = (VipKey, VipState)>, names: &PortNames) {
    for (key, st) in vips {
        match names.get(&st.holder_ifindex) {
            Some((vnic, instance)) => info!(
                vip = %key.ip(), vnic, instance, epoch = st.epoch, mac = %Mac(&st.holder_mac), "holder kept"
            ),
            None => info!(vip = %key.ip(), epoch = st.epoch, "no holder yet"),
        }
    }
}

pub async fn run(config: &Path, pin_root: &Path) -> Result<()> {
    let cfg = Config::load(config)?;
    let mut dp = Dataplane::open(pin_root, cfg.capacity)?;
    info!(dir = %dp.dir().display(), "data plane loaded");

    let present = attach_vnics(&mut dp, &cfg)?;
    let mut maps = dp.take_maps()?;
    let changes = reconcile(&mut maps, &Desired::from_config(&cfg, &present)).context("reconciling maps")?;
    info!(?changes, "maps reconciled");

    let names: PortNames = present
        .iter()
        .map(|(name, &ifindex)| (ifindex, (name.clone(), cfg.vnics[name].instance.clone())))
        .collect();
    log_holders(maps.vips.iter().filter_map(Result::ok), &names);

    let mut term = signal(SignalKind::terminate()).context("installing SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing SIGINT handler")?;
    notify::notify("READY=1")?;
    info!(havips = cfg.havips.len(), vnics = present.len(), "ready");

    tokio::select! {
        r = events::follow(maps.events, names) => r?,
        _ = term.recv() => info!("SIGTERM: stopping; programs stay attached and holders stay in the kernel"),
        _ = int.recv() => info!("SIGINT: stopping; programs stay attached and holders stay in the kernel"),
    }
    notify::notify("STOPPING=1")?;
    Ok(())
}
