//! The accept loop both servers share: a thread per connection, a cap on connections, no
//! way for a shortage of file descriptors or threads to end the server, and a stop that
//! closes every connection and waits for all of their threads. How many connections it takes
//! is worked out in [`crate::scale::limits`].

use crate::outbox::Outbox;
use crate::scale::limits::{Cap, CONNECTION_STACK, KERNEL_LIMITS};
use crate::worker::{Stop, Worker};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::io::{self, ErrorKind, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

/// How long one write to a client may block before the client counts as gone.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);

/// How long to pause after any other failed `accept`.
const ERROR_PAUSE: Duration = Duration::from_millis(10);

/// How long to pause accepting when the process is out of file descriptors or threads,
/// so that closing connections can free some.
const BACKOFF: Duration = Duration::from_millis(100);

/// A server's accept loop, on a thread of its own, and every connection it accepted: each
/// served on a thread of its own, with an [`Outbox`] whose writer thread sends to it.
/// Dropping it stops accepting, closes every connection and joins every one of those threads;
/// then the port is free.
///
/// How the accept thread is stopped: its stop flag is set, then something connects to the
/// listening socket, so that the `accept` it is blocked in returns, and it finds the flag
/// set. Setting the socket non-blocking and polling it would do too, but an idle server would
/// then wake every few milliseconds for ever, and each newcomer wait for the next poll. The
/// connection made to wake it cannot fail for want of room in the backlog: a full backlog
/// means `accept` has connections to return and is not blocked. (It can fail when the
/// process is out of file descriptors, and then the accept thread ends only with the next
/// connection to arrive: see [`CtrlC`](crate::worker::CtrlC) for the user's way out.)
///
/// How connections are closed: each socket is kept, as the `Arc` its threads share, in a map
/// of the connections open ([`Open`]), entered when the connection is accepted and left when
/// it ends: a lock twice per connection, never per message. Stopping shuts every one of them
/// down, both ways: their reader threads see the end of the stream and end the way they do
/// when a client leaves, and their writers' writes fail. The connection threads are scoped
/// threads of the accept thread ([`thread::scope`]), which therefore cannot end before they
/// all have; each, in turn, joins its writer before ending.
pub struct Listener {
    addr: SocketAddr,
    /// The accept thread: dropping it stops everything above.
    _accepting: Worker,
}

impl Listener {
    /// Accepts connections on `listener` until dropped, and runs `handle` for each one on its
    /// own thread, with the connection's socket to read from, an [`Outbox`] of `queue`
    /// messages to send with, and the peer's address. When `handle` returns the connection
    /// is over: it must have let go of every clone of the outbox by then (taken the client
    /// out of the server's state), since the thread waits for the writer to end.
    ///
    /// Beyond `cap` connections open at once, a newcomer is sent `refusal` (one line) and
    /// closed, and the server says once, each time it fills up, that it is full and why.
    /// When `accept` fails because the process is out of file descriptors (EMFILE) or the
    /// system is (ENFILE), or a thread cannot be started, the loop says so once, waits a
    /// little and goes on: the connections already open keep being served.
    pub fn start<F>(
        listener: TcpListener,
        cap: Cap,
        refusal: String,
        queue: usize,
        handle: F,
    ) -> io::Result<Listener>
    where
        F: Fn(&TcpStream, Outbox, SocketAddr) + Send + Sync + 'static,
    {
        let addr = listener.local_addr()?;
        let wake_at = reachable(addr);
        let wake = move || {
            // Nothing to do if it fails: see above.
            let _ = TcpStream::connect_timeout(&wake_at, WAKE_TIMEOUT);
        };
        let accepting = Worker::spawn("accept", wake, move |stop| {
            let serving = Serving {
                cap,
                refusal,
                queue,
                handle,
                open: Open::default(),
            };
            thread::scope(|scope| {
                serving.accept(&listener, &stop, scope);
                serving.open.shut_down();
            });
        })?;
        Ok(Listener {
            addr,
            _accepting: accepting,
        })
    }

    /// Where it listens: with port 0 asked for, the port the system picked.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

/// Where this machine reaches a socket bound to `bound`: the same address, except that a
/// socket bound to every address (`0.0.0.0`, `::`) is reached on loopback.
pub fn reachable(bound: SocketAddr) -> SocketAddr {
    let ip = match bound.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    SocketAddr::new(ip, bound.port())
}

/// How long the connection that wakes a stopping accept thread may take: on this machine, it
/// takes microseconds.
const WAKE_TIMEOUT: Duration = Duration::from_secs(1);

/// What the accept thread and its connection threads share.
struct Serving<F> {
    cap: Cap,
    refusal: String,
    queue: usize,
    handle: F,
    open: Open,
}

/// The connections open now, by number: their sockets, to shut down when the server stops.
#[derive(Default)]
struct Open(Mutex<HashMap<u64, Arc<TcpStream>>>);

impl Open {
    /// Shuts every open connection down, both ways.
    fn shut_down(&self) {
        for stream in self.0.lock().values() {
            let _ = stream.shutdown(Shutdown::Both);
        }
    }
}

/// One open connection, entered in [`Open`] for as long as this lives.
struct Entered<'a> {
    open: &'a Open,
    number: u64,
}

impl Drop for Entered<'_> {
    fn drop(&mut self) {
        self.open.0.lock().remove(&self.number);
    }
}

