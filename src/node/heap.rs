//! Keep the node's resident memory close to what it uses.
//!
//! glibc's allocator gives each thread that allocates under contention an arena of its own (up
//! to eight per core) and returns freed memory to the system only from the top of each heap.
//! A node's work comes in bursts (thousands of leases read or taken at start-up and at a
//! failover, freed a moment later), so its resident set grew to about twice its live heap:
//! 95 MiB for 42 MB live at 10,000 jobs. Two arenas are enough for a two-thread runtime, and a
//! periodic `malloc_trim` hands the free pages inside the heaps back. Other allocators (musl,
//! another global allocator) are left alone: these calls exist only with glibc.
use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// How often free pages go back to the system. A trim walks the free lists (about a
/// millisecond at 10,000 jobs).
pub const TRIM_EVERY: Duration = Duration::from_secs(5);

/// The most malloc arenas: set before the runtime starts its threads.
const ARENAS: i32 = 2;

/// Call first thing in the process, before any thread exists.
pub fn limit_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets an allocator parameter; it is called before other threads
    // exist, as glibc asks.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, ARENAS);
    }
}

/// Hand free heap pages back to the system.
pub fn trim() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim is thread-safe (it takes each arena's lock).
    unsafe {
        libc::malloc_trim(0);
    }
}

/// [`trim`] every [`TRIM_EVERY`] until `stop`.
pub async fn trim_until(stop: CancellationToken) {
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(TRIM_EVERY) => {}
        }
        // Blocking but short; off the runtime's worker so a tick is never behind it.
        let _ = tokio::task::spawn_blocking(trim).await;
    }
}
