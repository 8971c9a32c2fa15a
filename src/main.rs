//! The `keyhop` binary: command line, logging, and the wiring of control plane and data plane.

mod admin;
mod cli;
mod demo;
mod fdlimit;
mod fleet;
mod health;
mod reload;
mod run;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    if let Err(e) = cli::init_logging(&cli) {
        eprintln!("keyhop: {e}");
        return ExitCode::from(2);
    }
    match cli.command.clone().unwrap_or(cli::Command::Run) {
        cli::Command::Run => run::run(&cli),
        cli::Command::Check => run::check(&cli),
        cli::Command::Demo { listen } => demo::demo(&listen, cli.config.is_some()),
        cli::Command::Slots { action } => {
            run::with_config(&cli, |cfg| fleet::cli::slots(cfg, &action))
        }
        cli::Command::Group { action } => {
            run::with_config(&cli, |cfg| fleet::cli::group(cfg, &action))
        }
    }
}
