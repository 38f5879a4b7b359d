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
const APT_PACKAGES: [&str; 9] = [
    "clang-19",
    "llvm-19",
    "libbpf-dev",
    "bpftool",
    "keepalived",
    "iproute2",
    "ethtool",
    "iputils-ping",
    "curl",
];

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
    Run,
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
    /// The benchmark: havip against the XDP limit and the kernel, as ratios in one run (needs root).
    Bench {
        /// Passed on to havip-bench (`cargo xtask bench -- --help` lists them).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

#[derive(Subcommand)]
enum LabAction {
    /// Create the lab, start keepalived and the agent, leave it running.
    Up,
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
        Cmd::Run => {
            require_root("the lab creates network namespaces and attaches XDP")?;
            lab(&["run"])
        }
        Cmd::Lab { action } => {
            require_root("the lab creates network namespaces and attaches XDP")?;
            lab(&[match action {
                LabAction::Up => "up",
                LabAction::Down => "down",
            }])
        }
        Cmd::Test { args } => test(&args),
        Cmd::Layers => layering(),
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

fn cargo() -> Command {
    Command::new(env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
}

fn installed(pkg: &str) -> bool {
    Command::new("dpkg").args(["-s", pkg]).output().is_ok_and(|o| {
        o.status.success() && String::from_utf8_lossy(&o.stdout).contains("install ok installed")
    })
}

fn deps() -> Result<()> {
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
fn lab(args: &[&str]) -> Result<()> {
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
    run(cargo().args(["test", "--workspace"]).args(args))
}

/// Builds the bench in release mode, then becomes `havip-bench ARGS`,
/// writing under `<target>/bench` unless told otherwise.
fn bench(args: &[String]) -> Result<()> {
    deps()?;
    // The lab part of the bench runs the agent from next to the bench binary.
    run(cargo().args(["build", "--release", "-p", "havip-bench", "-p", "havip-agent", "--bins"]))?;
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
