//! edge-agent: a small Portainer Edge Agent for constrained gateways. See README.md.
//!
//! The binary (`main.rs`) only calls [`main`]. Modules are private unless a test or benchmark
//! drives them directly, so the compiler still reports dead code.

mod api;
mod check;
pub mod compose;
mod config;
pub mod docker;
#[cfg(fuzzing)]
pub mod fuzzing;
mod http1;
mod identity;
mod jobs;
mod poller;
mod portainer;
mod run;
mod setup_page;
mod stacks;
mod state;
mod system;
pub mod tunnel;
mod websocket;

/// For the upload bench's reference: the agent API behind the real chisel client.
pub use run::api_alone;
/// For the soak bench, which checks the waits between polls against the cap.
pub use system::backoff;

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
            system::output::stderr().line(format_args!("edge-agent: {e}"));
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let load = || config::Config::load(cli.env_file, &config::ProcessEnvironment, &cli.flags);
    let mut stdout = system::output::stdout();
    match cli.command {
        config::cli::Command::Help => {
            stdout.line(format_args!("{}", config::cli::help()));
            ExitCode::SUCCESS
        }
        config::cli::Command::Version => {
            stdout.line(format_args!(
                "edge-agent {} (Portainer agent protocol {})",
                env!("CARGO_PKG_VERSION"),
                portainer::AGENT_VERSION
            ));
            ExitCode::SUCCESS
        }
        config::cli::Command::Check => match load() {
            Ok(config) => match check::check(&config, &mut stdout) {
                check::Verdict::Ok => ExitCode::SUCCESS,
                check::Verdict::NotOk => ExitCode::FAILURE,
                check::Verdict::ConfigError => ExitCode::from(EXIT_CONFIG),
            },
            Err(errors) => {
                for e in errors {
                    stdout.line(format_args!("configuration: NOT valid: {e}"));
                }
                stdout.line(format_args!(
                    "{}",
                    check::result_line(check::Verdict::ConfigError)
                ));
                ExitCode::from(EXIT_CONFIG)
            }
        },
        config::cli::Command::Compose(args) => compose::command::run(args),
        config::cli::Command::Run => match load() {
            Ok(config) => {
                // EDGE_CONNECTIVITY_CHECK: the Go agent's one-shot check instead of a run.
                if let Some(connectivity) = &config.connectivity_check {
                    return match check::connectivity::run(&config, connectivity, &mut stdout) {
                        true => ExitCode::SUCCESS,
                        false => ExitCode::FAILURE,
                    };
                }
                system::logging::init(config.log_level);
                for warning in &config.warnings {
                    log::warn!("{warning}");
                }
                run::run(config)
            }
            Err(errors) => {
                let mut stderr = system::output::stderr();
                for e in errors {
                    stderr.line(format_args!("edge-agent: configuration error: {e}"));
                }
                ExitCode::from(EXIT_CONFIG)
            }
        },
    }
}
