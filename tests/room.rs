//! The chat room, end to end: the real `natchat` binary over real loopback sockets.
//!
//! Users are `natchat room-client` processes, or plain sockets that send CRLF lines exactly
//! as `nc` or telnet would ([`RawUser`]). Every wait polls with a generous deadline.

mod support;

use natchat::room::server::QUEUE;
use std::fs;
use std::io::{self, BufRead, BufReader, Write};
use std::net::{Shutdown, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::thread;
use std::time::{Duration, Instant};
use support::tmux::Tmux;
use support::{natchat, room_client, room_server, Proc, TempDir, SOON};

/// A user on a plain TCP socket, like `nc HOST PORT`: lines out with CRLF; a thread collects
/// the lines that come in. Dropping it hangs up.
struct RawUser {
    stream: TcpStream,
    /// As the server names this user: `127.0.0.1:<port>`.
    addr: String,
    lines: Arc<Mutex<Vec<String>>>,
    ended: Arc<AtomicBool>,
}

impl RawUser {
    /// Connects and waits for the greeting.
    fn join(port: u16) -> RawUser {
        let stream = TcpStream::connect(("127.0.0.1", port)).expect("connect to the room");
        let addr = stream.local_addr().unwrap().to_string();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let ended = Arc::new(AtomicBool::new(false));
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let (collected, end) = (lines.clone(), ended.clone());
        thread::spawn(move || {
            let mut buf = Vec::new();
            while matches!(reader.read_until(b'\n', &mut buf), Ok(n) if n > 0) {
                let line = String::from_utf8_lossy(&buf);
                collected
                    .lock()
                    .unwrap()
                    .push(line.trim_end_matches(['\r', '\n']).to_string());
                buf.clear();
            }
            end.store(true, Ordering::SeqCst);
        });
        let user = RawUser {
            stream,
            addr,
            lines,
            ended,
        };
        user.wait_for("Connected to the chat server");
        user
    }

    fn send(&self, line: &str) {
        self.send_bytes(format!("{line}\r\n").as_bytes());
    }

    fn send_bytes(&self, bytes: &[u8]) {
        (&self.stream).write_all(bytes).expect("write to the room");
    }

    fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    fn wait_for(&self, needle: &str) -> String {
        let found = || self.lines().into_iter().find(|l| l.contains(needle));
        wait_until(
            &format!("{} to receive {needle:?}", self.addr),
            SOON,
            || found().is_some(),
        );
        found().unwrap()
    }

    /// Waits until the server has closed the connection.
    fn wait_ended(&self) {
        wait_until(&format!("the server to close {}", self.addr), SOON, || {
            self.ended.load(Ordering::SeqCst)
        });
    }
}

impl Drop for RawUser {
    fn drop(&mut self) {
        let _ = self.stream.shutdown(Shutdown::Both);
    }
}

fn wait_until(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(Instant::now() < deadline, "waited {timeout:?} for {what}");
        thread::sleep(Duration::from_millis(20));
    }
}

/// The `<ip>:<port>` the server named in a `New user <ip>:<port> entered ...` line.
fn joined(line: &str) -> String {
    let rest = line.split("New user ").nth(1).expect("a join line");
    rest.split(' ').next().unwrap().to_string()
}

/// `len` bytes that are not text: every byte value, newlines and NULs included.
fn binary(len: usize, seed: u32) -> Vec<u8> {
    let mut state = seed | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            state as u8
        })
        .collect()
}

#[test]
fn three_users_see_joins_messages_and_leaves_with_the_right_counts() {
    let uploads = TempDir::new("three");
    let (mut server, port) = room_server(&["--upload-dir", uploads.arg()]);
    let mut a = room_client("a", port);
    a.wait_for("Connected to the chat server (1 user online)");
    let a_addr = joined(&server.wait_for("entered (1 user online)"));

    let mut b = room_client("b", port);
    b.wait_for("Connected to the chat server (2 users online)");
    let b_addr = joined(&server.wait_for("entered (2 users online)"));
    a.wait_for(&format!("New user {b_addr} entered (2 users online)"));

    let mut c = room_client("c", port);
    c.wait_for("Connected to the chat server (3 users online)");
    let c_addr = joined(&server.wait_for("entered (3 users online)"));
    a.wait_for(&format!("New user {c_addr} entered (3 users online)"));
    b.wait_for(&format!("New user {c_addr} entered (3 users online)"));

    a.send("hello room");
    a.wait_for("[You] hello room");
    b.wait_for(&format!("[{a_addr}] hello room"));
    c.wait_for(&format!("[{a_addr}] hello room"));
    server.wait_for(&format!("[{a_addr}] hello room"));
    c.send("hi a");
    a.wait_for(&format!("[{c_addr}] hi a"));
    b.wait_for(&format!("[{c_addr}] hi a"));
    c.wait_for("[You] hi a");
    // Nobody hears of their own arrival, or gets their own message under their address.
    assert_eq!(a.count(&format!("New user {a_addr}")), 0);
    assert_eq!(a.count(&format!("[{a_addr}]")), 0);

    // Leaving at the end of input.
    b.close_stdin();
    assert!(b.wait_exit(SOON).success());
    a.wait_for(&format!("The user {b_addr} left (2 users online)"));
    c.wait_for(&format!("The user {b_addr} left (2 users online)"));
    server.wait_for(&format!("The user {b_addr} left (2 users online)"));

    // Leaving with Ctrl+C.
    c.signal("INT");
    assert!(c.wait_exit(SOON).success());
    assert_eq!(c.count("exit"), 1);
    a.wait_for(&format!("The user {c_addr} left (1 user online)"));

    // The server's Ctrl+C.
    server.signal("INT");
    assert!(server.wait_exit(SOON).success());
    assert_eq!(server.output().last().map(String::as_str), Some("exit"));
    a.wait_for("server closed");
    assert_eq!(a.wait_exit(SOON).code(), Some(1));
}

