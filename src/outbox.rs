//! A connection's bounded outgoing queue, and the writer thread that drains it.
//!
//! Servers never write to a client's socket from the thread that decided to send: they push
//! the bytes onto the client's [`Outbox`] and move on. One writer thread per connection takes
//! everything queued and writes it with a single system call. So:
//! - no lock is ever held while writing to a socket, and a slow client cannot hold up the
//!   thread that broadcasts to everyone;
//! - a message is one shared `Arc<[u8]>`: a broadcast to a thousand clients makes a thousand
//!   reference counts, not a thousand copies;
//! - the queue is bounded. A client whose queue is full has stopped reading; it is cut off
//!   (the socket is shut down, its reader thread sees the end and cleans up) instead of
//!   letting memory grow without limit, or dropping the message for everyone else.

use crossbeam_channel::{bounded, Receiver, Sender, TrySendError};
use std::io::{self, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::Arc;
use std::thread;

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
    queue: Sender<Message>,
    stream: Arc<TcpStream>,
}

/// The queue was full: the client stopped reading, and has been cut off.
#[derive(Debug)]
pub struct Overflow;

impl Outbox {
    /// Starts the writer thread for `stream` with a queue of `capacity` messages.
    pub fn start(stream: &TcpStream, capacity: usize) -> io::Result<Outbox> {
        Outbox::share(Arc::new(stream.try_clone()?), capacity)
    }

    /// Like [`Outbox::start`], on a stream the caller goes on reading from: a `TcpStream`
    /// can be read by one thread while another writes to it, so a connection needs one
    /// file descriptor, not one per thread.
    pub fn share(stream: Arc<TcpStream>, capacity: usize) -> io::Result<Outbox> {
        let (queue, pending) = bounded(capacity);
        let writer = stream.clone();
        thread::Builder::new()
            .name("outbox".into())
            .stack_size(WRITER_STACK)
            .spawn(move || drain(&writer, pending))?;
        Ok(Outbox { queue, stream })
    }

    /// Queues `message` without blocking. A full queue cuts the client off.
    pub fn push(&self, message: Message) -> Result<(), Overflow> {
        match self.queue.try_send(message) {
            Ok(()) => Ok(()),
            // The writer is gone: the connection is already closing, nothing to do.
            Err(TrySendError::Disconnected(_)) => Ok(()),
            Err(TrySendError::Full(_)) => {
                self.cut_off();
                Err(Overflow)
            }
        }
    }

    /// Queues `message` only while the queue is less than half full, and otherwise drops it.
    /// For best-effort traffic whose sender retransmits (relayed chat datagrams): a flood of
    /// it can never fill a queue and get its recipient cut off.
    pub fn offer(&self, message: Message) -> bool {
        let half = self.queue.capacity().unwrap_or(usize::MAX) / 2;
        self.queue.len() < half && self.queue.try_send(message).is_ok()
    }

    /// Queues one text line (a newline is added).
    pub fn push_line(&self, line: &str) -> Result<(), Overflow> {
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
