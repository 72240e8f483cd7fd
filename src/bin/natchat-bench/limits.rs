//! Whether this machine lets a server hold the clients of a run.
//!
//! A server takes two threads per client and the bench one, and each server thread about four
//! memory mappings (the counts `natchat::scale::limits` caps a server with): `kernel.pid_max` and
//! `vm.max_map_count` must allow that, and on a stock kernel they stop a server at about 7,900
//! clients. The bench does not change them: they are the machine's settings, not the
//! bench's. When they are too low it refuses the run, in one line that names the setting and
//! the command that raises it, rather than run fewer clients than the row says (a
//! `room scale 10000` row with 7,900 clients would compare with nothing) or watch the server
//! turn clients away half-way through.

use natchat::scale::limits::{MAPPINGS_PER_THREAD, THREADS_PER_CONNECTION};

/// Room for everything else: the other processes' threads, the programs' own mappings.
const SLACK: usize = 5000;

/// Ok when the kernel allows a server with `clients` clients; otherwise the line that says
/// which settings to raise, and how.
pub fn ensure(clients: usize) -> Result<(), String> {
    let server_threads = clients * THREADS_PER_CONNECTION;
    // Each setting, what the run needs, and what to raise it to (the usual generous value).
    let limits = [
        (
            "kernel.pid_max",
            server_threads + clients + SLACK,
            4_194_304,
        ),
        (
            "vm.max_map_count",
            server_threads * MAPPINGS_PER_THREAD + SLACK,
            262_144,
        ),
    ];
    let mut short = Vec::new();
    let mut raise = Vec::new();
    for (name, needed, generous) in limits {
        let path = format!("/proc/sys/{}", name.replace('.', "/"));
        let Some(current) = std::fs::read_to_string(path)
            .ok()
            .and_then(|s| s.trim().parse::<usize>().ok())
        else {
            continue; // Not Linux, or not readable: nothing to check.
        };
        if current < needed {
            short.push(format!("{name} of at least {needed} (it is {current})"));
            raise.push(format!("{name}={}", needed.max(generous)));
        }
    }
    if short.is_empty() {
        return Ok(());
    }
    Err(format!(
        "{clients} clients need {}: raise with 'sudo sysctl -w {}'",
        short.join(" and "),
        raise.join(" ")
    ))
}
