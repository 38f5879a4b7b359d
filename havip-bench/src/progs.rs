//! The programs under test and the helpers around them: BPF_PROG_TEST_RUN in
//! live-frames and plain mode, the lab object in hv (limit, kernel injector,
//! harness) and the counting, time-stamping sinks.

use std::{
    net::Ipv4Addr,
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use aya::{
    maps::{Array, DevMapHash, HashMap, PerCpuArray, ProgramArray},
    programs::{xdp::XdpLinkId, ProgramFd, TestRun, TestRunAttrs, TestRunOptions, Xdp, XdpMode},
    Ebpf, EbpfLoader,
};

use crate::{
    frames::{xdp_md, Frame},
    topo::{self, Port},
};

pub const XDP_DROP: u32 = 1;
pub const XDP_PASS: u32 = 2;
pub const XDP_TX: u32 = 3;
pub const XDP_REDIRECT: u32 = 4;

/// Frames per live-frames batch: the kernel's default, and what a NAPI poll takes.
pub const LIVE_BATCH: u32 = 64;

/// Runs `prog` on `repeat` live frames arriving on `ingress`: verdicts act
/// for real (redirects are sent, XDP_PASS enters the stack). Wall time of
/// the whole run, syscall included.
pub fn live(prog: &Xdp, frame: &[u8], ingress: u32, repeat: u32, batch: u32) -> Result<Duration> {
    let ctx = havip_lab::frames::xdp_md(frame.len() as u32, ingress);
    let start = Instant::now();
    prog.test_run(TestRunOptions {
        data_in: Some(frame),
        ctx_in: Some(&ctx),
        repeat,
        attrs: TestRunAttrs::new().xdp_live_frames(batch),
        ..Default::default()
    })
    .context("live-frames test run")?;
    Ok(start.elapsed())
}

/// Runs `prog` `repeat` times on one frame without acting on the verdict.
/// Returns the verdict and the kernel's own time per run (whole ns).
pub fn plain(prog: &Xdp, frame: &Frame, ingress: u32, repeat: u32) -> Result<(u32, u32)> {
    let ctx = xdp_md(ingress);
    let r = prog
        .test_run(TestRunOptions { data_in: Some(frame), ctx_in: Some(&ctx), repeat, ..Default::default() })
        .context("plain test run")?;
    Ok((r.return_value, r.duration.as_nanos() as u32))
}

pub fn xdp<'a>(ebpf: &'a Ebpf, name: &str) -> Result<&'a Xdp> {
    ebpf.program(name).with_context(|| format!("program {name} missing"))?.try_into().context(name.to_owned())
}

pub fn load(ebpf: &mut Ebpf, name: &str) -> Result<()> {
    let p: &mut Xdp =
        ebpf.program_mut(name).with_context(|| format!("program {name} missing"))?.try_into()?;
    p.load().with_context(|| format!("loading {name}"))
}

/// `struct limit_cfg` in lab.bpf.c.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct LimitCfg {
    pub dst: [u8; 6],
    pub src: [u8; 6],
    pub ifindex: u32,
}

// SAFETY: plain old data, no padding the C side lacks.
unsafe impl aya::Pod for LimitCfg {}

/// The lab object loaded in hv: the empty program, the limit, the kernel
/// injector and the plain-test-run harness.
pub struct Lab {
    ebpf: Ebpf,
}

impl Lab {
    pub const EMPTY: &str = "xdp_pass";
    pub const LIMIT: &str = "xdp_limit";
    pub const KERNEL: &str = "xdp_restore_pass";
    pub const HARNESS: &str = "xdp_harness";
    pub const LOOKUP: &str = "xdp_lookup";

    /// Loads it, with the limit sending to `out`'s guest end like havip
    /// would, and probe_vips holding the addresses of `vips`, sized like vips.
    pub fn load(out: &Port, vips: impl Iterator<Item = Ipv4Addr>) -> Result<Self> {
        let mut ebpf = EbpfLoader::new()
            .map_max_entries("probe_vips", topo::CAPACITY.max_vips)
            .load(havip_ebpf::LAB_OBJ)
            .context("loading the lab object")?;
        for name in [Self::EMPTY, Self::LIMIT, Self::KERNEL, Self::HARNESS, Self::LOOKUP] {
            load(&mut ebpf, name)?;
        }
        let mut cfg: Array<_, LimitCfg> =
            ebpf.map_mut("limit_config").context("limit_config missing")?.try_into()?;
        let src = [0x02, 0x48, 198, 18, 1, 50];
        cfg.set(0, LimitCfg { dst: out.guest_mac, src, ifindex: out.host_ifindex }, 0)?;
        let mut ports: DevMapHash<_> =
            ebpf.map_mut("limit_ports").context("limit_ports missing")?.try_into()?;
        ports.insert(out.host_ifindex, out.host_ifindex, None, 0).context("limit_ports")?;
        let mut probe: HashMap<_, u32, [u8; 4]> =
            ebpf.map_mut("probe_vips").context("probe_vips missing")?.try_into()?;
        for vip in vips {
            // The key as the program reads it: the address's bytes in packet order.
            probe.insert(u32::from_ne_bytes(vip.octets()), [0; 4], 0).context("filling probe_vips")?;
        }
        Ok(Self { ebpf })
    }

    pub fn prog(&self, name: &str) -> Result<&Xdp> {
        xdp(&self.ebpf, name)
    }

