//! Threads that stop when told, and are waited for: how a server shuts down gracefully.
//!
//! As in the last chapter of the Rust Book, a server is a value. Starting it starts its
//! threads; dropping it stops them and waits for each to end, so that when the drop returns
//! its port is free, its clients' connections are closed and nothing of it runs any more.
//! (Tests rely on that to run servers inside the test process, one after another.)
//!
//! Each long-running thread of a server is a [`Worker`]. Dropping the worker sets its
//! thread's [`Stop`] flag, which the thread checks each time round its loop, then *wakes* the
//! thread, which may be blocked, and joins it. Where it blocks decides how to wake it, so each
//! worker is given its own `wake`:
//! - in `accept`: connect to the listener once (see [`crate::listener`]);
//! - in `recv_from`: send the socket an empty datagram;
//! - in a channel's `recv`: send it a message;
//! - in a sleep: [`Stop::pause`] parks the thread, and every worker is unparked.
//!
//! So a thread blocks for as long as it likes, and nothing polls: a server at rest uses no CPU,
//! and one told to stop has stopped within milliseconds. (The other way, a timeout on every
//! blocking call so that the flag is checked now and then, trades one for the other: a short
//! timeout wakes every idle thread many times a second, a long one makes stopping slow.)

use crate::failure::Failure;
use crossbeam_channel::{bounded, Receiver};
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// A thread that runs until this value is dropped. Dropping it asks the thread to stop, wakes
/// it, and waits until it has ended.
pub struct Worker {
    stop: Stop,
    /// Ends whatever the thread may be blocked in.
    wake: Box<dyn Fn() + Send + Sync>,
    /// `None` only once joined, in `drop`.
    thread: Option<JoinHandle<()>>,
}

impl Worker {
    /// Starts `body` on a thread named `name`. `body` is given the thread's [`Stop`], and must
    /// return soon after a stop is requested and `wake` has been called (or the thread
    /// unparked: a worker that only sleeps, in [`Stop::pause`], needs no `wake` of its own
    /// and passes `|| {}`).
    pub fn spawn(
        name: &str,
        wake: impl Fn() + Send + Sync + 'static,
        body: impl FnOnce(Stop) + Send + 'static,
    ) -> io::Result<Worker> {
        let stop = Stop(Arc::new(AtomicBool::new(false)));
        let flag = stop.clone();
        let thread = thread::Builder::new()
            .name(name.into())
            .spawn(move || body(flag))?;
        Ok(Worker {
            stop,
            wake: Box::new(wake),
            thread: Some(thread),
        })
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        // The flag first: a thread woken before it is set would only block again.
        self.stop.0.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            (self.wake)();
            thread.thread().unpark();
            // A thread that panicked has ended already, and its panic was printed then.
            let _ = thread.join();
        }
    }
}

/// A worker thread's view of its [`Worker`]: whether it has been asked to stop.
#[derive(Clone)]
pub struct Stop(Arc<AtomicBool>);

impl Stop {
    /// Whether the thread has been asked to stop.
    pub fn requested(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }

    /// Sleeps for `duration`, or less if a stop is requested meanwhile; returns whether the
    /// thread is to go on. Only for the worker's own thread: it sleeps by parking, which
    /// dropping the [`Worker`] ends. (A stop requested just before the thread parks is not
    /// missed: an unpark that comes first makes the next park return at once.)
    pub fn pause(&self, duration: Duration) -> bool {
        let until = Instant::now() + duration;
        while !self.requested() {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return true;
            }
            // May return early, for no reason at all: hence the loop.
            thread::park_timeout(left);
        }
        false
    }
}

/// Ctrl+C (SIGINT), caught: from now on it no longer ends the process at once, but ends
/// [`CtrlC::wait_and_stop`], which stops a server gracefully. A second Ctrl+C, should the
/// stop ever hang, ends the process at once, with status 130 as an uncaught one would.
pub struct CtrlC(Receiver<()>);

impl CtrlC {
    /// Catches Ctrl+C. Done before a server starts, so that no Ctrl+C, however early, finds
    /// the default handling still in place.
    pub fn catch() -> Result<CtrlC, Failure> {
        let (pressed, presses) = bounded(1);
        let before = AtomicBool::new(false);
        ctrlc::set_handler(move || {
            if before.swap(true, Ordering::SeqCst) {
                crate::warn!("Ctrl+C again: stopping at once");
                std::process::exit(130);
            }
            // The first press: room for it in the channel.
            let _ = pressed.try_send(());
        })
        .map_err(|e| Failure::runtime(format!("cannot catch Ctrl+C: {e}")))?;
        Ok(CtrlC(presses))
    }

    /// Blocks until Ctrl+C, then drops `server`, which stops it, and prints `last_line`
    /// (`Server stopped.`, `exit`) on a line of its own, the last the process prints.
    ///
    /// Event lines end first: the server closing every connection as it stops is not news,
    /// and a line per client (`alice is disconnected ...`) would only bury the last one.
    pub fn wait_and_stop<S>(self, server: S, last_line: &str) {
        // An error means the handler is gone, which it never is: stop then too.
        let _ = self.0.recv();
        crate::output::end_events();
        drop(server);
        crate::output::end_interrupted_line();
        crate::say!("{last_line}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    #[test]
    fn dropping_a_worker_wakes_a_long_pause_and_joins_the_thread() {
        let rounds = Arc::new(AtomicUsize::new(0));
        let counted = rounds.clone();
        let worker = Worker::spawn(
            "pausing",
            || {},
            move |stop| {
                while stop.pause(Duration::from_secs(3600)) {
                    counted.fetch_add(1, Ordering::SeqCst);
                }
                counted.fetch_add(100, Ordering::SeqCst);
            },
        )
        .unwrap();
        let started = Instant::now();
        drop(worker);
        assert!(started.elapsed() < Duration::from_secs(5), "woken at once");
        assert_eq!(rounds.load(Ordering::SeqCst), 100, "ended, after no round");
    }

    #[test]
    fn a_pause_lasts_its_duration_when_nobody_stops_it() {
        let stop = Stop(Arc::new(AtomicBool::new(false)));
        let started = Instant::now();
        assert!(stop.pause(Duration::from_millis(30)));
        assert!(started.elapsed() >= Duration::from_millis(30));
        stop.0.store(true, Ordering::SeqCst);
        assert!(!stop.pause(Duration::from_secs(3600)));
    }
}
