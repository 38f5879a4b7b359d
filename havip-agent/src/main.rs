//! The havip host agent.

use std::{path::PathBuf, process::ExitCode};

use anyhow::{Context, Result};
use clap::{Parser, Subcommand, ValueEnum};
use havip_agent::{
    daemon::run,
    datapath::loader,
    host::{netns, replicator},
};
use havip_common::{REPLICATOR_PEER, REPLICATOR_PORT};

#[derive(Parser)]
#[command(
    name = "havip-agent",
    version,
    about = "High-availability virtual IPs in XDP: claim, re-point, redirect"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
    /// Log format on stdout.
    #[arg(long, value_enum, default_value_t = LogFormat::Text, global = true)]
    log_format: LogFormat,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(clap::Args)]
struct Where {
    /// Network namespace (/run/netns/NAME) that holds the vNICs; entered in-process.
    #[arg(long)]
    netns: Option<String>,
    /// bpffs directory for maps and links; the agent uses its `v<ABI>/` subdirectory.
    #[arg(long, default_value = "/sys/fs/bpf/havip")]
    pin_dir: PathBuf,
}

#[derive(Subcommand)]
enum Cmd {
    /// Attach to the configured vNICs, fill the maps and report claims until stopped.
    /// Stopping leaves the programs attached and the holders in the kernel.
    Run {
        /// Configuration file (TOML).
        #[arg(long, default_value = "/etc/havip/havip.toml")]
        config: PathBuf,
        #[command(flatten)]
        at: Where,
    },
    /// Detach from every vNIC and remove every pin: holders are forgotten.
    /// Refused while an agent runs on the pin directory.
    Teardown {
        #[command(flatten)]
        at: Where,
        /// Tear down even under a running agent (which then reports maps that are gone).
        #[arg(long)]
        force: bool,
    },
}

fn init_logs(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colours only for a person: under systemd, stdout goes to the journal.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_ansi(ansi);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn main_inner(cli: Cli) -> Result<()> {
    let at = match &cli.cmd {
        Cmd::Run { at, .. } | Cmd::Teardown { at, .. } => at,
    };
    // Before any runtime thread exists: threads inherit the namespace.
    if let Some(ns) = &at.netns {
        netns::enter(ns)?;
    }
    match &cli.cmd {
        Cmd::Run { config, at } => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .context("starting the tokio runtime")?
            .block_on(run::run(config, &at.pin_dir)),
        Cmd::Teardown { at, force } => {
            loader::teardown_with(&at.pin_dir, *force)?;
            // The replicator pair serves the programs just removed.
            if replicator::remove()? {
                tracing::info!("removed the replicator pair {REPLICATOR_PORT}/{REPLICATOR_PEER}");
            }
            Ok(())
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logs(cli.log_format);
    match main_inner(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            ExitCode::FAILURE
        }
    }
}
