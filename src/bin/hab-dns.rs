//! `hab-dns`: a DNS server for demos, driven line by line on stdin
//!
//! ```text
//! hab-dns [--zone ZONE] [--hosts N] [--srv 'NAME PRIO WEIGHT PORT TARGET']...
//! ```
//!
//! Starts BIND's `named` on 127.0.0.1 (`hab_testkit::dns::Named`: TTL 0,
//! changed at run time by `nsupdate`, no restart) serving `ZONE` (default
//! `consul`) with A records `web1.node.ZONE` .. `webN.node.ZONE` ->
//! 127.0.0.1 (`--hosts N`, default 3) and the SRV records given, then
//! prints `ready PORT` on stdout. Then reads one command per line and
//! answers `ok` or `error: ...` on one line each:
//!
//! ```text
//! srv NAME [PRIO WEIGHT PORT TARGET]...   replace NAME's SRV records (none: remove them)
//! a NAME [IP]...                          replace NAME's A records (none: remove them)
//! rm NAME                                 remove every record of NAME
//! quit                                    stop
//! ```
//!
//! Each command is one DNS update, served atomically once `ok` is printed.
//! Blank lines and lines starting with `#` are ignored. Stops `named` and
//! exits on `quit`, at the end of stdin, and on SIGTERM / SIGINT.

use std::io::{self, BufRead, Write};
use std::net::Ipv4Addr;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::thread;

use hab_testkit::dns::{self, Named, Record, Srv};

const USAGE: &str = "usage: hab-dns [--zone ZONE] [--hosts N] \
[--srv 'NAME PRIO WEIGHT PORT TARGET']...";

/// Blocks SIGTERM and SIGINT in every thread and starts one that
/// waits for either, stops `named` (once no command is running) and
/// exits. `Command` unblocks them again in its children.
fn stop_on_signal(named: Arc<Mutex<Option<Named>>>) {
    // SAFETY: `set` is a local sigset_t initialised by sigemptyset before
    // any other use; the calls take pointers to it only for their duration.
    let set = unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        set
    };
    thread::spawn(move || {
        let mut sig = 0;
        // SAFETY: `set` is initialised above and `sig` is a valid out
        // pointer for the call.
        while unsafe { libc::sigwait(&set, &mut sig) } != 0 {}
        drop(named.lock().map(|mut n| n.take()));
        std::process::exit(0);
    });
}

/// `PRIO WEIGHT PORT TARGET` groups of four.
fn parse_srvs(words: &[&str]) -> Result<Vec<Srv>, String> {
    if words.len() % 4 != 0 {
        return Err("SRV records are PRIO WEIGHT PORT TARGET, four words each".into());
    }
    let num = |w: &str, what: &str| {
        w.parse::<u16>()
            .map_err(|_| format!("{what} {w:?} is not a number 0-65535"))
    };
    words
        .chunks(4)
        .map(|c| {
            Ok(Srv {
                priority: num(c[0], "priority")?,
                weight: num(c[1], "weight")?,
                port: num(c[2], "port")?,
                target: c[3].trim_end_matches('.').to_owned(),
            })
        })
        .collect()
}

/// Runs one command line; `Ok(false)` means stop.
fn run(named: &Named, line: &str) -> Result<bool, String> {
    let words: Vec<&str> = line.split_whitespace().collect();
    match words.as_slice() {
        ["quit"] => return Ok(false),
        ["srv", name, rest @ ..] => named.set_srv(name, &parse_srvs(rest)?)?,
        ["a", name, ips @ ..] => {
            let addrs = ips
                .iter()
                .map(|ip| {
                    ip.parse()
                        .map_err(|_| format!("{ip:?} is not an IPv4 address"))
                })
                .collect::<Result<Vec<Ipv4Addr>, String>>()?;
            named.set_a(name, &addrs)?;
        }
        ["rm", name] => named.remove(name)?,
        _ => return Err(format!("unknown command {line:?}")),
    }
    Ok(true)
}

struct Args {
    zone: String,
    hosts: usize,
    srvs: Vec<(String, Srv)>,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        zone: "consul".into(),
        hosts: 3,
        srvs: Vec::new(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut value = |flag: &str| it.next().ok_or_else(|| format!("{flag} needs a value"));
        match a.as_str() {
            "--zone" => args.zone = value("--zone")?,
            "--hosts" => {
                let v = value("--hosts")?;
                args.hosts = v.parse().map_err(|_| format!("--hosts {v:?}"))?;
            }
            "--srv" => {
                let v = value("--srv")?;
                let words: Vec<&str> = v.split_whitespace().collect();
                let Some((name, rest)) = words.split_first() else {
                    return Err("--srv needs NAME PRIO WEIGHT PORT TARGET".into());
                };
                let srvs = parse_srvs(rest)?;
                if srvs.is_empty() {
                    return Err("--srv needs NAME PRIO WEIGHT PORT TARGET".into());
                }
                args.srvs
                    .extend(srvs.into_iter().map(|s| ((*name).to_owned(), s)));
            }
            "-h" | "--help" => return Err(String::new()),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(args)
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            if !e.is_empty() {
                eprintln!("hab-dns: {e}");
            }
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    let missing = dns::missing();
    if !missing.is_empty() {
        eprintln!(
            "hab-dns: not installed: {} (run `make deps`: packages bind9, bind9-dnsutils)",
            missing.join(", ")
        );
        return ExitCode::from(1);
    }
    let shared = Arc::new(Mutex::new(None));
    stop_on_signal(Arc::clone(&shared));

    let mut records: Vec<Record> = (1..=args.hosts)
        .map(|i| Record::a(&format!("web{i}.node.{}", args.zone), Ipv4Addr::LOCALHOST))
        .collect();
    records.extend(
        args.srvs
            .into_iter()
            .map(|(name, srv)| Record::Srv { name, srv }),
    );
    // started under the lock: a signal meanwhile waits, then stops it
    let port = {
        let Ok(mut slot) = shared.lock() else {
            return ExitCode::from(1);
        };
        match Named::start(&args.zone, &records) {
            Ok(n) => slot.insert(n).port(),
            Err(e) => {
                eprintln!("hab-dns: {e}");
                return ExitCode::from(1);
            }
        }
    };

    let mut out = io::stdout().lock();
    let _ = writeln!(out, "ready {port}");
    let _ = out.flush();
    for line in io::stdin().lock().lines() {
        let Ok(line) = line else { break };
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let answer = match shared.lock() {
            Ok(n) => n.as_ref().map_or(Ok(false), |n| run(n, line)),
            Err(_) => Ok(false),
        };
        let answer = match answer {
            Ok(true) => "ok".to_owned(),
            Ok(false) => break,
            // one line: nsupdate's failures span many
            Err(e) => format!(
                "error: {}",
                e.split_whitespace().collect::<Vec<_>>().join(" ")
            ),
        };
        if writeln!(out, "{answer}")
            .and_then(|()| out.flush())
            .is_err()
        {
            break;
        }
    }
    // dropping `named` stops the server and removes its directory
    drop(shared.lock().map(|mut n| n.take()));
    ExitCode::SUCCESS
}
