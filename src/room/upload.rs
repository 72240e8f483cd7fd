//! File uploads: the wire format, and storing a file so that a half-received one never shows.
//!
//! # Wire format
//!
//! ```text
//!  client ── #upload <bytes> <name>\n ── exactly <bytes> raw bytes ──▶ server
//!  client ◀─ File <name> has uploaded!\n ──────────────────────────── server
//! ```
//!
//! `<bytes>` is a decimal count; `<name>` is the rest of the line and may hold spaces. The raw
//! bytes follow the header at once: the client does not wait for a go-ahead, so an upload
//! costs no round trip, and `nc` users can send one by hand. The server answers with one line:
//! `File <name> has uploaded!` (with the name it was stored under), or why it was refused.
//!
//! A file over the size cap is refused, but its bytes are still read and thrown away: they are
//! already on their way, and reading them keeps the stream in step, so the uploader stays in
//! the room and can go on chatting. (Closing the connection instead would punish a mistake
//! with being thrown out.) The same holds when the server cannot store a file.
//!
//! # Storing
//!
//! The name is cut to its last path component and cleaned ([`sanitize`]). The bytes go to a
//! hidden temporary file, `.upload-<pid>-<n>.partial`, that is removed whatever happens. Only
//! a complete file is given its name, by a hard link, which fails rather than replace an
//! existing file: then `name (1).ext`, `name (2).ext`... are tried. So a file appears whole or
//! not at all, and no upload ever overwrites another, even two of one name at the same time.

use crate::lines::is_format;
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, ErrorKind, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// The command word, at the start of a line.
const COMMAND: &str = "#upload";

/// What a malformed header gets in answer.
const USAGE: &str = "Usage: #upload <bytes> <name>, then exactly <bytes> bytes of the file.";

/// The longest stored name, in bytes: file systems allow 255, and a ` (999)` may be added.
const MAX_NAME: usize = 200;

/// How many `name (n).ext` are tried before giving up.
const MAX_COPIES: u32 = 1000;

/// How many temporary names are tried: only a file left behind by a dead server with the same
/// process ID can be in the way.
const TEMP_TRIES: u32 = 100;

/// The text after `#upload` when `line` is an upload command (possibly empty), else `None`.
/// `#uploaded` is just a word.
pub fn command_argument(line: &str) -> Option<&str> {
    let rest = line.strip_prefix(COMMAND)?;
    (rest.is_empty() || rest.starts_with(char::is_whitespace)).then(|| rest.trim())
}

/// `#upload <bytes> <name>`: what comes next on the stream.
#[derive(Debug, PartialEq, Eq)]
pub struct Header {
    /// How many bytes of file follow the header.
    pub bytes: u64,
    /// As the uploader gave it: sanitized only when stored.
    pub name: String,
}

impl Header {
    /// For an upload command, its header, or [`BadHeader`] when the size is not a number.
    /// `None` for any other line.
    pub fn parse(line: &str) -> Option<Result<Header, BadHeader>> {
        let argument = command_argument(line)?;
        let (bytes, name) = argument.split_once(' ').unwrap_or((argument, ""));
        Some(match bytes.parse() {
            Ok(bytes) => Ok(Header {
                bytes,
                name: name.trim().to_string(),
            }),
            Err(_) => Err(BadHeader),
        })
    }
}

impl fmt::Display for Header {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{COMMAND} {} {}", self.bytes, self.name)
    }
}

/// An `#upload` line whose size is not a number. Its message is the usage line the server
/// sends back, so the uploader learns how to write one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BadHeader;

impl fmt::Display for BadHeader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(USAGE)
    }
}

impl std::error::Error for BadHeader {}

/// Where uploads go, and how large they may be.
pub struct Store {
    /// The directory files are stored in; created when the first one arrives.
    pub dir: PathBuf,
    /// The largest file accepted.
    pub max_bytes: u64,
}

/// How an upload ended, the stream still in step.
#[derive(Debug, PartialEq, Eq)]
pub enum Received {
    /// Stored under this name.
    Stored(String),
    /// Not stored: the line that tells the uploader why.
    Refused(String),
}

