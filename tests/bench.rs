//! `natchat-bench`, the load generator, as a program of its own: its command line, its small
//! runs against real servers (the table it prints, and the `natchat` binary it starts from
//! beside itself), and the lines it refuses with.

mod support;

use std::process::Command;
use std::time::Duration;
use support::{natchat, p2p_server, room_server, Proc, TempDir, SOON};

/// The table's header, exactly: docs/BENCHMARKS.md's rows are only comparable with a new
/// run's when the columns have not moved.
const HEADER: &str = "run                        clients senders  messages  deliveries/s   \
                      p50 ms   p99 ms   max ms   lost corrupt   RSS MiB  threads";

/// Runs `natchat-bench <args>` (the one cargo built beside `natchat`), stdin closed.
fn bench(args: &[&str]) -> Proc {
    let mut command = Command::new(env!("CARGO_BIN_EXE_natchat-bench"));
    command.args(args);
    bench_command("natchat-bench", &mut command)
}

fn bench_command(name: &str, command: &mut Command) -> Proc {
    let mut proc = Proc::spawn_command(name, command);
    proc.close_stdin();
    proc
}

/// A table row's columns: its name (which has spaces, and ends at the first double space)
/// and the eleven figures after it.
fn columns(row: &str) -> (String, Vec<String>) {
    let (name, figures) = row.split_once("  ").expect("a name, then the figures");
    let figures: Vec<String> = figures.split_whitespace().map(String::from).collect();
    assert_eq!(figures.len(), 11, "a row of twelve columns: {row:?}");
    (name.to_string(), figures)
}

#[test]
fn a_bad_command_line_is_one_line_and_exit_code_2() {
    for rate in ["1e-300", "-1", "NaN", "1e9"] {
        let mut run = bench(&["room", "--rate", rate]);
        assert_eq!(run.wait_exit(SOON).code(), Some(2), "--rate {rate}");
        assert_eq!(
            run.errors(),
            [
                "natchat-bench: --rate must be 0 (flat out) or from 0.001 to 10000000 messages \
              per second"
            ]
        );
    }
    let mut unknown = bench(&["everything"]);
    assert_eq!(unknown.wait_exit(SOON).code(), Some(2));
    assert_eq!(
        unknown.errors(),
        ["natchat-bench: unknown bench 'everything': use room, p2p, chat, all or scale"]
    );
    let mut help = bench(&["--help"]);
    assert!(help.wait_exit(SOON).success());
    help.wait_for("Usage: natchat-bench KIND [OPTIONS]");
    help.wait_for("--server-pid PID");

    // The chat binary no longer carries the load generator.
    let old = natchat().arg("bench").output().unwrap();
    assert_eq!(old.status.code(), Some(2));
    assert_eq!(
        String::from_utf8_lossy(&old.stderr),
        "natchat: unknown subcommand 'bench'. Try 'natchat --help'.\n"
    );
}

#[test]
fn a_room_run_prints_the_table_with_the_servers_cost() {
    let (server, port) = room_server(&[]);
    let (addr, pid) = (format!("127.0.0.1:{port}"), server.pid().to_string());
    let args = [
        "room",
        "--server",
        &addr,
        "--server-pid",
        &pid,
        "--clients",
        "10",
        "--senders",
        "2",
        "--messages",
        "50",
    ];
    let mut run = bench(&args);
    let row = run.wait_line("with the room row", Duration::from_secs(60), |l| {
        l.starts_with("room ")
    });
    assert!(run.wait_exit(SOON).success(), "{:?}", run.output());
    assert_eq!(run.output()[0], HEADER);
    let (name, figures) = columns(&row);
    assert_eq!(name, "room");
    // clients, senders, messages; then nothing lost or corrupt over TCP; then the server's
    // threads: two per user, and a few of its own.
    assert_eq!(figures[..3], ["10", "2", "100"]);
    assert_eq!(figures[7..9], ["0", "0"], "{row}");
    let threads: u64 = figures[10]
        .parse()
        .expect("a thread count, from --server-pid");
    assert!((20..40).contains(&threads), "{row}");
}

/// `chat` starts two `natchat client` processes: the `natchat` beside `natchat-bench`.
#[test]
fn a_chat_run_drives_two_natchat_clients() {
    let (_server, port) = p2p_server(&["--timeout-secs", "30"]);
    let addr = format!("127.0.0.1:{port}");
    let args = [
        "chat",
        "--server",
        &addr,
        "--messages",
        "20",
        "--rate",
        "100",
    ];
    let mut run = bench(&args);
    let row = run.wait_line("with the chat row", Duration::from_secs(60), |l| {
        l.starts_with("p2p chat")
    });
    assert!(run.wait_exit(SOON).success(), "{:?}", run.output());
    let (name, figures) = columns(&row);
    assert_eq!(name, "p2p chat, 2 clients");
    assert_eq!(figures[..3], ["2", "1", "20"]);
    assert_eq!(figures[7..9], ["0", "0"], "{row}");
}

/// Without `natchat` beside it, the bench says where it looked and what to do.
#[test]
fn without_natchat_beside_it_the_bench_says_so() {
    let dir = TempDir::new("bench-alone");
    let alone = dir.path("natchat-bench");
    std::fs::copy(env!("CARGO_BIN_EXE_natchat-bench"), &alone).unwrap();
    let mut all = bench_command("natchat-bench all", Command::new(&alone).arg("all"));
    let line = all.wait_line("saying natchat is missing", SOON, |l| {
        l.starts_with("natchat-bench: ")
    });
    assert_eq!(all.wait_exit(SOON).code(), Some(1));
    assert_eq!(
        line,
        format!(
            "natchat-bench: {} not found: natchat-bench starts the natchat binary beside it; \
             build both with 'cargo build --release'",
            dir.path("natchat").display()
        )
    );
}

/// A run the kernel's limits cannot hold is refused, in one line naming the setting and the
/// command that raises it; the bench changes no setting of the machine itself.
#[test]
fn a_run_beyond_the_kernels_limits_is_refused_with_the_sysctl_to_raise() {
    // Five million clients need 15,005,000 PIDs: more than Linux allows (2^22), whoever runs
    // the test.
    let pid_max = std::fs::read_to_string("/proc/sys/kernel/pid_max").unwrap();
    let mut run = bench(&["p2p", "--clients", "5000000"]);
    let line = run.wait_line("refusing the run", SOON, |l| {
        l.starts_with("natchat-bench: ")
    });
    assert_eq!(run.wait_exit(SOON).code(), Some(1));
    let expected = format!(
        "natchat-bench: 5000000 clients need kernel.pid_max of at least 15005000 (it is {})",
        pid_max.trim()
    );
    assert!(line.starts_with(&expected), "{line}");
    assert!(
        line.contains("sudo sysctl -w kernel.pid_max=15005000"),
        "{line}"
    );
    assert_eq!(run.output(), [line]);
    assert_eq!(
        std::fs::read_to_string("/proc/sys/kernel/pid_max").unwrap(),
        pid_max
    );
}
