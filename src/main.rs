//! The `natchat` binary: reads the command line and runs one subcommand.

use natchat::cli::{CliError, Command, Matches, Opt};
use natchat::failure::Failure;
use natchat::{client, room, server};
use std::net::IpAddr;
use std::process::ExitCode;
use std::time::Duration;

const SERVER: Command = Command {
    name: "server",
    about: "the registration server of the P2P chat (TCP and UDP on one port)",
    positionals: &[],
    options: &[
        Opt {
            name: "port",
            value: "PORT",
            default: Some("10080"),
            help: "TCP and UDP port (0: any free port)",
        },
        Opt {
            name: "bind",
            value: "IP",
            default: Some("0.0.0.0"),
            help: "address to listen on",
        },
        Opt {
            name: "timeout-secs",
            value: "SECS",
            default: Some("30"),
            help: "a client silent this long has disappeared",
        },
        Opt {
            name: "register-secs",
            value: "SECS",
            default: Some("30"),
            help: "a connection must register within this time: REGISTER, then HELLO or UDP_BLOCKED",
        },
        Opt {
            name: "max-clients",
            value: "N",
            default: None,
            help: "connections beyond this are refused [default: as many as this machine allows, at most 15000]",
        },
    ],
    flags: &[],
};

const CLIENT: Command = Command {
    name: "client",
    about: "a P2P chat client: registers with the server, chats with peers over UDP",
    positionals: &[],
    options: &[
        Opt {
            name: "server",
            value: "HOST",
            default: Some("127.0.0.1"),
            help: "the registration server",
        },
        Opt {
            name: "port",
            value: "PORT",
            default: Some("10080"),
            help: "the server's port",
        },
        Opt {
            name: "udp-port",
            value: "PORT",
            default: Some("10081"),
            help: "local UDP port (a free one if taken)",
        },
        Opt {
            name: "id",
            value: "ID",
            default: None,
            help: "your ID (asked for when not given)",
        },
        Opt {
            name: "keepalive-secs",
            value: "SECS",
            default: Some("10"),
            help: "how often to send a UDP keep-alive",
        },
    ],
    flags: &[
        (
            "asleep",
            "register Asleep: listed, but unreachable until @awake (or a @chat)",
        ),
        (
            "no-port-prediction",
            "never guess a symmetric NAT's ports: a peer no plain punch can reach is relayed",
        ),
    ],
};

const ROOM_SERVER: Command = Command {
    name: "room-server",
    about: "the chat room server: relays every line to everyone, stores uploaded files",
    positionals: &[
        ("HOST", "address to listen on (0.0.0.0: every interface)"),
        ("PORT", "port to listen on (0: any free port)"),
    ],
    options: &[
        Opt {
            name: "upload-dir",
            value: "DIR",
            default: Some("./server"),
            help: "where uploaded files go (created when needed)",
        },
        Opt {
            name: "max-upload-bytes",
            value: "N",
            default: Some("104857600"),
            help: "larger uploads are refused",
        },
        Opt {
            name: "max-users",
            value: "N",
            default: None,
            help: "connections beyond this are refused [default: as many as this machine allows, at most 15000]",
        },
        Opt {
            name: "upload-idle-secs",
            value: "SECS",
            default: Some("30"),
            help: "an upload that sends nothing this long is dropped",
        },
    ],
    flags: &[],
};

const ROOM_CLIENT: Command = Command {
    name: "room-client",
    about: "a chat room client: each line typed goes to everyone; #upload <path> sends a file",
    positionals: &[("HOST", "the chat room server"), ("PORT", "its port")],
    options: &[],
    flags: &[],
};

/// What runs a subcommand once its command line is parsed.
type Runner = fn(&Matches) -> Result<(), Failure>;

