//! The `natchat` processes the bench starts: the servers of `all` and `scale`, and the two
//! clients of `chat`. They are the real program, the one a student runs, found beside this
//! one (`cargo build` puts both binaries in the same directory), and killed when the bench is
//! done with them, whatever happened.

use std::process::{Child, Command, Stdio};

/// A `natchat` process, killed when dropped.
pub struct KillOnDrop(pub Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `natchat <args>` with `stdin`, its output piped to the bench and its warnings
/// dropped.
pub fn start(args: &[&str], stdin: Stdio) -> Result<KillOnDrop, String> {
    let exe = std::env::current_exe()
        .map_err(|e| format!("cannot find where natchat-bench is: {e}"))?
        .with_file_name(format!("natchat{}", std::env::consts::EXE_SUFFIX));
    if !exe.is_file() {
        return Err(format!(
            "{} not found: natchat-bench starts the natchat binary beside it; build both with 'cargo build --release'",
            exe.display()
        ));
    }
    Command::new(&exe)
        .args(args)
        .stdin(stdin)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map(KillOnDrop)
        .map_err(|e| format!("cannot start {} {}: {e}", exe.display(), args.join(" ")))
}
