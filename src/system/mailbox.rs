//! Mail between threads: a value under a lock, and a wake-up for the thread that waits on it
//! (poll answers to the stacks and jobs threads, the ends of job runs, the status reports and
//! job logs waiting to be sent). A lock poisoned by a
//! panic elsewhere is taken as it is: the mail is plain data, still whole.

use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::Instant;

#[derive(Default)]
pub struct Mailbox<T> {
    mail: Mutex<T>,
    wake: Condvar,
}

impl<T> Mailbox<T> {
    fn lock(&self) -> MutexGuard<'_, T> {
        self.mail.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Changes the mail under the lock, then wakes the waiting thread.
    pub fn post(&self, f: impl FnOnce(&mut T)) {
        f(&mut self.lock());
        self.wake.notify_all();
    }

    /// The mail at once when `ready` says it is, else after one wake-up (a post, whatever it
    /// changed) or at `until` (never with `None`), ready or not.
    pub fn wait(&self, until: Option<Instant>, ready: impl Fn(&T) -> bool) -> MutexGuard<'_, T> {
        let mail = self.lock();
        if ready(&mail) {
            return mail;
        }
        self.sleep(mail, until)
    }

    /// What `take` takes out of the mail, waiting for it until `until` (for ever with `None`).
    pub fn take<R>(
        &self,
        until: Option<Instant>,
        mut take: impl FnMut(&mut T) -> Option<R>,
    ) -> Option<R> {
        let mut mail = self.lock();
        loop {
            if let Some(taken) = take(&mut mail) {
                return Some(taken);
            }
            if until.is_some_and(|u| u.saturating_duration_since(Instant::now()).is_zero()) {
                return None;
            }
            mail = self.sleep(mail, until);
        }
    }

    fn sleep<'a>(&'a self, mail: MutexGuard<'a, T>, until: Option<Instant>) -> MutexGuard<'a, T> {
        match until {
            Some(until) => {
                let left = until.saturating_duration_since(Instant::now());
                self.wake
                    .wait_timeout(mail, left)
                    .unwrap_or_else(|p| p.into_inner())
                    .0
            }
            None => self.wake.wait(mail).unwrap_or_else(|p| p.into_inner()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    use std::time::Duration;

    /// `mailbox` gets `f` from another thread after `ms` milliseconds.
    fn later(
        mailbox: &Arc<Mailbox<Vec<u32>>>,
        ms: u64,
        f: impl FnOnce(&mut Vec<u32>) + Send + 'static,
    ) {
        let mailbox = mailbox.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(ms));
            mailbox.post(f);
        });
    }

    #[test]
    fn take_gets_what_was_posted_or_nothing_at_the_deadline() {
        let mailbox = Mailbox::<Vec<u32>>::default();
        mailbox.post(|m| m.push(1));
        mailbox.post(|m| m.push(2));
        assert_eq!(mailbox.take(None, |m| m.pop()), Some(2));
        assert_eq!(mailbox.take(Some(Instant::now()), |m| m.pop()), Some(1));
        assert_eq!(mailbox.take(Some(Instant::now()), |m| m.pop()), None);
        let start = Instant::now();
        let until = start + Duration::from_millis(50);
        assert_eq!(mailbox.take(Some(until), |m| m.pop()), None);
        assert!(start.elapsed() >= Duration::from_millis(50));
    }

    #[test]
    fn take_waits_through_posts_that_bring_nothing_to_take() {
        let mailbox = Arc::new(Mailbox::<Vec<u32>>::default());
        later(&mailbox, 50, |_| {});
        later(&mailbox, 100, |m| m.push(7));
        assert_eq!(mailbox.take(None, |m| m.pop()), Some(7));
    }

    #[test]
    fn wait_returns_when_ready_after_one_wake_up_or_at_the_deadline() {
        let mailbox = Arc::new(Mailbox::<Vec<u32>>::default());
        mailbox.post(|m| m.push(1));
        assert_eq!(*mailbox.wait(None, |m| !m.is_empty()), [1]);
        // A post that leaves the mail not ready still ends the wait (posts go on until it
        // ended, in case the first came before the wait began).
        let done = Arc::new(AtomicBool::new(false));
        let (poster, posting) = (mailbox.clone(), done.clone());
        let thread = std::thread::spawn(move || {
            while !posting.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(20));
                poster.post(|m| m.push(2));
            }
        });
        assert!(mailbox.wait(None, |m| m.len() > 1000).len() < 1000);
        done.store(true, Ordering::Relaxed);
        thread.join().unwrap();
        mailbox.post(|m| m.clear());
        let start = Instant::now();
        let until = start + Duration::from_millis(50);
        assert!(mailbox.wait(Some(until), |m| !m.is_empty()).is_empty());
        assert!(start.elapsed() >= Duration::from_millis(50));
    }

    #[test]
    fn a_panic_while_posting_leaves_the_mailbox_usable() {
        let mailbox = Arc::new(Mailbox::<Vec<u32>>::default());
        let poster = mailbox.clone();
        let panicked = std::thread::spawn(move || {
            poster.post(|m| {
                m.push(3);
                panic!("a poster fails");
            })
        })
        .join();
        assert!(panicked.is_err());
        assert_eq!(mailbox.take(None, |m| m.pop()), Some(3));
        mailbox.post(|m| m.push(4));
        assert_eq!(mailbox.take(None, |m| m.pop()), Some(4));
    }
}