/// A room client on a terminal, in the room on `port`, greeted and prompting.
fn terminal_client(port: u16) -> Tmux {
    let term = Tmux::natchat("terminal", &["room-client", "127.0.0.1", &port.to_string()]);
    term.wait_screen("greeted, with a prompt", SOON, |rows| {
        rows == ["Connected to the chat server (1 user online)", "[You]"]
    });
    term
}

#[test]
fn on_a_terminal_a_typed_line_shows_once_after_the_prompt() {
    let uploads = TempDir::new("terminal");
    let (server, port) = room_server(&["--upload-dir", uploads.arg()]);
    let term = terminal_client(port);
    let term_addr = joined(&server.wait_for("entered (1 user online)"));
    let mut piped = room_client("piped", port);
    let piped_addr = joined(&server.wait_for("entered (2 users online)"));
    let greeted = [
        "Connected to the chat server (1 user online)".to_string(),
        format!("New user {piped_addr} entered (2 users online)"),
    ];
    term.wait_screen("with the newcomer and a prompt", SOON, |rows| {
        rows[..] == [&greeted[..], &["[You]".to_string()]].concat()
    });

    term.type_line("Hello");
    piped.wait_for(&format!("[{term_addr}] Hello"));
    piped.send("Hi there");
    // The echo `[You] Hello` is not printed again: the row typed on reads so already.
    let chatted = [
        &greeted[..],
        &[
            "[You] Hello".to_string(),
            format!("[{piped_addr}] Hi there"),
            "[You]".to_string(),
        ],
    ]
    .concat();
    term.wait_screen(
        "with one Hello, and a line from the other user",
        SOON,
        |rows| rows == chatted,
    );

    // A line that arrives while the user is typing takes the prompt's row, and a fresh
    // prompt follows. What was typed is still sent whole at Enter.
    term.type_text("Good");
    term.wait_for("[You] Good");
    piped.send("while you type");
    term.wait_for(&format!("[{piped_addr}] while you type"));
    term.type_line("bye");
    piped.wait_for(&format!("[{term_addr}] Goodbye"));
    let expected = [
        &chatted[..chatted.len() - 1],
        &[
            format!("[{piped_addr}] while you type"),
            "[You] bye".to_string(),
            "[You]".to_string(),
        ],
    ]
    .concat();
    term.wait_screen("with the line on a row of its own", SOON, |rows| {
        rows == expected
    });

    // Piped, the output is plain lines, the echo included.
    let plain = piped.output();
    assert!(plain.contains(&"[You] Hi there".to_string()), "{plain:?}");
    assert!(plain
        .iter()
        .all(|l| !l.contains('\x1b') && !l.contains('\r')));
}

#[test]
fn ctrl_c_on_a_terminal_prints_exit_on_a_row_of_its_own() {
    let uploads = TempDir::new("ctrl-c");
    let (server, port) = room_server(&["--upload-dir", uploads.arg()]);
    let term = terminal_client(port);
    term.send_key("C-c");
    assert_eq!(term.wait_exit(SOON), Some(0));
    term.assert_ended_after_ctrl_c("exit", "[You] ^C");
    server.wait_for("left (0 users online)");

    let uploads = TempDir::new("server-ctrl-c");
    let server = Tmux::natchat(
        "room-server",
        &[
            "room-server",
            "127.0.0.1",
            "0",
            "--upload-dir",
            uploads.arg(),
        ],
    );
    server.wait_for("Chat Server started on port");
    server.send_key("C-c");
    assert_eq!(server.wait_exit(SOON), Some(0));
    server.assert_ended_after_ctrl_c("exit", "^C");
}

