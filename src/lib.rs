//! edge-agent: a small Portainer Edge Agent for constrained gateways. See README.md.
//!
//! The binary (`main.rs`) only calls [`main`]. Modules are private unless a test or benchmark
//! drives them directly, so the compiler still reports dead code.

mod api;
mod check;
mod config;
pub mod docker;
mod http1;
mod identity;
mod jobs;
mod poller;
mod portainer;
mod run;
mod state;
mod system;
pub mod tunnel;
mod websocket;

use std::process::ExitCode;

/// sysexits' EX_USAGE and EX_CONFIG: a wrong command line or configuration, which a restart
/// cannot fix.
const EXIT_USAGE: u8 = 64;
const EXIT_CONFIG: u8 = 78;

/// `edge-agent [run|check|--help|--version] ...`: parses the command line and runs the command.
pub fn main() -> ExitCode {
    let cli = match config::cli::parse(std::env::args_os().skip(1)) {
        Ok(cli) => cli,
        Err(e) => {
            eprintln!("edge-agent: {e}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let load = || config::Config::load(cli.env_file, |k| std::env::var_os(k), &cli.flags);
    match cli.command {
        config::cli::Command::Help => {
            print!("{}", config::cli::help());
            ExitCode::SUCCESS
        }
        config::cli::Command::Version => {
            println!(
                "edge-agent {} (Portainer agent protocol {})",
                env!("CARGO_PKG_VERSION"),
                portainer::AGENT_VERSION
            );
            ExitCode::SUCCESS
        }
        config::cli::Command::Check => match load() {
            Ok(config) => {
                if check::check(&config) {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::FAILURE
                }
            }
            Err(e) => {
                println!("configuration: NOT valid: {e}");
                ExitCode::from(EXIT_CONFIG)
            }
        },
        config::cli::Command::Run => match load() {
            Ok(config) => {
                system::logging::init(config.log_level);
                for warning in &config.warnings {
                    log::warn!("{warning}");
                }
                run::run(config)
            }
            Err(e) => {
                eprintln!("edge-agent: configuration error: {e}");
                ExitCode::from(EXIT_CONFIG)
            }
        },
    }
}
