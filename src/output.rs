//! Printing, in the two ways natchat needs.
//!
//! - [`say!`](crate::say): a line printed now, like `println!`, but that never panics.
//!   `println!` panics when stdout is gone (`natchat server | head -3`, a closed terminal).
//! - [`event!`](crate::event): a server's event line (a join, a message, a leave). Server
//!   threads print these while holding a lock, to keep them in the order things happened; a
//!   terminal whose output is paused (Ctrl+S in an xterm) would then hold up every thread
//!   waiting for that lock. So event lines go to a bounded queue that one printer thread
//!   drains; when the terminal does not keep up, lines are dropped, and then counted in a line
//!   of their own.

use crossbeam_channel::{bounded, Sender, TrySendError};
use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::OnceLock;
use std::thread;

/// Prints a line on stdout like `println!`, but never panics.
#[macro_export]
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout().lock(), $($arg)*);
    }};
}

/// Prints `natchat: <message>` on stderr, like `eprintln!`, but never panics: every warning
/// and error line natchat prints starts the same way, whichever part of it speaks.
#[macro_export]
macro_rules! warn {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr().lock(), "natchat: {}", format_args!($($arg)*));
    }};
}

/// Ends the line that a terminal's echo of `^C` left the cursor on, so that what a Ctrl+C
/// handler prints next (`exit`, `Server stopped.`) stands on a line of its own rather than
/// reading `^Cexit`. Prints nothing when stdout is not a terminal: there was no echo.
pub fn end_interrupted_line() {
    use std::io::IsTerminal;
    if std::io::stdout().is_terminal() {
        crate::say!();
    }
}

/// Queues a server event line for the printer thread; never blocks.
#[macro_export]
macro_rules! event {
    ($($arg:tt)*) => {
        $crate::output::event(format!($($arg)*))
    };
}

/// Event lines that may wait for the terminal.
const BACKLOG: usize = 64 * 1024;

/// Event lines dropped since the printer last said so.
static DROPPED: AtomicU64 = AtomicU64::new(0);

/// Set once the process has printed its last line: event lines are dropped from then on.
static ENDED: AtomicBool = AtomicBool::new(false);

/// Ends event lines for good: for a server binary about to say its last line, while
/// stopping (see [`CtrlC::wait_and_stop`](crate::worker::CtrlC::wait_and_stop)). Takes
/// stdout's lock, which the printer holds while it prints, so no event line is printed once
/// this returns.
pub fn end_events() {
    let _out = std::io::stdout().lock();
    ENDED.store(true, Ordering::SeqCst);
}

/// Starts the printer thread now. Servers do, at start-up: the thread is part of a server
/// at rest, not something its first event adds.
pub fn start() {
    printer();
}

/// Queues `line` for the printer thread (started on first use).
pub fn event(line: String) {
    if ENDED.load(Ordering::SeqCst) {
        return;
    }
    let Some(lines) = printer() else {
        // No printer thread could be started: print here rather than not at all.
        return crate::say!("{line}");
    };
    if let Err(TrySendError::Full(_)) = lines.try_send(line) {
        DROPPED.fetch_add(1, Ordering::Relaxed);
    }
}

fn printer() -> &'static Option<Sender<String>> {
    static PRINTER: OnceLock<Option<Sender<String>>> = OnceLock::new();
    PRINTER.get_or_init(|| {
        let (lines, queued) = bounded::<String>(BACKLOG);
        let started = thread::Builder::new()
            .name("printer".into())
            .spawn(move || {
                for line in queued {
                    let mut out = std::io::stdout().lock();
                    if ENDED.load(Ordering::SeqCst) {
                        continue;
                    }
                    let dropped = DROPPED.swap(0, Ordering::Relaxed);
                    if dropped > 0 {
                        let _ = writeln!(
                            out,
                            "({dropped} event lines dropped: the output was too slow)"
                        );
                    }
                    let _ = writeln!(out, "{line}");
                }
            });
        started.ok().map(|_| lines)
    })
}
