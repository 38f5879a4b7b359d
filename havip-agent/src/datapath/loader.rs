//! The XDP data plane: load the embedded object, reuse or create the pinned
//! maps under a versioned directory, and attach `xdp_vnic` to vNICs (and
//! `xdp_uplink`, `xdp_underlay` to the uplink and underlay NICs, and
//! `xdp_replicator` + `tc_replicate` to the replicator peer) through pinned
//! links, so the programs outlive the agent and a restart swaps the program
//! in place without dropping a packet.

use std::{
    fs,
    path::{Path, PathBuf},
};

use anyhow::{bail, Context, Result};
use aya::{
    maps::{MapData, MapInfo, MapType, RingBuf},
    programs::{
        links::{FdLink, PinnedLink},
        tc::{SchedClassifierLink, TcAttachOptions},
        xdp::XdpLink,
        LinkOrder, SchedClassifier, TcAttachType, Xdp, XdpMode,
    },
    Ebpf, EbpfLoader,
};
use aya_obj::programs::XdpAttachType;
use havip_common::{
    maps, BcastPrefix, BcastRemotes, BcastSubnet, BcastVnic, EipBinding, EipKey, GlobalCounter, MemberInfo,
    MemberKey, SubnetCounters, UnderlayPort, UplinkPort, VipConfig, VipCounters, VipKey, VipNat, VipRef,
    VipState, VrrpSeen, VtepInfo, VtepKey, ABI_VERSION, DEFAULT_MAX_HOSTS, DEFAULT_MAX_SUBNETS, EVENTS_BYTES,
    PROG_HOLDER_WRITE, PROG_REPLICATE, PROG_REPLICATOR, PROG_UNDERLAY, PROG_UPLINK, PROG_VNIC,
};
use havip_model::Capacity;
use tracing::{info, warn};

use super::{bpffs::PinLock, maps::KernelMaps};

/// What attaching to a vNIC did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attach {
    /// No link was pinned: attached and pinned a new one.
    New,
    /// A pinned link existed: the program was swapped in place (hitless).
    Swapped,
}

/// The loaded object, its pin directory and its links.
pub struct Dataplane {
    ebpf: Ebpf,
    dir: PathBuf,
    /// This process owns the pin directory while the data plane is open.
    _lock: PinLock,
}

/// `DIR/v<ABI>`: a layout change moves to a new directory rather than
/// misreading old maps.
pub fn versioned_dir(pin_root: &Path) -> PathBuf {
    pin_root.join(format!("v{ABI_VERSION}"))
}

fn links_dir(dir: &Path) -> PathBuf {
    dir.join("links")
}

/// Apart from `links/` (one pin per vNIC) and from the `uplink` map.
fn uplink_dir(dir: &Path) -> PathBuf {
    dir.join("links-uplink")
}

/// The underlay NIC's link, apart from the others and from the `underlay` map.
fn underlay_dir(dir: &Path) -> PathBuf {
    dir.join("links-underlay")
}

/// The replicator peer's XDP link (`xdp_replicator`).
fn replicator_dir(dir: &Path) -> PathBuf {
    dir.join("links-replicator")
}

/// The replicator peer's TCX ingress link (`tc_replicate`), apart from its XDP link.
fn replicate_dir(dir: &Path) -> PathBuf {
    dir.join("links-replicate")
}

/// Every directory of pinned links, one link per interface name in each.
fn all_link_dirs(dir: &Path) -> [PathBuf; 5] {
    [links_dir(dir), uplink_dir(dir), underlay_dir(dir), replicator_dir(dir), replicate_dir(dir)]
}

struct MapSpec {
    name: &'static str,
    ty: MapType,
    key: usize,
    value: usize,
    max_entries: u32,
}

