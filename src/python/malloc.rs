//! Two allocator settings for a serving process (glibc only).
//!
//! glibc gives memory at the top of a heap back to the OS as soon as more
//! than 128 KiB is free there. A server allocates and frees request and
//! response bodies all the time, so with 64 KiB bodies every few requests
//! returned memory that the next ones faulted back in, page by page: with
//! the 64 KiB echo benchmark, 20.5k req/s before, 26-27k after keeping
//! `TOP_PAD` at the top of each heap. Setting any such parameter turns off
//! glibc's dynamic mmap threshold (which would otherwise rise to the size
//! of the largest block freed), so it is set too: blocks below
//! `MMAP_THRESHOLD` come from the heaps rather than a fresh mapping each
//! time. `MALLOC_TOP_PAD_` or `MALLOC_MMAP_THRESHOLD_` in the environment
//! leave both alone.

/// Free memory kept at the top of each heap instead of returned to the OS.
pub const TOP_PAD: usize = 4 << 20;
/// Blocks from this size up are mapped on their own.
pub const MMAP_THRESHOLD: usize = 4 << 20;

#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub fn tune() {
    const M_TOP_PAD: std::os::raw::c_int = -2;
    const M_MMAP_THRESHOLD: std::os::raw::c_int = -3;
    extern "C" {
        fn mallopt(param: std::os::raw::c_int, value: std::os::raw::c_int) -> std::os::raw::c_int;
    }
    let chosen = ["MALLOC_TOP_PAD_", "MALLOC_MMAP_THRESHOLD_"];
    if chosen.iter().any(|name| std::env::var_os(name).is_some()) {
        return;
    }
    // SAFETY: mallopt only changes parameters of glibc's allocator; any
    // thread may call it at any time.
    unsafe {
        mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD as std::os::raw::c_int);
        mallopt(M_TOP_PAD, TOP_PAD as std::os::raw::c_int);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn tune() {}
