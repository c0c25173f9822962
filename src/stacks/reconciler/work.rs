//! What the reconciler asks of the I/O shell ([`Work`], one bounded step of one stack) and
//! what the shell hands back ([`Outcome`]).

use std::time::Duration;

/// The next step of one stack, for the shell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Work {
    /// Get the payload of `version`, write the stack folder, name the project.
    Fetch { id: i64, version: i64 },
    /// Load the compose project from the folder and begin deploying it.
    Load {
        id: i64,
        project: String,
        entry_file: String,
    },
    /// One Docker call of the deploy begun by `Load`.
    Up { id: i64 },
    /// List the project's containers.
    Check { id: i64, project: String },
    /// Take the project down (when there is one) and remove the folder.
    Remove { id: i64, project: String },
}

impl Work {
    pub fn id(&self) -> i64 {
        match self {
            Work::Fetch { id, .. }
            | Work::Load { id, .. }
            | Work::Up { id }
            | Work::Check { id, .. }
            | Work::Remove { id, .. } => *id,
        }
    }
}

/// What a [`Work`] came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The folder is written; `project` is `edge_<name>` normalised, or why it cannot be.
    Fetched {
        name: String,
        project: Result<String, String>,
        entry_file: String,
        files_hash: String,
    },
    /// The payload or the compose file is refused: status 2 until a new version.
    Invalid(String),
    /// Could not fetch (server, link): tried again later, nothing reported.
    Unreachable(String),
    /// The project loaded; waiting for it to run may take this long.
    Loaded { wait: Duration },
    /// The deploy made one step and has more to do.
    Stepped,
    /// The deploy is done.
    Deployed,
    /// The deploy, the check or the removal failed in a way that may pass (Docker busy, an
    /// image missing): retried with backoff.
    Failed(String),
    /// What the containers of the project say.
    Seen(Seen),
    /// The project is down and the folder gone.
    Removed,
}

/// The project's containers, aggregated as libstack does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seen {
    /// Not yet running: what is still starting (for the message if it never does).
    Starting(String),
    Running,
    Completed,
    Error(String),
    /// No container at all.
    Gone,
}
