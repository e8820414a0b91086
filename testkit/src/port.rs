//! Ports on 127.0.0.1: free ones, open ones, refused ones

use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use crate::http;

/// A free TCP port on 127.0.0.1, outside the kernel's ephemeral range
/// (32768-60999 by default) so outgoing connections cannot take it between
/// allocation and use, and distinct within this process.
pub fn free_port() -> u16 {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let span = 12_000u32;
    let base = 20_000u32;
    let start = (std::process::id().wrapping_mul(7919)) % span;
    for _ in 0..span {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = (base + (start + n * 7) % span) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port on 127.0.0.1 in {base}..{}", base + span);
}

/// Whether something accepts TCP connections on 127.0.0.1:`port`.
pub fn port_open(port: u16) -> bool {
    TcpStream::connect_timeout(&http::local(port), Duration::from_millis(200)).is_ok()
}

/// An address on 127.0.0.1 that refuses connections (nobody listens).
pub fn refused_addr() -> String {
    let p = free_port();
    assert!(!port_open(p));
    format!("127.0.0.1:{p}")
}