/// Every subcommand, with the function that runs it.
const SUBCOMMANDS: &[(&Command, Runner)] = &[
    (&SERVER, run_server),
    (&CLIENT, run_client),
    (&ROOM_SERVER, run_room_server),
    (&ROOM_CLIENT, run_room_client),
];

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            natchat::warn!("{failure}");
            ExitCode::from(failure.code())
        }
    }
}

fn run(args: &[String]) -> Result<(), Failure> {
    let Some(name) = args.first() else {
        print!("{}", overview());
        return Err(Failure::usage("no subcommand given".into()));
    };
    match name.as_str() {
        "--help" | "-h" | "help" => {
            print!("{}", overview());
            return Ok(());
        }
        "--version" | "-V" => {
            natchat::say!("natchat {}", env!("CARGO_PKG_VERSION"));
            return Ok(());
        }
        _ => {}
    }
    let (command, run_command) = SUBCOMMANDS
        .iter()
        .find(|(c, _)| c.name == name)
        .ok_or_else(|| {
            Failure::usage(format!(
                "unknown subcommand '{name}'. Try 'natchat --help'."
            ))
        })?;
    let matches = match command.parse(&args[1..]) {
        Ok(matches) => matches,
        Err(CliError::Help(text)) => {
            print!("{text}");
            return Ok(());
        }
        Err(e) => return Err(Failure::usage(e.to_string())),
    };
    run_command(&matches)
}

fn overview() -> String {
    let mut text = format!(
        "natchat {}: P2P chat across NATs through a registration server, and a chat room\n\n\
         Usage: natchat <SUBCOMMAND> [OPTIONS]\n\nSubcommands:\n",
        env!("CARGO_PKG_VERSION")
    );
    for (command, _) in SUBCOMMANDS {
        text += &format!("  {:<14} {}\n", command.name, command.about);
    }
    text += "\n'natchat <SUBCOMMAND> --help' describes each one. 'natchat --version' prints the version.\n";
    text
}

fn usage(e: CliError) -> Failure {
    Failure::usage(e.to_string())
}

fn seconds(matches: &Matches, name: &str) -> Result<Duration, Failure> {
    let secs: f64 = matches.value(name).map_err(usage)?;
    if !(secs > 0.0 && secs < 1e6) {
        return Err(Failure::usage(format!(
            "--{name} must be a positive number of seconds"
        )));
    }
    Ok(Duration::from_secs_f64(secs))
}

fn run_server(m: &Matches) -> Result<(), Failure> {
    let config = server::Config {
        bind: m.value::<IpAddr>("bind").map_err(usage)?,
        port: m.value("port").map_err(usage)?,
        timeout: seconds(m, "timeout-secs")?,
        register_timeout: seconds(m, "register-secs")?,
        max_clients: m.get("max-clients").map_err(usage)?,
    };
    server::run(config)
}

fn run_client(m: &Matches) -> Result<(), Failure> {
    client::run(client::Config {
        server: m.value("server").map_err(usage)?,
        port: m.value("port").map_err(usage)?,
        udp_port: m.value("udp-port").map_err(usage)?,
        id: m.get("id").map_err(usage)?,
        keepalive: seconds(m, "keepalive-secs")?,
        asleep: m.flag("asleep"),
        predict: !m.flag("no-port-prediction"),
    })
}

fn run_room_server(m: &Matches) -> Result<(), Failure> {
    room::server::run(room::server::Config {
        host: m.positional(0, "HOST").map_err(usage)?,
        port: m.positional(1, "PORT").map_err(usage)?,
        upload_dir: m.value("upload-dir").map_err(usage)?,
        max_upload_bytes: m.value("max-upload-bytes").map_err(usage)?,
        max_users: m.get("max-users").map_err(usage)?,
        upload_idle: seconds(m, "upload-idle-secs")?,
    })
}

fn run_room_client(m: &Matches) -> Result<(), Failure> {
    let host: String = m.positional(0, "HOST").map_err(usage)?;
    room::client::run(&host, m.positional(1, "PORT").map_err(usage)?)
}
