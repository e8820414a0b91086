//! `hab-backend`: a small HTTP/1.1 backend for tests and the demo
//!
//! ```text
//! hab-backend --listen 127.0.0.1:PORT --name NAME [--listen ... --name ...]
//!             [--mode ok|fail500|fail404|close|delay:MS] [--exit-on-eof]
//! ```
//!
//! Answers `200`, `X-Backend: NAME`, body `NAME\n`. Query overrides
//! `delay=MS`, `status=CODE`, `close=1`; control endpoints `/_ctl/mode?set=`,
//! `/_ctl/stats`, `/_ctl/reset` (see `hab_testkit::backend`).
//! Prints `ready NAME PORT` per listener once listening. Exits with status 0
//! on SIGTERM / SIGINT, and when stdin closes if `--exit-on-eof` is given.

use std::io::{self, Read, Write};
use std::net::TcpListener;
use std::process::ExitCode;
use std::thread;
use std::time::Duration;

use hab_testkit::backend::{Backend, Mode};

const USAGE: &str = "usage: hab-backend --listen 127.0.0.1:PORT --name NAME \
[--listen ADDR --name NAME]... [--mode MODE] [--exit-on-eof]";

extern "C" fn on_signal(_sig: libc::c_int) {
    // SAFETY: `_exit` is async-signal-safe and takes no pointers.
    unsafe { libc::_exit(0) }
}

fn install_signal_handlers() {
    for sig in [libc::SIGTERM, libc::SIGINT] {
        // SAFETY: `on_signal` is an `extern "C" fn(c_int)` that only calls
        // the async-signal-safe `_exit`; `signal` has no other preconditions.
        unsafe {
            libc::signal(sig, on_signal as *const () as libc::sighandler_t);
        }
    }
}

struct Args {
    pairs: Vec<(String, String)>,
    mode: Mode,
    exit_on_eof: bool,
}

fn parse_args() -> Result<Args, String> {
    let mut listens = Vec::new();
    let mut names = Vec::new();
    let mut mode = Mode::Ok;
    let mut exit_on_eof = false;
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut value = |flag: &str| it.next().ok_or_else(|| format!("{flag} needs a value"));
        match a.as_str() {
            "--listen" => listens.push(value("--listen")?),
            "--name" => names.push(value("--name")?),
            "--mode" => mode = value("--mode")?.parse()?,
            "--exit-on-eof" => exit_on_eof = true,
            "-h" | "--help" => return Err(String::new()),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    if listens.is_empty() {
        return Err("at least one --listen is required".into());
    }
    if names.len() > listens.len() {
        return Err("more --name than --listen".into());
    }
    let pairs = listens
        .into_iter()
        .enumerate()
        .map(|(i, l)| {
            let n = names
                .get(i)
                .cloned()
                .unwrap_or_else(|| format!("b{}", i + 1));
            (l, n)
        })
        .collect();
    Ok(Args {
        pairs,
        mode,
        exit_on_eof,
    })
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            if !e.is_empty() {
                eprintln!("hab-backend: {e}");
            }
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    install_signal_handlers();

    let mut ready = Vec::new();
    for (listen, name) in &args.pairs {
        let listener = match TcpListener::bind(listen.as_str()) {
            Ok(l) => l,
            Err(e) => {
                eprintln!("hab-backend: cannot listen on {listen}: {e}");
                return ExitCode::from(1);
            }
        };
        let backend = Backend::new(name);
        backend.set_mode(args.mode);
        match backend.spawn(listener) {
            Ok(addr) => ready.push(format!("ready {name} {}\n", addr.port())),
            Err(e) => {
                eprintln!("hab-backend: cannot start {name}: {e}");
                return ExitCode::from(1);
            }
        }
    }
    {
        let mut out = io::stdout().lock();
        for line in &ready {
            let _ = out.write_all(line.as_bytes());
        }
        let _ = out.flush();
    }

    if args.exit_on_eof {
        let mut sink = [0u8; 4096];
        let mut stdin = io::stdin().lock();
        loop {
            match stdin.read(&mut sink) {
                Ok(0) => return ExitCode::SUCCESS,
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return ExitCode::SUCCESS,
            }
        }
    }
    loop {
        thread::park_timeout(Duration::from_secs(3600));
    }
}