impl Store {
    /// Reads the `header.bytes` bytes that follow `header` on `input` and stores them.
    ///
    /// An error means `input` ended or failed first (or timed out): nothing is stored, and
    /// the stream is out of step, so the connection must end.
    pub fn receive(&self, input: &mut impl BufRead, header: &Header) -> io::Result<Received> {
        let name = sanitize(&header.name);
        if header.bytes > self.max_bytes {
            copy_exactly(input, header.bytes, |_| {})?;
            return Ok(Received::Refused(format!(
                "File {name} is too large ({} bytes); the server accepts at most {} bytes.",
                header.bytes, self.max_bytes
            )));
        }
        // Once writing fails, the rest of the bytes are still read, and dropped.
        let mut target = Partial::create(&self.dir);
        copy_exactly(input, header.bytes, |bytes| {
            if let Ok(partial) = &mut target {
                if let Err(e) = partial.file.write_all(bytes) {
                    target = Err(e);
                }
            }
        })?;
        match target.and_then(|partial| partial.commit(&self.dir, &name)) {
            Ok(stored) => Ok(Received::Stored(stored)),
            Err(e) => {
                crate::warn!(
                    "cannot store an upload in {}: {}",
                    self.dir.display(),
                    crate::failure::in_words(&e)
                );
                Ok(Received::Refused(format!(
                    "The server could not store {name}: {}",
                    crate::failure::in_words(&e)
                )))
            }
        }
    }
}

/// Hands exactly `count` bytes of `input` to `sink`, straight from the input's buffer.
fn copy_exactly(
    input: &mut impl BufRead,
    count: u64,
    mut sink: impl FnMut(&[u8]),
) -> io::Result<()> {
    let mut left = count;
    while left > 0 {
        let chunk = match input.fill_buf() {
            Ok(chunk) => chunk,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if chunk.is_empty() {
            let why = format!("the stream ended {left} bytes before the end of the file");
            return Err(io::Error::new(ErrorKind::UnexpectedEof, why));
        }
        let used = chunk.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        sink(&chunk[..used]);
        input.consume(used);
        left -= used as u64;
    }
    Ok(())
}

/// A temporary file, removed when dropped: a half-received upload leaves nothing behind.
struct Partial {
    path: PathBuf,
    file: File,
}

/// Numbers the temporary files of this process.
static NEXT_TEMP: AtomicU64 = AtomicU64::new(0);

impl Partial {
    fn create(dir: &Path) -> io::Result<Partial> {
        fs::create_dir_all(dir)?;
        for _ in 0..TEMP_TRIES {
            let n = NEXT_TEMP.fetch_add(1, Ordering::Relaxed);
            let path = dir.join(format!(".upload-{}-{n}.partial", std::process::id()));
            match OpenOptions::new().write(true).create_new(true).open(&path) {
                Ok(file) => return Ok(Partial { path, file }),
                Err(e) if e.kind() == ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e),
            }
        }
        Err(io::Error::new(
            ErrorKind::AlreadyExists,
            "no free temporary file name",
        ))
    }

    /// Gives the complete file the first free name of `name`, `name (1).ext`, ...; returns it.
    /// A hard link never replaces an existing file, and appears with the whole file at once.
    fn commit(self, dir: &Path, name: &str) -> io::Result<String> {
        for n in 0..MAX_COPIES {
            let candidate = numbered(name, n);
            match fs::hard_link(&self.path, dir.join(&candidate)) {
                Ok(()) => return Ok(candidate),
                Err(e) if e.kind() == ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e),
            }
        }
        Err(io::Error::new(
            ErrorKind::AlreadyExists,
            format!("{MAX_COPIES} files named like it already exist"),
        ))
    }
}

impl Drop for Partial {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
    }
}

/// A safe file name made of an uploader's: its last path component (`/` or `\`), control
/// characters (tab too) and format characters ([`is_format`]: with a right-to-left override,
/// `photo\u{202E}gpj.exe` shows as `photoexe.jpg`) replaced by `_`, no leading dots (no
/// `..`, no hidden files, never one of our temporary names), surrounding spaces trimmed, at
/// most [`MAX_NAME`] bytes; `upload` when nothing is left.
pub fn sanitize(name: &str) -> String {
    let last = name.rsplit(['/', '\\']).next().unwrap_or_default();
    let cleaned: String = last
        .chars()
        .map(|c| {
            if c.is_control() || is_format(c) {
                '_'
            } else {
                c
            }
        })
        .collect();
    let mut safe = cleaned
        .trim_start_matches(|c: char| c == '.' || c.is_whitespace())
        .trim_end()
        .to_string();
    if safe.len() > MAX_NAME {
        let mut end = MAX_NAME;
        while !safe.is_char_boundary(end) {
            end -= 1;
        }
        safe.truncate(end);
    }
    if safe.is_empty() {
        "upload".to_string()
    } else {
        safe
    }
}

