//! Compiles the XDP programs in `bpf/` with clang (`$CLANG`, default `clang-19`)
//! into `$OUT_DIR`, where `lib.rs` embeds them.

use std::{env, path::PathBuf, process::Command};

const PROGRAMS: &[&str] = &["havip", "lab"];

fn main() {
    let out_dir = PathBuf::from(env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    let clang = env::var("CLANG").unwrap_or_else(|_| "clang-19".to_string());
    let arch = env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_default();
    // <asm/types.h> lives under the multiarch include directory.
    let multiarch = match arch.as_str() {
        "aarch64" => "/usr/include/aarch64-linux-gnu",
        _ => "/usr/include/x86_64-linux-gnu",
    };
    println!("cargo:rerun-if-env-changed=CLANG");
    println!("cargo:rerun-if-changed=bpf");
    for name in PROGRAMS {
        let src = format!("bpf/{name}.bpf.c");
        let obj = out_dir.join(format!("{name}.bpf.o"));
        let status = Command::new(&clang)
            .args(["-O2", "-g", "-target", "bpfel", "-mcpu=v3", "-Wall", "-Werror"])
            .arg(format!("-I{multiarch}"))
            .args(["-c", &src, "-o"])
            .arg(&obj)
            .status()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run {clang} to compile {src}: {e}. Install it with `cargo xtask deps` \
                     (apt-get install clang-19 libbpf-dev), or set CLANG"
                )
            });
        assert!(status.success(), "{clang} failed to compile {src}");
    }
}
