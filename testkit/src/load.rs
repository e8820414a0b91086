//! HTTP clients for load: sequences, tallies, concurrent loads in threads
//!
//! Every request opens a fresh connection ([`crate::http::get`]); every load is
//! bounded in count and in time.

use std::collections::BTreeMap;
use std::io;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use crate::http::{get, Response};
use crate::proc::wait_until;

/// Outcome key of one response: the body (backend name) for a 200,
/// `"HTTP <status>"` otherwise, `"ERR <error>"` on a transport error.
pub fn outcome(r: &io::Result<Response>) -> String {
    match r {
        Ok(r) if r.status == 200 => r.body_trimmed(),
        Ok(r) => format!("HTTP {}", r.status),
        Err(e) => format!("ERR {e}"),
    }
}

/// `n` sequential requests; the outcome of each, in order.
pub fn sequence(port: u16, path: &str, n: usize) -> Vec<String> {
    (0..n).map(|_| outcome(&get(port, path))).collect()
}

/// Counts equal strings.
pub fn tally<S: AsRef<str>>(items: &[S]) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for s in items {
        *m.entry(s.as_ref().to_owned()).or_insert(0) += 1;
    }
    m
}

/// Fetches `/?k=key-N` for every N in 0..`keys` with 4 concurrent clients
/// (fresh connection per request), within 30 s; the outcome per key (the
/// backend's name for a 200).
pub fn record_keys(port: u16, keys: usize) -> Vec<String> {
    let next = Arc::new(AtomicUsize::new(0));
    let out = Arc::new(Mutex::new(vec![String::new(); keys]));
    let deadline = Instant::now() + Duration::from_secs(30);
    let handles: Vec<_> = (0..4)
        .map(|_| {
            let (next, out) = (Arc::clone(&next), Arc::clone(&out));
            thread::spawn(move || loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= keys || Instant::now() >= deadline {
                    return;
                }
                let o = outcome(&get(port, &format!("/?k=key-{i}")));
                out.lock().unwrap()[i] = o;
            })
        })
        .collect();
    for h in handles {
        h.join().expect("client thread panicked");
    }
    let out = Arc::try_unwrap(out).unwrap().into_inner().unwrap();
    let missing = out.iter().filter(|o| o.is_empty()).count();
    assert_eq!(
        missing, 0,
        "{missing} of {keys} keys not fetched within 30 s"
    );
    out
}

/// Counts of a concurrent load run.
#[derive(Debug, Clone, Default)]
pub struct LoadResult {
    /// 200 responses by body (backend name).
    pub by_body: BTreeMap<String, usize>,
    /// All responses by status.
    pub statuses: BTreeMap<u16, usize>,
    /// Responses with a status other than 200.
    pub non_200: usize,
    /// Transport errors (connect, reset, timeout).
    pub errors: usize,
    /// Requests attempted.
    pub total: usize,
    /// Up to 10 examples of failures, for assertion messages.
    pub failures: Vec<String>,
}

impl LoadResult {
    fn add(&mut self, r: &io::Result<Response>) {
        self.total += 1;
        match r {
            Ok(resp) => {
                *self.statuses.entry(resp.status).or_insert(0) += 1;
                if resp.status == 200 {
                    *self.by_body.entry(resp.body_trimmed()).or_insert(0) += 1;
                } else {
                    self.non_200 += 1;
                    if self.failures.len() < 10 {
                        self.failures
                            .push(format!("HTTP {} {}", resp.status, resp.body_trimmed()));
                    }
                }
            }
            Err(e) => {
                self.errors += 1;
                if self.failures.len() < 10 {
                    self.failures.push(format!("ERR {e}"));
                }
            }
        }
    }

    fn merge(&mut self, o: LoadResult) {
        for (k, v) in o.by_body {
            *self.by_body.entry(k).or_insert(0) += v;
        }
        for (k, v) in o.statuses {
            *self.statuses.entry(k).or_insert(0) += v;
        }
        self.non_200 += o.non_200;
        self.errors += o.errors;
        self.total += o.total;
        for f in o.failures {
            if self.failures.len() < 10 {
                self.failures.push(f);
            }
        }
    }

    /// 200 responses from backend `name`.
    pub fn count(&self, name: &str) -> usize {
        self.by_body.get(name).copied().unwrap_or(0)
    }

    /// Non-200 responses plus transport errors.
    pub fn bad(&self) -> usize {
        self.non_200 + self.errors
    }
}

/// Shape of a concurrent load.
#[derive(Debug, Clone, Copy)]
pub struct LoadOpts {
    pub threads: usize,
    /// Requests per thread at most.
    pub per_thread: usize,
    /// Pause between two requests of one thread.
    pub pause: Duration,
    /// Wall-clock bound for the whole load.
    pub max_time: Duration,
}

impl LoadOpts {
    /// `threads` × `per_thread` requests, back to back, at most 60 s.
    pub fn new(threads: usize, per_thread: usize) -> Self {
        LoadOpts {
            threads,
            per_thread,
            pause: Duration::ZERO,
            max_time: Duration::from_secs(60),
        }
    }
}

/// A load running in background threads.
#[derive(Debug)]
pub struct LoadHandle {
    stop: Arc<AtomicBool>,
    done: Arc<AtomicUsize>,
    threads: Vec<thread::JoinHandle<LoadResult>>,
}

impl LoadHandle {
    /// Requests completed so far.
    pub fn done(&self) -> usize {
        self.done.load(Ordering::Relaxed)
    }

    /// Waits (bounded) until at least `n` requests completed.
    pub fn wait_done(&self, n: usize, timeout: Duration) -> bool {
        wait_until(timeout, || self.done() >= n)
    }

    /// Asks the threads to stop after their current request, then joins.
    pub fn stop(self) -> LoadResult {
        self.stop.store(true, Ordering::Relaxed);
        self.join()
    }

    /// Waits for the threads to finish their requests (bounded by
    /// `max_time` and the per-request timeouts).
    pub fn join(self) -> LoadResult {
        let mut total = LoadResult::default();
        for t in self.threads {
            total.merge(t.join().expect("load thread panicked"));
        }
        total
    }
}

/// Starts a concurrent load of `GET path` on 127.0.0.1:`port` in the
/// background.
pub fn spawn_load(port: u16, path: &str, opts: LoadOpts) -> LoadHandle {
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicUsize::new(0));
    let deadline = Instant::now() + opts.max_time;
    let threads = (0..opts.threads)
        .map(|_| {
            let (stop, done, path) = (Arc::clone(&stop), Arc::clone(&done), path.to_owned());
            thread::spawn(move || {
                let mut res = LoadResult::default();
                for _ in 0..opts.per_thread {
                    if stop.load(Ordering::Relaxed) || Instant::now() >= deadline {
                        break;
                    }
                    res.add(&get(port, &path));
                    done.fetch_add(1, Ordering::Relaxed);
                    if !opts.pause.is_zero() {
                        thread::sleep(opts.pause);
                    }
                }
                res
            })
        })
        .collect();
    LoadHandle {
        stop,
        done,
        threads,
    }
}

/// `threads` × `per_thread` concurrent requests; waits for them all.
pub fn load(port: u16, path: &str, threads: usize, per_thread: usize) -> LoadResult {
    spawn_load(port, path, LoadOpts::new(threads, per_thread)).join()
}
