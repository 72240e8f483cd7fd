//! The Makefile's run targets hand each variable to natchat as one argument, whatever it
//! holds: `make run-client ID="a b"` reaches natchat as the ID `a b`, which natchat refuses
//! with its own line. No shell splits it, complains about it or runs what is inside it.
//!
//! Make runs with NOBUILD=1 and BIN set to the natchat cargo built for these tests, so no
//! nested cargo build runs. Its stdin is closed, every wait has a deadline, and a make still
//! running when a test ends is killed with everything it started (its own process group).

mod support;

use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::Command;
use support::{p2p_server, Proc, SOON};

/// `make -s <args> NOBUILD=1 BIN=<natchat>` in the repository, in a process group of its
/// own.
struct Make(Proc);

impl Make {
    fn run(args: &[&str]) -> Make {
        let mut command = Command::new("make");
        command
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .args(["-s", "--no-print-directory"])
            .args(args)
            .arg("NOBUILD=1")
            .arg(format!("BIN={}", env!("CARGO_BIN_EXE_natchat")))
            // Run from `make test`, the outer make's jobserver and flags would leak in.
            .env_remove("MAKEFLAGS")
            .env_remove("MFLAGS")
            .env_remove("MAKELEVEL")
            .process_group(0);
        let mut proc = Proc::spawn_command("make", &mut command);
        proc.close_stdin();
        Make(proc)
    }

    /// Waits for make to end; returns its exit code and every line printed.
    fn finish(&mut self) -> (Option<i32>, Vec<String>) {
        let status = self.0.wait_exit(SOON);
        (status.code(), self.0.output())
    }
}

impl Drop for Make {
    fn drop(&mut self) {
        // While make runs (unreaped), its group ID is still its own: nobody else's to kill.
        if self.0.is_running() {
            let _ = Command::new("kill")
                .args(["-KILL", "--", &format!("-{}", self.0.pid())])
                .status();
        }
    }
}

/// A directory of this test's own, removed when dropped (also when the test fails).
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!("natchat-{name}-{}", std::process::id()));
        std::fs::create_dir(&dir).expect("create a temporary directory");
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// What natchat itself prints for `args`, run directly, without make or a shell.
fn natchat_says(args: &[&str]) -> Vec<String> {
    let mut natchat = Proc::spawn("natchat", args);
    natchat.close_stdin();
    natchat.wait_exit(SOON);
    natchat.output()
}

/// Runs `make <args>` and checks that it printed exactly what natchat prints for `direct`,
/// followed by make's own line for the failed recipe, and nothing else (no shell error).
fn assert_natchat_refuses(args: &[&str], direct: &[&str]) -> String {
    let expected = natchat_says(direct);
    assert_eq!(expected.len(), 1, "natchat {direct:?} printed {expected:?}");
    let (code, lines) = Make::run(args).finish();
    assert_eq!(code, Some(2), "make {args:?}: {lines:?}");
    assert_eq!(lines.len(), 2, "make {args:?} printed {lines:?}");
    assert_eq!(lines[0], expected[0], "make {args:?}");
    assert!(
        lines[1].starts_with("make: *** [Makefile:") && lines[1].ends_with("Error 2"),
        "make {args:?} printed {lines:?}"
    );
    lines[0].clone()
}

#[test]
fn run_client_passes_an_id_with_spaces_quotes_or_commands_as_one_argument() {
    let dir = TempDir::new("make-ids");
    let pwned = dir.0.join("pwned");
    let touch = format!("touch {}", pwned.display());
    let ids = [
        "a b".to_string(),
        format!("x; {touch}"),
        format!("x' ; {touch}; '"),
        "a\"b".to_string(),
        format!("`{touch}`"),
        format!("x | {touch}"),
    ];
    for id in &ids {
        let line = assert_natchat_refuses(
            &["run-client", &format!("ID={id}")],
            &["client", "--id", id],
        );
        if id == "a b" {
            assert_eq!(
                line,
                "natchat: invalid ID 'a b': ' ' is not allowed in an ID \
                 (use letters, digits, '_', '.', '-')"
            );
        }
    }
    assert!(!pwned.exists(), "a command inside an ID ran");
}

#[test]
fn the_other_run_targets_quote_their_arguments_too() {
    let dir = TempDir::new("make-args");
    let pwned = dir.0.join("pwned");
    let bad = format!("1; touch {}", pwned.display());
    assert_natchat_refuses(
        &["run-server", &format!("PORT={bad}")],
        &["server", "--port", &bad],
    );
    assert_natchat_refuses(
        &["run-room-server", &format!("ROOM_PORT={bad}")],
        &["room-server", "0.0.0.0", &bad],
    );
    assert_natchat_refuses(
        &["run-client", "ID=alice", &format!("PORT={bad}")],
        &["client", "--id", "alice", "--port", &bad],
    );
    assert!(!pwned.exists(), "a command inside a make variable ran");
}

#[test]
fn run_client_reaches_the_server_given() {
    let (server, port) = p2p_server(&[]);
    // The default UDP port, 10081, may be taken: natchat then picks a free one itself.
    let (code, lines) = Make::run(&[
        "run-client",
        "ID=alice",
        "SERVER=127.0.0.1",
        &format!("PORT={port}"),
    ])
    .finish();
    assert_eq!(code, Some(0), "make run-client: {lines:?}");
    assert!(
        lines.iter().any(|l| l.starts_with("Registered as alice; ")),
        "{lines:?}"
    );
    server.wait_for("alice is deregistered");
}

#[test]
fn asleep_1_adds_the_asleep_option() {
    // `make -n` prints the command without running it: natchat's own --asleep is not needed.
    let printed = |extra: &[&str]| {
        let mut args = vec!["-n", "run-client", "ID=alice"];
        args.extend_from_slice(extra);
        let (code, lines) = Make::run(&args).finish();
        assert_eq!(code, Some(0), "make {args:?}: {lines:?}");
        lines.join("\n")
    };
    assert!(printed(&["ASLEEP=1"]).contains(" --asleep"));
    assert!(!printed(&[]).contains("--asleep"));
    assert!(!printed(&["ASLEEP=0"]).contains("--asleep"));
}
