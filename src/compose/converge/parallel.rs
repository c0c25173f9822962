//! A bounded worker set for Docker calls that do not depend on each other.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

/// Concurrent Docker calls of a converge step. Each call is one Unix-socket connection and
/// one thread; the daemon does the work, so more than a few buy little on a 2-core gateway,
/// while a handful already overlaps the daemon's per-call latency (compose v2 has no limit).
pub const CALLS: usize = 8;

/// Concurrent stops of `down` and `stop`: a stop mostly waits out the container's grace
/// period in the daemon, so the bound is higher; 16 threads with small stacks cost ~1 MiB.
pub const STOPS: usize = 16;

const STACK: usize = 128 * 1024;

/// `f` over every item on at most `workers` threads; results in the items' order.
pub fn map<T: Sync, R: Send>(items: &[T], workers: usize, f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    if items.len() <= 1 || workers <= 1 {
        return items.iter().map(f).collect();
    }
    let next = AtomicUsize::new(0);
    let results: Vec<Mutex<Option<R>>> = items.iter().map(|_| Mutex::new(None)).collect();
    std::thread::scope(|scope| {
        for _ in 0..workers.min(items.len()) {
            let work = || loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(item) = items.get(i) else { break };
                let r = f(item);
                if let Ok(mut slot) = results[i].lock() {
                    *slot = Some(r);
                }
            };
            // A thread that cannot be spawned leaves its share to the others (and to this
            // thread below).
            let _ = std::thread::Builder::new()
                .stack_size(STACK)
                .spawn_scoped(scope, work);
        }
    });
    // Items no worker took (no thread could be spawned) run here.
    items
        .iter()
        .zip(results)
        .map(|(item, slot)| match slot.into_inner().ok().flatten() {
            Some(r) => r,
            None => f(item),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_item_once_in_order_with_bounded_workers() {
        let running = AtomicUsize::new(0);
        let peak = AtomicUsize::new(0);
        let items: Vec<u32> = (0..40).collect();
        let out = map(&items, 4, |i| {
            let now = running.fetch_add(1, Ordering::SeqCst) + 1;
            peak.fetch_max(now, Ordering::SeqCst);
            std::thread::sleep(std::time::Duration::from_millis(2));
            running.fetch_sub(1, Ordering::SeqCst);
            i * 2
        });
        assert_eq!(out, (0..40).map(|i| i * 2).collect::<Vec<_>>());
        assert!(peak.load(Ordering::SeqCst) <= 4);
    }
}
