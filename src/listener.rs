//! The accept loop both servers share: a thread per connection, a cap on connections, and
//! no way for a shortage of file descriptors or threads to end the server.

use std::io::{ErrorKind, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

/// Stack size of a connection thread. It reads lines and updates a registry; 128 KiB is
/// ample, and lets ten thousand connections fit in a small machine.
const CONNECTION_STACK: usize = 128 * 1024;

/// How long one write to a client may block before the client counts as gone.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);

/// How long to pause after any other failed `accept`.
const ERROR_PAUSE: Duration = Duration::from_millis(10);

/// How long to pause accepting when the process is out of file descriptors or threads,
/// so that closing connections can free some.
const BACKOFF: Duration = Duration::from_millis(100);

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
/// if the server ever fills up ([`serve`]): a class of thirty never needs to hear of it.
/// (Running out of file descriptors, one per connection, is different: `accept` fails, and
/// [`serve`] pauses until some close.)
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
const KERNEL_LIMITS: &str = "this machine's vm.max_map_count and kernel.pid_max allow no more. \
     As root, 'sysctl -w vm.max_map_count=262144 kernel.pid_max=4194304' raises them.";

/// Accepts connections for ever, running `handle` on a thread of its own for each one.
///
/// Beyond `cap` connections open at once, a newcomer is sent `refusal` (one line) and closed,
/// and the server says once, each time it fills up, that it is full and why.
/// When `accept` fails because the process is out of file descriptors (EMFILE) or the system
/// is (ENFILE), or a thread cannot be started, the loop says so once, waits a little and goes
/// on: the connections already open keep being served.
pub fn serve<F>(listener: TcpListener, cap: Cap, refusal: String, handle: F)
where
    F: Fn(TcpStream, SocketAddr) + Send + Sync + 'static,
{
    let handle = Arc::new(handle);
    let open = Arc::new(AtomicUsize::new(0));
    let mut short = false;
    let mut full = false;
    loop {
        let (mut stream, addr) = match listener.accept() {
            Ok(accepted) => accepted,
            Err(e) if is_resource_shortage(&e) => {
                if !short {
                    crate::warn!(
                        "accept: {}; pausing new connections until some close",
                        crate::failure::in_words(&e)
                    );
                    short = true;
                }
                thread::sleep(BACKOFF);
                continue;
            }
            // The peer gave up before we accepted, or a signal: nothing to do but go on, after
            // a pause, so that an error that keeps coming cannot spin a core.
            Err(_) => {
                thread::sleep(ERROR_PAUSE);
                continue;
            }
        };
        short = false;
        // Chat lines are small and latency matters: send each batch at once rather than
        // wait for the peer's acknowledgement of the previous one (Nagle's algorithm).
        let _ = stream.set_nodelay(true);
        // A peer that stops reading must not hold a writer thread for ever, and with it a
        // file descriptor, after its connection has otherwise ended.
        let _ = stream.set_write_timeout(Some(WRITE_TIMEOUT));
        if open.load(Ordering::SeqCst) >= cap.connections {
            if !full {
                full = true;
                let why = if cap.by_kernel {
                    format!("each takes two threads, and {KERNEL_LIMITS}")
                } else {
                    format!("{} allows no more", cap.option)
                };
                crate::warn!(
                    "server full: {} connections open; newcomers are refused until some \
                     leave. {why}",
                    cap.connections
                );
            }
            let _ = stream.set_write_timeout(Some(Duration::from_secs(1)));
            let _ = stream.write_all(format!("{refusal}\n").as_bytes());
            continue;
        }
        full = false;
        open.fetch_add(1, Ordering::SeqCst);
        let guard = OpenConnection(open.clone());
        let handle = handle.clone();
        let spawned = thread::Builder::new()
            .name("connection".into())
            .stack_size(CONNECTION_STACK)
            .spawn(move || {
                let _guard = guard;
                handle(stream, addr);
            });
        if let Err(e) = spawned {
            crate::warn!(
                "cannot start a thread for {addr}: {}; pausing new connections",
                crate::failure::in_words(&e)
            );
            thread::sleep(BACKOFF);
        }
    }
}

/// Counts one open connection for as long as it lives.
struct OpenConnection(Arc<AtomicUsize>);

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

fn is_resource_shortage(e: &std::io::Error) -> bool {
    const ENFILE: i32 = 23;
    const EMFILE: i32 = 24;
    matches!(e.raw_os_error(), Some(ENFILE | EMFILE)) || e.kind() == ErrorKind::OutOfMemory
}
