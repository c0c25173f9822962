//! What a command prints, on stdout or stderr, without the panic of `println!` when the output
//! cannot be written: once a line fails (the reader is gone, as in `edge-agent check | head -1`,
//! or the disk is full) the output ends quietly, and the command still runs to its end and exits
//! with its own code.

use std::fmt;
use std::io::{self, Write};

pub struct Output<W> {
    inner: W,
    failed: bool,
}

pub fn stdout() -> Output<io::Stdout> {
    Output::new(io::stdout())
}

pub fn stderr() -> Output<io::Stderr> {
    Output::new(io::stderr())
}

impl<W: Write> Output<W> {
    pub fn new(inner: W) -> Output<W> {
        Output {
            inner,
            failed: false,
        }
    }

    /// Writes `text` and a newline; `false` once the output has failed (a caller that would
    /// go on producing lines for no reader, as `compose logs -f`, stops then).
    pub fn line(&mut self, text: fmt::Arguments) -> bool {
        if !self.failed {
            self.failed = writeln!(self.inner, "{text}")
                .and_then(|()| self.inner.flush())
                .is_err();
        }
        !self.failed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A pipe whose reader may go away.
    #[derive(Default)]
    struct Pipe {
        closed: bool,
        written: Vec<u8>,
        refused: usize,
    }

    impl Write for Pipe {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            if self.closed {
                self.refused += 1;
                return Err(io::ErrorKind::BrokenPipe.into());
            }
            self.written.extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_closed_pipe_ends_the_output_quietly() {
        let mut out = Output::new(Pipe::default());
        assert!(out.line(format_args!("line {}", 1)));
        out.inner.closed = true;
        for n in 2..5 {
            assert!(!out.line(format_args!("line {n}")), "the caller is told");
        }
        assert_eq!(out.inner.written, b"line 1\n");
        assert_eq!(out.inner.refused, 1, "no write after the refused one");
    }
}