#[test]
fn end_of_input_on_a_terminal_prints_exit_where_the_prompt_was() {
    let uploads = TempDir::new("ctrl-d");
    let (_server, port) = room_server(&["--upload-dir", uploads.arg()]);
    let term = terminal_client(port);
    term.send_key("C-d");
    assert_eq!(term.wait_exit(SOON), Some(0));
    // `exit` took the prompt's row, and no prompt came back.
    let rows = term.screen();
    assert!(rows.iter().any(|r| r == "exit"), "{rows:#?}");
    assert!(rows.iter().all(|r| !r.starts_with("[You]")), "{rows:#?}");
}

#[test]
fn nc_style_users_chat_with_room_clients() {
    let uploads = TempDir::new("nc");
    let (server, port) = room_server(&["--upload-dir", uploads.arg()]);
    let client = room_client("client", port);
    let nc = RawUser::join(port);
    nc.wait_for("Connected to the chat server (2 users online)");
    client.wait_for(&format!("New user {} entered (2 users online)", nc.addr));

    nc.send("hi from nc");
    nc.send("");
    nc.send("   \t ");
    nc.send("bell\x07 and \x1b[2J");
    nc.wait_for("[You] hi from nc");
    // Control characters are replaced by the server, before anyone sees them.
    nc.wait_for("[You] bell\u{FFFD} and \u{FFFD}[2J");
    client.wait_for(&format!("[{}] hi from nc", nc.addr));
    client.wait_for(&format!("[{}] bell\u{FFFD} and \u{FFFD}[2J", nc.addr));
    // The empty and blank lines were not broadcast.
    assert_eq!(
        client.count(&format!("[{}]", nc.addr)),
        2,
        "{:?}",
        client.output()
    );
    assert_eq!(
        nc.lines().iter().filter(|l| l.starts_with("[You]")).count(),
        2
    );

    let mut typist = room_client("typist", port);
    let typist_addr = joined(&server.wait_for("entered (3 users online)"));
    typist.send("hello nc");
    nc.wait_for(&format!("[{typist_addr}] hello nc"));
    client.wait_for(&format!("[{typist_addr}] hello nc"));

    // A crashed client leaves like any other.
    typist.signal("KILL");
    nc.wait_for(&format!("The user {typist_addr} left (2 users online)"));
    client.wait_for(&format!("The user {typist_addr} left (2 users online)"));

    // A last line without its newline might be half a message: it is dropped.
    let torn = RawUser::join(port);
    torn.send_bytes(b"half a mess");
    let torn_addr = torn.addr.clone();
    drop(torn);
    nc.wait_for(&format!("The user {torn_addr} left (2 users online)"));
    assert_eq!(server.count("half a mess"), 0);

    // A line over the cap: one error line, then the connection is closed.
    let long = RawUser::join(port);
    long.send(&"x".repeat(10_000));
    long.wait_for("Error: line longer than 8192 bytes; closing the connection.");
    long.wait_ended();
    nc.wait_for(&format!("The user {} left (2 users online)", long.addr));
    client.wait_for(&format!("The user {} left (2 users online)", long.addr));
}

#[test]
fn a_full_room_turns_newcomers_away() {
    let uploads = TempDir::new("full");
    let (_server, port) = room_server(&["--upload-dir", uploads.arg(), "--max-users", "1"]);
    let _first = RawUser::join(port);
    let second = TcpStream::connect(("127.0.0.1", port)).unwrap();
    second.set_read_timeout(Some(SOON)).unwrap();
    let mut line = String::new();
    BufReader::new(second).read_line(&mut line).unwrap();
    assert_eq!(
        line,
        "The chat room is full (1 user online); try again later.\n"
    );
}

#[test]
fn an_upload_arrives_byte_for_byte_and_everyone_is_told() {
    let uploads = TempDir::new("upload");
    let files = TempDir::new("upload-src");
    let (server, port) = room_server(&["--upload-dir", uploads.arg()]);
    let mut a = room_client("a", port);
    let a_addr = joined(&server.wait_for("entered (1 user online)"));
    let b = RawUser::join(port);

    let data = binary(300_000, 7);
    fs::write(files.path("data.bin"), &data).unwrap();
    a.send(&format!("#upload {}", files.path("data.bin").display()));
    a.wait_for("File data.bin has uploaded!");
    let told = format!("User {a_addr} has uploaded a file data.bin (300000 bytes)");
    b.wait_for(&told);
    server.wait_for(&told);
    assert_eq!(uploads.files(), ["data.bin"]);
    assert!(
        fs::read(uploads.path("data.bin")).unwrap() == data,
        "stored file differs"
    );

    // The stream is in step: chat goes on, both ways.
    a.send("after the upload");
    b.wait_for(&format!("[{a_addr}] after the upload"));
    b.send("got it");
    a.wait_for(&format!("[{}] got it", b.addr));

    // A missing file is reported at the client, and nothing is sent.
    a.send("#upload /nonexistent/natchat/missing.txt");
    a.wait_for("Cannot upload /nonexistent/natchat/missing.txt: ");
    a.send("still here");
    b.wait_for(&format!("[{a_addr}] still here"));
    assert_eq!(server.count("uploaded"), 1);
    assert_eq!(uploads.files(), ["data.bin"]);
}

