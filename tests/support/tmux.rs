//! Drives a program on a real terminal: tmux runs it in a detached session, and the test
//! types into it and reads its screen.
//!
//! Some behaviour exists only on a terminal: the kernel echoes what is typed and `^C`, a
//! program may prompt and redraw rows. Pipes show none of it, so these tests need a terminal,
//! and tmux gives one without a display.
//!
//! Each [`Tmux`] has a tmux server of its own, on a socket file of its own and started with
//! `-f /dev/null`: the user's configuration and sessions are never read or touched, and tests
//! running in parallel never meet. Dropping it kills that server, and with it the program,
//! also when the test panics. The window is a fixed 120x40, so rows wrap the same way on
//! every machine. `remain-on-exit` keeps the screen readable after the program has ended;
//! tmux then scrolls it up a row, the top row lost, and writes `Pane is dead (status <n>,
//! <time>)` on the last.

use super::SOON;
use std::io::{self, ErrorKind};
use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

/// The one session on each private server.
const SESSION: &str = "natchat";

/// Numbers the tmux servers of this test process.
static NEXT: AtomicUsize = AtomicUsize::new(0);

/// A program running on a terminal of its own, in a tmux server of its own.
pub struct Tmux {
    /// For messages: which program this is.
    pub name: String,
    socket: PathBuf,
}

impl Tmux {
    /// Runs `natchat <args>`.
    pub fn natchat(name: &str, args: &[&str]) -> Tmux {
        let mut command = vec![env!("CARGO_BIN_EXE_natchat")];
        command.extend_from_slice(args);
        Tmux::start(name, &command)
    }

    /// Runs a shell command line (`sh -c <line>`): for a redirection, a pipe, a `cd`.
    pub fn shell(name: &str, line: &str) -> Tmux {
        Tmux::start(name, &["sh", "-c", line])
    }

    /// Runs `command` (a program and its arguments; tmux runs it without a shell).
    fn start(name: &str, command: &[&str]) -> Tmux {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let socket =
            std::env::temp_dir().join(format!("natchat-test-{}-{n}.tmux", std::process::id()));
        let tmux = Tmux {
            name: name.to_string(),
            socket,
        };
        let mut args = vec!["set-option", "-g", "remain-on-exit", "on", ";"];
        args.extend_from_slice(&["new-session", "-d", "-s", SESSION, "-x", "120", "-y", "40"]);
        args.extend_from_slice(command);
        tmux.run(&args);
        tmux
    }

    /// Types `text`, then Enter.
    pub fn type_line(&self, text: &str) {
        self.type_text(text);
        self.send_key("Enter");
    }

    /// Types `text` as it is (no key names), without Enter.
    pub fn type_text(&self, text: &str) {
        self.run(&["send-keys", "-t", SESSION, "-l", text]);
    }

    /// Presses a key, named as tmux names it: `C-c`, `C-d`, `Enter`, `Up`.
    pub fn send_key(&self, key: &str) {
        self.run(&["send-keys", "-t", SESSION, key]);
    }

    /// The visible rows, each without its trailing blanks, and without the blank rows below
    /// the last written one.
    pub fn screen(&self) -> Vec<String> {
        let text = self.run(&["capture-pane", "-p", "-t", SESSION]);
        let mut rows: Vec<String> = text.lines().map(|r| r.trim_end().to_string()).collect();
        while rows.last().is_some_and(String::is_empty) {
            rows.pop();
        }
        rows
    }

    /// Waits until the screen satisfies `pred`; returns it. Panics with the whole screen when
    /// `timeout` passes first.
    pub fn wait_screen(
        &self,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&[String]) -> bool,
    ) -> Vec<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let screen = self.screen();
            if pred(&screen) {
                return screen;
            }
            if Instant::now() > deadline {
                panic!(
                    "{}: no screen {what} within {timeout:?}; screen:\n{}",
                    self.name,
                    screen.join("\n")
                );
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits until a row contains `needle`; returns the screen.
    pub fn wait_for(&self, needle: &str) -> Vec<String> {
        self.wait_screen(&format!("with a row containing {needle:?}"), SOON, |rows| {
            rows.iter().any(|r| r.contains(needle))
        })
    }

    /// Checks the screen after Ctrl+C ended the program: its last words, `last`, on a row of
    /// their own, right below `interrupted`, the row the terminal's echo of `^C` ends; never
    /// glued to it (`^Cexit`).
    pub fn assert_ended_after_ctrl_c(&self, last: &str, interrupted: &str) {
        let rows = self.screen();
        let at = rows.iter().position(|r| r == last);
        assert!(
            at.is_some_and(|at| at > 0 && rows[at - 1] == interrupted),
            "{}: no {last:?} below {interrupted:?}: {rows:#?}",
            self.name
        );
        assert!(
            rows.iter().all(|r| !r.contains(&format!("^C{last}"))),
            "{rows:#?}"
        );
    }

    /// Waits for the program to end; returns its exit code (`None`: a signal ended it).
    ///
    /// tmux calls a pane dead as soon as its terminal closes, but knows how the program
    /// ended only once it has reaped it, on SIGCHLD; and now and then it misses that signal
    /// (tmux/tmux#311), leaving the program a zombie for good. So each poll also sends
    /// SIGCHLD to this test's own tmux server, which makes it look for ended children.
    pub fn wait_exit(&self, timeout: Duration) -> Option<i32> {
        let deadline = Instant::now() + timeout;
        loop {
            let state = self.run(&[
                "display-message",
                "-p",
                "-t",
                SESSION,
                "#{pid} #{pane_dead_status}/#{pane_dead_signal}",
            ]);
            let (server, ended) = state.trim_end().split_once(' ').unwrap_or_default();
            match ended.split_once('/') {
                Some(("", "")) | None => {}
                Some((status, _)) => return status.parse().ok(),
            }
            if Instant::now() > deadline {
                panic!(
                    "{}: still running after {timeout:?}; screen:\n{}",
                    self.name,
                    self.screen().join("\n")
                );
            }
            let _ = Command::new("kill").args(["-CHLD", server]).status();
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// Runs a tmux command on this server; returns what it printed. Panics if it fails.
    fn run(&self, args: &[&str]) -> String {
        let output = match self.command(args) {
            Ok(output) => output,
            Err(e) if e.kind() == ErrorKind::NotFound => panic!(
                "these tests drive a terminal through tmux, which is not installed: \
                 apt-get install tmux"
            ),
            Err(e) => panic!("{}: cannot run tmux: {e}", self.name),
        };
        assert!(
            output.status.success(),
            "{}: tmux {args:?} failed: {}",
            self.name,
            String::from_utf8_lossy(&output.stderr).trim_end()
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    fn command(&self, args: &[&str]) -> io::Result<Output> {
        Command::new("tmux")
            .arg("-S")
            .arg(&self.socket)
            .args(["-f", "/dev/null"])
            .args(args)
            // Run inside a tmux session, the test must still reach only its own server.
            .env_remove("TMUX")
            .output()
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        // Ends the program too (it gets SIGHUP). The socket file outlives the server.
        let _ = self.command(&["kill-server"]);
        let _ = std::fs::remove_file(&self.socket);
    }
}
