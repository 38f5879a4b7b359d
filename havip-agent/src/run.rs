//! `havip-agent run`: bring the data plane to the configured state, then
//! report claims and follow the uplink until told to stop. Stopping leaves
//! everything attached.

use std::{collections::HashMap, ffi::CString, path::Path};

use anyhow::{Context, Result};
use havip_common::{Mac, VipKey, VipState};
use tokio::{
    signal::unix::{signal, SignalKind},
    sync::watch,
};
use tracing::{info, warn};

use crate::{
    config::Config,
    dataplane::{Attach, Dataplane, Maps},
    events::{self, PortNames},
    notify,
    reconcile::{reconcile, Desired, Uplink},
    uplink,
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

/// Attaches `xdp_uplink` and starts following the uplink's next hop; the
/// receiver sees the uplink once it is usable.
async fn start_uplink(dp: &mut Dataplane, cfg: &Config) -> Result<watch::Receiver<Option<Uplink>>> {
    let (tx, rx) = watch::channel(None);
    let Some(spec) = cfg.uplink.clone() else { return Ok(rx) };
    if ifindex_of(&spec.name).is_none() {
        warn!(uplink = %spec.name, "uplink not present: EIPs wait until it appears and the agent restarts");
        return Ok(rx);
    }
    let how = dp.attach_uplink(&spec.name)?;
    info!(uplink = %spec.name, hitless = how == Attach::Swapped, "attached");
    let handle = uplink::connect()?;
    tx.send_replace(uplink::resolve(&handle, &spec).await?);
    tokio::spawn(uplink::follow(handle, spec, tx));
    Ok(rx)
}

fn log_holders(maps: &Maps, names: &PortNames) {
    for (key, st) in maps.vips.iter().filter_map(Result::ok) {
        log_holder(key, &st, names);
    }
}

fn log_holder(key: VipKey, st: &VipState, names: &PortNames) {
    match names.get(&st.holder_ifindex) {
        Some((vnic, instance)) => {
            info!(vip = %key.ip(), vnic, instance, epoch = st.epoch, mac = %Mac(&st.holder_mac), "holder kept")
        }
        None => info!(vip = %key.ip(), epoch = st.epoch, "no holder yet"),
    }
}

pub async fn run(config: &Path, pin_root: &Path) -> Result<()> {
    let cfg = Config::load(config)?;
    let mut dp = Dataplane::open(pin_root, cfg.capacity)?;
    info!(dir = %dp.dir().display(), "data plane loaded");

    let present = attach_vnics(&mut dp, &cfg)?;
    let mut uplink_rx = start_uplink(&mut dp, &cfg).await?;
    let mut maps = dp.take_maps()?;
    let ring = dp.take_events()?;
    let mut desired = Desired::from_config(&cfg, &present);
    desired.uplink = *uplink_rx.borrow_and_update();
    let changes = reconcile(&mut maps, &desired).context("reconciling maps")?;
    info!(?changes, "maps reconciled");

    let names: PortNames = present
        .iter()
        .map(|(name, &ifindex)| (ifindex, (name.clone(), cfg.vnics[name].instance.clone())))
        .collect();
    log_holders(&maps, &names);

    let mut term = signal(SignalKind::terminate()).context("installing SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing SIGINT handler")?;
    notify::notify("READY=1")?;
    info!(havips = cfg.havips.len(), vnics = present.len(), "ready");

    let events = events::follow(ring, names);
    tokio::pin!(events);
    loop {
        tokio::select! {
            r = &mut events => return r,
            Ok(()) = uplink_rx.changed() => {
                desired.uplink = *uplink_rx.borrow_and_update();
                let changes = reconcile(&mut maps, &desired).context("reconciling the uplink")?;
                info!(?changes, "maps reconciled");
            }
            _ = term.recv() => break info!("SIGTERM: stopping; programs stay attached and holders stay in the kernel"),
            _ = int.recv() => break info!("SIGINT: stopping; programs stay attached and holders stay in the kernel"),
        }
    }
    notify::notify("STOPPING=1")?;
    Ok(())
}
