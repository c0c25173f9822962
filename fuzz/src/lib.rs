//! What every fuzz target shares: [`target!`] runs one of `edge_agent::fuzzing`'s bodies under
//! an allocation limit.
//!
//! libFuzzer's `-malloc_limit_mb` works only through a sanitizer's allocator hooks, and
//! run.sh builds without a sanitizer (safe Rust; about twice the executions per second), so
//! this allocator enforces it instead: one allocation, or all live ones together, above
//! [`LIMIT`] aborts, and libFuzzer keeps the input as a crash. `-rss_limit_mb` still catches
//! memory the allocator does not see.

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};

pub use edge_agent::fuzzing;
pub use libfuzzer_sys;

/// The same as run.sh's `-rss_limit_mb`.
pub const LIMIT: usize = 64 << 20;

/// `libfuzzer_sys::fuzz_target!` over `body`, under the allocation limit.
#[macro_export]
macro_rules! target {
    ($body:expr) => {
        $crate::libfuzzer_sys::fuzz_target!(|data: &[u8]| $crate::run(data, $body));
    };
}

pub fn run(data: &[u8], body: impl Fn(&[u8])) {
    body(data)
}

struct Limited;

static LIVE: AtomicUsize = AtomicUsize::new(0);

#[global_allocator]
static ALLOCATOR: Limited = Limited;

fn grow(bytes: usize) {
    let live = LIVE
        .fetch_add(bytes, Ordering::Relaxed)
        .saturating_add(bytes);
    if bytes > LIMIT || live > LIMIT {
        // No formatting: it could allocate.
        let _ =
            std::io::stderr().write_all(b"==edge-agent-fuzz== allocation above the 64 MB limit\n");
        std::process::abort();
    }
}

fn shrink(bytes: usize) {
    LIVE.fetch_sub(bytes, Ordering::Relaxed);
}

// SAFETY: every call goes to the system allocator unchanged; only sizes are counted.
unsafe impl GlobalAlloc for Limited {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        grow(layout.size());
        System.alloc(layout)
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        grow(layout.size());
        System.alloc_zeroed(layout)
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        shrink(layout.size());
        System.dealloc(ptr, layout)
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if new_size > layout.size() {
            grow(new_size - layout.size());
        } else {
            shrink(layout.size() - new_size);
        }
        System.realloc(ptr, layout, new_size)
    }
}
