//! A compose engine on the Docker Engine API: `docker compose up -d` / `down` / `ps` semantics
//! of compose v2.40 without a compose binary (docs/compose.md says what is copied from it).
//!
//! API (also used by the edge stacks):
//! ```text
//! pub struct Source { working_dir, files, project_name, environment, env_file }
//! pub fn load(&Source) -> Result<Project, LoadError>        // pure pipeline + file reads
//! pub fn normalize_project_name(&str) -> String             // compose-go's NormalizeProjectName
//! pub struct Up; Up::new(&Project) -> Up; Up::step(&mut self, &docker::Client) -> Result<Step, UpError>
//! pub enum Step { Continue, Done }                          // per step: one bounded Docker call, up to 8 side by side, or a wait ≤ 0.5 s
//! pub fn up(&docker::Client, &Project) -> Result<(), UpError>            // loops over step
//! pub fn down(&docker::Client, project_name, remove_volumes) -> Result<(), docker::Error>
//! pub fn lifecycle(&docker::Client, project_name, services, Lifecycle) -> Result<(), UpError> // stop/start/restart
//! pub fn pull(&docker::Client, &Project, services, ignore_failures, progress) -> Result<(), UpError>
//! pub fn logs(&docker::Client, project_name, services, LogsCli) -> Result<(), docker::Error>
//! pub fn ps(&docker::Client, project_name) -> Result<Vec<ServiceState>, docker::Error>
//! pub fn aggregate(&[ServiceState]) -> StackStatus          // libstack's rules
//! ```
//! Modules: [`yaml`] (tree with bounds), [`interpolate`], [`dotenv`], [`load`] (the pipeline and
//! key binding), [`model`] (the normalised project), [`body`] (Engine API request bodies and
//! compose's labels, pure), [`converge`] (`up` as steps, `down`, `pull`), [`status`] (`ps`, aggregate),
//! [`logs`].

mod body;
pub(crate) mod command;
mod converge;
mod dotenv;
mod hash;
mod interpolate;
mod load;
mod logs;
mod model;
mod status;
mod yaml;

pub use converge::{down, lifecycle, pull, up, Lifecycle, Step, Up, UpError};
pub use hash::config_hash;
pub use load::{load, load_with, normalize_project_name, LoadError, ReadFile};
pub use logs::{logs, LogsCli};
pub use model::{Project, Service};
pub use status::{aggregate, ps, ServiceState, StackStatus};
pub use yaml::to_yaml;
#[cfg(fuzzing)]
pub(crate) use {
    body::{container as container_body, network as network_body},
    dotenv::parse as parse_dotenv,
    yaml::parse as parse_yaml,
};

use std::collections::BTreeMap;
use std::path::PathBuf;

/// Where a project comes from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Source {
    /// The project folder: relative paths (files, binds, env files) start here, and its `.env`
    /// is read.
    pub working_dir: PathBuf,
    /// Compose files, relative to `working_dir` or absolute (one today).
    pub files: Vec<PathBuf>,
    /// `-p`; empty: the file's `name:`, else `COMPOSE_PROJECT_NAME`, else the folder's name.
    pub project_name: String,
    /// The caller's environment: it wins over `.env` for interpolation.
    pub environment: BTreeMap<String, String>,
    /// `--env-file`: read instead of `working_dir/.env` (and it must exist).
    pub env_file: Option<PathBuf>,
}
