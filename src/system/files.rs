//! Reading a small file that may be absent, never more than a limit: the compose files, env
//! files and the Docker CLI config the agent reads through one bounded read.

use std::io::{self, Read};
use std::path::Path;

#[derive(Debug)]
pub enum Error {
    Io(io::Error),
    /// Longer than the limit, in bytes (the rest is never read).
    TooLarge(u64),
}

/// The file's bytes, `None` when it does not exist.
pub fn read_optional(path: &Path, limit: u64) -> Result<Option<Vec<u8>>, Error> {
    let file = match std::fs::File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::Io(e)),
    };
    let mut bytes = Vec::new();
    file.take(limit + 1)
        .read_to_end(&mut bytes)
        .map_err(Error::Io)?;
    match bytes.len() as u64 > limit {
        true => Err(Error::TooLarge(limit)),
        false => Ok(Some(bytes)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absent_small_and_too_large() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        assert!(matches!(read_optional(&path, 4), Ok(None)));
        std::fs::write(&path, "abcd").unwrap();
        assert_eq!(read_optional(&path, 4).unwrap(), Some(b"abcd".to_vec()));
        std::fs::write(&path, "abcde").unwrap();
        assert!(matches!(read_optional(&path, 4), Err(Error::TooLarge(4))));
        assert!(matches!(read_optional(dir.path(), 4), Err(Error::Io(_))));
    }
}