impl<F> Serving<F>
where
    F: Fn(&TcpStream, Outbox, SocketAddr) + Sync,
{
    /// The accept loop, until `stop` is requested. Connection threads are spawned in `scope`.
    fn accept<'scope>(
        &'scope self,
        listener: &TcpListener,
        stop: &Stop,
        scope: &'scope thread::Scope<'scope, '_>,
    ) {
        let mut short = false;
        let mut full = false;
        let mut accepted = 0u64;
        while !stop.requested() {
            let (stream, addr) = match listener.accept() {
                Ok(accepted) => accepted,
                Err(e) if is_resource_shortage(&e) => {
                    if !short {
                        crate::warn!(
                            "accept: {}; pausing new connections until some close",
                            crate::failure::in_words(&e)
                        );
                        short = true;
                    }
                    stop.pause(BACKOFF);
                    continue;
                }
                // The peer gave up before we accepted, or a signal: nothing to do but go
                // on, after a pause, so that an error that keeps coming cannot spin a core.
                Err(_) => {
                    stop.pause(ERROR_PAUSE);
                    continue;
                }
            };
            short = false;
            if stop.requested() {
                // The connection that woke us (or a client just too late): closed unserved.
                break;
            }
            // Chat lines are small and latency matters: send each batch at once rather than
            // wait for the peer's acknowledgement of the previous one (Nagle's algorithm).
            let _ = stream.set_nodelay(true);
            // A peer that stops reading must not hold a writer thread for ever, and with it a
            // file descriptor, after its connection has otherwise ended.
            let _ = stream.set_write_timeout(Some(WRITE_TIMEOUT));
            let stream = Arc::new(stream);
            let entered = {
                let mut open = self.open.0.lock();
                if open.len() < self.cap.connections {
                    accepted += 1;
                    open.insert(accepted, stream.clone());
                    Some(Entered {
                        open: &self.open,
                        number: accepted,
                    })
                } else {
                    None
                }
            };
            let Some(entered) = entered else {
                self.refuse(&stream, &mut full);
                continue;
            };
            full = false;
            let spawned = thread::Builder::new()
                .name("connection".into())
                .stack_size(CONNECTION_STACK)
                .spawn_scoped(scope, move || {
                    let _entered = entered;
                    self.converse(stream, addr);
                });
            if let Err(e) = spawned {
                crate::warn!(
                    "cannot start a thread for {addr}: {}; pausing new connections",
                    crate::failure::in_words(&e)
                );
                stop.pause(BACKOFF);
            }
        }
    }

    /// Sends a newcomer the refusal; says, the first time since the server filled up, why.
    fn refuse(&self, mut stream: &TcpStream, full: &mut bool) {
        if !*full {
            *full = true;
            let why = if self.cap.by_kernel {
                format!("each takes two threads, and {KERNEL_LIMITS}")
            } else {
                format!("{} allows no more", self.cap.option)
            };
            crate::warn!(
                "server full: {} connections open; newcomers are refused until some leave. \
                 {why}",
                self.cap.connections
            );
        }
        let _ = stream.set_write_timeout(Some(Duration::from_secs(1)));
        let _ = stream.write_all(format!("{}\n", self.refusal).as_bytes());
    }

    /// One connection's thread: starts its writer, runs the server's `handle`, then waits
    /// for the writer to send what is left and end.
    fn converse(&self, stream: Arc<TcpStream>, addr: SocketAddr) {
        let (outbox, writer) = match Outbox::start(stream.clone(), self.queue) {
            Ok(started) => started,
            Err(e) => {
                crate::warn!(
                    "cannot start a writer thread for {addr}: {}; closing its connection",
                    crate::failure::in_words(&e)
                );
                return;
            }
        };
        (self.handle)(&stream, outbox, addr);
        // A writer that panicked has ended, which is all that is waited for here.
        let _ = writer.join();
    }
}

fn is_resource_shortage(e: &std::io::Error) -> bool {
    const ENFILE: i32 = 23;
    const EMFILE: i32 = 24;
    matches!(e.raw_os_error(), Some(ENFILE | EMFILE)) || e.kind() == ErrorKind::OutOfMemory
}