/// What every pinned map must look like for this build (aya, unlike libbpf,
/// reuses a pinned map without checking it).
fn expected_maps(cap: Capacity) -> [MapSpec; 21] {
    // struct bpf_devmap_val: egress ifindex + optional program fd/id.
    let devmap_val = 8;
    [
        MapSpec {
            name: maps::VIPS,
            ty: MapType::Hash,
            key: size_of::<VipKey>(),
            value: size_of::<VipRef>(),
            max_entries: cap.max_vips,
        },
        MapSpec {
            name: maps::VIP_STATE,
            ty: MapType::Array,
            key: 4,
            value: size_of::<VipState>(),
            max_entries: cap.max_vips,
        },
        MapSpec {
            name: maps::MEMBERS,
            ty: MapType::Hash,
            key: size_of::<MemberKey>(),
            value: size_of::<MemberInfo>(),
            max_entries: cap.max_members,
        },
        MapSpec {
            name: maps::VIP_CONFIG,
            ty: MapType::Array,
            key: 4,
            value: size_of::<VipConfig>(),
            max_entries: cap.max_vips,
        },
        MapSpec {
            name: maps::VRRP,
            ty: MapType::Hash,
            key: size_of::<MemberKey>(),
            value: size_of::<VrrpSeen>(),
            max_entries: cap.max_members,
        },
        MapSpec {
            name: maps::TX_PORTS,
            ty: MapType::DevMapHash,
            key: 4,
            value: devmap_val,
            max_entries: cap.max_vnics,
        },
        MapSpec {
            name: maps::VIP_STATS,
            ty: MapType::PerCpuArray,
            key: 4,
            value: size_of::<VipCounters>(),
            max_entries: cap.max_vips,
        },
        MapSpec {
            name: maps::GLOBAL_STATS,
            ty: MapType::PerCpuArray,
            key: 4,
            value: 8,
            max_entries: GlobalCounter::MAX as u32,
        },
        MapSpec { name: maps::EVENTS, ty: MapType::RingBuf, key: 0, value: 0, max_entries: EVENTS_BYTES },
        MapSpec {
            name: maps::EIPS,
            ty: MapType::Hash,
            key: size_of::<EipKey>(),
            value: size_of::<EipBinding>(),
            max_entries: cap.max_vips,
        },
        MapSpec {
            name: maps::VIP_NAT,
            ty: MapType::Hash,
            key: size_of::<VipKey>(),
            value: size_of::<VipNat>(),
            max_entries: cap.max_vips,
        },
        MapSpec {
            name: maps::UPLINK,
            ty: MapType::Array,
            key: 4,
            value: size_of::<UplinkPort>(),
            max_entries: 1,
        },
        MapSpec {
            name: maps::UNDERLAY,
            ty: MapType::Array,
            key: 4,
            value: size_of::<UnderlayPort>(),
            max_entries: 1,
        },
        MapSpec {
            name: maps::VTEPS,
            ty: MapType::Hash,
            key: size_of::<VtepKey>(),
            value: size_of::<VtepInfo>(),
            max_entries: DEFAULT_MAX_HOSTS,
        },
        MapSpec {
            name: maps::BCAST_VNICS,
            ty: MapType::Hash,
            key: 4,
            value: size_of::<BcastVnic>(),
            max_entries: cap.max_vnics,
        },
        MapSpec {
            name: maps::BCAST_SUBNETS,
            ty: MapType::Array,
            key: 4,
            value: size_of::<BcastSubnet>(),
            max_entries: DEFAULT_MAX_SUBNETS,
        },
        MapSpec {
            name: maps::BCAST_PREFIXES,
            ty: MapType::LpmTrie,
            key: size_of::<BcastPrefix>(),
            value: 4,
            max_entries: DEFAULT_MAX_SUBNETS,
        },
        MapSpec {
            name: maps::BCAST_REMOTES,
            ty: MapType::Array,
            key: 4,
            value: size_of::<BcastRemotes>(),
            max_entries: DEFAULT_MAX_SUBNETS,
        },
        // Hash of maps: the value is the inner map's id (the agent inserts an fd).
        MapSpec {
            name: maps::BCAST_PORTS,
            ty: MapType::HashOfMaps,
            key: 4,
            value: 4,
            max_entries: DEFAULT_MAX_SUBNETS,
        },
        MapSpec {
            name: maps::BCAST_FLOOD,
            ty: MapType::HashOfMaps,
            key: 4,
            value: 4,
            max_entries: DEFAULT_MAX_SUBNETS,
        },
        MapSpec {
            name: maps::SUBNET_STATS,
            ty: MapType::PerCpuArray,
            key: 4,
            value: size_of::<SubnetCounters>(),
            max_entries: DEFAULT_MAX_SUBNETS,
        },
    ]
}

