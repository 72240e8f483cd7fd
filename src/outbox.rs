//! A connection's bounded outgoing queue, and the writer thread that drains it.
//!
//! Servers never write to a client's socket from the thread that decided to send: they push
//! the bytes onto the client's [`Outbox`] and move on. One writer thread per connection takes
//! everything queued and writes it with a single system call. So:
//! - no lock is ever held while writing to a socket, and a slow client cannot hold up the
//!   thread that broadcasts to everyone;
//! - a message is one shared `Arc<[u8]>`: a broadcast to a thousand clients makes a thousand
//!   reference counts, not a thousand copies;
//! - the queue is bounded. A client whose queue stays full has stopped reading; it is cut
//!   off (the socket is shut down, its reader thread sees the end and cleans up) instead of
//!   letting memory grow without limit, or dropping the message for everyone else. A
//!   broadcast may instead wait a little for room ([`Outbox::push_patiently`]): that slows
//!   a flooding sender to the pace of the slowest reader that is still reading;
//! - the queue's memory grows with what is queued, not with its bound: a bound generous
//!   enough for bursts costs an idle connection nothing;
//! - an idle writer sleeps (`thread::park`) and a push wakes it (`Thread::unpark`): one
//!   atomic swap when the writer is awake, one futex wake when it sleeps. (crossbeam's
//!   blocking `recv` would do too, but it spins and yields several times before it sleeps,
//!   which with ten thousand writers woken for every join was most of the server's time.
//!   The writer here yields once. See [`crate::scale`].)
//!
//! What a full queue means depends on what is queued, so there are a few ways to queue:
//!
//! | call | for | when the queue is full |
//! | --- | --- | --- |
//! | [`push`](Outbox::push), [`push_line`](Outbox::push_line) | a client's own answers, a join | the client is cut off |
//! | [`push_patiently`](Outbox::push_patiently) | a room message to everyone | the sender waits a little, then the reader is cut off |
//! | [`offer`](Outbox::offer) | a relayed chat datagram, which its sender retransmits | dropped (already at half full) |
//! | [`push_unwoken`](Outbox::push_unwoken), then [`wake`](Outbox::wake) | a round of joins for ten thousand | cut off; writers woken after the lock |