/// `name` for 0, else `stem (n).ext`: `notes (1).txt`, `archive.tar (2).gz`, `README (3)`.
fn numbered(name: &str, n: u32) -> String {
    if n == 0 {
        return name.to_string();
    }
    match name.rfind('.').filter(|&dot| dot > 0) {
        Some(dot) => format!("{} ({n}){}", &name[..dot], &name[dot..]),
        None => format!("{name} ({n})"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_parse_and_print() {
        let header = Header::parse("#upload 12 my notes.txt").unwrap().unwrap();
        assert_eq!(
            header,
            Header {
                bytes: 12,
                name: "my notes.txt".into()
            }
        );
        assert_eq!(header.to_string(), "#upload 12 my notes.txt");
        assert_eq!(Header::parse("#upload 0").unwrap().unwrap().name, "");
        assert!(Header::parse("#upload notes.txt").unwrap().is_err());
        assert!(Header::parse("#upload").unwrap().is_err());
        assert!(Header::parse("#uploaded it").is_none());
        assert!(Header::parse("hello").is_none());
        assert_eq!(command_argument("#upload  /tmp/a b "), Some("/tmp/a b"));
    }

    #[test]
    fn names_are_reduced_to_a_safe_last_component() {
        assert_eq!(sanitize("../../etc/passwd"), "passwd");
        assert_eq!(sanitize("..\\..\\boot.ini"), "boot.ini");
        assert_eq!(sanitize(".."), "upload");
        assert_eq!(sanitize("dir/"), "upload");
        assert_eq!(sanitize(""), "upload");
        assert_eq!(sanitize("...bashrc"), "bashrc");
        // Found by the fuzzer: dots and spaces in turn once made ". .x" a hidden file.
        assert_eq!(sanitize(". . .upload-1-1.partial"), "upload-1-1.partial");
        assert_eq!(sanitize(" a\x1b[2J\nb.txt "), "a_[2J_b.txt");
        assert_eq!(sanitize("a\tb.txt"), "a_b.txt");
        assert_eq!(sanitize("photo\u{202E}gpj.exe"), "photo_gpj.exe");
        assert_eq!(sanitize("\u{200B}\u{FEFF}x\u{2066}.txt"), "__x_.txt");
        let long = "é".repeat(150);
        assert!(sanitize(&long).len() <= MAX_NAME && sanitize(&long).starts_with('é'));
    }

    #[test]
    fn copies_are_numbered_before_the_extension() {
        assert_eq!(numbered("notes.txt", 0), "notes.txt");
        assert_eq!(numbered("notes.txt", 1), "notes (1).txt");
        assert_eq!(numbered("archive.tar.gz", 2), "archive.tar (2).gz");
        assert_eq!(numbered("README", 3), "README (3)");
    }

    /// A fresh directory for one test, removed at the end.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(tag: &str) -> TempDir {
            let dir =
                std::env::temp_dir().join(format!("natchat-upload-{tag}-{}", std::process::id()));
            let _ = fs::remove_dir_all(&dir);
            TempDir(dir)
        }

        fn files(&self) -> Vec<String> {
            let mut names: Vec<String> = fs::read_dir(&self.0)
                .map(|entries| {
                    entries
                        .flatten()
                        .map(|e| e.file_name().to_string_lossy().into())
                        .collect()
                })
                .unwrap_or_default();
            names.sort();
            names
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn receive(store: &Store, header: &str, body: &[u8]) -> (io::Result<Received>, Vec<u8>) {
        let header = Header::parse(header).unwrap().unwrap();
        let mut input = body;
        let result = store.receive(&mut input, &header);
        (result, input.to_vec())
    }

    #[test]
    fn stores_whole_files_under_free_names_and_leaves_the_rest_of_the_stream() {
        let dir = TempDir::new("store");
        let store = Store {
            dir: dir.0.clone(),
            max_bytes: 100,
        };
        let (result, rest) = receive(&store, "#upload 5 ../a.txt", b"hellonext line\n");
        assert_eq!(result.unwrap(), Received::Stored("a.txt".into()));
        assert_eq!(rest, b"next line\n");
        let (result, _) = receive(&store, "#upload 3 a.txt", b"bye");
        assert_eq!(result.unwrap(), Received::Stored("a (1).txt".into()));
        assert_eq!(dir.files(), ["a (1).txt", "a.txt"]);
        assert_eq!(fs::read(dir.0.join("a.txt")).unwrap(), b"hello");
    }

    #[test]
    fn refuses_a_file_over_the_cap_but_reads_past_it() {
        let dir = TempDir::new("cap");
        let store = Store {
            dir: dir.0.clone(),
            max_bytes: 4,
        };
        let (result, rest) = receive(&store, "#upload 5 big", b"12345after");
        assert!(matches!(result.unwrap(), Received::Refused(why) if why.contains("too large")));
        assert_eq!(rest, b"after");
        assert!(dir.files().is_empty());
    }

    #[test]
    fn a_short_upload_is_an_error_and_leaves_no_file() {
        let dir = TempDir::new("short");
        let store = Store {
            dir: dir.0.clone(),
            max_bytes: 100,
        };
        let (result, _) = receive(&store, "#upload 10 short.bin", b"12345");
        assert_eq!(result.unwrap_err().kind(), ErrorKind::UnexpectedEof);
        assert!(dir.files().is_empty(), "left behind: {:?}", dir.files());
    }
}
