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
//!   enough for bursts costs an idle connection nothing.

use crossbeam_channel::{unbounded, Receiver, Sender};
use std::io::{self, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

/// One message on the wire, shared by every queue it was pushed to.
pub type Message = Arc<[u8]>;

/// The most bytes one write gathers from the queue.
const BATCH_BYTES: usize = 64 * 1024;

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
    /// The bound, kept by [`Outbox::push`]. Pushers racing each other may pass it by one
    /// message each, which does not matter.
    capacity: usize,
    stream: Arc<TcpStream>,
}

impl Outbox {
    /// Starts the writer thread for `stream` with a queue of `capacity` messages. The caller
    /// goes on reading from the same stream: a `TcpStream` can be read by one thread while
    /// another writes to it, so a connection needs one file descriptor, not one per thread.
    pub fn start(stream: Arc<TcpStream>, capacity: usize) -> io::Result<Outbox> {
        let (queue, pending) = unbounded();
        let writer = stream.clone();
        thread::Builder::new()
            .name("outbox".into())
            .stack_size(WRITER_STACK)
            .spawn(move || drain(&writer, pending))?;
        Ok(Outbox {
            queue,
            capacity,
            stream,
        })
    }

    /// Queues `message` without blocking. A full queue cuts the client off.
    pub fn push(&self, message: Message) {
        if self.queue.len() >= self.capacity {
            return self.cut_off();
        }
        // An error means the writer is gone: the connection is already closing.
        let _ = self.queue.send(message);
    }

    /// Queues `message`, waiting up to `patience` for room in a full queue. Flow control
    /// for a broadcast: the sender's connection thread waits here, so it stops reading the
    /// sender's socket, and TCP slows the sender down to the pace of the slowest reader that
    /// is still reading. A queue that stays full all that time belongs to a reader that has
    /// stopped: it is cut off.
    ///
    /// It waits while the queue is seven eighths full, not full: the last eighth is kept for
    /// the lines that are pushed without waiting (joins and leaves, under the room's lock),
    /// so that a reader kept busy by a flood is never cut off for being one line short.
    pub fn push_patiently(&self, message: Message, patience: Duration) {
        let deadline = Instant::now() + patience;
        while self.queue.len() >= self.capacity - self.capacity / 8 {
            if Instant::now() >= deadline {
                return self.cut_off();
            }
            thread::sleep(Duration::from_micros(200));
        }
        let _ = self.queue.send(message);
    }

    /// Queues `message` only while the queue is less than half full, and otherwise drops it.
    /// For best-effort traffic whose sender retransmits (relayed chat datagrams): a flood of
    /// it can never fill a queue and get its recipient cut off.
    pub fn offer(&self, message: Message) -> bool {
        self.queue.len() < self.capacity / 2 && self.queue.send(message).is_ok()
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
}

/// `line` plus a newline, as a shareable message.
pub fn line_message(line: &str) -> Message {
    let mut bytes = Vec::with_capacity(line.len() + 1);
    bytes.extend_from_slice(line.as_bytes());
    bytes.push(b'\n');
    bytes.into()
}

/// The writer thread: block for one message, gather whatever else is already queued, write
/// it all at once. Ends when every [`Outbox`] is dropped (after sending what was queued) or
/// when the socket fails.
fn drain(mut stream: &TcpStream, pending: Receiver<Message>) {
    // Grows to the largest batch this connection has needed, at most BATCH_BYTES plus one
    // message, and is reused for every write: no allocation per message.
    let mut batch = Vec::new();
    while let Ok(first) = pending.recv() {
        batch.clear();
        batch.extend_from_slice(&first);
        while batch.len() < BATCH_BYTES {
            match pending.try_recv() {
                Ok(next) => batch.extend_from_slice(&next),
                Err(_) => break,
            }
        }
        if stream.write_all(&batch).is_err() {
            let _ = stream.shutdown(Shutdown::Both);
            return;
        }
    }
    let _ = stream.shutdown(Shutdown::Write);
}
