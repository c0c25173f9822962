//! What the pipeline reads, and the first stages on it: the compose file (at most [`MAX_FILE`]
//! bytes) into its YAML tree ([`crate::compose::yaml`]), and the environment for interpolation,
//! the caller's over `.env` or `--env-file` ([`crate::compose::dotenv`]). `env_file:` files are
//! read through [`read_env_file`] too.

use super::error::{Fail, LoadError};
use crate::compose::yaml::{self, Node};
use crate::compose::{dotenv, Source};
use crate::system::files;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The largest compose, `.env` or `env_file:` file read.
pub const MAX_FILE: u64 = 1024 * 1024;

/// What [`read_bounded`] answers for a folder: a default `.env` that is one is skipped, as
/// compose-go's `WithEnvFiles` (`cli/options.go`) skips it.
pub const IS_A_FOLDER: &str = "it is a folder, not a file";

/// Reads a file for the pipeline: its text, `None` when it does not exist, or why not.
pub type ReadFile<'a> = &'a dyn Fn(&Path) -> Result<Option<String>, String>;

/// The compose file (exactly one), and its YAML tree.
pub(super) fn compose_file(source: &Source, read: ReadFile) -> Result<(PathBuf, Node), Fail> {
    let file = match source.files.as_slice() {
        [file] => source.working_dir.join(file),
        _ => {
            return Err(Box::new(LoadError {
                file: source.working_dir.clone(),
                line: None,
                path: String::new(),
                message: format!(
                "{} compose files given: this engine reads exactly one (merge overrides into it)",
                source.files.len()
            ),
            }))
        }
    };
    let text = read(&file)
        .and_then(|text| text.ok_or_else(|| "not found".to_owned()))
        .map_err(|m| fail(&file, m))?;
    let root = yaml::parse(&text).map_err(|e| {
        Box::new(LoadError {
            file: file.clone(),
            line: Some(e.line),
            path: String::new(),
            message: format!("not valid YAML: {}", e.message),
        })
    })?;
    Ok((file, root))
}

/// The environment for interpolation: the caller's, then `.env` (or the `--env-file`) for the
/// names the caller does not set.
pub(super) fn environment(
    source: &Source,
    read: ReadFile,
) -> Result<BTreeMap<String, String>, Fail> {
    let mut env = source.environment.clone();
    let disabled = env
        .get("COMPOSE_DISABLE_ENV_FILE")
        .is_some_and(|v| matches!(v.as_str(), "1" | "true" | "TRUE" | "True"));
    let dotenv_file = match &source.env_file {
        Some(path) => Some((source.working_dir.join(path), true)),
        None => (!disabled).then(|| (source.working_dir.join(".env"), false)),
    };
    if let Some((path, required)) = &dotenv_file {
        let caller = source.environment.clone();
        let entries = match read_env_file(read, path, &|k| caller.get(k).cloned()) {
            Err((None, m)) if !required && m == IS_A_FOLDER => None,
            entries => entries.map_err(|(line, m)| {
                Box::new(LoadError {
                    file: path.clone(),
                    line,
                    path: String::new(),
                    message: m,
                })
            })?,
        };
        if entries.is_none() && *required {
            return Err(fail(path, "env file not found".into()));
        }
        for (key, value) in entries.unwrap_or_default() {
            env.entry(key).or_insert(value);
        }
    }
    Ok(env)
}

fn fail(file: &Path, message: String) -> Fail {
    Box::new(LoadError {
        file: file.to_owned(),
        line: None,
        path: String::new(),
        message,
    })
}

pub(super) fn read_bounded(path: &Path) -> Result<Option<String>, String> {
    match files::read_optional(path, MAX_FILE) {
        Ok(None) => Ok(None),
        Ok(Some(bytes)) => String::from_utf8(bytes)
            .map(Some)
            .map_err(|_| "cannot read it: stream did not contain valid UTF-8".to_owned()),
        Err(files::Error::Io(e)) if e.kind() == std::io::ErrorKind::IsADirectory => {
            Err(IS_A_FOLDER.to_owned())
        }
        Err(files::Error::Io(e)) => Err(format!("cannot read it: {e}")),
        Err(files::Error::TooLarge(limit)) => Err(format!("larger than {} KiB", limit / 1024)),
    }
}

/// The line (when known) and what is wrong.
type EnvFileError = (Option<usize>, String);

/// The entries of an env file, `None` if it does not exist.
pub(super) fn read_env_file(
    read: ReadFile,
    path: &Path,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Option<Vec<(String, String)>>, EnvFileError> {
    match read(path).map_err(|m| (None, m))? {
        Some(text) => dotenv::parse(&text, env)
            .map(Some)
            .map_err(|(line, m)| (Some(line), m)),
        None => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compose::load::tests::{load_err, load_files};

    #[test]
    fn bounds_on_files_and_aliases() {
        let big = format!("services: {{}}\n#{}\n", "x".repeat(MAX_FILE as usize));
        let (_dir, project) = load_files(&[("compose.yaml", &big)], &[]);
        assert!(project
            .unwrap_err()
            .message
            .contains("larger than 1024 KiB"));
        let mut bomb = String::from("x-a: &a [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 0..8 {
            let prev = if i == 0 {
                "a".to_owned()
            } else {
                format!("b{}", i - 1)
            };
            bomb.push_str(&format!("x-b{i}: &b{i} [*{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}]\n"));
        }
        bomb.push_str("services: {}\n");
        assert!(load_err(&bomb).contains("alias bomb"));
    }

    /// A project whose bind made a `.env` folder (`./.env/data:/data`) loads again, as with
    /// compose v2; a folder given as the env file is an error.
    #[test]
    fn a_dotenv_folder_is_skipped() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("compose.yaml"),
            "services:\n  a:\n    image: \"x:${TAG:-1}\"\n",
        )
        .unwrap();
        std::fs::create_dir_all(dir.path().join(".env/data")).unwrap();
        let mut source = Source {
            working_dir: dir.path().to_owned(),
            files: vec!["compose.yaml".into()],
            project_name: "p".into(),
            ..Source::default()
        };
        let project = crate::compose::load(&source).unwrap();
        assert_eq!(project.services["a"].image, "x:1");
        source.env_file = Some(".env".into());
        let e = crate::compose::load(&source).unwrap_err();
        assert!(e.to_string().contains(IS_A_FOLDER), "{e}");
    }
}
