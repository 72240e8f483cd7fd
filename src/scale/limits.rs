//! How many connections a server can take: the kernel's limits, worked out at start-up.
//!
//! What it costs: two files read at start-up, and a line said when the machine, not the
//! user, sets the cap. What it buys: a server that refuses newcomers with a clear line
//! instead of aborting when the ten-thousandth client's thread cannot be started (Rust aborts
//! the whole process when a thread cannot get its signal stack).

/// Stack size of a connection thread. It reads lines and updates a registry; 128 KiB is
/// ample, and lets ten thousand connections fit in a small machine.
pub(crate) const CONNECTION_STACK: usize = 128 * 1024;

/// Threads per connection: its reader, and its outbox's writer.
pub const THREADS_PER_CONNECTION: usize = 2;
/// Memory mappings per thread: its stack and guard page, and the signal stack and guard page
/// that Rust gives every thread to report stack overflows (measured: about 4).
pub const MAPPINGS_PER_THREAD: usize = 4;
/// Mappings and threads kept for everything else: the program, its libraries, the heap.
const RESERVE: usize = 2000;

/// The most connections a server takes when not told: beyond what a course needs, and
/// lowered further when this machine allows fewer (see [`cap`]).
pub const DEFAULT_MAX: usize = 15_000;

/// The most connections a server takes at once, and where that number comes from.
#[derive(Debug, Clone, Copy)]
pub struct Cap {
    /// How many.
    pub connections: usize,
    /// The option that sets it (`--max-clients`), for the line said when the server is full.
    pub option: &'static str,
    /// True when this machine's limits set it, not the option.
    pub by_kernel: bool,
}

/// How many connections this machine lets one process serve, at most `requested` (or
/// [`DEFAULT_MAX`] when the user did not set `option`).
///
/// Each connection costs two threads, and each thread about four memory mappings. Linux caps
/// both: `vm.max_map_count` mappings per process (65530) and `kernel.pid_max` threads in all
/// (32768). Past either, starting a thread fails, and Rust aborts the whole process when a
/// new thread cannot get its signal stack. So the cap is worked out here, at start-up. It is
/// said at once only when the user asked for more than the machine allows; otherwise only
/// if the server ever fills up ([`Listener`](crate::listener::Listener)): a class of thirty never needs to hear of it.
/// (Running out of file descriptors, one per connection, is different: `accept` fails, and
/// the [`Listener`](crate::listener::Listener) pauses until some close.)
pub fn cap(requested: Option<usize>, option: &'static str) -> Cap {
    let read =
        |path: &str| -> Option<usize> { std::fs::read_to_string(path).ok()?.trim().parse().ok() };
    let by_mappings = read("/proc/sys/vm/max_map_count")
        .map(|maps| maps.saturating_sub(RESERVE) / (THREADS_PER_CONNECTION * MAPPINGS_PER_THREAD));
    let by_threads = read("/proc/sys/kernel/pid_max")
        .map(|pids| pids.saturating_sub(RESERVE) / THREADS_PER_CONNECTION);
    let wanted = requested.unwrap_or(DEFAULT_MAX);
    let limit = [by_mappings, by_threads]
        .into_iter()
        .flatten()
        .fold(wanted, usize::min);
    if let Some(requested) = requested.filter(|&requested| limit < requested) {
        crate::say!(
            "Serving at most {limit} connections, not {requested}: each takes two threads, and \
             {KERNEL_LIMITS}"
        );
    }
    Cap {
        connections: limit,
        option,
        by_kernel: limit < wanted,
    }
}

/// Which kernel settings cap connections, and how to raise them.
pub(crate) const KERNEL_LIMITS: &str =
    "this machine's vm.max_map_count and kernel.pid_max allow no more. \
     As root, 'sysctl -w vm.max_map_count=262144 kernel.pid_max=4194304' raises them.";
