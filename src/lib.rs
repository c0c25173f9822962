//! edge-agent: a small Portainer Edge Agent for constrained gateways. See README.md.
//!
//! The binary (`main.rs`) only calls [`main`]. Modules are private unless a test or benchmark
//! drives them directly, so the compiler still reports dead code.

mod api;
mod check;
pub mod compose;
mod config;
pub mod docker;
mod http1;
mod identity;
mod poller;
mod portainer;
mod run;
mod stacks;
mod state;
mod system;
pub mod tunnel;
mod websocket;

use std::process::ExitCode;

/// sysexits' EX_USAGE and EX_CONFIG: a wrong command line or configuration, which a restart
/// cannot fix.
const EXIT_USAGE: u8 = 64;
const EXIT_CONFIG: u8 = 78;

/// `edge-agent compose ...`: the project from the file (or only its name for `down`/`ps` with
/// `-p` and no file), on the Docker socket of `DOCKER_HOST` (`unix://` only) or the default.
fn compose_command(args: config::cli::ComposeCli) -> ExitCode {
    use config::cli::ComposeAction;
    use std::path::{Path, PathBuf};
    if args.action == ComposeAction::Help {
        print!("{}", config::cli::compose_help());
        return ExitCode::SUCCESS;
    }
    system::logging::init(log::LevelFilter::Info);
    let fail = |code: u8, e: &dyn std::fmt::Display| {
        eprintln!("edge-agent compose: {e}");
        ExitCode::from(code)
    };
    let environment: std::collections::BTreeMap<String, String> = std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
        .collect();
    let cwd = match std::env::current_dir() {
        Ok(cwd) => cwd,
        Err(e) => return fail(1, &format!("cannot read the current folder: {e}")),
    };
    let file = match args.files.as_slice() {
        [] => [
            "compose.yaml",
            "compose.yml",
            "docker-compose.yaml",
            "docker-compose.yml",
        ]
        .iter()
        .map(|f| cwd.join(f))
        .find(|f| f.exists()),
        [file] => Some(cwd.join(file)),
        _ => {
            return fail(
                EXIT_USAGE,
                &"one -f file at a time (merge overrides into it)",
            )
        }
    };
    let by_name = matches!(args.action, ComposeAction::Down { .. } | ComposeAction::Ps)
        && !args.project_name.is_empty()
        && file.is_none();
    let project = if by_name {
        None
    } else {
        let Some(file) = file else {
            return fail(
                EXIT_USAGE,
                &"no compose.yaml, compose.yml, docker-compose.yaml or docker-compose.yml here: give -f FILE",
            );
        };
        // The project folder is the file's (compose's default --project-directory).
        let working_dir = file.parent().map_or(cwd.clone(), Path::to_path_buf);
        let source = compose::Source {
            files: vec![file.file_name().map(PathBuf::from).unwrap_or_default()],
            working_dir,
            project_name: args.project_name.clone(),
            environment: environment.clone(),
            env_file: args.env_file.map(|f| cwd.join(f)),
        };
        match compose::load(&source) {
            Ok(project) => {
                for warning in &project.warnings {
                    log::warn!("{warning}");
                }
                Some(project)
            }
            Err(e) => return fail(EXIT_CONFIG, &e),
        }
    };
    let name = project
        .as_ref()
        .map_or(args.project_name.clone(), |p| p.name.clone());
    if let (ComposeAction::Config { json }, Some(project)) = (&args.action, &project) {
        let value = serde_json::json!(project);
        if *json {
            println!("{value:#}");
        } else {
            print!("{}", compose::to_yaml(&value));
        }
        return ExitCode::SUCCESS;
    }
    let socket = match environment.get("DOCKER_HOST") {
        None => PathBuf::from("/var/run/docker.sock"),
        Some(host) => match host.strip_prefix("unix://") {
            Some(path) => PathBuf::from(path),
            None => {
                return fail(
                    EXIT_USAGE,
                    &format!("DOCKER_HOST={host}: only unix:// sockets are supported"),
                )
            }
        },
    };
    let docker = match docker::Client::connect(socket, docker::Limits::default()) {
        Ok(docker) => docker,
        Err(e) => return fail(1, &e),
    };
    let result: Result<(), Box<dyn std::error::Error>> = match (&args.action, &project) {
        (ComposeAction::Up, Some(project)) => compose::up(&docker, project).map_err(Into::into),
        (ComposeAction::Down { volumes }, _) => {
            compose::down(&docker, &name, *volumes).map_err(Into::into)
        }
        (ComposeAction::Ps, _) => compose::ps(&docker, &name)
            .map(|states| {
                println!(
                    "{:<20} {:<32} {:<12} {:<5} HEALTH",
                    "SERVICE", "NAME", "STATE", "EXIT"
                );
                for s in &states {
                    println!(
                        "{:<20} {:<32} {:<12} {:<5} {}",
                        s.service, s.name, s.state, s.exit_code, s.health
                    );
                }
                println!("stack {name}: {}", compose::aggregate(&states));
            })
            .map_err(Into::into),
        _ => Ok(()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(1, &e),
    }
}

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
        config::cli::Command::Compose(args) => compose_command(args),
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
