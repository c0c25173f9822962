//! SIGTERM and SIGINT are blocked in every thread and taken synchronously by the main thread with
//! `sigwait` (or looked for without waiting, through a signalfd, by a loop that has other work),
//! so no code runs in a signal handler and the shutdown path is ordinary code.

use nix::sys::signal::{SigSet, SigmaskHow, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};

pub struct Termination(SigSet);

impl Termination {
    /// Blocks the termination signals. Call before spawning threads: they inherit the mask.
    pub fn block() -> nix::Result<Termination> {
        let mut set = SigSet::empty();
        set.add(Signal::SIGTERM);
        set.add(Signal::SIGINT);
        nix::sys::signal::pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&set), None)?;
        Ok(Termination(set))
    }

    /// SIGTERM or SIGINT if one came, without waiting (for a loop that has other things to do).
    pub fn pending(&self) -> nix::Result<Option<Signal>> {
        let fd = SignalFd::with_flags(&self.0, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)?;
        match fd.read_signal()? {
            Some(info) => Signal::try_from(info.ssi_signo as i32).map(Some),
            None => Ok(None),
        }
    }

    /// Waits for SIGTERM or SIGINT.
    pub fn wait(&self) -> nix::Result<Signal> {
        self.0.wait()
    }
}
