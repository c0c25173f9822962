//! `edge-agent compose logs`: the output of a project's containers, found by label, as compose
//! v2.40.3's `logs` prints it (`docker/compose@v2.40.3:pkg/compose/logs.go`,
//! `cmd/formatter/logs.go`): each line after the container's name without the project, padded
//! to the longest name plus one (`web-1  | line`), stdout and stderr of the containers both on
//! stdout. One stream a container, read through the Docker client's demultiplexer, at most
//! [`STREAMS`] at once; a line longer than [`MAX_LINE`] bytes is cut. With `follow` a stream
//! ends when its container stops (`web-1 exited with code 0`, as v2 says it), or at its next
//! line once stdout has no reader.

use super::body;
use super::converge::parallel;
use crate::docker::{self, Client, Limits, LogsOptions};
use crate::system::output;
use std::cell::Cell;
use std::time::Duration;

/// `logs` options from the command line.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LogsCli {
    /// `-f`: until the containers stop.
    pub follow: bool,
    /// `--tail N`: the last lines of each container; `None`: all.
    pub tail: Option<u64>,
    /// `-t`: Docker's timestamp before each line.
    pub timestamps: bool,
}

/// The longest line printed; the rest of a longer one is left out, and the line says so.
pub const MAX_LINE: usize = 16 * 1024;
/// Containers streamed at once (one thread and one connection each); with `follow`, the
/// containers after these are read once one of these stops.
const STREAMS: usize = 64;
/// The longest silence of a stream that does not follow.
const IDLE: Duration = Duration::from_secs(30);

/// Prints the output of the containers of `services` (all when empty) of `project_name`.
/// Every stream is read to its end; the first error, if any, is returned after that.
pub fn logs(
    docker: &Client,
    project_name: &str,
    services: &[String],
    options: LogsCli,
) -> Result<(), docker::Error> {
    let project = project_name.to_lowercase();
    let filter = format!("{}={project}", body::PROJECT);
    let oneoff = format!("{}=False", body::ONEOFF);
    let mut containers: Vec<(String, String, bool)> = docker
        .containers(true, &[("label", &filter), ("label", &oneoff)])?
        .into_iter()
        .filter(|c| {
            let service = c.labels.get(body::SERVICE).map_or("", String::as_str);
            services.is_empty() || services.iter().any(|s| s == service)
        })
        .map(|c| {
            let name = c
                .names
                .first()
                .map_or(c.id.as_str(), |n| n.trim_start_matches('/'));
            let short = name
                .strip_prefix(&format!("{project}-"))
                .unwrap_or(name)
                .to_owned();
            (c.id, short, c.state == "running" || c.state == "restarting")
        })
        .collect();
    containers.sort_by(|a, b| a.1.cmp(&b.1));
    let width = containers.iter().map(|c| c.1.len()).max().unwrap_or(0) + 1;
    let docker = docker.with_limits(Limits {
        stream_idle: (!options.follow).then_some(IDLE),
        ..Limits::default()
    });
    let request = LogsOptions {
        stdout: true,
        stderr: true,
        follow: options.follow,
        tail: options.tail,
        since: None,
        timestamps: options.timestamps,
    };
    let results = parallel::map(&containers, STREAMS, |(id, name, running)| {
        let prefix = format!("{name:<width$} | ");
        let mut lines = Lines::default();
        // The reader of stdout went away (`logs -f | head`): this stream ends.
        let gone = Cell::new(false);
        let print = |line: &[u8], cut: bool| {
            let text = String::from_utf8_lossy(line);
            let written = match cut {
                false => output::stdout().line(format_args!("{prefix}{text}")),
                true => output::stdout().line(format_args!(
                    "{prefix}{text} [line cut at {} KiB]",
                    MAX_LINE / 1024
                )),
            };
            gone.set(gone.get() || !written);
        };
        let mut stream = docker.logs(id, &request)?;
        while let Some((_, bytes)) = stream.next()? {
            lines.feed(bytes, print);
            if gone.get() {
                return Ok(());
            }
        }
        lines.finish(print);
        if options.follow && *running {
            let state = docker.inspect_container(id)?.state;
            if !state.running {
                output::stdout().line(format_args!("{name} exited with code {}", state.exit_code));
            }
        }
        Ok(())
    });
    results.into_iter().collect()
}

