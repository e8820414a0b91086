//! `hab`, the ha-balancer operator CLI, as a library
//!
//! The binary (`main.rs`) only calls [`main_with`]; everything else is here
//! so tests, and later the end-to-end tests against a real `ha_api`, can
//! call it: [`api::Client`] talks to the API, [`status`] draws tables and
//! resolves SERVER arguments, [`top`] is the live view, [`config`] and
//! [`render`] turn YAML into nginx configuration.
//!
//! Exit codes (see docs/hab.md): 0 success; 1 the API refused, answered
//! something unexpected, or the input (YAML, SERVER, file) is wrong; 2 the
//! API could not be reached; 64 the command line is wrong.

pub mod api;
pub mod config;
pub mod render;
pub mod status;
pub mod top;

use std::ffi::OsString;
use std::fmt;
use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};

use crate::api::{ApiError, Client};

/// Success.
pub const EXIT_OK: u8 = 0;
/// The API refused, the answer or the input was wrong.
pub const EXIT_FAILED: u8 = 1;
/// The API could not be reached.
pub const EXIT_UNREACHABLE: u8 = 2;
/// The command line is wrong (sysexits' `EX_USAGE`).
pub const EXIT_USAGE: u8 = 64;

/// The command line.
#[derive(Debug, Parser)]
#[command(
    name = "hab",
    version,
    about = "Operate ha-balancer: show and change live upstream state through ha_api, \
             render nginx configuration from YAML",
    after_help = "URL is the base of the ha_api location, e.g. http://127.0.0.1:8080/api\n\n\
                  Exit codes: 0 ok, 1 refused or bad input, 2 API unreachable, 64 usage."
)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// A `hab` subcommand.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Show every upstream and its servers (GET URL/upstreams).
    Status {
        /// Base URL of the ha_api location.
        url: String,
        /// Print the API's JSON (every field it sent) instead of tables.
        #[arg(long)]
        json: bool,
    },
    /// A live view of the servers, redrawn every interval, like top.
    Top {
        /// Base URL of the ha_api location.
        url: String,
        /// Seconds between polls (0.2 to 3600, fractions allowed).
        #[arg(long, value_name = "SECS", default_value = "1", value_parser = parse_interval)]
        interval: Duration,
        /// Stop after N frames (default: run until interrupted).
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
        iterations: Option<u64>,
        /// Show only this upstream.
        #[arg(long, value_name = "NAME")]
        upstream: Option<String>,
    },
    /// Stop sending new requests to a server; those in flight finish. The
    /// server reads `draining` until undrained.
    Drain {
        #[command(flatten)]
        target: Target,
        /// Return only once nothing is in flight on the server (polled
        /// every 0.2 s); exit 1 if that takes longer than --timeout.
        #[arg(long)]
        wait: bool,
        /// With --wait: seconds to wait at most (0.2 to 3600).
        #[arg(long, value_name = "SECS", default_value = "60", value_parser = parse_interval)]
        timeout: Duration,
    },
    /// Undo drain.
    Undrain(Target),
    /// Mark a server down (no new requests).
    Down(Target),
    /// Put a server back in service: undo down and drain (a server down
    /// in the configuration cannot be: the API says so, exit 1).
    Up(Target),
    /// Override a server's weight, or return it to the configured one.
    Weight {
        #[command(flatten)]
        target: Target,
        /// New weight 1..=1000000, or `default` / `reset` for the
        /// configured weight.
        #[arg(value_parser = parse_weight)]
        weight: WeightArg,
    },
    /// Add a server to an upstream at run time (NGINX Plus API POST; the
    /// upstream needs room: ha_api_max).
    Add {
        /// Base URL of the ha_api location.
        url: String,
        /// Upstream name.
        upstream: String,
        /// The server's address: IP:port ([v6]:port), or IP for port 80.
        address: String,
        /// Weight 1..=1000000 (default 1).
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
        weight: Option<u32>,
        /// At most this many requests in flight, all workers (default 0:
        /// no limit).
        #[arg(long, value_name = "N")]
        max_conns: Option<u32>,
        /// max_fails (default 1).
        #[arg(long, value_name = "N")]
        max_fails: Option<u32>,
        /// fail_timeout, an nginx time such as 10s (default 10s).
        #[arg(long, value_name = "TIME")]
        fail_timeout: Option<String>,
        /// A backup server.
        #[arg(long)]
        backup: bool,
        /// Added down (no requests until `hab up`).
        #[arg(long)]
        down: bool,
    },
    /// Remove a server added at run time (NGINX Plus API DELETE); servers
    /// of the configuration are removed there, then reload.
    Remove {
        #[command(flatten)]
        target: Target,
        /// Drain it first: no new requests, and remove it once nothing is
        /// in flight on it (polled every 0.2 s).
        #[arg(long)]
        drain: bool,
        /// With --drain: seconds to wait at most (0.2 to 3600); past it the
        /// server stays, draining, and hab exits 1.
        #[arg(long, value_name = "SECS", default_value = "60", value_parser = parse_interval)]
        timeout: Duration,
    },
    /// Turn a YAML description of backends into a complete nginx.conf, or
    /// a snippet for conf.d.
    Render {
        /// The YAML file (schema in docs/hab.md).
        file: PathBuf,
        /// Write here (atomically: temporary file, then rename) instead of
        /// standard output.
        #[arg(short, long, value_name = "OUT")]
        output: Option<PathBuf>,
        /// Test and reload nginx after writing, as `reload: true` does
        /// (needs -o). OUT is replaced only if nginx -t passes.
        #[arg(long)]
        reload: bool,
        /// Render the content of http {} only (upstreams and servers), for
        /// a file nginx.conf includes, e.g. /etc/nginx/conf.d/ha.conf.
        /// Implied when OUT is in a directory named conf.d.
        #[arg(long)]
        snippet: bool,
        /// With a snippet: the nginx.conf that includes OUT, tested with
        /// the new snippet in OUT's place, then reloaded.
        #[arg(long, value_name = "PATH", default_value = "/etc/nginx/nginx.conf")]
        main_conf: PathBuf,
        /// The nginx binary used for the test and reload.
        #[arg(long, value_name = "PATH", default_value = "nginx")]
        nginx: PathBuf,
        /// nginx prefix (-p) for the test and reload.
        #[arg(short = 'p', long, value_name = "DIR")]
        prefix: Option<PathBuf>,
    },
}

