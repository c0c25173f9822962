//! Command line: `edge-agent [run|check] [--env-file PATH] [--<setting> VALUE ...]`, plus
//! `--help` and `--version`. Setting flags are the Go agent's names (see [`crate::config::VARS`]).

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
    while let Some(arg) = args.next() {
        let arg = arg?;
        let Some(option) = arg.strip_prefix("--") else {
            let chosen = match arg.as_str() {
                "run" => Command::Run,
                "check" => Command::Check,
                "help" | "-h" => Command::Help,
                "version" | "-V" => Command::Version,
                _ => return Err(format!("unknown command {arg:?}; see edge-agent --help")),
            };
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
                let value = value_of(name, inline, &mut args)?;
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
                    continue;
                }
                let Some(var) = VARS.iter().find(|v| v.flag == name) else {
                    return Err(format!("unknown option --{name}; see edge-agent --help"));
                };
                let value = match (var.is_bool(), inline) {
                    (true, None) => "true".to_owned(),
                    (_, inline) => value_of(name, inline, &mut args)?,
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

fn value_of(
    name: &str,
    inline: Option<String>,
    args: &mut impl Iterator<Item = Result<String, String>>,
) -> Result<String, String> {
    match inline {
        Some(value) => Ok(value),
        None => args
            .next()
            .transpose()?
            .ok_or_else(|| format!("--{name} needs a value")),
    }
}

pub fn help() -> String {
    let mut out = format!(
        "edge-agent {} - a small Portainer Edge Agent\n\n\
         Usage: edge-agent [run|check] [--env-file PATH] [--<option> VALUE ...]\n\n\
         Commands:\n  \
           run      poll Portainer and serve it (default)\n  \
           check    validate the configuration, show the key and Edge ID, test reachability\n\n\
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
        let _ = writeln!(
            out,
            "  --{:<20} {}{default}\n  {:<22} {}",
            var.flag, var.env, "", var.help
        );
    }
    out.push_str(
        "  --env-file PATH        the env file to read\n  --help, --version\n\n\
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