/// A container's output cut into lines (pure): bytes in, whole lines out, each at most
/// [`MAX_LINE`] bytes.
#[derive(Debug, Default)]
struct Lines {
    line: Vec<u8>,
    /// The current line went past the limit: the rest of it is dropped.
    cut: bool,
}

impl Lines {
    /// Calls `emit(line, cut)` for every line `bytes` completes, without its `\n`.
    fn feed(&mut self, mut bytes: &[u8], mut emit: impl FnMut(&[u8], bool)) {
        while !bytes.is_empty() {
            let (part, complete) = match bytes.iter().position(|&b| b == b'\n') {
                Some(end) => (&bytes[..end], true),
                None => (bytes, false),
            };
            let room = MAX_LINE - self.line.len();
            self.cut |= part.len() > room;
            self.line.extend_from_slice(&part[..part.len().min(room)]);
            if complete {
                emit(&self.line, self.cut);
                self.line.clear();
                self.cut = false;
                bytes = &bytes[part.len() + 1..];
            } else {
                bytes = &[];
            }
        }
    }

    /// The last line when the output did not end with `\n`.
    fn finish(&mut self, mut emit: impl FnMut(&[u8], bool)) {
        if !self.line.is_empty() || self.cut {
            emit(&self.line, self.cut);
        }
        self.line.clear();
        self.cut = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The lines of `input` fed in pieces of `piece` bytes, with `+` after a cut one.
    fn lines(input: &[u8], piece: usize) -> Vec<String> {
        let mut lines = Lines::default();
        let mut out = Vec::new();
        for chunk in input.chunks(piece) {
            lines.feed(chunk, |l, cut| {
                out.push(format!(
                    "{}{}",
                    String::from_utf8_lossy(l),
                    if cut { "+" } else { "" }
                ))
            });
        }
        lines.finish(|l, cut| {
            out.push(format!(
                "{}{}",
                String::from_utf8_lossy(l),
                if cut { "+" } else { "" }
            ))
        });
        out
    }

    #[test]
    fn output_is_cut_into_lines_whatever_the_pieces() {
        for piece in [1, 2, 5, 64] {
            assert_eq!(
                lines(b"one\n\ntwo\r\nlast", piece),
                ["one", "", "two\r", "last"],
                "piece {piece}"
            );
            assert_eq!(lines(b"a\n", piece), ["a"], "piece {piece}");
        }
        assert!(lines(b"", 1).is_empty());
    }

    #[test]
    fn a_long_line_is_cut_at_the_limit_and_the_next_is_whole() {
        let mut input = vec![b'x'; MAX_LINE * 3 + 7];
        input.extend_from_slice(b"\nnext\n");
        input.extend(vec![b'y'; MAX_LINE + 1]);
        for piece in [1000, MAX_LINE, input.len()] {
            let out = lines(&input, piece);
            assert_eq!(out.len(), 3, "piece {piece}");
            assert_eq!(
                out[0],
                format!("{}+", "x".repeat(MAX_LINE)),
                "piece {piece}"
            );
            assert_eq!(out[1], "next");
            assert_eq!(
                out[2],
                format!("{}+", "y".repeat(MAX_LINE)),
                "piece {piece}"
            );
        }
        // Exactly the limit is not cut.
        let exact = [vec![b'z'; MAX_LINE], b"\n".to_vec()].concat();
        assert_eq!(lines(&exact, 100), ["z".repeat(MAX_LINE)]);
    }
}