fn check_pinned(dir: &Path, cap: Capacity) -> Result<()> {
    for spec in expected_maps(cap) {
        let path = dir.join(spec.name);
        if !path.exists() {
            continue;
        }
        let info =
            MapInfo::from_pin(&path).with_context(|| format!("reading pinned map {}", path.display()))?;
        let ty = info.map_type().with_context(|| format!("type of {}", path.display()))?;
        let found = (ty, info.key_size() as usize, info.value_size() as usize, info.max_entries());
        let want = (spec.ty, spec.key, spec.value, spec.max_entries);
        if found != want {
            bail!(
                "pinned map {} does not match this agent: found {:?} key {} value {} max_entries {}, \
                 expected {:?} key {} value {} max_entries {}. It was made by another havip build or \
                 capacity; run `havip-agent teardown` (detaches and forgets holders) or use another --pin-dir",
                path.display(),
                found.0, found.1, found.2, found.3, want.0, want.1, want.2, want.3
            );
        }
    }
    Ok(())
}

impl Dataplane {
    /// Loads the program, reusing compatible pinned maps under
    /// `pin_root/v<ABI>/` or creating and pinning them, once this process
    /// owns `pin_root` ([`PinLock`]): refused while another process does.
    pub fn open(pin_root: &Path, cap: Capacity) -> Result<Self> {
        let lock = PinLock::acquire(pin_root)?;
        let dir = versioned_dir(pin_root);
        fs::create_dir_all(links_dir(&dir))
            .with_context(|| format!("creating pin directory {}", dir.display()))?;
        check_pinned(&dir, cap)?;

        let mut ebpf = EbpfLoader::new()
            .default_map_pin_directory(&dir)
            .map_max_entries(maps::VIPS, cap.max_vips)
            .map_max_entries(maps::VIP_STATE, cap.max_vips)
            .map_max_entries(maps::VIP_CONFIG, cap.max_vips)
            .map_max_entries(maps::VRRP, cap.max_members)
            .map_max_entries(maps::VIP_STATS, cap.max_vips)
            .map_max_entries(maps::EIPS, cap.max_vips)
            .map_max_entries(maps::VIP_NAT, cap.max_vips)
            .map_max_entries(maps::MEMBERS, cap.max_members)
            .map_max_entries(maps::TX_PORTS, cap.max_vnics)
            .map_max_entries(maps::BCAST_VNICS, cap.max_vnics)
            .load(havip_ebpf::HAVIP_OBJ)
            .context("loading the havip XDP object")?;
        for name in [PROG_VNIC, PROG_UPLINK, PROG_UNDERLAY, PROG_REPLICATOR, PROG_HOLDER_WRITE] {
            let prog: &mut Xdp = ebpf
                .program_mut(name)
                .with_context(|| format!("the object has no {name} program"))?
                .try_into()
                .with_context(|| format!("{name} is not an XDP program"))?;
            prog.load().with_context(|| format!("verifying and loading {name}"))?;
        }
        let tc: &mut SchedClassifier = ebpf
            .program_mut(PROG_REPLICATE)
            .with_context(|| format!("the object has no {PROG_REPLICATE} program"))?
            .try_into()
            .with_context(|| format!("{PROG_REPLICATE} is not a TC program"))?;
        tc.load().with_context(|| format!("verifying and loading {PROG_REPLICATE}"))?;
        Ok(Self { ebpf, dir, _lock: lock })
    }

