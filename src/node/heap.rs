//! Keep the node's resident memory close to what it uses.
//!
//! glibc's allocator gives each thread that allocates under contention an arena of its own (up
//! to eight per core) and returns freed memory to the system only from the top of each heap.
//! A node's work comes in bursts (thousands of leases read or taken at start-up and at a
//! failover, freed a moment later), so its resident set grew to about twice its live heap:
//! 95 MiB for 42 MB live at 10,000 jobs. Two arenas are enough for a two-thread runtime, fixed
//! mmap and trim thresholds keep large blocks (lease tables) out of the heaps, and a periodic
//! `malloc_trim` hands the free pages inside the heaps back. Other allocators (musl,
//! another global allocator) are left alone: these calls exist only with glibc.
use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// How often free pages go back to the system. A trim walks the free lists (about a
/// millisecond at 10,000 jobs).
pub const TRIM_EVERY: Duration = Duration::from_secs(5);

/// The most malloc arenas: set before the runtime starts its threads.
const ARENAS: i32 = 2;

/// Blocks this large or larger are mapped on their own and unmapped when freed. Setting it
/// also stops glibc from raising it (up to 32 MiB) each time such a block is freed, which
/// sent the lease tables of every poll (3 MiB each at 10,000 jobs) into the heap.
const MMAP_THRESHOLD: i32 = 256 * 1024;

/// Free memory at the top of a heap beyond this goes back to the system at once (fixed, for
/// the same reason).
const TRIM_THRESHOLD: i32 = 1024 * 1024;

/// Call first thing in the process, before any thread exists.
pub fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets an allocator parameter; it is called before other threads
    // exist, as glibc asks.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, ARENAS);
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
        libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD);
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
