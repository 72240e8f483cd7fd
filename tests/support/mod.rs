//! Drives the real `natchat` binary in tests: spawn it, type into it, wait for lines.
//!
//! Every wait polls with a generous deadline (tests must not be flaky on a loaded 2-core
//! machine) and, when it times out, fails with everything the process printed. Processes are
//! killed when their [`Proc`] is dropped, so a failing test leaves nothing running.
#![allow(dead_code)] // each test file uses a different part of this module

pub mod lab;
pub mod nat;
pub mod raw;
pub mod spoof;
pub mod tmux;

use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// The deadline for anything that should happen "at once".
pub const SOON: Duration = Duration::from_secs(10);

pub fn natchat() -> Command {
    Command::new(env!("CARGO_BIN_EXE_natchat"))
}

/// A running `natchat` process and everything it has printed (stdout and stderr, in one
/// list, in the order each stream produced them).
pub struct Proc {
    pub name: String,
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Arc<Mutex<Vec<String>>>,
    /// What it printed on stderr alone.
    errors: Arc<Mutex<Vec<String>>>,
}

impl Proc {
    pub fn spawn(name: &str, args: &[&str]) -> Proc {
        Proc::spawn_command(name, natchat().args(args))
    }

    /// Runs any command (a shell wrapping natchat, say) the same way.
    pub fn spawn_command(name: &str, command: &mut Command) -> Proc {
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn natchat");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let errors = Arc::new(Mutex::new(Vec::new()));
        collect(child.stdout.take().unwrap(), vec![lines.clone()]);
        collect(
            child.stderr.take().unwrap(),
            vec![lines.clone(), errors.clone()],
        );
        let stdin = child.stdin.take();
        Proc {
            name: name.to_string(),
            child,
            stdin,
            lines,
            errors,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything printed so far.
    pub fn output(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    /// What it printed on stderr so far.
    pub fn errors(&self) -> Vec<String> {
        self.errors.lock().unwrap().clone()
    }

    pub fn count(&self, needle: &str) -> usize {
        self.output().iter().filter(|l| l.contains(needle)).count()
    }

    /// Waits until a line satisfies `pred`; returns it.
    pub fn wait_line(&self, what: &str, timeout: Duration, pred: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(line) = self.output().into_iter().find(|l| pred(l)) {
                return line;
            }
            if Instant::now() > deadline {
                panic!(
                    "{}: no line {what} within {timeout:?}; output:\n{}",
                    self.name,
                    self.output().join("\n")
                );
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits until a line contains `needle`; returns it.
    pub fn wait_for(&self, needle: &str) -> String {
        self.wait_line(&format!("containing {needle:?}"), SOON, |l| {
            l.contains(needle)
        })
    }

    /// Waits until `needle` has appeared `n` times.
    pub fn wait_count(&self, needle: &str, n: usize, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while self.count(needle) < n {
            if Instant::now() > deadline {
                panic!(
                    "{}: {needle:?} seen {} times, wanted {n}; output:\n{}",
                    self.name,
                    self.count(needle),
                    self.output().join("\n")
                );
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Types one line.
    pub fn send(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin still open");
        writeln!(stdin, "{line}").expect("write to natchat's stdin");
        stdin.flush().unwrap();
    }

    /// Types `lines` in one go: one write, as a paste would.
    pub fn send_all(&mut self, lines: &[String]) {
        let stdin = self.stdin.as_mut().expect("stdin still open");
        let text: String = lines.iter().map(|line| format!("{line}\n")).collect();
        stdin
            .write_all(text.as_bytes())
            .expect("write to natchat's stdin");
        stdin.flush().unwrap();
    }

    /// Closes stdin: end of input.
    pub fn close_stdin(&mut self) {
        self.stdin = None;
    }

    /// Sends a signal by name (KILL, STOP, CONT, INT).
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.pid().to_string())
            .status()
            .unwrap();
        assert!(status.success(), "kill -{name} failed");
    }

    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// Waits for the process to end.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                // Let the collector threads catch up with the last lines.
                thread::sleep(Duration::from_millis(50));
                return status;
            }
            if Instant::now() > deadline {
                panic!(
                    "{}: still running after {timeout:?}; output:\n{}",
                    self.name,
                    self.output().join("\n")
                );
            }
            thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        // Only a process not yet reaped: once it has been, its PID may be someone else's.
        if matches!(self.child.try_wait(), Ok(None)) {
            // A stopped process (STOP) must be continued to die of the kill.
            let _ = Command::new("kill")
                .arg("-CONT")
                .arg(self.pid().to_string())
                .status();
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// Collects `stream` into each of `sinks`, a line at a time. A partial line (a prompt such as
/// `Enter ID : `) is shown too, and replaced as it grows.
fn collect(stream: impl Read + Send + 'static, sinks: Vec<Arc<Mutex<Vec<String>>>>) {
    thread::spawn(move || {
        let mut reader = BufReader::new(stream);
        let mut partial: Vec<u8> = Vec::new();
        loop {
            let chunk = match reader.fill_buf() {
                Ok([]) | Err(_) => return,
                Ok(chunk) => chunk.to_vec(),
            };
            reader.consume(chunk.len());
            let mut outs: Vec<_> = sinks.iter().map(|sink| sink.lock().unwrap()).collect();
            if !partial.is_empty() {
                outs.iter_mut().for_each(|out| drop(out.pop()));
            }
            for byte in chunk {
                if byte == b'\n' {
                    let line = String::from_utf8_lossy(&partial)
                        .trim_end_matches('\r')
                        .to_string();
                    outs.iter_mut().for_each(|out| out.push(line.clone()));
                    partial.clear();
                } else {
                    partial.push(byte);
                }
            }
            if !partial.is_empty() {
                let line = String::from_utf8_lossy(&partial).to_string();
                outs.iter_mut().for_each(|out| out.push(line.clone()));
            }
        }
    });
}

/// The port in a `natchat server listening on <ip>:<port> (...)` line.
pub fn port_in(listening: &str) -> u16 {
    listening
        .rsplit(':')
        .next()
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|p| p.parse().ok())
        .expect("a port in the listening line")
}

/// A child process that is killed when dropped, also when a test fails.
pub struct KillOnDrop(pub std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A registration server on a free port, with short timeouts. Returns it and its port.
pub fn p2p_server(extra: &[&str]) -> (Proc, u16) {
    let mut args = vec![
        "server",
        "--port",
        "0",
        "--bind",
        "127.0.0.1",
        "--timeout-secs",
        "3",
    ];
    args.extend_from_slice(extra);
    let server = Proc::spawn("server", &args);
    let port = port_in(&server.wait_for("listening on"));
    (server, port)
}

/// A P2P client `id` registered with the server on `port`, its list received.
pub fn p2p_client(id: &str, port: u16) -> Proc {
    p2p_client_with(id, port, &[])
}

/// A P2P client started with `--asleep`: registered and listed, without a UDP endpoint.
pub fn asleep_client(id: &str, port: u16) -> Proc {
    p2p_client_with(id, port, &["--asleep"])
}

/// A P2P client `id` with `extra` options (given after the defaults, so that they win),
/// registered, its list received.
pub fn p2p_client_with(id: &str, port: u16, extra: &[&str]) -> Proc {
    let client = p2p_client_started(id, port, extra);
    client.wait_for("Commands:");
    client
}

/// A P2P client `id` of the server at loopback port `port`, with `extra` options, started
/// and not waited for: for tests that watch how its registration goes.
pub fn p2p_client_started(id: &str, port: u16, extra: &[&str]) -> Proc {
    let port = port.to_string();
    let mut args = vec![
        "client",
        "--server",
        "127.0.0.1",
        "--port",
        &port,
        "--udp-port",
        "0",
        "--id",
        id,
        "--keepalive-secs",
        "1",
    ];
    args.extend_from_slice(extra);
    Proc::spawn(id, &args)
}

/// A chat room server on a free port of 127.0.0.1, with `extra` options. Returns it and its
/// port.
pub fn room_server(extra: &[&str]) -> (Proc, u16) {
    let mut args = vec!["room-server", "127.0.0.1", "0"];
    args.extend_from_slice(extra);
    let server = Proc::spawn("room-server", &args);
    let line = server.wait_for("Chat Server started on port");
    let port = line
        .trim_end_matches('.')
        .rsplit(' ')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("port in the started line");
    (server, port)
}

/// A room client called `name` (in test output) in the room on `port`, greeted.
pub fn room_client(name: &str, port: u16) -> Proc {
    let client = Proc::spawn(name, &["room-client", "127.0.0.1", &port.to_string()]);
    client.wait_for("Connected to the chat server");
    client
}

/// A directory of the test's own, removed when dropped (also when the test fails).
pub struct TempDir(PathBuf);

impl TempDir {
    /// A fresh, empty directory, named after `tag` and this test process.
    pub fn new(tag: &str) -> TempDir {
        let name = format!("natchat-test-{tag}-{}", std::process::id());
        let dir = std::env::temp_dir().join(name);
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    /// `name` inside it.
    pub fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }

    /// Its path, as a command-line argument.
    pub fn arg(&self) -> &str {
        self.0.to_str().unwrap()
    }

    /// Every file in it, hidden ones included, sorted.
    pub fn files(&self) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(&self.0)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}