    /// Attaches program `name` to `ifname` (in the calling thread's namespace).
    pub fn attach(&mut self, name: &str, ifname: &str) -> Result<XdpLinkId> {
        let p: &mut Xdp =
            self.ebpf.program_mut(name).with_context(|| format!("program {name} missing"))?.try_into()?;
        p.attach(ifname, XdpMode::default()).with_context(|| format!("attaching {name} to {ifname}"))
    }

    /// Detaches what [`Lab::attach`] attached.
    pub fn detach(&mut self, name: &str, link: XdpLinkId) -> Result<()> {
        let p: &mut Xdp =
            self.ebpf.program_mut(name).with_context(|| format!("program {name} missing"))?.try_into()?;
        p.detach(link).with_context(|| format!("detaching {name}"))
    }

    /// The frame xdp_restore_pass and xdp_harness write before each run.
    pub fn set_template(&mut self, frame: &Frame) -> Result<()> {
        let mut t: Array<_, Frame> =
            self.ebpf.map_mut("frame_template").context("frame_template missing")?.try_into()?;
        t.set(0, frame, 0).context("setting frame_template")
    }

    /// The program xdp_harness tail-calls.
    pub fn set_target(&mut self, fd: &ProgramFd) -> Result<()> {
        let mut a: ProgramArray<_> =
            self.ebpf.map_mut("harness_target").context("harness_target missing")?.try_into()?;
        a.set(0, fd, 0).context("setting harness_target")
    }
}

/// `struct spray_cfg` in lab.bpf.c.
#[repr(C)]
#[derive(Clone, Copy)]
struct SprayCfg {
    base: u32,
    n: u32,
    next: u32,
    first_slot: u32,
}

// SAFETY: plain old data, no padding the C side lacks.
unsafe impl aya::Pod for SprayCfg {}

/// xdp_spray in front of one havip program: live VIP traffic spread over
/// `n` consecutive addresses from `base` (in slots from `first_slot`, whose
/// virtual MACs it sends to), from a single frame sent to a virtual MAC.
pub struct Spray {
    ebpf: Ebpf,
}

impl Spray {
    pub const PROG: &str = "xdp_spray";

    pub fn load(target: &ProgramFd, base: Ipv4Addr, first_slot: u32, n: u32) -> Result<Self> {
        let mut ebpf = Ebpf::load(havip_ebpf::LAB_OBJ).context("loading the lab object")?;
        load(&mut ebpf, Self::PROG)?;
        let mut a: ProgramArray<_> = ebpf.map_mut("harness_target").context("harness_target")?.try_into()?;
        a.set(0, target, 0).context("setting harness_target")?;
        let mut cfg: Array<_, SprayCfg> = ebpf.map_mut("spray_config").context("spray_config")?.try_into()?;
        cfg.set(0, SprayCfg { base: base.into(), n, next: 0, first_slot }, 0)
            .context("setting spray_config")?;
        Ok(Self { ebpf })
    }

    pub fn prog(&self) -> Result<&Xdp> {
        xdp(&self.ebpf, Self::PROG)
    }
}

/// A guest end that counts and drops everything (xdp_sink_stamp), and
/// stamps the first packet after being armed.
pub struct Sink {
    ebpf: Ebpf,
}

impl Sink {
    /// Attaches to `ifname` in the calling thread's namespace.
    pub fn attach(ifname: &str) -> Result<Self> {
        Self::attach_all(&[ifname])
    }

    /// One sink on every one of `ifnames` (in the calling thread's
    /// namespace): one count of what reached any of them.
    pub fn attach_all(ifnames: &[&str]) -> Result<Self> {
        let mut ebpf = Ebpf::load(havip_ebpf::LAB_OBJ).context("loading the lab object")?;
        load(&mut ebpf, "xdp_sink_stamp")?;
        let p: &mut Xdp = ebpf.program_mut("xdp_sink_stamp").context("xdp_sink_stamp")?.try_into()?;
        for ifname in ifnames {
            p.attach(ifname, XdpMode::default())
                .with_context(|| format!("attaching the sink to {ifname}"))?;
        }
        Ok(Self { ebpf })
    }

    pub fn count(&self) -> Result<u64> {
        let c: PerCpuArray<_, u64> = self.ebpf.map("sink_count").context("sink_count")?.try_into()?;
        Ok(c.get(&0, 0)?.iter().sum())
    }

    /// Waits (bounded) for the count to reach `want`; frames still in a
    /// veth ring when the test run returns arrive within microseconds.
    pub fn settle(&self, want: u64) -> Result<u64> {
        let deadline = Instant::now() + Duration::from_millis(200);
        loop {
            let n = self.count()?;
            if n >= want || Instant::now() > deadline {
                return Ok(n);
            }
            thread::sleep(Duration::from_micros(200));
        }
    }

    /// Zeroes the stamp: the next packet records its arrival time.
    pub fn arm(&mut self) -> Result<()> {
        let mut a: Array<_, u64> = self.ebpf.map_mut("sink_first_ns").context("sink_first_ns")?.try_into()?;
        a.set(0, 0, 0).context("arming the sink")
    }

    /// CLOCK_MONOTONIC ns of the first packet since `arm` (0: none yet).
    pub fn first_ns(&self) -> Result<u64> {
        let a: Array<_, u64> = self.ebpf.map("sink_first_ns").context("sink_first_ns")?.try_into()?;
        Ok(a.get(&0, 0)?)
    }
}

/// Checks that all `sent` packets reached the sink (`before` = its count first).
pub fn check_delivered(what: &str, sink: &Sink, before: u64, sent: u64) -> Result<()> {
    let got = sink.settle(before + sent)? - before;
    if got != sent {
        bail!("{what}: sent {sent} packets, the sink counted {got}");
    }
    Ok(())
}
