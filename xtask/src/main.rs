//! `cargo xtask`: the project's commands. Runs before anything is installed,
//! so it needs nothing but std, anyhow and clap.

use std::{
    env,
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};

mod layers;

/// What the build, the lab and the tests need from Debian (curl: for trying
/// the EIP by hand in a lab left standing).
const APT_PACKAGES: [&str; 14] = [
    "clang-19",
    "llvm-19",
    "libbpf-dev",
    "bpftool",
    "keepalived",
    // CARP (multicast only): tests/broadcast_domain.rs, multihost_broadcast.rs.
    "ucarp",
    "iproute2",
    "ethtool",
    "iputils-ping",
    "curl",
    // systemd-analyze: tests/hardening_privilege.rs scores the unit.
    "systemd",
    // The shared store of many hosts: etcd (server and etcdctl) for the lab
    // and the tests; protoc, which the etcd-client crate's build script
    // needs to compile etcd's .proto files.
    "etcd-server",
    "etcd-client",
    "protobuf-compiler",
];

/// Where Debian's protobuf-compiler puts protoc.
const PROTOC: &str = "/usr/bin/protoc";

#[derive(Parser)]
#[command(about = "havip project tasks")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Install the missing apt packages (idempotent).
    Deps,
    /// Build every crate and binary.
    Build,
    /// The lab demo: keepalived fails over under a probe, havip follows; prints the timeline.
    /// Across three hosts on etcd by default; `--hosts 1` (or `-- --hosts 1`) for the single-host lab.
    Run {
        /// 3: failover across hypervisors (hv1..hv3, etcd); 1: the single-host lab.
        #[arg(long)]
        hosts: Option<u8>,
        /// Passed on to `havip-lab run` (e.g. `-- --hosts 1`).
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// A lab left standing for hands-on use.
    Lab {
        #[command(subcommand)]
        action: LabAction,
    },
    /// Every test: fmt and clippy, unit, kernel-program and integration (needs root).
    Test {
        /// Passed on to `cargo test`.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Check the layering: no import cycle in the agent, its layers in lib.rs order, light crates light.
    Layers,
    /// Coverage-guided fuzzing (cargo-fuzz, libFuzzer): every target, or one, for a long run.
    Fuzz {
        /// One target (config, desired_file, xdp_frames); all of them when absent.
        target: Option<String>,
        /// Seconds per target.
        #[arg(long, default_value_t = 600)]
        seconds: u32,
        /// Passed on to libFuzzer, e.g. `-- -jobs=2 -max_len=512`.
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// The benchmark: havip against the XDP limit and the kernel, as ratios in one run (needs root).
    Bench {
        /// Passed on to havip-bench (`cargo xtask bench -- --help` lists them).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

#[derive(Subcommand)]
enum LabAction {
    /// Create the lab, start keepalived and the agent(s), leave it running.
    Up {
        /// 1: the single-host lab; 3: hv1..hv3 on an underlay, etcd, an agent per host.
        #[arg(long, default_value_t = 1)]
        hosts: u8,
        /// With --hosts 3: the network, etcd and keepalived without agents.
        #[arg(long)]
        no_agents: bool,
        /// vpc1 a broadcast domain, and keepalived in its default configuration (multicast
        /// adverts to 224.0.0.18, no unicast_peer).
        #[arg(long)]
        broadcast_domain: bool,
    },
    /// Remove what `up` created.
    Down,
}

/// Errors end as one line that says what failed (no backtrace, even with
/// RUST_BACKTRACE set: these are a tool's refusals, not crashes).
fn main() -> std::process::ExitCode {
    match run_cmd(Cli::parse().cmd) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run_cmd(cmd: Cmd) -> Result<()> {
    match cmd {
        Cmd::Deps => deps(),
        Cmd::Build => build(),
        Cmd::Run { hosts, args } => {
            require_root("the lab creates network namespaces and attaches XDP")?;
            let mut all = vec!["run".to_owned()];
            all.extend(hosts.map(|h| format!("--hosts={h}")));
            all.extend(args);
            lab(&all)
        }
        Cmd::Lab { action } => {
            require_root("the lab creates network namespaces and attaches XDP")?;
            match action {
                LabAction::Up { hosts, no_agents, broadcast_domain } => {
                    let mut args = vec!["up".to_owned(), format!("--hosts={hosts}")];
                    args.extend(no_agents.then(|| "--no-agents".to_owned()));
                    args.extend(broadcast_domain.then(|| "--broadcast-domain".to_owned()));
                    lab(&args)
                }
                LabAction::Down => lab(&["down".to_owned()]),
            }
        }
        Cmd::Test { args } => test(&args),
        Cmd::Layers => layering(),
        Cmd::Fuzz { target, seconds, args } => {
            require_root("the xdp_frames target loads XDP programs and creates a namespace")?;
            let targets = match target {
                Some(t) if FUZZ_TARGETS.contains(&t.as_str()) => vec![t],
                Some(t) => bail!("no fuzz target {t}; the targets: {}", FUZZ_TARGETS.join(" ")),
                None => FUZZ_TARGETS.iter().map(|t| t.to_string()).collect(),
            };
            fuzz(&targets, seconds, &args)
        }
        Cmd::Bench { args } => {
            require_root("the bench creates network namespaces and runs XDP programs")?;
            bench(&args)
        }
    }
}

fn root_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("xtask lives in the workspace").to_owned()
}

fn target_dir() -> PathBuf {
    env::var_os("CARGO_TARGET_DIR").map_or_else(|| root_dir().join("target"), PathBuf::from)
}

fn is_root() -> Result<bool> {
    let out = Command::new("id").arg("-u").output().context("running `id -u`")?;
    Ok(String::from_utf8_lossy(&out.stdout).trim() == "0")
}

fn require_root(why: &str) -> Result<()> {
    if !is_root()? {
        bail!("this needs root: {why}; run as root (e.g. sudo -E cargo xtask ...)");
    }
    Ok(())
}

/// Runs `cmd` in the workspace root, failing if it fails.
fn run(cmd: &mut Command) -> Result<()> {
    eprintln!("xtask: {cmd:?}");
    let status = cmd.current_dir(root_dir()).status().with_context(|| format!("starting {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed ({status})");
    }
    Ok(())
}

/// Cargo, with `PROTOC` pointing at Debian's protoc (unless set already),
/// so the etcd-client build script finds it whatever PATH is.
fn cargo() -> Command {
    let mut c = Command::new(env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    if env::var_os("PROTOC").is_none() && Path::new(PROTOC).exists() {
        c.env("PROTOC", PROTOC);
    }
    c
}

fn installed(pkg: &str) -> bool {
    Command::new("dpkg").args(["-s", pkg]).output().is_ok_and(|o| {
        o.status.success() && String::from_utf8_lossy(&o.stdout).contains("install ok installed")
    })
}

/// cargo-fuzz (libFuzzer driver; runs on stable with `--sanitizer none`),
/// installed into ~/.cargo/bin once.
fn cargo_fuzz() -> Result<()> {
    let present = cargo().args(["fuzz", "--version"]).output().is_ok_and(|o| o.status.success());
    if present {
        eprintln!("xtask: cargo-fuzz present");
        return Ok(());
    }
    eprintln!("xtask: installing cargo-fuzz from crates.io (cargo install cargo-fuzz --locked, ~1 min)");
    run(cargo().args(["install", "cargo-fuzz", "--locked"]))
}

fn deps() -> Result<()> {
    cargo_fuzz()?;
    apt_deps()
}

fn apt_deps() -> Result<()> {
    let missing: Vec<&str> = APT_PACKAGES.into_iter().filter(|p| !installed(p)).collect();
    if missing.is_empty() {
        eprintln!("xtask: apt packages present: {}", APT_PACKAGES.join(" "));
        return Ok(());
    }
    if !is_root()? {
        bail!(
            "missing apt packages: {}; installing them needs root (sudo -E cargo xtask deps)",
            missing.join(" ")
        );
    }
    eprintln!("xtask: installing missing apt packages: {}", missing.join(" "));
    run(Command::new("apt-get").arg("update"))?;
    run(Command::new("apt-get")
        .args(["install", "-y", "--no-install-recommends"])
        .args(&missing)
        .env("DEBIAN_FRONTEND", "noninteractive"))
}

fn build() -> Result<()> {
    deps()?;
    run(cargo().args(["build", "--workspace", "--bins"]))
}

/// Builds, then becomes `havip-lab ARGS` (so Ctrl-C reaches it directly).
fn lab(args: &[String]) -> Result<()> {
    build()?;
    let bin = target_dir().join("debug/havip-lab");
    let err = Command::new(&bin).args(args).exec();
    Err(err).with_context(|| format!("running {}", bin.display()))
}

fn test(args: &[String]) -> Result<()> {
    if !is_root()? {
        eprintln!(
            "the tests need root: they create network namespaces, attach XDP and pin to bpffs; \
             run as root (e.g. sudo -E cargo xtask test)"
        );
        std::process::exit(1);
    }
    // The integration tests run the agent binary: build the bins first.
    build()?;
    // House style is part of the suite: formatted, and clippy-clean.
    run(cargo().args(["fmt", "--all", "--check"]))?;
    run(cargo().args(["clippy", "--workspace", "--all-targets", "--", "-D", "warnings"]))?;
    layering()?;
    run(cargo().args(["test", "--workspace"]).args(args))?;
    // A short fuzz of every target: a crash found fails the suite.
    fuzz(&FUZZ_TARGETS.map(String::from), FUZZ_TEST_SECONDS, &[])
}

/// The fuzz targets (fuzz/fuzz_targets/): the config file, the declarative
/// file through the rules, and frames through both XDP programs against the
/// README's verdict rules.
const FUZZ_TARGETS: [&str; 3] = ["config", "desired_file", "xdp_frames"];

/// Seconds per target in `cargo xtask test`.
const FUZZ_TEST_SECONDS: u32 = 20;

/// Builds the fuzz crate (its own workspace and target dir, fuzz/target, so
/// it never touches the main target dir), then runs each target for
/// `seconds` from its seeds (fuzz/seeds/TARGET) and the corpus it grew
/// before (fuzz/corpus/TARGET). A crash fails; its input is in
/// fuzz/artifacts/TARGET/ and `cargo fuzz run --sanitizer none TARGET FILE`
/// replays it.
fn fuzz(targets: &[String], seconds: u32, args: &[String]) -> Result<()> {
    deps()?;
    let dir = root_dir().join("fuzz");
    let fuzz_cmd = || {
        let mut c = cargo();
        c.env("CARGO_TARGET_DIR", dir.join("target")).current_dir(&dir);
        c
    };
    let status = |mut c: Command| -> Result<()> {
        eprintln!("xtask: {c:?}");
        let s = c.status().with_context(|| format!("starting {c:?}"))?;
        if !s.success() {
            bail!("{c:?} failed ({s})");
        }
        Ok(())
    };
    let mut build = fuzz_cmd();
    build.args(["fuzz", "build", "--sanitizer", "none"]);
    status(build)?;
    for target in targets {
        let corpus = dir.join("corpus").join(target);
        std::fs::create_dir_all(&corpus).with_context(|| format!("creating {}", corpus.display()))?;
        let mut c = fuzz_cmd();
        c.args(["fuzz", "run", "--sanitizer", "none", target])
            .arg(&corpus)
            .arg(dir.join("seeds").join(target))
            .arg("--")
            .arg(format!("-max_total_time={seconds}"))
            .arg("-max_len=1601")
            .arg("-print_final_stats=1")
            .args(args);
        status(c).with_context(|| {
            format!("fuzz target {target} found a crash (input in fuzz/artifacts/{target}/)")
        })?;
    }
    Ok(())
}

/// Builds the bench in release mode, then becomes `havip-bench ARGS`,
/// writing under `<target>/bench` unless told otherwise.
fn bench(args: &[String]) -> Result<()> {
    deps()?;
    // The lab parts of the bench run the agent (and, with many hosts,
    // havipctl) from next to the bench binary.
    run(cargo().args([
        "build",
        "--release",
        "-p",
        "havip-bench",
        "-p",
        "havip-agent",
        "-p",
        "havipctl",
        "--bins",
    ]))?;
    let bin = target_dir().join("release/havip-bench");
    let mut cmd = Command::new(&bin);
    if !args.iter().any(|a| a == "--out" || a.starts_with("--out=")) {
        cmd.arg("--out").arg(target_dir().join("bench"));
    }
    let err = cmd.args(args).current_dir(root_dir()).exec();
    Err(err).with_context(|| format!("running {}", bin.display()))
}

/// The layers: no import cycle between the agent's modules (between crates
/// cargo refuses one), each layer importing only those below it, and the
/// model, the API and havipctl free of the agent's heavy dependencies.
fn layering() -> Result<()> {
    layers::check(&root_dir().join("havip-agent/src"))?;
    for krate in ["havip-common", "havip-model", "havip-api", "havipctl", "havip-lab", "havip-bench", "xtask"]
    {
        layers::check_cycles(&root_dir().join(krate).join("src"))?;
    }
    for (krate, forbidden) in layers::CRATE_RULES {
        let out = cargo()
            .args(["tree", "-p", krate, "-e", "normal", "--prefix", "none", "--format", "{p}"])
            .current_dir(root_dir())
            .output()
            .with_context(|| format!("running cargo tree -p {krate}"))?;
        if !out.status.success() {
            bail!("cargo tree -p {krate} failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        layers::check_crate_deps(krate, forbidden, &String::from_utf8_lossy(&out.stdout))?;
    }
    Ok(())
}
