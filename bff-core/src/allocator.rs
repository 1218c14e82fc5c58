//! The allocator of the shipped BFFs, for a BFF binary of one's own: [`jemalloc!`](crate::jemalloc).

/// Makes jemalloc the binary's allocator, configured as the shipped BFFs are. One line at the top
/// of a binary's `main.rs`; the binary depends on `tikv-jemallocator` with its
/// `background_threads` feature (not on MSVC, where the system allocator stays).
///
/// ```rust,ignore
/// bff_core::jemalloc!();
/// ```
///
/// - **jemalloc, with its background thread**: memory freed after a burst (a flood of
///   connections) goes back to the system within seconds, where glibc's per-thread arenas keep it
///   (bench/README.md, "Floods").
/// - **One arena** (`narenas:1`) instead of four per core: a server's few threads share it, each
///   with its own cache of small blocks, and fewer arenas hold fewer pages that are free but not
///   yet given back.
/// - **Freed pages given back after a second** (`dirty_decay_ms:1000`, `muzzy_decay_ms:0`) instead
///   of ten, by the background thread rather than on a request's path.
/// - **A thread's cache tidied every 256 KiB allocated** (`tcache_gc_incr_bytes:262144`) instead
///   of every 64 KiB: each request allocates tens of KiB (hyper's read buffers among them), so the
///   tidying ran every other request. The cache's bounds are the same; the peak RSS stayed
///   within what runs move (bench/README.md, "Empty slots out of the outbound stack").
///
/// bench/README.md ("The allocator's arenas") has what each costs and saves. `_RJEM_MALLOC_CONF`
/// in the environment still overrides any of them.
#[macro_export]
macro_rules! jemalloc {
    () => {
        #[cfg(not(target_env = "msvc"))]
        #[global_allocator]
        static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

        /// jemalloc's options, read before `main`: a C string (`const char *malloc_conf`).
        #[cfg(not(target_env = "msvc"))]
        #[unsafe(export_name = "_rjem_malloc_conf")]
        static MALLOC_CONF: &u8 = &b"narenas:1,dirty_decay_ms:1000,muzzy_decay_ms:0,tcache_gc_incr_bytes:262144\0"[0];
    };
}
