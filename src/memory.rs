//! Keeps the resident memory of an idle hookd small. glibc's allocator
//! gives each busy thread its own arena and keeps freed memory for reuse,
//! so after hundreds of sender threads have come and gone the process can
//! hold tens of MiB it no longer uses. On other C libraries these
//! functions do nothing.

/// Arenas glibc may create; fewer arenas hold less unused memory, at the
/// cost of some lock contention between threads that allocate at once.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const MAX_ARENAS: libc::c_int = 4;

/// Caps the allocator's arenas. Call before starting threads.
pub fn limit_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator parameters; it is called
    // before the process starts its worker threads.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, MAX_ARENAS);
    }
}

/// Returns freed memory in every arena to the operating system.
pub fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim takes the allocator's own locks and touches only
    // memory that is free.
    unsafe {
        libc::malloc_trim(0);
    }
}
