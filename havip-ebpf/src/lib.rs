//! havip's XDP programs, compiled from `bpf/*.bpf.c` by the build script and
//! embedded here so the agent is a single binary.

/// The production object: program `xdp_vnic` and the maps of `havip_abi.h`.
pub static HAVIP_OBJ: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/havip.bpf.o"));

/// Lab and benchmark helpers: `xdp_pass`, `xdp_sink`, `xdp_limit`.
pub static LAB_OBJ: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/lab.bpf.o"));
