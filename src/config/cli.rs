//! Command line: `edge-agent [run|check] [--env-file PATH] [--<setting> VALUE ...]`, plus
//! `--help` and `--version`. Setting flags are the Go agent's names (see [`crate::config::VARS`]).
//! `edge-agent compose [-f FILE] [-p NAME] [--env-file F] config|up|down|ps|logs|pull|...` has its own options
//! ([`ComposeCli`]).

use crate::config::{EnvFileChoice, Var, DEFAULT_ENV_FILE, VARS};
use std::ffi::OsString;
use std::fmt::Write;
use std::path::PathBuf;

#[derive(Debug)]
pub enum Command {
    Run,
    Check,
    Help,
    Version,
    Compose(ComposeCli),
}

/// `edge-agent compose ...`.
#[derive(Debug, PartialEq, Eq)]
pub struct ComposeCli {
    /// `-f`; empty: compose.yaml, compose.yml, docker-compose.yaml or docker-compose.yml here.
    pub files: Vec<PathBuf>,
    /// `-p`; empty: the file's `name:` or the folder's name.
    pub project_name: String,
    pub env_file: Option<PathBuf>,
    pub action: ComposeAction,
}

#[derive(Debug, PartialEq, Eq)]
pub enum ComposeAction {
    /// The resolved model, YAML (or JSON with `--format json`).
    Config {
        json: bool,
    },
    /// Always detached (`-d` is accepted).
    Up,
    /// `-v`: named volumes too.
    Down {
        volumes: bool,
    },
    Ps,
    /// The images of the services named (all when none).
    Pull {
        services: Vec<String>,
        ignore_failures: bool,
    },
    /// The containers' output, of the services named (all when none).
    Logs {
        services: Vec<String>,
        options: crate::compose::LogsCli,
    },
    /// `stop`, `start`, `restart` of the services named (all when none).
    Lifecycle {
        what: crate::compose::Lifecycle,
        services: Vec<String>,
    },
    Help,
}

