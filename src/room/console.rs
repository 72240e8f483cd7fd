//! The room client's output: plain lines, or, on a terminal, lines above a `[You] ` prompt.
//!
//! A terminal in its usual (canonical) mode echoes what the user types, and hands the line to
//! the program only at Enter. So when the server's echo `[You] Hello` arrives, the typed
//! `Hello` already stands on the screen, and printing the echo would show the line twice.
//! Instead, as the course's reference client did, the user types after a `[You] ` prompt: the
//! row then reads `[You] Hello` by itself, and the echo only brings a fresh prompt.
//!
//! Lines from the server arrive at any moment, also while the user is half way through
//! typing. Each one first returns to the start of the prompt's row and clears it (`\r`, then
//! `ESC [2K`), takes that row, and leaves a fresh prompt below. The half-typed text vanishes
//! from the screen but not from the terminal's input buffer: Enter still sends all of it.
//! (Redrawing it would need the terminal out of canonical mode and line editing of our own.)
//!
//! Two threads print: the socket thread (server lines) and the main thread (its own
//! complaints, such as `Cannot upload ...`). Each print, prompt included, is written whole
//! under stdout's own lock, the one `say!` and the Ctrl+C handler take too: a line and a
//! prompt never interleave mid-row.
//!
//! When stdin or stdout is not a terminal there is no echo to stand in for, and whatever
//! reads the output wants plain lines: every line is printed as it comes, `[You] <text>`
//! included, with no prompt and no escape codes.

use std::io::{self, IsTerminal, Write};
use std::sync::atomic::{AtomicBool, Ordering};

/// What the user types after; also how the server starts the echo of the user's own line.
const PROMPT: &str = "[You] ";

/// Back to column 0, and erase the row: the prompt, and whatever was typed after it.
const CLEAR_ROW: &str = "\r\x1b[2K";

/// Where the room client prints. Shared by its threads.
pub struct Console {
    /// Both stdin and stdout are terminals: prompts, and no echo printed.
    terminal: bool,
    /// A prompt stands on the screen, or will after the next line: until [`Console::end`].
    prompting: AtomicBool,
}

impl Console {
    pub fn new() -> Console {
        let terminal = io::stdin().is_terminal() && io::stdout().is_terminal();
        Console {
            terminal,
            prompting: AtomicBool::new(terminal),
        }
    }

    /// A line from the server. On a terminal, the echo of the user's own line is only a
    /// fresh prompt: the row it was typed on already reads `[You] <text>`.
    pub fn server_line(&self, line: &str) {
        if self.terminal && line.starts_with(PROMPT) {
            self.prompt();
        } else {
            self.line(line);
        }
    }

    /// Prints `text` as a line of its own, with a prompt after it while prompting.
    pub fn line(&self, text: &str) {
        self.write(Some(text));
    }

    /// A fresh prompt, while prompting: for a typed line that brings no answer (a blank one).
    pub fn prompt(&self) {
        self.write(None);
    }

    /// No more prompts: the session is over. Clears the prompt's row, so that the last lines
    /// (`exit`, or the error on stderr) start at its beginning.
    pub fn end(&self) {
        let mut out = io::stdout().lock();
        if self.prompting.swap(false, Ordering::SeqCst) {
            let _ = out
                .write_all(CLEAR_ROW.as_bytes())
                .and_then(|()| out.flush());
        }
    }

    /// Writes `line`, if any, on a row of its own and then, while prompting, a fresh prompt:
    /// all of it at once, under stdout's lock, held from deciding to flushing. Never panics
    /// (see `say!`).
    fn write(&self, line: Option<&str>) {
        let mut out = io::stdout().lock();
        let prompting = self.prompting.load(Ordering::SeqCst);
        let mut text = String::new();
        if prompting {
            text.push_str(CLEAR_ROW);
        }
        if let Some(line) = line {
            text.push_str(line);
            text.push('\n');
        }
        if prompting {
            text.push_str(PROMPT);
        }
        if !text.is_empty() {
            let _ = out.write_all(text.as_bytes()).and_then(|()| out.flush());
        }
    }
}
