//! Unicode format characters (bidi overrides such as U+202E, zero-width characters such as
//! U+200B) never reach anyone as themselves: not in P2P chat, not in room lines, not in
//! upload names. Text is replaced by U+FFFD, names get `_`, as for control characters.

mod support;

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use support::{p2p_client, p2p_server, room_client, room_server, TempDir, SOON};

/// A line with a right-to-left override and a zero-width space in it.
const SNEAKY: &str = "pay \u{202E}001$ to zero\u{200B}width";
/// What everyone sees instead.
const SHOWN: &str = "pay \u{FFFD}001$ to zero\u{FFFD}width";

fn holds_format_characters(text: &str) -> bool {
    text.contains(['\u{202E}', '\u{200B}'])
}

/// A plain TCP user of the room, like `nc`, greeted.
fn raw_room_user(port: u16) -> (TcpStream, BufReader<TcpStream>) {
    let stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream.set_read_timeout(Some(SOON)).unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let greeting = next_line(&mut reader);
    assert!(
        greeting.contains("Connected to the chat server"),
        "{greeting}"
    );
    (stream, reader)
}

fn next_line(reader: &mut BufReader<TcpStream>) -> String {
    let mut line = String::new();
    reader.read_line(&mut line).expect("a line from the room");
    line.trim_end_matches(['\r', '\n']).to_string()
}

/// Reads lines until one contains `needle`.
fn line_with(reader: &mut BufReader<TcpStream>, needle: &str) -> String {
    let mut seen = Vec::new();
    for _ in 0..100 {
        let line = next_line(reader);
        if line.contains(needle) {
            return line;
        }
        assert!(!line.is_empty() || !seen.is_empty(), "closed; saw {seen:?}");
        seen.push(line);
    }
    panic!("no line with {needle:?}; saw {seen:?}");
}

#[test]
fn room_lines_reach_everyone_with_format_characters_replaced() {
    let uploads = TempDir::new("room");
    let (server, port) = room_server(&["--upload-dir", uploads.arg()]);
    let (mut sender, mut sender_lines) = raw_room_user(port);
    let (_listener, mut listener_lines) = raw_room_user(port);
    let client = room_client("client", port);
    sender
        .write_all(format!("{SNEAKY}\r\n").as_bytes())
        .unwrap();

    // On the wire, from the server itself: the sender's echo and another user's line.
    assert_eq!(
        line_with(&mut sender_lines, "[You] "),
        format!("[You] {SHOWN}")
    );
    let relayed = line_with(&mut listener_lines, "pay ");
    assert!(relayed.ends_with(&format!("] {SHOWN}")), "{relayed:?}");
    // And on a room client's screen, and the server's.
    client.wait_for(SHOWN);
    server.wait_for(SHOWN);
    for proc in [&client, &server] {
        assert!(
            !proc.output().iter().any(|l| holds_format_characters(l)),
            "{:?}",
            proc.output()
        );
    }
}

#[test]
fn upload_names_are_stored_without_format_characters() {
    let uploads = TempDir::new("upload");
    let (server, port) = room_server(&["--upload-dir", uploads.arg()]);
    let (mut uploader, mut uploader_lines) = raw_room_user(port);
    let (_other, mut other_lines) = raw_room_user(port);
    // Shown with the override, "photo\u{202E}gpj.exe" reads "photoexe.jpg".
    uploader
        .write_all("#upload 5 photo\u{202E}gpj.\u{200B}exe\r\nhello".as_bytes())
        .unwrap();
    assert_eq!(
        line_with(&mut uploader_lines, "has uploaded"),
        "File photo_gpj._exe has uploaded!"
    );
    let told = line_with(&mut other_lines, "has uploaded a file");
    assert!(told.contains("a file photo_gpj._exe (5 bytes)"), "{told}");
    assert_eq!(uploads.files(), ["photo_gpj._exe"]);
    assert_eq!(fs::read(uploads.path("photo_gpj._exe")).unwrap(), b"hello");
    assert!(!server.output().iter().any(|l| holds_format_characters(l)));
}

#[test]
fn p2p_chat_is_shown_with_format_characters_replaced() {
    let (_server, port) = p2p_server(&[]);
    let mut alice = p2p_client("alice", port);
    let bob = p2p_client("bob", port);
    alice.wait_for("bob joined");
    alice.send(&format!("@chat bob {SNEAKY}"));
    bob.wait_for(&format!("From alice [{SHOWN}]"));
    assert!(
        !bob.output().iter().any(|l| holds_format_characters(l)),
        "{:?}",
        bob.output()
    );
}
