//! `edge-agent compose ...`: the command-line shell around the engine, for an operator who runs
//! or debugs a stack on the device without Portainer.

use crate::config::cli::{ComposeAction, ComposeCli};
use crate::docker;
use crate::system::output;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// `edge-agent compose ...`: the project from the file (or only its name for `down`/`ps` with
/// `-p` and no file), on the Docker socket of `DOCKER_HOST` (`unix://` only) or the default.
pub fn run(args: ComposeCli) -> ExitCode {
    if args.action == ComposeAction::Help {
        output::stdout().line(format_args!(
            "{}",
            crate::config::cli::compose_help().trim_end()
        ));
        return ExitCode::SUCCESS;
    }
    crate::system::logging::init(log::LevelFilter::Info);
    let fail = |code: u8, e: &dyn std::fmt::Display| {
        output::stderr().line(format_args!("edge-agent compose: {e}"));
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
                crate::EXIT_USAGE,
                &"one -f file at a time (merge overrides into it)",
            )
        }
    };
    let by_name = matches!(
        args.action,
        ComposeAction::Down { .. }
            | ComposeAction::Ps
            | ComposeAction::Lifecycle { .. }
            | ComposeAction::Logs { .. }
    ) && !args.project_name.is_empty()
        && file.is_none();
    let project = if by_name {
        None
    } else {
        let Some(file) = file else {
            return fail(
                crate::EXIT_USAGE,
                &"no compose.yaml, compose.yml, docker-compose.yaml or docker-compose.yml here: give -f FILE",
            );
        };
        // The project folder is the file's (compose's default --project-directory).
        let working_dir = file.parent().map_or(cwd.clone(), Path::to_path_buf);
        let source = super::Source {
            files: vec![file.file_name().map(PathBuf::from).unwrap_or_default()],
            working_dir,
            project_name: args.project_name.clone(),
            environment: environment.clone(),
            env_file: args.env_file.map(|f| cwd.join(f)),
        };
        match super::load(&source) {
            Ok(project) => {
                for warning in &project.warnings {
                    log::warn!("{warning}");
                }
                Some(project)
            }
            Err(e) => return fail(crate::EXIT_CONFIG, &e),
        }
    };
    let name = project
        .as_ref()
        .map_or(args.project_name.clone(), |p| p.name.clone());
    if let (ComposeAction::Config { json }, Some(project)) = (&args.action, &project) {
        let value = serde_json::json!(project);
        let text = if *json {
            format!("{value:#}")
        } else {
            super::to_yaml(&value)
        };
        output::stdout().line(format_args!("{}", text.trim_end()));
        return ExitCode::SUCCESS;
    }
    let socket = match environment.get("DOCKER_HOST") {
        None => PathBuf::from("/var/run/docker.sock"),
        Some(host) => match host.strip_prefix("unix://") {
            Some(path) => PathBuf::from(path),
            None => {
                return fail(
                    crate::EXIT_USAGE,
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
        (ComposeAction::Up, Some(project)) => super::up(&docker, project).map_err(Into::into),
        (ComposeAction::Down { volumes }, _) => {
            super::down(&docker, &name, *volumes).map_err(Into::into)
        }
        (ComposeAction::Lifecycle { what, services }, _) => {
            super::lifecycle(&docker, &name, services, *what).map_err(Into::into)
        }
        (
            ComposeAction::Pull {
                services,
                ignore_failures,
            },
            Some(project),
        ) => {
            // Progress on stderr, as v2 prints it.
            super::pull(&docker, project, services, *ignore_failures, |line| {
                output::stderr().line(line);
            })
            .map_err(Into::into)
        }
        (ComposeAction::Logs { services, options }, _) => {
            if let Some(missing) = project.as_ref().and_then(|p| {
                services
                    .iter()
                    .find(|s| !p.services.contains_key(s.as_str()))
            }) {
                return fail(
                    1,
                    &format!("no such service: {missing} (not in the compose file)"),
                );
            }
            if options.follow {
                if let Err(e) = interrupt_exits() {
                    return fail(1, &e);
                }
            }
            super::logs(&docker, &name, services, *options).map_err(Into::into)
        }
        (ComposeAction::Ps, _) => super::ps(&docker, &name)
            .map(|states| {
                let mut out = output::stdout();
                out.line(format_args!(
                    "{:<20} {:<32} {:<12} {:<5} HEALTH",
                    "SERVICE", "NAME", "STATE", "EXIT"
                ));
                for s in &states {
                    out.line(format_args!(
                        "{:<20} {:<32} {:<12} {:<5} {}",
                        s.service, s.name, s.state, s.exit_code, s.health
                    ));
                }
                if states.is_empty() {
                    out.line(format_args!(
                        "project {name} has no containers: not deployed, or brought down"
                    ));
                } else {
                    out.line(format_args!("stack {name}: {}", super::aggregate(&states)));
                }
            })
            .map_err(Into::into),
        _ => Ok(()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(1, &e),
    }
}

/// SIGINT (Ctrl-C) and SIGTERM end the command at once with 128 + the signal's number, 130
/// for Ctrl-C as compose v2's `logs -f` exits; taken by a thread of their own, since the other
/// threads block in reads.
fn interrupt_exits() -> Result<(), String> {
    let signals = crate::system::signals::Termination::block()
        .map_err(|e| format!("cannot block SIGINT and SIGTERM: {e}"))?;
    std::thread::Builder::new()
        .name("signals".into())
        .stack_size(64 * 1024)
        .spawn(move || {
            let code = signals.wait().map_or(130, |s| 128 + s as i32);
            std::process::exit(code)
        })
        .map(drop)
        .map_err(|e| format!("cannot start the signal thread: {e}"))
}
