//! The pipeline's error: the file, line and key path of what is wrong, and what was expected.

use std::fmt;
use std::path::PathBuf;

/// What is wrong, and where: the file, its line when known, the key path
/// (`services.web.ports[1]`), and what was expected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadError {
    pub file: PathBuf,
    pub line: Option<usize>,
    pub path: String,
    pub message: String,
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, " line {line}")?;
        }
        if self.path.is_empty() {
            write!(f, ": {}", self.message)
        } else {
            write!(f, ": {}: {}", self.path, self.message)
        }
    }
}

impl std::error::Error for LoadError {}

/// Errors are boxed inside the pipeline: they are rare, and a small `Result` keeps the code small.
pub(super) type Fail = Box<LoadError>;