use crossbeam_channel::{unbounded, Receiver, Sender, TryRecvError};
use std::io::{self, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::Arc;
use std::thread::{self, JoinHandle, Thread};
use std::time::{Duration, Instant};

/// One message on the wire, shared by every queue it was pushed to.
pub type Message = Arc<[u8]>;

/// The most bytes one write gathers from the queue.
const BATCH_BYTES: usize = 64 * 1024;

/// The most a sleeping writer keeps of its batch buffer. Ten thousand writers that each kept
/// the largest batch they ever gathered would hold hundreds of megabytes for nothing; keeping
/// a small one measured better than freeing it every time (fewer, more reusable allocations).
const IDLE_BATCH: usize = 4 * 1024;

/// Stack size of a writer thread: it only copies bytes, so 64 KiB is plenty, and ten thousand
/// of them then reserve 640 MB of address space, not the 80 GB that 8 MiB stacks would.
const WRITER_STACK: usize = 64 * 1024;

/// The sending end of a connection's queue. Cheap to clone; when the last clone is dropped,
/// the writer sends what is left, then ends the stream's sending side.
#[derive(Clone)]
pub struct Outbox {
    /// Unbounded underneath, so that it allocates as messages arrive (blocks of 31 slots),
    /// where a bounded channel would allocate all `capacity` slots up front.
    queue: Sender<Message>,
    /// Wakes the writer. Declared after `queue` on purpose: fields are dropped in order, so
    /// when the last `Outbox` goes, its sender is gone before the writer is woken to find
    /// the queue closed.
    writer: Arc<Writer>,
    /// The bound, kept by [`Outbox::push`]. Pushers racing each other may pass it by one
    /// message each, which does not matter.
    capacity: usize,
    stream: Arc<TcpStream>,
}

/// The writer thread, as the pushers see it: something to wake.
struct Writer {
    thread: Thread,
}

impl Drop for Writer {
    /// The last [`Outbox`] is gone: wake the writer to send what is left and finish.
    fn drop(&mut self) {
        self.thread.unpark();
    }
}

impl Outbox {
    /// Starts the writer thread for `stream` with a queue of `capacity` messages. The caller
    /// goes on reading from the same stream: a `TcpStream` can be read by one thread while
    /// another writes to it, so a connection needs one file descriptor, not one per thread.
    ///
    /// Also returns the writer thread, to join once every `Outbox` is dropped: it then sends
    /// what is left and ends (at once if the stream was shut down).
    pub fn start(stream: Arc<TcpStream>, capacity: usize) -> io::Result<(Outbox, JoinHandle<()>)> {
        let (queue, pending) = unbounded();
        let socket = stream.clone();
        let writer = thread::Builder::new()
            .name("outbox".into())
            .stack_size(WRITER_STACK)
            .spawn(move || drain(&socket, pending))?;
        let outbox = Outbox {
            queue,
            writer: Arc::new(Writer {
                thread: writer.thread().clone(),
            }),
            capacity,
            stream,
        };
        Ok((outbox, writer))
    }

    /// Queues `message` without blocking. A full queue cuts the client off.
    pub fn push(&self, message: Message) {
        if self.push_unwoken(message) {
            self.wake();
        }
    }

    /// Queues `message` like [`Outbox::push`] but leaves the writer asleep: the caller wakes
    /// it with [`Outbox::wake`], once it has let go of its lock (waking ten thousand
    /// sleeping writers takes tens of milliseconds). Returns whether the message was queued.
    pub fn push_unwoken(&self, message: Message) -> bool {
        if self.queue.len() >= self.capacity {
            self.cut_off();
            return false;
        }
        self.queue.send(message).is_ok()
    }

    /// Wakes the writer if it sleeps: see [`Outbox::push_unwoken`].
    pub fn wake(&self) {
        self.writer.thread.unpark();
    }

    /// Queues `message`, waiting up to `patience` for room in a full queue. Flow control
    /// for a broadcast: the sender's connection thread waits here, so it stops reading the
    /// sender's socket, and TCP slows the sender down to the pace of the slowest reader that
    /// is still reading. A queue that stays full all that time belongs to a reader that has
    /// stopped: it is cut off.
    ///
    /// It waits while the queue is seven eighths full, not full: the last eighth is kept for
    /// the messages that are pushed without waiting (rounds of joins and leaves),
    /// so that a reader kept busy by a flood is never cut off for being one line short.
    pub fn push_patiently(&self, message: Message, patience: Duration) {
        let deadline = Instant::now() + patience;
        while self.queue.len() >= self.capacity - self.capacity / 8 {
            if Instant::now() >= deadline {
                return self.cut_off();
            }
            thread::sleep(Duration::from_micros(200));
        }
        self.enqueue(message);
    }

    /// Queues `message` only while the queue is less than half full, and otherwise drops it.
    /// For best-effort traffic whose sender retransmits (relayed chat datagrams): a flood of
    /// it can never fill a queue and get its recipient cut off.
    pub fn offer(&self, message: Message) -> bool {
        self.queue.len() < self.capacity / 2 && self.enqueue(message)
    }

    /// Queues `message` and wakes the writer if it sleeps. False if the writer is gone: the
    /// connection is already closing.
    fn enqueue(&self, message: Message) -> bool {
        let queued = self.queue.send(message).is_ok();
        self.wake();
        queued
    }

    /// Queues one text line (a newline is added).
    pub fn push_line(&self, line: &str) {
        self.push(line_message(line))
    }

    /// Ends the connection now, both ways: the client's reader thread sees the end of the
    /// stream and does the usual clean-up.
    pub fn cut_off(&self) {
        let _ = self.stream.shutdown(Shutdown::Both);
    }

    /// Ends the connection once what is queued is sent: the reading side is shut now, so
    /// the client's reader thread sees the end of the stream and cleans up (dropping its
    /// `Outbox`), and the writer then sends what is left, a last line saying why, and
    /// closes.
    pub fn close_after_queued(&self) {
        let _ = self.stream.shutdown(Shutdown::Read);
    }
}

/// `line` plus a newline, as a shareable message.
pub fn line_message(line: &str) -> Message {
    let mut bytes = Vec::with_capacity(line.len() + 1);
    bytes.extend_from_slice(line.as_bytes());
    bytes.push(b'\n');
    bytes.into()
}

/// The writer thread: sleep until something is queued, gather what is there, write it at
/// once. Ends when every [`Outbox`] is dropped (after sending what was queued) or when the
/// socket fails.
fn drain(mut stream: &TcpStream, pending: Receiver<Message>) {
    // Reused from one write to the next: no allocation per message. Freed when the writer
    // goes to sleep holding more than IDLE_BATCH.
    let mut batch = Vec::new();
    let mut yielded = false;
    loop {
        let first = match pending.try_recv() {
            Ok(message) => {
                yielded = false;
                message
            }
            // Before sleeping, let the other runnable threads have a turn once: under steady
            // traffic the next message often arrives meanwhile, and is taken without the
            // pusher paying for a wake-up (a futex call, and on a VM a costly interrupt to
            // the other core). Measured on the room's paced run: p99 7 ms without, 4 ms with.
            // Once, not more: a writer that keeps yielding takes turns from busy readers.
            Err(TryRecvError::Empty) if !yielded => {
                yielded = true;
                thread::yield_now();
                continue;
            }
            Err(TryRecvError::Empty) => {
                if batch.capacity() > IDLE_BATCH {
                    batch = Vec::new();
                }
                // Returns at once if a push came since the last wake-up, so none is missed.
                thread::park();
                continue;
            }
            Err(TryRecvError::Disconnected) => break,
        };
        let written = match pending.try_recv() {
            // The usual case for a quiet connection: one message, written from where it is.
            Err(_) => stream.write_all(&first),
            Ok(second) => {
                batch.clear();
                batch.extend_from_slice(&first);
                batch.extend_from_slice(&second);
                while batch.len() < BATCH_BYTES {
                    match pending.try_recv() {
                        Ok(next) => batch.extend_from_slice(&next),
                        Err(_) => break,
                    }
                }
                stream.write_all(&batch)
            }
        };
        if written.is_err() {
            let _ = stream.shutdown(Shutdown::Both);
            return;
        }
    }
    let _ = stream.shutdown(Shutdown::Write);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::net::TcpListener;

    /// An outbox on one end of a loopback connection, and the other end to read from.
    fn connected() -> (Outbox, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        client
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let (outbox, _writer) = Outbox::start(Arc::new(server), 1024).unwrap();
        (outbox, client)
    }

    /// Reads until the outbox's side ends the stream.
    fn read_to_end(mut client: TcpStream) -> String {
        let mut text = String::new();
        client.read_to_string(&mut text).unwrap();
        text
    }

    #[test]
    fn dropping_the_last_outbox_sends_what_is_queued_then_ends_the_stream() {
        let (outbox, client) = connected();
        let copy = outbox.clone();
        for i in 0..500 {
            copy.push_line(&format!("line {i}"));
        }
        drop(outbox);
        drop(copy);
        let expected: String = (0..500).map(|i| format!("line {i}\n")).collect();
        assert_eq!(read_to_end(client), expected);
    }

    #[test]
    fn a_sleeping_writer_wakes_for_each_push() {
        let (outbox, mut client) = connected();
        for word in ["one\n", "two\n", "three\n"] {
            outbox.push(word.as_bytes().into());
            let mut got = vec![0u8; word.len()];
            // Read before the next push: the writer is asleep again by then.
            client.read_exact(&mut got).unwrap();
            assert_eq!(got, word.as_bytes());
        }
    }

    #[test]
    fn a_full_queue_cuts_the_reader_off() {
        let (outbox, client) = connected();
        // The reader never reads: socket buffers fill, then the queue, then the cut.
        let line = line_message(&"x".repeat(1000));
        for _ in 0..100_000 {
            outbox.push(line.clone());
        }
        drop(outbox);
        let mut client = client;
        let mut sink = Vec::new();
        // Cut off: the stream ends (or resets) long before 100 MB arrive.
        let _ = client.read_to_end(&mut sink);
        assert!(sink.len() < 50_000_000, "{} bytes arrived", sink.len());
    }

    /// The servers give every connection a write timeout (30 s: `WRITE_TIMEOUT` in
    /// `listener.rs`); here, a short one. A reader that stops reading while its queue is
    /// far from full (one large message, the list of ten thousand clients) leaves the writer
    /// blocked in `write`: the timeout ends it, and frees the socket.
    #[test]
    fn a_writer_blocked_on_a_reader_that_stopped_ends_when_its_write_times_out() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        server
            .set_write_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let (outbox, writer) = Outbox::start(Arc::new(server), 1024).unwrap();
        // More than any socket buffer holds, in a few messages: the queue never fills.
        let big = Message::from(vec![b'x'; 8 << 20]);
        for _ in 0..4 {
            outbox.push(big.clone());
        }
        let started = Instant::now();
        while !writer.is_finished() {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "the writer is still blocked"
            );
            thread::sleep(Duration::from_millis(20));
        }
        writer.join().unwrap();
        // The socket was shut down: the reader finds the end of the stream (or a reset)
        // after what had been written.
        let mut client = client;
        client
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut sink = Vec::new();
        let ended = client.read_to_end(&mut sink);
        assert!(
            ended.is_ok() || ended.is_err_and(|e| e.kind() == io::ErrorKind::ConnectionReset),
            "the stream did not end"
        );
        assert!(sink.len() < 32 << 20, "{} bytes arrived", sink.len());
        drop(outbox);
    }
}
