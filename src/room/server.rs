//! `natchat room-server`: accepts users, relays every line to everyone, stores uploads.
//!
//! Each connection has one thread that reads it (and receives its uploads, so a long upload
//! holds up no one else) and one [`Outbox`] writer thread: one socket, shared by the two.

use super::registry::{Presence, Room};
use super::upload::{self, Header, Received, Store};
use super::MAX_LINE;
use crate::failure::{self, Failure};
use crate::lines::{clean, is_timeout, LineError, LineReader};
use crate::listener::Listener;
use crate::outbox::Outbox;
use crate::scale::limits;
use crate::worker::CtrlC;
use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::time::Duration;

/// How the server runs: from the command line.
#[derive(Debug)]
pub struct Config {
    /// The address to listen on.
    pub host: String,
    /// 0 picks a free port.
    pub port: u16,
    /// Where uploaded files are stored; created when the first one arrives.
    pub upload_dir: PathBuf,
    /// The largest file accepted; a larger one is refused before a byte of it is stored.
    pub max_upload_bytes: u64,
    /// Connections beyond this are refused; `None`: as many as the machine allows, up to
    /// [`limits::DEFAULT_MAX`].
    pub max_users: Option<usize>,
    /// An upload that sends nothing for this long is dropped, and its connection closed.
    pub upload_idle: Duration,
}

/// How many messages (lines, or rounds of join and leave lines) may wait for one user before
/// it counts as not reading and is cut off. Generous, because a burst (five users pasting a thousand lines each) queues every line for
/// everyone at once, faster than a thousand writer threads can be scheduled on two cores.
/// An idle user costs nothing for it: the queue allocates as lines arrive. A user that has
/// stopped reading holds at most this many lines (each shared with every other queue), on top
/// of the few megabytes its socket buffers take.
pub const QUEUE: usize = 8192;

/// The binary's room server: prints `Chat Server started on port <port>.`, serves until
/// Ctrl+C, then stops (closing every connection) and prints `exit`.
pub fn run(config: Config) -> Result<(), Failure> {
    let ctrl_c = CtrlC::catch()?;
    let place = format!("{}:{}", config.host, config.port);
    let server = Server::start(config).map_err(|e| failure::cannot_listen(&place, &e, "PORT"))?;
    crate::say!("Chat Server started on port {}.", server.addr().port());
    crate::output::start();
    ctrl_c.wait_and_stop(server, "exit");
    Ok(())
}

/// A running chat room server. Dropping it stops it: no more connections are accepted, every
/// user's connection is closed (an upload under way is dropped, its temporary file removed),
/// and every thread it started has ended by the time the drop returns.
pub struct Server {
    listener: Listener,
}

impl Server {
    /// Listens on `config.host:config.port` and serves users on threads of its own; prints
    /// each event (see [`crate::output`]). Port 0 picks a free port: [`Server::addr`] says
    /// which.
    pub fn start(config: Config) -> io::Result<Server> {
        let listener = TcpListener::bind((config.host.as_str(), config.port))?;
        let cap = limits::cap(config.max_users, "--max-users");
        let refusal = format!(
            "The chat room is full ({}); try again later.",
            super::online(cap.connections)
        );
        let shared = Shared {
            room: Room::start()?,
            store: Store {
                dir: config.upload_dir,
                max_bytes: config.max_upload_bytes,
            },
            upload_idle: config.upload_idle,
        };
        let listener = Listener::start(
            listener,
            cap,
            refusal,
            QUEUE,
            move |stream, outbox, addr| serve_user(stream, outbox, addr, &shared),
        )?;
        Ok(Server { listener })
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.listener.addr()
    }
}

/// What every connection thread shares.
struct Shared {
    room: Room,
    store: Store,
    upload_idle: Duration,
}

/// One user's connection, from joining to leaving.
fn serve_user(stream: &TcpStream, outbox: Outbox, addr: SocketAddr, server: &Shared) {
    let mut reader = LineReader::new(stream, MAX_LINE).complete_lines_only();
    let presence = server.room.join(addr, outbox.clone());
    loop {
        let line = match reader.read_line() {
            Ok(Some(line)) => line,
            Ok(None) | Err(LineError::Io(_)) => break,
            Err(e @ LineError::TooLong { .. }) => {
                outbox.push_line(&format!("Error: {e}; closing the connection."));
                break;
            }
        };
        if line.trim().is_empty() {
            continue;
        }
        match Header::parse(&line) {
            None => {
                let text = clean(&line);
                presence.relay(&format!("[{addr}] {text}"), &format!("[You] {text}"));
            }
            Some(Err(usage)) => {
                outbox.push_line(&usage.to_string());
            }
            Some(Ok(header)) => {
                if !receive_upload(&mut reader, &header, &presence, addr, &outbox, server) {
                    break;
                }
            }
        }
    }
}

/// Receives the file that follows `header`, on this connection's own thread. Returns false
/// when the connection must end: the uploader went, or stalled, before the end of the file.
fn receive_upload(
    reader: &mut LineReader<&TcpStream>,
    header: &Header,
    presence: &Presence,
    addr: SocketAddr,
    outbox: &Outbox,
    server: &Shared,
) -> bool {
    // Chat may idle for ever, but an upload that stops half way must not hold its file open.
    // A socket that refuses the timeout (it has no reason to) fails the upload, rather than
    // let it stall for ever; one that refuses to lift it ends the connection once the
    // outcome is told, rather than time the chat out later.
    let stream = *reader.get_ref();
    let idle = server.upload_idle;
    let received = match stream.set_read_timeout(Some(idle)) {
        Ok(()) => server.store.receive(reader.raw(), header),
        Err(e) => Err(e),
    };
    let lifted = stream.set_read_timeout(None).is_ok();
    match received {
        Ok(Received::Stored(name)) => {
            let bytes = header.bytes;
            let others = format!("User {addr} has uploaded a file {name} ({bytes} bytes)");
            presence.relay(&others, &format!("File {name} has uploaded!"));
            lifted
        }
        Ok(Received::Refused(why)) => {
            outbox.push_line(&why);
            lifted
        }
        Err(e) => {
            let why = match is_timeout(&e) {
                true => format!("nothing arrived for {} s", idle.as_secs_f64()),
                false => e.to_string(),
            };
            let name = upload::sanitize(&header.name);
            outbox.push_line(&format!(
                "Upload of {name} failed: {why}; closing the connection."
            ));
            false
        }
    }
}