/// UPSTREAM and SERVER of the admin commands.
#[derive(Debug, Clone, clap::Args)]
pub struct Target {
    /// Base URL of the ha_api location.
    pub url: String,
    /// Upstream name.
    pub upstream: String,
    /// Server id, address (10.0.0.1:8080, or 10.0.0.1 when unique) or name.
    pub server: String,
}

/// The weight argument.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WeightArg {
    /// Override to this weight.
    Set(u32),
    /// Back to the configured weight (`null`).
    Reset,
}

fn parse_weight(s: &str) -> Result<WeightArg, String> {
    match s {
        "default" | "reset" => Ok(WeightArg::Reset),
        _ => match s.parse::<u32>() {
            Ok(n) if (1..=config::MAX_WEIGHT).contains(&n) => Ok(WeightArg::Set(n)),
            _ => Err(format!(
                "{s:?} is not a weight: give 1..={} or default",
                config::MAX_WEIGHT
            )),
        },
    }
}

fn parse_interval(s: &str) -> Result<Duration, String> {
    let bad = || {
        format!(
            "{s:?} is not an interval: give seconds from {} to {}",
            top::MIN_INTERVAL,
            top::MAX_INTERVAL
        )
    };
    match s.trim().parse::<f64>() {
        Ok(v) if (top::MIN_INTERVAL..=top::MAX_INTERVAL).contains(&v) => {
            Duration::try_from_secs_f64(v).map_err(|_| bad())
        }
        _ => Err(bad()),
    }
}