#[test]
fn quoted_upload_paths_name_the_file_inside_the_quotes() {
    let uploads = TempDir::new("quoted");
    let files = TempDir::new("quoted-src");
    let (_server, port) = room_server(&["--upload-dir", uploads.arg()]);
    fs::write(files.path("google.png"), b"png").unwrap();
    fs::write(files.path("my file.png"), b"my png").unwrap();
    // Relative paths, as students type them, from the directory they are in.
    let mut client = Proc::spawn_command(
        "client",
        natchat()
            .current_dir(files.arg())
            .args(["room-client", "127.0.0.1", &port.to_string()]),
    );
    client.wait_for("Connected to the chat server");
    client.send("#upload 'google.png'");
    client.wait_line("that says google.png was uploaded", SOON, |l| {
        l == "File google.png has uploaded!"
    });
    client.send("#upload \"my file.png\"");
    client.wait_line("that says my file.png was uploaded", SOON, |l| {
        l == "File my file.png has uploaded!"
    });
    assert_eq!(uploads.files(), ["google.png", "my file.png"]);
    assert_eq!(fs::read(uploads.path("my file.png")).unwrap(), b"my png");
}

#[test]
fn pipes_devices_and_directories_are_refused_at_once_and_the_client_goes_on() {
    let uploads = TempDir::new("irregular");
    let files = TempDir::new("irregular-src");
    let (server, port) = room_server(&["--upload-dir", uploads.arg()]);
    let fifo = files.path("pipe");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(made.success(), "mkfifo {}", fifo.display());
    let mut client = room_client("client", port);
    let client_addr = joined(&server.wait_for("entered (1 user online)"));
    let other = RawUser::join(port);

    for (path, what) in [
        (fifo.to_str().unwrap(), "a FIFO (named pipe)"),
        (files.arg(), "a directory"),
        ("/dev/zero", "a device"),
    ] {
        client.send(&format!("#upload {path}"));
        let refusal = format!("Cannot upload {path}: it is {what}, not a regular file.");
        client.wait_line(&format!("equal to {refusal:?}"), SOON, |l| l == refusal);
    }
    client.send("still chatting");
    other.wait_for(&format!("[{client_addr}] still chatting"));
    assert_eq!(server.count("upload"), 0, "{:?}", server.output());
    assert_eq!(uploads.files(), Vec::<String>::new());

    client.close_stdin();
    assert!(client.wait_exit(SOON).success());
    assert_eq!(client.output().last().map(String::as_str), Some("exit"));
}

#[test]
fn upload_names_cannot_escape_the_directory_or_overwrite_a_file() {
    let root = TempDir::new("names");
    let uploads = root.path("uploads");
    let (_server, port) = room_server(&["--upload-dir", uploads.to_str().unwrap()]);
    let nc = RawUser::join(port);
    nc.send("#upload 5 ../../escape.txt");
    nc.send_bytes(b"first");
    nc.wait_for("File escape.txt has uploaded!");
    nc.send("#upload 6 escape.txt");
    nc.send_bytes(b"second");
    nc.wait_for("File escape (1).txt has uploaded!");
    nc.send("#upload 4 ..");
    nc.send_bytes(b"dots");
    nc.wait_for("File upload has uploaded!");

    // The same name from a real client: the next free number.
    fs::write(root.path("escape.txt"), b"third").unwrap();
    let mut client = room_client("client", port);
    client.send(&format!("#upload {}", root.path("escape.txt").display()));
    client.wait_for("File escape (2).txt has uploaded!");

    assert_eq!(fs::read(uploads.join("escape.txt")).unwrap(), b"first");
    assert_eq!(fs::read(uploads.join("escape (1).txt")).unwrap(), b"second");
    assert_eq!(fs::read(uploads.join("escape (2).txt")).unwrap(), b"third");
    assert_eq!(fs::read(uploads.join("upload")).unwrap(), b"dots");
    assert_eq!(fs::read(root.path("escape.txt")).unwrap(), b"third");
    assert_eq!(root.files(), ["escape.txt", "uploads"]);
}

#[test]
fn an_upload_over_the_cap_is_refused_and_the_uploader_stays() {
    let uploads = TempDir::new("cap");
    let files = TempDir::new("cap-src");
    let (server, port) =
        room_server(&["--upload-dir", uploads.arg(), "--max-upload-bytes", "1000"]);
    let mut a = room_client("a", port);
    let a_addr = joined(&server.wait_for("entered (1 user online)"));
    let b = RawUser::join(port);

    fs::write(files.path("big.bin"), binary(50_000, 3)).unwrap();
    a.send(&format!("#upload {}", files.path("big.bin").display()));
    a.wait_for("File big.bin is too large (50000 bytes); the server accepts at most 1000 bytes.");
    // The refused bytes were read past: the next line is a message again.
    a.send("still chatting");
    b.wait_for(&format!("[{a_addr}] still chatting"));
    fs::write(files.path("small.txt"), b"small enough").unwrap();
    a.send(&format!("#upload {}", files.path("small.txt").display()));
    a.wait_for("File small.txt has uploaded!");
    assert_eq!(uploads.files(), ["small.txt"]);
    assert_eq!(server.count("uploaded"), 1);
    assert_eq!(
        b.lines().iter().filter(|l| l.contains("big.bin")).count(),
        0
    );
}