    /// The versioned pin directory (`DIR/v<ABI>`, see [`versioned_dir`]) the maps and links are pinned under.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn named_program(&mut self, name: &str) -> Result<&mut Xdp> {
        Ok(self.ebpf.program_mut(name).with_context(|| format!("{name} missing"))?.try_into()?)
    }

    /// The loaded `xdp_vnic`, e.g. for BPF_PROG_TEST_RUN.
    pub fn program(&mut self) -> Result<&mut Xdp> {
        self.named_program(PROG_VNIC)
    }

    /// The loaded `xdp_uplink`.
    pub fn uplink_program(&mut self) -> Result<&mut Xdp> {
        self.named_program(PROG_UPLINK)
    }

    /// The loaded `xdp_underlay`.
    pub fn underlay_program(&mut self) -> Result<&mut Xdp> {
        self.named_program(PROG_UNDERLAY)
    }

    /// Attaches `xdp_vnic` to the vNIC `ifname`, swapping the program into
    /// its pinned link if one exists (hitless), else attaching anew and
    /// pinning the link.
    pub fn attach(&mut self, ifname: &str) -> Result<Attach> {
        self.attach_program(PROG_VNIC, &links_dir(&self.dir).join(ifname), ifname)
    }

    /// Attaches `xdp_uplink` to the host's uplink NIC, the same way. Its link
    /// is pinned apart from the vNICs' (`links-uplink/`).
    pub fn attach_uplink(&mut self, ifname: &str) -> Result<Attach> {
        self.attach_single(PROG_UPLINK, &uplink_dir(&self.dir), ifname)
    }

    /// Attaches `xdp_underlay` to the host's underlay NIC, the same way as
    /// the uplink (`links-underlay/`): VXLAN from the other hosts and
    /// underlay probes are handled there.
    pub fn attach_underlay(&mut self, ifname: &str) -> Result<Attach> {
        self.attach_single(PROG_UNDERLAY, &underlay_dir(&self.dir), ifname)
    }

    /// The loaded `xdp_replicator`.
    pub fn replicator_program(&mut self) -> Result<&mut Xdp> {
        self.named_program(PROG_REPLICATOR)
    }

    /// The loaded `tc_replicate`.
    pub fn replicate_program(&mut self) -> Result<&mut SchedClassifier> {
        Ok(self
            .ebpf
            .program_mut(PROG_REPLICATE)
            .with_context(|| format!("{PROG_REPLICATE} missing"))?
            .try_into()?)
    }

    /// Attaches the head-end replicator to `peer_ifname`, the peer of the
    /// replicator port (`havip-rep1`): `xdp_replicator` in XDP (pinned in
    /// `links-replicator/`, like the underlay's), which passes only frames
    /// with their flood metadata and makes the veth take XDP frames at all,
    /// and `tc_replicate` on TC ingress through a TCX link (pinned in
    /// `links-replicate/`), which sends one VXLAN copy per other host. Each
    /// pinned link is re-used (the program swapped in, hitless) when there
    /// is one; a link to another interface is detached. `Swapped` only if
    /// both were swapped.
    pub fn attach_replicator(&mut self, peer_ifname: &str) -> Result<Attach> {
        let xdp = self.attach_single(PROG_REPLICATOR, &replicator_dir(&self.dir), peer_ifname)?;
        let dir = replicate_dir(&self.dir);
        fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        for stale in list_names(&dir)?.iter().filter(|n| n.as_str() != peer_ifname) {
            unpin_link(&dir.join(stale))?;
            info!(interface = %stale, program = PROG_REPLICATE, "detached: no longer its interface");
        }
        let tc = self.attach_tc(&dir.join(peer_ifname), peer_ifname)?;
        Ok(if xdp == Attach::Swapped && tc == Attach::Swapped { Attach::Swapped } else { Attach::New })
    }

    /// `tc_replicate` on `ifname`'s TC ingress through a TCX link pinned at
    /// `pin`: swapped into the pinned link if there is one, else attached
    /// (last in the TCX order) and pinned.
    fn attach_tc(&mut self, pin: &Path, ifname: &str) -> Result<Attach> {
        if pin.exists() {
            let swapped = (|| -> Result<()> {
                let pinned = PinnedLink::from_pin(pin)
                    .with_context(|| format!("opening pinned link {}", pin.display()))?;
                let link =
                    SchedClassifierLink::try_from(FdLink::from(pinned)).context("pinned link is not TCX")?;
                let prog = self.replicate_program()?;
                let id = prog.attach_to_link(link).context("swapping the program into the link")?;
                // The pin holds the link (see swap).
                drop(prog.take_link(id)?);
                Ok(())
            })();
            match swapped {
                Ok(()) => return Ok(Attach::Swapped),
                // The interface was deleted and made again: its old link is defunct.
                Err(e) => {
                    warn!(interface = ifname, error = %format!("{e:#}"), "pinned TCX link is stale; attaching anew");
                    unpin_link(pin)?;
                }
            }
        }
        let prog = self.replicate_program()?;
        let id = prog
            .attach_with_options(
                ifname,
                TcAttachType::Ingress,
                TcAttachOptions::TcxOrder(LinkOrder::default()),
            )
            .with_context(|| format!("attaching {PROG_REPLICATE} to {ifname} (TCX ingress)"))?;
        let link =
            FdLink::try_from(prog.take_link(id)?).context("the TC link is not a bpf_link (no TCX?)")?;
        link.pin(pin).with_context(|| format!("pinning link at {}", pin.display()))?;
        Ok(Attach::New)
    }

    /// The interface the replicator is attached to (its XDP link's), if any.
    pub fn replicator_attached(&self) -> Result<Option<String>> {
        let dir = replicator_dir(&self.dir);
        if !dir.exists() {
            return Ok(None);
        }
        Ok(list_names(&dir)?.into_iter().next())
    }

    /// Detaches both replicator programs from whatever they are attached to.
    pub fn detach_replicator(&mut self) -> Result<()> {
        for dir in [replicator_dir(&self.dir), replicate_dir(&self.dir)] {
            if !dir.exists() {
                continue;
            }
            for name in list_names(&dir)? {
                unpin_link(&dir.join(&name))?;
                info!(interface = %name, "replicator detached");
            }
        }
        Ok(())
    }

    /// Attaches `prog_name` to the one interface `ifname` whose link is
    /// pinned in `dir`, detaching it from any other interface pinned there.
    fn attach_single(&mut self, prog_name: &str, dir: &Path, ifname: &str) -> Result<Attach> {
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        for stale in list_names(dir)?.iter().filter(|n| n.as_str() != ifname) {
            unpin_link(&dir.join(stale))?;
            info!(interface = %stale, program = prog_name, "detached: no longer its interface");
        }
        self.attach_program(prog_name, &dir.join(ifname), ifname)
    }

    fn attach_program(&mut self, prog_name: &str, pin: &Path, ifname: &str) -> Result<Attach> {
        if pin.exists() {
            match self.swap(prog_name, pin) {
                Ok(()) => return Ok(Attach::Swapped),
                // The vNIC was deleted and made again: its old link is defunct.
                Err(e) => {
                    warn!(interface = ifname, error = %format!("{e:#}"), "pinned link is stale; attaching anew");
                    unpin_link(pin)?;
                }
            }
        }
        let prog = self.named_program(prog_name)?;
        let id = prog
            .attach(ifname, XdpMode::default())
            .with_context(|| format!("attaching {prog_name} to {ifname}"))?;
        let link =
            FdLink::try_from(prog.take_link(id)?).context("XDP link is not a bpf_link (kernel too old?)")?;
        link.pin(pin).with_context(|| format!("pinning link at {}", pin.display()))?;
        Ok(Attach::New)
    }

    fn swap(&mut self, prog_name: &str, pin: &Path) -> Result<()> {
        let pinned =
            PinnedLink::from_pin(pin).with_context(|| format!("opening pinned link {}", pin.display()))?;
        let link = XdpLink::try_from(FdLink::from(pinned)).context("pinned link is not XDP")?;
        let prog = self.named_program(prog_name)?;
        let id = prog.attach_to_link(link).context("swapping the program into the link")?;
        // The pin holds the link; were the program to keep this fd too,
        // unpinning (detach) would not detach until the agent exits.
        drop(prog.take_link(id)?);
        Ok(())
    }

    /// vNIC names that have a pinned link.
    pub fn attached(&self) -> Result<Vec<String>> {
        list_names(&links_dir(&self.dir))
    }

    /// Detaches from `ifname` by removing its pinned link.
    pub fn detach(&mut self, ifname: &str) -> Result<()> {
        unpin_link(&links_dir(&self.dir).join(ifname))
    }

    /// Hands out the events ring buffer; call once.
    pub fn take_events(&mut self) -> Result<RingBuf<MapData>> {
        Ok(self.ebpf.take_map(maps::EVENTS).context("map events missing")?.try_into()?)
    }

    /// Hands out the maps, with the holder-write program; call once. The
    /// program is pinned as `xdp_holder_write` (an operator can run it with
    /// `bpftool prog run`) and opened again from the pin, so the maps own
    /// their copy.
    pub fn take_maps(&mut self) -> Result<KernelMaps> {
        let pin = self.dir.join(PROG_HOLDER_WRITE);
        if pin.exists() {
            // The previous agent's: this load's replaces it.
            fs::remove_file(&pin).with_context(|| format!("removing {}", pin.display()))?;
        }
        self.named_program(PROG_HOLDER_WRITE)?
            .pin(&pin)
            .with_context(|| format!("pinning {PROG_HOLDER_WRITE} at {}", pin.display()))?;
        let holder_write = Xdp::from_pin(&pin, XdpAttachType::Interface)
            .with_context(|| format!("opening {}", pin.display()))?;
        let mut take = |name: &str| self.ebpf.take_map(name).with_context(|| format!("map {name} missing"));
        Ok(KernelMaps {
            vips: take(maps::VIPS)?.try_into()?,
            vip_state: take(maps::VIP_STATE)?.try_into()?,
            members: take(maps::MEMBERS)?.try_into()?,
            vip_config: take(maps::VIP_CONFIG)?.try_into()?,
            vrrp: take(maps::VRRP)?.try_into()?,
            tx_ports: take(maps::TX_PORTS)?.try_into()?,
            vip_stats: take(maps::VIP_STATS)?.try_into()?,
            global_stats: take(maps::GLOBAL_STATS)?.try_into()?,
            eips: take(maps::EIPS)?.try_into()?,
            vip_nat: take(maps::VIP_NAT)?.try_into()?,
            uplink: take(maps::UPLINK)?.try_into()?,
            underlay: take(maps::UNDERLAY)?.try_into()?,
            vteps: take(maps::VTEPS)?.try_into()?,
            holder_write,
            bcast_vnics: take(maps::BCAST_VNICS)?.try_into()?,
            bcast_subnets: take(maps::BCAST_SUBNETS)?.try_into()?,
            bcast_prefixes: take(maps::BCAST_PREFIXES)?.try_into()?,
            bcast_remotes: take(maps::BCAST_REMOTES)?.try_into()?,
            bcast_ports: take(maps::BCAST_PORTS)?.try_into()?,
            bcast_flood: take(maps::BCAST_FLOOD)?.try_into()?,
            subnet_stats: take(maps::SUBNET_STATS)?.try_into()?,
        })
    }
}

