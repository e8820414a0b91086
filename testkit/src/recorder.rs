//! A backend that records every request: when it came, who sent it
//!
//! In the test process (threads, not a process of its own), for tests that
//! ask which nginx worker sent what and when: each request's arrival
//! time, its target and the value of one request header the test's nginx
//! sets (`proxy_set_header X-Worker $pid;` names the worker), and the time
//! its answer was about to be written. As [`crate::backend`] counts, a
//! request is in flight from its arrival to just before its answer is
//! written: nginx may send the next request as soon as it has the answer.
//!
//! Answers `200`, header `X-Backend: NAME`, body `NAME\n`; a request whose
//! path starts with the slow prefix ([`Recorder::start_slow`]) sleeps that
//! long first. Keep-alive as the client asks. The listener lives as long as
//! the test process (its threads are not joined), like
//! [`crate::backend::Backend::spawn`]'s.

use std::io::{self, BufReader};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use crate::backend::IDLE_TIMEOUT;
use crate::http::{read_request, write_response};
use crate::port::free_port;

/// One request as the recorder saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hit {
    /// When its request head had been read.
    pub arrived: Instant,
    /// Just before its answer was written (`None` while in flight).
    pub answered: Option<Instant>,
    /// The request target, e.g. `/k/17`.
    pub target: String,
    /// The recorded header's value, `""` when absent.
    pub tag: String,
}

#[derive(Debug)]
struct Inner {
    name: String,
    header: String,
    slow_prefix: String,
    slow: Duration,
    hits: Mutex<Vec<Hit>>,
    /// Requests between arrival and answer. `Relaxed`: a statistic, no
    /// other memory is published through it.
    inflight: AtomicU64,
}

impl Inner {
    fn hits(&self) -> MutexGuard<'_, Vec<Hit>> {
        self.hits.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn serve(&self, stream: TcpStream) -> io::Result<()> {
        stream.set_read_timeout(Some(IDLE_TIMEOUT))?;
        stream.set_write_timeout(Some(IDLE_TIMEOUT))?;
        stream.set_nodelay(true)?;
        let mut reader = BufReader::new(&stream);
        while let Some(req) = read_request(&mut reader)? {
            let arrived = Instant::now();
            self.inflight.fetch_add(1, Ordering::Relaxed);
            let index = {
                let mut hits = self.hits();
                hits.push(Hit {
                    arrived,
                    answered: None,
                    target: req.target.clone(),
                    tag: req.header(&self.header).unwrap_or("").to_owned(),
                });
                hits.len() - 1
            };
            if !self.slow_prefix.is_empty() && req.path().starts_with(&self.slow_prefix) {
                thread::sleep(self.slow);
            }
            self.hits()[index].answered = Some(Instant::now());
            self.inflight.fetch_sub(1, Ordering::Relaxed);
            let keep = req.keep_alive();
            let body = format!("{}\n", self.name);
            write_response(
                &mut &stream,
                200,
                &[("X-Backend", self.name.as_str())],
                body.as_bytes(),
                keep,
            )?;
            if !keep {
                let _ = stream.shutdown(std::net::Shutdown::Write);
                return Ok(());
            }
        }
        Ok(())
    }
}

/// A recording backend on 127.0.0.1.
#[derive(Debug, Clone)]
pub struct Recorder {
    port: u16,
    inner: Arc<Inner>,
}

impl Recorder {
    /// Starts a recorder answering as `name`, recording header `header`.
    pub fn start(name: &str, header: &str) -> Recorder {
        Recorder::start_slow(name, header, "", Duration::ZERO)
    }

    /// Like [`Recorder::start`]; requests whose path starts with
    /// `slow_prefix` (unless empty) sleep `slow` before their answer.
    pub fn start_slow(name: &str, header: &str, slow_prefix: &str, slow: Duration) -> Recorder {
        // A port outside the ephemeral range, as the other backends take.
        let (listener, port) = (0..5)
            .find_map(|_| {
                let port = free_port();
                TcpListener::bind(("127.0.0.1", port))
                    .ok()
                    .map(|l| (l, port))
            })
            .expect("bind a recorder on 127.0.0.1");
        let inner = Arc::new(Inner {
            name: name.to_owned(),
            header: header.to_owned(),
            slow_prefix: slow_prefix.to_owned(),
            slow,
            hits: Mutex::new(Vec::new()),
            inflight: AtomicU64::new(0),
        });
        let me = Arc::clone(&inner);
        thread::Builder::new()
            .name(format!("accept-{name}"))
            .spawn(move || {
                for stream in listener.incoming() {
                    let Ok(stream) = stream else {
                        thread::sleep(Duration::from_millis(10));
                        continue;
                    };
                    let conn = Arc::clone(&me);
                    let spawned = thread::Builder::new()
                        .name(format!("conn-{}", me.name))
                        .spawn(move || {
                            let _ = conn.serve(stream);
                        });
                    if spawned.is_err() {
                        thread::sleep(Duration::from_millis(10));
                    }
                }
            })
            .expect("spawn the recorder's accept thread");
        Recorder { port, inner }
    }

    /// `127.0.0.1:PORT`.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Its name (the body of its answers).
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// Every request so far, in order of arrival.
    pub fn hits(&self) -> Vec<Hit> {
        self.inner.hits().clone()
    }

    /// Requests so far.
    pub fn count(&self) -> usize {
        self.inner.hits().len()
    }

    /// Requests in flight now.
    pub fn inflight(&self) -> u64 {
        self.inner.inflight.load(Ordering::Relaxed)
    }
}