#[test]
fn an_upload_cut_short_leaves_nothing_and_the_room_goes_on() {
    let uploads = TempDir::new("cut");
    let (server, port) = room_server(&["--upload-dir", uploads.arg(), "--upload-idle-secs", "5"]);
    let a = RawUser::join(port);
    let b = RawUser::join(port);

    // The uploader vanishes half way through.
    let vanishing = RawUser::join(port);
    vanishing.send("#upload 1000000 half.bin");
    vanishing.send_bytes(&binary(500_000, 11));
    let vanished = vanishing.addr.clone();
    drop(vanishing);
    a.wait_for(&format!("The user {vanished} left (2 users online)"));

    // The uploader stalls: the room chats on meanwhile, then the upload times out.
    let stalling = RawUser::join(port);
    stalling.send("#upload 100 stall.bin");
    stalling.send_bytes(b"only ten..");
    a.send("chat goes on");
    b.wait_for(&format!("[{}] chat goes on", a.addr));
    stalling.wait_for("chat goes on");
    stalling
        .wait_for("Upload of stall.bin failed: nothing arrived for 5 s; closing the connection.");
    stalling.wait_ended();
    b.wait_for(&format!("The user {} left (2 users online)", stalling.addr));

    assert_eq!(
        uploads.files(),
        Vec::<String>::new(),
        "no file, no temporary file"
    );
    b.send("still fine");
    a.wait_for(&format!("[{}] still fine", b.addr));
    assert_eq!(server.count("uploaded"), 0);
}

/// A killed client: its server-side temporary file is removed too.
#[test]
fn a_client_killed_mid_upload_leaves_nothing() {
    let uploads = TempDir::new("killed");
    let files = TempDir::new("killed-src");
    let (server, port) = room_server(&["--upload-dir", uploads.arg()]);
    let watcher = RawUser::join(port);
    // Large enough that the upload is still running when the kill lands.
    fs::write(files.path("huge.bin"), binary(60_000_000, 5)).unwrap();
    let mut uploader = room_client("uploader", port);
    let uploader_addr = joined(&server.wait_for("entered (2 users online)"));
    uploader.send(&format!("#upload {}", files.path("huge.bin").display()));
    wait_until("the upload to start", SOON, || {
        std::path::Path::new(uploads.arg()).exists() && !uploads.files().is_empty()
    });
    uploader.signal("KILL");
    uploader.wait_exit(SOON);
    watcher.wait_for(&format!("The user {uploader_addr} left (1 user online)"));
    let stored = uploads.files();
    // Either the kill beat the last byte (nothing stored) or it did not (all of it stored).
    if stored.is_empty() {
        assert_eq!(server.count("uploaded"), 0);
        eprintln!("killed mid-file: nothing stored");
    } else {
        eprintln!("the upload finished before the kill");
        assert_eq!(stored, ["huge.bin"]);
        assert_eq!(
            fs::metadata(uploads.path("huge.bin")).unwrap().len(),
            60_000_000
        );
    }
}

