//! Command-line arguments and logging setup.

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};
use tracing_subscriber::EnvFilter;

/// keyhop: a sharding, failover-aware Redis proxy.
#[derive(Parser, Debug)]
#[command(version, about)]
pub struct Cli {
    /// What to do (default: run the proxy).
    #[command(subcommand)]
    pub command: Option<Command>,
    /// The TOML configuration file.
    #[arg(long, short, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Log level (error, warn, info, debug, trace) or a tracing filter; RUST_LOG also works.
    #[arg(long, global = true, value_name = "LEVEL")]
    pub log_level: Option<String>,
    /// Log format.
    #[arg(long, global = true, value_enum, default_value = "text")]
    pub log_format: LogFormat,
}

/// Subcommands.
#[derive(Subcommand, Debug, Clone)]
pub enum Command {
    /// Run the proxy (the default).
    Run,
    /// Validate the configuration and print the resolved slot map.
    Check,
    /// Start a local demo topology (2 groups of master + replica, 3 sentinels) with keyhop in
    /// Sentinel mode in front of it; needs redis-server and redis-sentinel on PATH.
    Demo {
        /// Where keyhop listens for clients.
        #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:6380")]
        listen: String,
    },
    /// The fleet's slot map in etcd: init, show, migrate, rebalance (needs [etcd]).
    Slots {
        /// What to do.
        #[command(subcommand)]
        action: crate::fleet::cli::SlotsCmd,
    },
    /// The fleet's groups in etcd: add, remove (needs [etcd]).
    Group {
        /// What to do.
        #[command(subcommand)]
        action: crate::fleet::cli::GroupCmd,
    },
}

/// How log lines look.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, for log pipelines.
    Json,
}

/// Installs the tracing subscriber: `--log-level`, else `RUST_LOG`, else `info`.
pub fn init_logging(cli: &Cli) -> Result<(), String> {
    let filter = match &cli.log_level {
        Some(level) => {
            EnvFilter::try_new(level).map_err(|e| format!("bad --log-level {level:?}: {e}"))?
        }
        None => EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
    };
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    let result = match cli.log_format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
    result.map_err(|e| format!("cannot initialise logging: {e}"))
}