/// A failed command: what to print and the exit code.
#[derive(Debug)]
pub enum Error {
    /// From the API client.
    Api(ApiError),
    /// Anything else the user can fix (bad YAML, unknown server, I/O).
    Input(String),
}

impl Error {
    /// The process exit code for this error.
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Api(ApiError::Unreachable(_)) => EXIT_UNREACHABLE,
            _ => EXIT_FAILED,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Api(e) => e.fmt(f),
            Error::Input(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for Error {}

impl From<ApiError> for Error {
    fn from(e: ApiError) -> Self {
        Error::Api(e)
    }
}

/// The JSON body of an admin command.
pub fn patch_body(command: &Command) -> Option<serde_json::Value> {
    use serde_json::json;
    Some(match command {
        Command::Drain { .. } => json!({"drain": true}),
        Command::Undrain(_) => json!({"drain": false}),
        Command::Down(_) => json!({"down": true}),
        Command::Up(_) => json!({"down": false, "drain": false}),
        Command::Weight {
            weight: WeightArg::Set(n),
            ..
        } => json!({"weight": n}),
        Command::Weight {
            weight: WeightArg::Reset,
            ..
        } => json!({"weight": null}),
        Command::Status { .. }
        | Command::Top { .. }
        | Command::Render { .. }
        | Command::Add { .. }
        | Command::Remove { .. } => return None,
    })
}

/// Applies an admin change: resolves SERVER with a GET of the upstream,
/// then PATCHes it. Returns the server after the change.
pub fn admin(target: &Target, body: &serde_json::Value) -> Result<(u32, api::Server), Error> {
    let client = Client::new(&target.url)?;
    let upstream = client.upstream(&target.upstream)?;
    let id = status::resolve(&upstream, &target.server).map_err(|e| Error::Input(e.0))?;
    let server = client.patch_server(&target.upstream, id, body)?;
    Ok((id, server))
}

/// How often `hab drain --wait` looks at the server.
const WAIT_POLL: Duration = Duration::from_millis(200);

/// Polls server `id` of the target's upstream until nothing is in flight
/// on it, for at most `timeout`; the server then.
fn wait_idle(
    target: &Target,
    id: u32,
    mut server: api::Server,
    timeout: Duration,
) -> Result<api::Server, Error> {
    let client = Client::new(&target.url)?;
    let until = std::time::Instant::now() + timeout;
    while server.active > 0 {
        let now = std::time::Instant::now();
        if now >= until {
            return Err(Error::Input(format!(
                "server {} of upstream \"{}\" still has {} requests in flight after {} s",
                server.server,
                target.upstream,
                server.active,
                timeout.as_secs_f64()
            )));
        }
        std::thread::sleep(WAIT_POLL.min(until - now));
        server = client.server(&target.upstream, id)?;
    }
    Ok(server)
}

/// Runs one parsed command, writing results to `out` (not a terminal).
pub fn run(cli: &Cli, out: &mut dyn Write) -> Result<(), Error> {
    run_to(cli, out, false)
}

/// Runs one parsed command, writing results to `out`; `terminal` says
/// whether `out` is one (`hab top` then redraws in place).
pub fn run_to(cli: &Cli, out: &mut dyn Write, terminal: bool) -> Result<(), Error> {
    let io_err = |e: std::io::Error| Error::Input(format!("cannot write output: {e}"));
    match &cli.command {
        Command::Status { url, json } => {
            let client = Client::new(url)?;
            let text = if *json {
                let raw = client.upstreams_json()?;
                let v = serde_json::to_string_pretty(&raw)
                    .map_err(|e| Error::Input(format!("cannot print JSON: {e}")))?;
                status::printable_json(&v).into_owned() + "\n"
            } else {
                let upstreams = client.upstreams()?;
                status::printable_lines(&status::table(&upstreams)).into_owned()
            };
            out.write_all(text.as_bytes()).map_err(io_err)?;
        }
        Command::Top {
            url,
            interval,
            iterations,
            upstream,
        } => {
            let opts = top::Options {
                url: url.clone(),
                interval: *interval,
                iterations: *iterations,
                upstream: upstream.clone(),
            };
            top::run(&opts, out, terminal)?;
        }
        Command::Drain {
            target,
            wait,
            timeout,
        } => {
            let body = patch_body(&cli.command).unwrap_or_default();
            let (id, mut server) = admin(target, &body)?;
            if *wait {
                server = wait_idle(target, id, server, *timeout)?;
            }
            writeln!(out, "{}", status::server_line(&target.upstream, &server)).map_err(io_err)?;
        }
        Command::Undrain(t) | Command::Down(t) | Command::Up(t) => {
            let body = patch_body(&cli.command).unwrap_or_default();
            let (_, server) = admin(t, &body)?;
            writeln!(out, "{}", status::server_line(&t.upstream, &server)).map_err(io_err)?;
        }
        Command::Add {
            url,
            upstream,
            address,
            weight,
            max_conns,
            max_fails,
            fail_timeout,
            backup,
            down,
        } => {
            let mut body = serde_json::json!({ "server": address });
            let fields = [
                ("weight", weight.map(serde_json::Value::from)),
                ("max_conns", max_conns.map(serde_json::Value::from)),
                ("max_fails", max_fails.map(serde_json::Value::from)),
                (
                    "fail_timeout",
                    fail_timeout.clone().map(serde_json::Value::from),
                ),
                ("backup", backup.then_some(serde_json::Value::Bool(true))),
                ("down", down.then_some(serde_json::Value::Bool(true))),
            ];
            for (k, v) in fields {
                if let Some(v) = v {
                    body[k] = v;
                }
            }
            let client = Client::new(url)?;
            let added = client.add_server(upstream, &body)?;
            writeln!(
                out,
                "{upstream}: added {} (id {})",
                added["server"].as_str().unwrap_or(address),
                added["id"]
            )
            .map_err(io_err)?;
        }
        Command::Remove {
            target,
            drain,
            timeout,
        } => {
            let client = Client::new(&target.url)?;
            let upstream = client.upstream(&target.upstream)?;
            let id = status::resolve(&upstream, &target.server).map_err(|e| Error::Input(e.0))?;
            if *drain {
                let server = client.patch_server(
                    &target.upstream,
                    id,
                    &serde_json::json!({"drain": true}),
                )?;
                wait_idle(target, id, server, *timeout)?;
            }
            client.remove_server(&target.upstream, id)?;
            writeln!(
                out,
                "{}: removed server {} (id {id})",
                target.upstream, target.server
            )
            .map_err(io_err)?;
        }
        Command::Weight { target, .. } => {
            let body = patch_body(&cli.command).unwrap_or_default();
            let (_, server) = admin(target, &body)?;
            writeln!(out, "{}", status::server_line(&target.upstream, &server)).map_err(io_err)?;
        }
        Command::Render {
            file,
            output,
            reload,
            nginx,
            prefix,
            snippet,
            main_conf,
        } => {
            let text = std::fs::read_to_string(file)
                .map_err(|e| Error::Input(format!("{}: {e}", file.display())))?;
            let conf = config::parse(&text)
                .map_err(|e| Error::Input(format!("{}: {e}", file.display())))?;
            let in_conf_d = output.as_deref().is_some_and(|o| {
                o.parent()
                    .and_then(|d| d.file_name())
                    .is_some_and(|d| d == "conf.d")
            });
            let form = if *snippet || in_conf_d {
                render::snippet_conflicts(&conf)
                    .map_err(|e| Error::Input(format!("{}: {e}", file.display())))?;
                render::Form::Snippet
            } else {
                render::Form::Whole
            };
            let rendered = render::render_as(&conf, &file.display().to_string(), form);
            match output {
                // `reload: true` in the file applies to -o only, so the
                // file can still be previewed; the flag asks for it.
                None if *reload => {
                    return Err(Error::Input(
                        "--reload needs -o OUT: nginx must read the rendered file".into(),
                    ))
                }
                None => out.write_all(rendered.as_bytes()).map_err(io_err)?,
                Some(path) => {
                    let file_err =
                        |e: std::io::Error| Error::Input(format!("{}: {e}", path.display()));
                    let staged = render::Staged::new(path, &rendered).map_err(file_err)?;
                    if (*reload || conf.reload) && form == render::Form::Snippet {
                        // nginx -t reads a copy of the main configuration,
                        // beside it, whose include of OUT reads the new
                        // text instead; OUT is replaced only once that
                        // passed, then nginx reloads its own nginx.conf.
                        let p = prefix.as_deref();
                        let main_err = |e: std::io::Error| {
                            Error::Input(format!("{}: {e}", main_conf.display()))
                        };
                        let main_text = std::fs::read_to_string(main_conf).map_err(main_err)?;
                        let wrapper =
                            render::main_with_snippet(main_conf, &main_text, path, staged.path())
                                .map_err(|e| {
                                Error::Input(format!("{e}\n{} is unchanged", path.display()))
                            })?;
                        let test_main =
                            render::Staged::new(main_conf, &wrapper).map_err(main_err)?;
                        render::run_nginx(nginx, p, test_main.path(), &["-t", "-q"]).map_err(
                            |e| Error::Input(format!("{e}\n{} is unchanged", path.display())),
                        )?;
                        drop(test_main);
                        staged.commit().map_err(file_err)?;
                        render::run_nginx(nginx, p, main_conf, &["-s", "reload"])
                            .map_err(Error::Input)?;
                        writeln!(out, "wrote {}; nginx reloaded", path.display())
                            .map_err(io_err)?;
                    } else if *reload || conf.reload {
                        // nginx -t reads the new text beside OUT; OUT is
                        // replaced only once it passed (a failure drops
                        // the temporary file and leaves OUT as it was).
                        let p = prefix.as_deref();
                        render::run_nginx(nginx, p, staged.path(), &["-t", "-q"]).map_err(|e| {
                            Error::Input(format!("{e}\n{} is unchanged", path.display()))
                        })?;
                        staged.commit().map_err(file_err)?;
                        render::run_nginx(nginx, p, path, &["-s", "reload"])
                            .map_err(Error::Input)?;
                        writeln!(out, "wrote {}; nginx reloaded", path.display())
                            .map_err(io_err)?;
                    } else {
                        staged.commit().map_err(file_err)?;
                    }
                }
            }
        }
    }
    Ok(())
}

/// The whole program: parses `args` (with the program name first), runs,
/// prints errors to `err` as one `hab: ...` line, returns the exit code.
/// `out` is taken not to be a terminal.
pub fn main_with<I, T>(args: I, out: &mut dyn Write, err: &mut dyn Write) -> u8
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    main_to(args, out, err, false)
}

/// [`main_with`], saying whether `out` is a terminal.
pub fn main_to<I, T>(args: I, out: &mut dyn Write, err: &mut dyn Write, terminal: bool) -> u8
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let cli = match Cli::try_parse_from(args) {
        Ok(c) => c,
        Err(e) => {
            let text = e.render().to_string();
            return if e.use_stderr() {
                let _ = err.write_all(text.as_bytes());
                EXIT_USAGE
            } else {
                let _ = out.write_all(text.as_bytes());
                EXIT_OK
            };
        }
    };
    match run_to(&cli, out, terminal) {
        Ok(()) => EXIT_OK,
        Err(e) => {
            let _ = writeln!(err, "hab: {}", status::printable(&e.to_string()));
            e.exit_code()
        }
    }
}

#[cfg(test)]
mod tests;