#[test]
fn a_flood_reaches_everyone_whole_and_in_order() {
    const USERS: usize = 100;
    const SENDERS: usize = 5;
    const LINES: usize = 1000;
    let uploads = TempDir::new("flood");
    let (server, port) = room_server(&["--upload-dir", uploads.arg()]);

    // Line `i` of sender `k`, without the `[...] ` the server puts in front.
    let text = |k: usize, i: usize| format!("flood {k} {i} {}", "abcdefghij".repeat(1 + i % 7));

    let streams: Vec<TcpStream> = (0..USERS)
        .map(|_| TcpStream::connect(("127.0.0.1", port)).expect("connect to the room"))
        .collect();
    let senders: Vec<String> = streams[..SENDERS]
        .iter()
        .map(|s| s.local_addr().unwrap().to_string())
        .collect();
    let start = Arc::new(Barrier::new(USERS + 1));
    let readers: Vec<_> = streams
        .iter()
        .enumerate()
        .map(|(user, stream)| {
            let stream = stream.try_clone().unwrap();
            let (senders, start) = (senders.clone(), start.clone());
            thread::spawn(move || -> Result<(), String> {
                stream
                    .set_read_timeout(Some(Duration::from_secs(60)))
                    .unwrap();
                let mut reader = BufReader::new(stream);
                let mut line = String::new();
                reader.read_line(&mut line).map_err(|e| e.to_string())?;
                if !line.starts_with("Connected to the chat server") {
                    return Err(format!("user {user} was greeted with {line:?}"));
                }
                start.wait();
                let mut next = [0usize; SENDERS];
                while next.iter().any(|&n| n < LINES) {
                    line.clear();
                    match reader.read_line(&mut line) {
                        Ok(0) => return Err(format!("user {user} was cut off at {next:?}")),
                        Ok(_) => {}
                        Err(e) => return Err(format!("user {user}: {e} at {next:?}")),
                    }
                    if line.starts_with("New user") {
                        continue;
                    }
                    let (from, said) = line
                        .strip_suffix('\n')
                        .and_then(|l| l.strip_prefix('['))
                        .and_then(|l| l.split_once("] "))
                        .ok_or_else(|| format!("user {user} got {line:?}"))?;
                    let k = match from {
                        "You" if user < SENDERS => user,
                        addr => senders
                            .iter()
                            .position(|s| s == addr)
                            .filter(|&k| k != user)
                            .ok_or_else(|| {
                                format!("user {user} got a line from {from:?}: {line:?}")
                            })?,
                    };
                    if next[k] >= LINES || said != text(k, next[k]) {
                        return Err(format!(
                            "user {user} expected line {} of sender {k}, got {line:?}",
                            next[k]
                        ));
                    }
                    next[k] += 1;
                }
                Ok(())
            })
        })
        .collect();
    start.wait();
    let began = Instant::now();
    let writers: Vec<_> = streams[..SENDERS]
        .iter()
        .enumerate()
        .map(|(k, stream)| {
            let mut stream = stream.try_clone().unwrap();
            let all: String = (0..LINES).map(|i| text(k, i) + "\r\n").collect();
            thread::spawn(move || stream.write_all(all.as_bytes()))
        })
        .collect();
    for writer in writers {
        writer.join().unwrap().expect("send the flood");
    }
    let failures: Vec<String> = readers
        .into_iter()
        .filter_map(|r| r.join().unwrap().err())
        .collect();
    if !failures.is_empty() {
        eprintln!(
            "{}",
            server
                .output()
                .iter()
                .filter(|l| !l.contains("flood"))
                .cloned()
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
    assert!(
        failures.is_empty(),
        "{} users failed; first: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    eprintln!(
        "{USERS} users got {} lines each in {:?}",
        SENDERS * LINES,
        began.elapsed()
    );
}

#[test]
fn a_user_who_stops_reading_is_dropped_without_slowing_the_others() {
    let uploads = TempDir::new("slow");
    let (server, port) = room_server(&["--upload-dir", uploads.arg()]);
    let mut sender = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let sender_addr = sender.local_addr().unwrap().to_string();
    let mut echo = sender.try_clone().unwrap();
    thread::spawn(move || io::copy(&mut echo, &mut io::sink()));

    // Big lines fill the stalled user's socket buffers, then its queue.
    let line = |i: usize| format!("big {i:05} {}", "y".repeat(8000));
    let fast = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let received = Arc::new(AtomicUsize::new(0));
    let stalled = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let stalled_addr = stalled.local_addr().unwrap().to_string();
    let left = format!("The user {stalled_addr} left (2 users online)");
    let dropped = Arc::new(AtomicBool::new(false));
    let reader = {
        let (received, dropped, left) = (received.clone(), dropped.clone(), left.clone());
        let prefix = format!("[{sender_addr}] ");
        let reader = BufReader::new(fast.try_clone().unwrap());
        thread::spawn(move || -> Result<(), String> {
            for got in reader.lines() {
                let got = got.map_err(|e| e.to_string())?;
                if let Some(text) = got.strip_prefix(&prefix) {
                    let n = received.load(Ordering::SeqCst);
                    if text != line(n) {
                        return Err(format!("line {n} garbled: {:?}", &got[..got.len().min(60)]));
                    }
                    received.store(n + 1, Ordering::SeqCst);
                } else if got == left {
                    dropped.store(true, Ordering::SeqCst);
                }
            }
            Ok(())
        })
    };
    // The three joined in any order.
    server.wait_for(&format!("New user {stalled_addr} entered"));
    server.wait_for("entered (3 users online)");

    let began = Instant::now();
    let mut sent = 0;
    while !dropped.load(Ordering::SeqCst) {
        assert!(sent < QUEUE + 2000, "the stalled user was never dropped");
        let batch: String = (sent..sent + 200).map(|i| line(i) + "\r\n").collect();
        sender.write_all(batch.as_bytes()).unwrap();
        sent += 200;
        // The fast user keeps up all along.
        wait_until(&format!("the fast user to get line {sent}"), SOON, || {
            received.load(Ordering::SeqCst) == sent || reader.is_finished()
        });
    }
    server.wait_for(&left);
    fast.shutdown(Shutdown::Both).unwrap();
    reader
        .join()
        .unwrap()
        .expect("every line, whole and in order");
    eprintln!(
        "dropped the stalled user after {sent} lines in {:?}",
        began.elapsed()
    );
    drop(stalled);
}

#[test]
fn mistakes_and_missing_servers_are_one_line_with_an_exit_code() {
    let run = |args: &[&str]| {
        let out = natchat().args(args).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr}");
        (out.status.code(), stderr)
    };
    let (code, stderr) = run(&["room-server", "127.0.0.1"]);
    assert_eq!(code, Some(2), "{stderr}");
    let (code, stderr) = run(&["room-server", "127.0.0.1", "port"]);
    assert_eq!(code, Some(2), "{stderr}");
    let (code, stderr) = run(&["room-client", "127.0.0.1", "1", "--max-users", "3"]);
    assert_eq!(code, Some(2), "{stderr}");

    // A port nobody listens on: take a free one and let it go.
    let free = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let (code, stderr) = run(&["room-client", "127.0.0.1", &free.to_string()]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("cannot reach the chat server"), "{stderr}");

    let uploads = TempDir::new("busy");
    let (_server, port) = room_server(&["--upload-dir", uploads.arg()]);
    let (code, stderr) = run(&["room-server", "127.0.0.1", &port.to_string()]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("cannot listen on 127.0.0.1"), "{stderr}");
}

/// The server's warnings read like every other natchat error line: prefixed, in words.
#[test]
fn an_upload_the_server_cannot_store_is_one_warning_line() {
    let root = TempDir::new("blocked");
    let blocked = root.path("uploads");
    fs::write(&blocked, b"a file where the directory should be").unwrap();
    let (server, port) = room_server(&["--upload-dir", blocked.to_str().unwrap()]);
    let nc = RawUser::join(port);
    nc.send("#upload 2 hi.txt");
    nc.send_bytes(b"hi");
    nc.wait_for("The server could not store hi.txt: file exists");
    let warning = format!(
        "natchat: cannot store an upload in {}: file exists",
        blocked.display()
    );
    server.wait_line(&format!("equal to {warning:?}"), SOON, |l| l == warning);
    let errors = server.errors();
    assert_eq!(errors, [warning], "stderr");
    assert!(errors.iter().all(|l| !l.contains("(os error")));
    // The uploader stays.
    nc.send("still here");
    nc.wait_for("[You] still here");
}

/// A path in a directory that does not exist yet must not be required up front.
#[test]
fn the_upload_directory_is_created_when_needed() {
    let root = TempDir::new("mkdir");
    let nested = root.path("a/b/c");
    let (_server, port) = room_server(&["--upload-dir", nested.to_str().unwrap()]);
    assert!(!Path::new(&nested).exists());
    let nc = RawUser::join(port);
    nc.send("#upload 2 hi.txt");
    nc.send_bytes(b"hi");
    nc.wait_for("File hi.txt has uploaded!");
    assert_eq!(fs::read(nested.join("hi.txt")).unwrap(), b"hi");
}

/// Several users counted at once: every join and leave line carries the count of its moment,
/// so the counts a user sees step by one.
#[test]
fn counts_stay_consistent_when_many_join_and_leave_at_once() {
    let uploads = TempDir::new("counts");
    let (_server, port) = room_server(&["--upload-dir", uploads.arg()]);
    let watcher = RawUser::join(port);
    let crowd: Vec<_> = (0..20)
        .map(|_| thread::spawn(move || RawUser::join(port)))
        .collect();
    let crowd: Vec<RawUser> = crowd.into_iter().map(|t| t.join().unwrap()).collect();
    watcher.wait_for("(21 users online)");
    drop(crowd);
    watcher.wait_for("left (1 user online)");
    let counts: Vec<usize> = watcher
        .lines()
        .iter()
        .filter(|l| l.starts_with("New user") || l.starts_with("The user"))
        .map(|l| {
            let n = l.rsplit('(').next().unwrap().split(' ').next().unwrap();
            n.parse().unwrap()
        })
        .collect();
    let expected: Vec<usize> = (2..=21).chain((1..=20).rev()).collect();
    assert_eq!(counts, expected);
}

/// The count in a line such as `Connected to the chat server (3 users online)`.
fn count_in(line: &str) -> usize {
    let n = line.rsplit('(').next().unwrap().split(' ').next().unwrap();
    n.parse().unwrap()
}

#[test]
fn each_newcomer_hears_of_exactly_the_users_who_came_after_it() {
    let (_server, port) = room_server(&[]);
    let crowd: Vec<_> = (0..20)
        .map(|_| thread::spawn(move || RawUser::join(port)))
        .collect();
    let crowd: Vec<RawUser> = crowd.into_iter().map(|t| t.join().unwrap()).collect();
    for user in &crowd {
        user.wait_for("(20 users online)");
    }
    for user in &crowd {
        let lines = user.lines();
        let greeted = count_in(&lines[0]);
        let heard: Vec<usize> = lines
            .iter()
            .filter(|l| l.starts_with("New user"))
            .map(|l| count_in(l))
            .collect();
        // Joins announced before it arrived are in its greeting's count, not repeated; its
        // own is never told to it; every later one is told once, in order.
        let expected: Vec<usize> = (greeted + 1..=20).collect();
        assert_eq!(heard, expected, "{}: {lines:?}", user.addr);
    }
}

#[test]
fn nobody_reads_a_newcomers_message_before_the_line_saying_it_came_in() {
    let (_server, port) = room_server(&[]);
    let watcher = RawUser::join(port);
    for i in 0..10 {
        // The message leaves with the connection, before the server has even greeted it: it
        // is relayed while the join is still in the round being gathered.
        let mut newcomer = TcpStream::connect(("127.0.0.1", port)).unwrap();
        newcomer
            .write_all(format!("hello {i}\n").as_bytes())
            .unwrap();
        let addr = newcomer.local_addr().unwrap();
        watcher.wait_for(&format!("[{addr}] hello {i}"));
        let lines = watcher.lines();
        let entered = lines
            .iter()
            .position(|l| l == &format!("New user {addr} entered (2 users online)"))
            .unwrap_or_else(|| panic!("no entry line for {addr}: {lines:?}"));
        let said = lines
            .iter()
            .position(|l| l.ends_with(&format!("hello {i}")));
        assert!(Some(entered) < said, "{lines:?}");
        drop(newcomer);
        watcher.wait_for(&format!("The user {addr} left"));
    }
}

#[test]
fn stopping_the_server_mid_upload_leaves_no_temporary_file() {
    let uploads = TempDir::new("stop");
    let (mut server, port) = room_server(&["--upload-dir", uploads.arg()]);
    let nc = RawUser::join(port);
    nc.send("#upload 100 unfinished.txt");
    nc.send_bytes(b"ten bytes.");
    wait_until("the temporary file", SOON, || !uploads.files().is_empty());
    server.signal("INT");
    assert!(server.wait_exit(SOON).success());
    assert_eq!(uploads.files(), Vec::<String>::new());
}

#[test]
fn garbage_reaches_no_one_and_takes_nothing_down() {
    let uploads = TempDir::new("garbage");
    let (server, port) = room_server(&["--upload-dir", uploads.arg()]);
    let watcher = room_client("watcher", port);

    let noisy = RawUser::join(port);
    noisy.send_bytes(b"\xff\xfe invalid \xc3\x28 utf-8\n");
    noisy.send_bytes(b"nul\x00byte\n");
    noisy.wait_for("[You] \u{FFFD}\u{FFFD} invalid \u{FFFD}( utf-8");
    noisy.wait_for("[You] nul\u{FFFD}byte");
    for bad in [
        "#upload",
        "#upload abc x",
        "#upload -5 x",
        "#upload 99999999999999999999999 x",
    ] {
        noisy.send(bad);
    }
    wait_until("four usage lines", SOON, || {
        noisy
            .lines()
            .iter()
            .filter(|l| l.starts_with("Usage: #upload"))
            .count()
            == 4
    });

    // Random bytes, then a 10 MB line with no newline: the server closes the connection
    // (its error line may be lost to the reset that closing on unread input causes).
    let flood = RawUser::join(port);
    let random: Vec<u8> = (0..100_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 7) as u8)
        .collect();
    let _ = (&flood.stream).write_all(&random);
    let _ = (&flood.stream).write_all(&vec![b'x'; 10 << 20]);
    flood.wait_ended();

    let mut watcher = watcher;
    watcher.send("still standing");
    noisy.wait_for("] still standing");
    assert!(server.output().iter().all(|l| !l.contains("panicked")));
    assert_eq!(uploads.files(), Vec::<String>::new());
}

#[test]
fn a_server_whose_output_nobody_reads_keeps_serving() {
    // The server's stdout is a pipe that is never read after the first line: once its 64 KiB
    // are full, every print would block. Event lines must not hold the room up.
    let uploads = TempDir::new("unread");
    let mut child = natchat()
        .args([
            "room-server",
            "127.0.0.1",
            "0",
            "--upload-dir",
            uploads.arg(),
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut unread = BufReader::new(child.stdout.take().unwrap());
    let _server = support::KillOnDrop(child);
    let mut first = String::new();
    unread.read_line(&mut first).unwrap();
    let port: u16 = first
        .trim_end_matches(['.', '\n'])
        .rsplit(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();

    let user = RawUser::join(port);
    let lines = 5000;
    for i in 0..lines {
        user.send(&format!(
            "line {i} of a conversation long enough to fill a pipe"
        ));
    }
    user.wait_for(&format!("[You] line {} of", lines - 1));
}