fn list_names(dir: &Path) -> Result<Vec<String>> {
    let mut names = Vec::new();
    for entry in fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
        names.push(entry?.file_name().to_string_lossy().into_owned());
    }
    names.sort();
    Ok(names)
}

fn unpin_link(pin: &Path) -> Result<()> {
    let link = PinnedLink::from_pin(pin).with_context(|| format!("opening pinned link {}", pin.display()))?;
    // Dropping the unpinned link closes the last reference: detached.
    link.unpin().with_context(|| format!("unpinning {}", pin.display()))?;
    Ok(())
}

/// Detaches havip from every vNIC and removes every pin under
/// `pin_root/v<ABI>/`: holders and counters are forgotten. Refused while
/// another process (a running agent) owns `pin_root`; see [`teardown_with`].
pub fn teardown(pin_root: &Path) -> Result<()> {
    teardown_with(pin_root, false)
}

/// [`teardown`]; with `force`, also under a running agent (which then
/// reports maps that are gone: stop it first whenever possible).
pub fn teardown_with(pin_root: &Path, force: bool) -> Result<()> {
    let dir = versioned_dir(pin_root);
    if !dir.exists() {
        info!(dir = %dir.display(), "nothing pinned");
        return Ok(());
    }
    let _lock = match PinLock::acquire(pin_root) {
        Ok(lock) => Some(lock),
        Err(e) if force => {
            warn!(error = %format!("{e:#}"), "--force: tearing down under the running agent");
            None
        }
        Err(e) => return Err(e.context("refusing to tear down (--force to do it anyway)")),
    };
    for links in all_link_dirs(&dir) {
        if !links.exists() {
            continue;
        }
        for name in list_names(&links)? {
            unpin_link(&links.join(&name))?;
            info!(interface = %name, "detached");
        }
        fs::remove_dir(&links).with_context(|| format!("removing {}", links.display()))?;
    }
    for name in list_names(&dir)? {
        let path = dir.join(&name);
        fs::remove_file(&path).with_context(|| format!("unpinning {}", path.display()))?;
    }
    fs::remove_dir(&dir).with_context(|| format!("removing {}", dir.display()))?;
    // The root goes too if this was the only version in it.
    let _ = fs::remove_dir(pin_root);
    info!(dir = %dir.display(), "removed all pins");
    Ok(())
}
