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

/// The glibc tunable that turns off its cache of the stacks of exited
/// threads. That cache keeps up to 40 MiB of stacks mapped after the
/// sender pool shrinks, so an idle server would stay several MiB larger.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const STACK_CACHE_TUNABLE: &str = "glibc.pthread.stack_cache_size=0";

/// Restarts the process in place (same PID, same arguments) with glibc's
/// thread-stack cache turned off, unless `GLIBC_TUNABLES` already sets it.
/// glibc reads tunables only at process start, so there is no other way to
/// change this one. Returns only when nothing had to be done or the exec
/// failed.
pub fn reexec_without_stack_cache() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        use std::os::unix::process::CommandExt;

        let current = std::env::var("GLIBC_TUNABLES").unwrap_or_default();
        if current.contains("glibc.pthread.stack_cache_size") {
            return;
        }
        let tunables = if current.is_empty() {
            STACK_CACHE_TUNABLE.to_owned()
        } else {
            format!("{current}:{STACK_CACHE_TUNABLE}")
        };
        let Ok(executable) = std::env::current_exe() else {
            return;
        };
        let error = std::process::Command::new(executable)
            .args(std::env::args_os().skip(1))
            .env("GLIBC_TUNABLES", tunables)
            .exec();
        log::warn!(
            "cannot restart with glibc's thread-stack cache off: {error}; idle memory stays a few MiB higher"
        );
    }
}
