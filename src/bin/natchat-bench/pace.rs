//! Connecting at a steady pace: a load generator that opened ten thousand connections at once
//! would measure the kernel's accept queue (4096 here), not the server behind it.

use std::net::{SocketAddr, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

/// Connections opened per second.
const CONNECT_RATE: f64 = 2000.0;

/// Runs `each(0..count)` at a steady pace of [`CONNECT_RATE`] a second (or slower, when
/// `each` takes longer).
pub fn paced(
    count: usize,
    mut each: impl FnMut(usize) -> Result<(), String>,
) -> Result<(), String> {
    let start = Instant::now();
    let gap = Duration::from_secs_f64(1.0 / CONNECT_RATE);
    for i in 0..count {
        if let Some(wait) = (start + gap * i as u32).checked_duration_since(Instant::now()) {
            thread::sleep(wait);
        }
        each(i)?;
    }
    Ok(())
}

/// Opens `count` connections at a steady pace, handing each to `setup`.
pub fn connect_paced<T>(
    server: SocketAddr,
    count: usize,
    mut setup: impl FnMut(TcpStream) -> Result<T, String>,
) -> Result<Vec<T>, String> {
    let mut out = Vec::with_capacity(count);
    paced(count, |i| {
        let stream = TcpStream::connect(server).map_err(|e| {
            let e = natchat::failure::in_words(&e);
            format!("connection {} of {count} to {server} failed: {e}", i + 1)
        })?;
        let _ = stream.set_nodelay(true);
        out.push(setup(stream)?);
        Ok(())
    })?;
    Ok(out)
}