#[derive(Debug)]
pub struct Cli {
    pub command: Command,
    pub env_file: EnvFileChoice,
    pub flags: Vec<(&'static Var, String)>,
}

pub fn parse(args: impl IntoIterator<Item = OsString>) -> Result<Cli, String> {
    let mut args = args.into_iter().map(|a| {
        a.into_string()
            .map_err(|a| format!("argument {a:?} is not valid UTF-8"))
    });
    let mut command = None;
    let mut env_file = EnvFileChoice::Default;
    let mut flags = Vec::new();
    // A switch just given without a value, for a clear message when a value follows it.
    let mut last_switch: Option<&str> = None;
    while let Some(arg) = args.next() {
        let arg = arg?;
        let switch = last_switch.take();
        if arg == "-h" || arg == "--help" {
            // `check -h` asks for help as much as `-h` does.
            command = Some(Command::Help);
            continue;
        }
        if arg == "compose" && command.is_none() {
            return Ok(Cli {
                command: Command::Compose(parse_compose(&mut args)?),
                env_file,
                flags,
            });
        }
        let Some(option) = arg.strip_prefix("--") else {
            let chosen = match arg.as_str() {
                "run" => Command::Run,
                "check" => Command::Check,
                "help" => Command::Help,
                "version" | "-V" => Command::Version,
                value if switch.is_some() && super::validation::parse_go_bool(value).is_some() => {
                    let flag = switch.unwrap_or_default();
                    return Err(format!(
                        "--{flag} takes no value: write --{flag} to turn it on, --no-{flag} to turn it off (or --{flag}={value})"
                    ));
                }
                _ => return Err(format!("unknown command {arg:?}; see edge-agent --help")),
            };
            if matches!(chosen, Command::Help) || matches!(command, Some(Command::Help)) {
                command = Some(Command::Help);
                continue;
            }
            if command.replace(chosen).is_some() {
                return Err(format!(
                    "unexpected argument {arg:?}; see edge-agent --help"
                ));
            }
            continue;
        };
        let (name, inline) = match option.split_once('=') {
            Some((name, value)) => (name, Some(value.to_owned())),
            None => (option, None),
        };
        match name {
            "help" => command = Some(Command::Help),
            "version" => command = Some(Command::Version),
            "env-file" => {
                let value = value_of(&format!("--{name}"), inline, &mut args)?;
                env_file = EnvFileChoice::Named(PathBuf::from(value));
            }
            _ => {
                let negated = name.strip_prefix("no-");
                if let Some(var) =
                    negated.and_then(|n| VARS.iter().find(|v| v.flag == n && v.is_bool()))
                {
                    if inline.is_some() {
                        return Err(format!("--{name} takes no value"));
                    }
                    flags.push((var, "false".to_owned()));
                    last_switch = Some(var.flag);
                    continue;
                }
                let Some(var) = VARS.iter().find(|v| v.flag == name) else {
                    return Err(format!("unknown option --{name}; see edge-agent --help"));
                };
                let value = match (var.is_bool(), inline) {
                    (true, None) => {
                        last_switch = Some(var.flag);
                        "true".to_owned()
                    }
                    (_, inline) => value_of(&format!("--{name}"), inline, &mut args)?,
                };
                flags.push((var, value));
            }
        }
    }
    Ok(Cli {
        command: command.unwrap_or(Command::Run),
        env_file,
        flags,
    })
}

fn parse_compose(
    args: &mut impl Iterator<Item = Result<String, String>>,
) -> Result<ComposeCli, String> {
    const USAGE: &str = "see edge-agent compose --help";
    let mut cli = ComposeCli {
        files: Vec::new(),
        project_name: String::new(),
        env_file: None,
        action: ComposeAction::Ps,
    };
    let mut action: Option<String> = None;
    let mut flags = Vec::new();
    while let Some(arg) = args.next() {
        let arg = arg?;
        // After the command, every argument is the command's (`logs -f` follows).
        if action.is_some() {
            flags.push(arg);
            continue;
        }
        let (name, inline) = match arg.split_once('=') {
            Some((name, value)) if name.starts_with("--") => {
                (name.to_owned(), Some(value.to_owned()))
            }
            _ => (arg.clone(), None),
        };
        match name.as_str() {
            "-f" | "--file" => cli
                .files
                .push(value_of(&format!("compose {name}"), inline, args)?.into()),
            "-p" | "--project-name" => {
                cli.project_name = value_of(&format!("compose {name}"), inline, args)?
            }
            "--env-file" => {
                cli.env_file = Some(value_of(&format!("compose {name}"), inline, args)?.into())
            }
            "-h" | "--help" => {
                cli.action = ComposeAction::Help;
                return Ok(cli);
            }
            _ if !name.starts_with('-') => action = Some(arg),
            _ => return Err(format!("unknown compose option {arg}; {USAGE}")),
        }
    }
    let action = action.ok_or_else(|| {
        format!(
            "compose needs a command: config, up, down, ps, logs, pull, stop, start or restart; {USAGE}"
        )
    })?;
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    cli.action = match (action.as_str(), flags.as_slice()) {
        ("config", []) => ComposeAction::Config { json: false },
        ("config", ["--format", "json"] | ["--format=json"]) => {
            ComposeAction::Config { json: true }
        }
        ("config", ["--format", "yaml"] | ["--format=yaml"]) => {
            ComposeAction::Config { json: false }
        }
        ("up", [] | ["-d"] | ["--detach"]) => ComposeAction::Up,
        ("down", []) => ComposeAction::Down { volumes: false },
        ("down", ["-v"] | ["--volumes"]) => ComposeAction::Down { volumes: true },
        ("ps", [] | ["-a"] | ["--all"]) => ComposeAction::Ps,
        ("stop" | "start" | "restart", services)
            if services.iter().all(|s| !s.starts_with('-')) =>
        {
            use crate::compose::Lifecycle;
            let what = match action.as_str() {
                "stop" => Lifecycle::Stop,
                "start" => Lifecycle::Start,
                _ => Lifecycle::Restart,
            };
            let services = services.iter().map(|s| s.to_string()).collect();
            ComposeAction::Lifecycle { what, services }
        }
        ("pull", args) => {
            let (mut services, mut ignore_failures) = (Vec::new(), false);
            for arg in args {
                match *arg {
                    "--ignore-pull-failures" => ignore_failures = true,
                    s if !s.starts_with('-') => services.push(s.to_owned()),
                    _ => return Err(format!("compose pull: unexpected {arg}; {USAGE}")),
                }
            }
            ComposeAction::Pull {
                services,
                ignore_failures,
            }
        }
        ("logs", args) => {
            let mut options = crate::compose::LogsCli::default();
            let mut services = Vec::new();
            let mut args = args.iter();
            while let Some(arg) = args.next() {
                let (name, inline) = match arg.split_once('=') {
                    Some((name, value)) if name.starts_with("--") => (name, Some(value)),
                    _ => (*arg, None),
                };
                match name {
                    "-f" | "--follow" => options.follow = true,
                    "-t" | "--timestamps" => options.timestamps = true,
                    "-n" | "--tail" => {
                        let value = inline
                            .or_else(|| args.next().copied())
                            .ok_or_else(|| format!("compose logs {name} needs a value"))?;
                        options.tail = match value {
                            "all" => None,
                            n => Some(n.parse().map_err(|_| {
                                format!(
                                    "compose logs {name} {n}: expected a number of lines or all"
                                )
                            })?),
                        };
                    }
                    s if !s.starts_with('-') => services.push(s.to_owned()),
                    _ => return Err(format!("compose logs: unexpected {arg}; {USAGE}")),
                }
            }
            ComposeAction::Logs { services, options }
        }
        ("config" | "up" | "down" | "ps" | "stop" | "start" | "restart", _) => {
            return Err(format!(
                "compose {action}: unexpected {}; {USAGE}",
                flags.join(" ")
            ))
        }
        _ => return Err(format!("unknown compose command {action:?}; {USAGE}")),
    };
    Ok(cli)
}

pub fn compose_help() -> String {
    "Usage: edge-agent compose [-f FILE] [-p NAME] [--env-file FILE] COMMAND\n\n\
     Runs a compose file on the local Docker Engine, as docker compose v2.40 does, without a compose\n\
     binary. FILE defaults to compose.yaml, compose.yml, docker-compose.yaml or docker-compose.yml.\n\n\
     Commands:\n  \
       config [--format json]  print the resolved model\n  \
       up [-d]                 create or update the containers, networks and volumes (detached)\n  \
       down [-v]               stop and remove them (named volumes too with -v)\n  \
       ps                      each container's service, state and exit code, and the stack status\n  \
       logs [-f] [-t] [--tail N] [SERVICE...]\n                          \
                               the containers' output, `service-1  | line` (-f: until they stop)\n  \
       pull [--ignore-pull-failures] [SERVICE...]\n                          \
                               pull the services' images (with the credentials of docker login)\n  \
       stop [SERVICE...]       stop the containers (dependents first; all services when none named)\n  \
       start [SERVICE...]      start the stopped containers (dependencies first, as depends_on waits)\n  \
       restart [SERVICE...]    restart the containers (dependencies first)\n"
        .to_owned()
}

/// The value of `option` (as typed: `--edge-id`, `compose -f`): after `=`, or the next argument.
fn value_of(
    option: &str,
    inline: Option<String>,
    args: &mut impl Iterator<Item = Result<String, String>>,
) -> Result<String, String> {
    match inline {
        Some(value) => Ok(value),
        None => args
            .next()
            .transpose()?
            .ok_or_else(|| format!("{option} needs a value")),
    }
}

pub fn help() -> String {
    let mut out = format!(
        "edge-agent {} - a small Portainer Edge Agent\n\n\
         Usage: edge-agent [run|check] [--env-file PATH] [--<option> VALUE ...]\n\
         \x20      edge-agent compose [-f FILE] [-p NAME] [--env-file FILE] config|up|down|ps|logs|pull|...\n\n\
         Commands:\n  \
           run      poll Portainer and serve it (default)\n  \
           check    validate the configuration, show the key and Edge ID, test reachability\n  \
           compose  run a compose file on the local Docker (edge-agent compose --help)\n\n\
         Settings come from the env file (default {DEFAULT_ENV_FILE}), then the\n\
         environment, then options; later sources win.\n\n\
         Options (environment variable, default):\n",
        env!("CARGO_PKG_VERSION")
    );
    for var in VARS {
        let default = if var.default.is_empty() {
            String::new()
        } else {
            format!(", default {}", var.default)
        };
        let names = match var.is_bool() {
            true => format!("--{0}, --no-{0}", var.flag),
            false => format!("--{} VALUE", var.flag),
        };
        let _ = writeln!(out, "  {names}\n      {}{default}: {}", var.env, var.help);
    }
    out.push_str(
        "  --env-file PATH\n      the env file to read\n  --help, --version\n\n\
         Switches (--no-... turns one off) take no value; --<switch>=false works too.\n\n\
         Exit codes: check: 0 all in order, 1 something is NOT (see its line), 78 bad\n\
         configuration; run: 0 stopped, 64 bad command line, 78 bad configuration, 1 other\n\
         failure.",
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_str(args: &[&str]) -> Result<Cli, String> {
        parse(args.iter().map(OsString::from))
    }

    #[test]
    fn run_is_the_default_and_flags_take_values() {
        let cli = parse_str(&[
            "--edge-id",
            "abc",
            "--log-level=DEBUG",
            "--edge-insecurepoll",
            "--no-edge-tunnel",
        ])
        .unwrap();
        assert!(matches!(cli.command, Command::Run));
        let flags: Vec<(&str, &str)> = cli.flags.iter().map(|(v, s)| (v.env, s.as_str())).collect();
        assert_eq!(
            flags,
            [
                ("EDGE_ID", "abc"),
                ("LOG_LEVEL", "DEBUG"),
                ("EDGE_INSECURE_POLL", "true"),
                ("EDGE_TUNNEL", "false")
            ]
        );
    }

    #[test]
    fn commands_and_env_file() {
        let cli = parse_str(&["check", "--env-file", "/tmp/x.env"]).unwrap();
        assert!(matches!(cli.command, Command::Check));
        assert!(
            matches!(cli.env_file, EnvFileChoice::Named(p) if p == std::path::Path::new("/tmp/x.env"))
        );
        assert!(matches!(
            parse_str(&["--version"]).unwrap().command,
            Command::Version
        ));
    }

    #[test]
    fn mistakes_are_explained() {
        assert!(parse_str(&["--edge-idd", "x"])
            .unwrap_err()
            .contains("unknown option --edge-idd"));
        assert!(parse_str(&["--edge-id"])
            .unwrap_err()
            .contains("--edge-id needs a value"));
        assert!(parse_str(&["start"])
            .unwrap_err()
            .contains("unknown command"));
        assert!(parse_str(&["run", "check"])
            .unwrap_err()
            .contains("unexpected argument"));
    }

    #[test]
    fn help_is_help_after_a_command_too() {
        for args in [
            &["check", "-h"][..],
            &["run", "--help"],
            &["-h", "check"],
            &["check", "help"],
        ] {
            assert!(
                matches!(parse_str(args).unwrap().command, Command::Help),
                "{args:?}"
            );
        }
    }

    #[test]
    fn a_value_after_a_switch_is_explained() {
        assert_eq!(
            parse_str(&["--edge-insecurepoll", "true"]).unwrap_err(),
            "--edge-insecurepoll takes no value: write --edge-insecurepoll to turn it on, --no-edge-insecurepoll to turn it off (or --edge-insecurepoll=true)"
        );
        assert!(parse_str(&["check", "--no-edge-tunnel", "0"])
            .unwrap_err()
            .contains("--edge-tunnel takes no value"));
        let cli = parse_str(&["--edge-insecurepoll=false", "check"]).unwrap();
        assert!(matches!(cli.command, Command::Check));
        assert_eq!(cli.flags[0].1, "false");
        // A command after a switch is still a command.
        let cli = parse_str(&["--edge-insecurepoll", "check"]).unwrap();
        assert!(matches!(cli.command, Command::Check));
    }

    #[test]
    fn help_shows_switches_without_values_and_their_no_forms() {
        let help = help();
        assert!(
            help.contains("  --edge-insecurepoll, --no-edge-insecurepoll\n"),
            "{help}"
        );
        assert!(help.contains("  --edge-key VALUE\n"), "{help}");
        assert!(!help.contains("--edge-insecurepoll VALUE"));
    }

    #[test]
    fn compose_command_line() {
        let Command::Compose(cli) = parse_str(&[
            "compose",
            "-f",
            "a.yml",
            "-p",
            "x",
            "--env-file=e",
            "up",
            "-d",
        ])
        .unwrap()
        .command
        else {
            panic!("not compose")
        };
        assert_eq!(
            cli,
            ComposeCli {
                files: vec!["a.yml".into()],
                project_name: "x".into(),
                env_file: Some("e".into()),
                action: ComposeAction::Up
            }
        );
        let action = |args: &[&str]| match parse_str(args).map(|c| c.command) {
            Ok(Command::Compose(c)) => Ok(c.action),
            Ok(other) => panic!("{other:?}"),
            Err(e) => Err(e),
        };
        assert_eq!(
            action(&["compose", "down", "-v"]),
            Ok(ComposeAction::Down { volumes: true })
        );
        assert_eq!(
            action(&["compose", "config", "--format", "json"]),
            Ok(ComposeAction::Config { json: true })
        );
        assert!(action(&["compose"])
            .unwrap_err()
            .contains("needs a command"));
        assert_eq!(
            action(&["compose", "stop", "web", "db"]),
            Ok(ComposeAction::Lifecycle {
                what: crate::compose::Lifecycle::Stop,
                services: vec!["web".into(), "db".into()]
            })
        );
        assert!(action(&["compose", "restart", "-t", "3"])
            .unwrap_err()
            .contains("compose restart: unexpected -t 3"));
        assert!(action(&["compose", "top"])
            .unwrap_err()
            .contains("unknown compose command \"top\""));
        assert_eq!(
            action(&["compose", "logs", "-f", "--tail", "5", "-t", "web"]),
            Ok(ComposeAction::Logs {
                services: vec!["web".into()],
                options: crate::compose::LogsCli {
                    follow: true,
                    tail: Some(5),
                    timestamps: true
                }
            })
        );
        assert_eq!(
            action(&["compose", "logs", "--tail=all", "-n", "2"]),
            Ok(ComposeAction::Logs {
                services: vec![],
                options: crate::compose::LogsCli {
                    tail: Some(2),
                    ..Default::default()
                }
            })
        );
        assert!(action(&["compose", "logs", "--tail", "x"])
            .unwrap_err()
            .contains("compose logs --tail x: expected a number of lines or all"));
        assert!(action(&["compose", "logs", "--tail"])
            .unwrap_err()
            .contains("compose logs --tail needs a value"));
        assert!(action(&["compose", "logs", "--since", "1h"])
            .unwrap_err()
            .contains("compose logs: unexpected --since"));
        assert_eq!(
            action(&["compose", "pull", "--ignore-pull-failures", "db"]),
            Ok(ComposeAction::Pull {
                services: vec!["db".into()],
                ignore_failures: true
            })
        );
        assert!(action(&["compose", "pull", "-q"])
            .unwrap_err()
            .contains("compose pull: unexpected -q"));
        assert!(action(&["compose", "down", "--rmi"])
            .unwrap_err()
            .contains("unexpected --rmi"));
        assert!(action(&["compose", "-x", "up"])
            .unwrap_err()
            .contains("unknown compose option -x"));
    }

    #[test]
    fn help_lists_every_setting() {
        let help = help();
        for var in VARS {
            assert!(help.contains(var.env) && help.contains(&format!("--{}", var.flag)));
        }
        assert!(
            help.contains(
                "check: 0 all in order, 1 something is NOT (see its line), 78 bad\nconfiguration"
            ),
            "{help}"
        );
    }
}
