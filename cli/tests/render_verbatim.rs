//! The original design's `core-config.yaml`, exactly as written, through
//! `hab render`, `nginx -t` and real traffic over http and https
//!
//! The file's servers are `server1.example.com:80` and
//! `server2.example.com:443`: names that resolve nowhere, on privileged
//! ports, behind listeners on 80 and 443. So the scenario runs in fresh
//! namespaces (`unshare --mount --net --pid`, root only; the test binary
//! runs itself there as the namespace's init, [`inside_namespaces`]):
//! loopback up, a private `/etc/hosts` naming both servers `::1`, a
//! self-signed pair in place of Debian's snakeoil one, and `/run`,
//! `/var/log/nginx` and `/var/lib/nginx` of its own, so Debian's nginx
//! writes nothing outside the test's directory. nginx listens on
//! 0.0.0.0:80 and 0.0.0.0:443 as rendered; the backends cannot share
//! those ports on 127.0.0.x (a listening wildcard takes every IPv4
//! address), so they listen on [::1]:80 and [::1]:443. The backends are a
//! stock nginx (no module) that answers with the server's name, whether
//! the request came over TLS and the SNI it saw; nginx under test loads
//! the real module with `worker_processes auto`, and sees 4 CPUs (a
//! private `/sys/devices/system/cpu/online`), so 4 workers.
//!
//! When the test process dies, the namespace's init dies, and the kernel
//! kills every process in it: nothing outlives a failure. Not root: a
//! `SKIP` line. Root, but no `unshare` or no namespaces: `SKIP`, or a
//! failure under `HAB_REQUIRE_NGINX=1`.
//!
//! The broken variants of the same file need neither root nor nginx.

// The harness serves several test files; this one uses part of it.
#[allow(dead_code)]
mod common;

use std::collections::BTreeMap;
use std::ffi::CString;
use std::fs;
use std::io;
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;
use hab_testkit::nginx::{module_so, nginx_bin};
use hab_testkit::proc::wait_until;
use hab_testkit::skip::{installed_or_skip, present_or_skip, say};

/// The design's file, byte for byte.
const CORE_CONFIG: &str = r#"reload: true
forwarded_protocols: ["http", "https"]
default_backend: ["http-backend", "https-backend"]

http-backend:
  servers: ["server1.example.com:80"]
  connections: 1024

https-backend:
  servers: ["server2.example.com:443"]
  connections: 1024
"#;

/// Requests sent to each listener per traffic check.
const REQUESTS: usize = 40;

/// Requests sent to each listener after the reload.
const AFTER_RELOAD: usize = 10;

/// The environment variable that carries the scratch directory to the
/// test binary run inside the namespaces.
const INSIDE: &str = "HAB_VERBATIM_DIR";

/// The test that runs inside them.
const INSIDE_TEST: &str = "inside_namespaces";

/// What the backends answer, per listener of nginx under test.
const HTTP_ANSWER: &str = "server1.example.com https= sni= proto=http";
const HTTPS_ANSWER: &str = "server2.example.com https=on sni=server2.example.com proto=https";

#[test]
fn core_config_verbatim_serves_http_and_https() {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        say(&format!(
            "SKIP {}: needs root (private network and mount namespaces, \
             ports 80 and 443)",
            hab_testkit::skip::test_name()
        ));
        return;
    }
    if !nginx_or_skip() {
        return;
    }
    let missing: Vec<String> = [
        ("unshare", "--version"),
        ("openssl", "version"),
        ("curl", "--version"),
    ]
    .iter()
    .filter(|(p, arg)| {
        !Command::new(p)
            .arg(arg)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    })
    .map(|(p, _)| (*p).to_owned())
    .collect();
    if !installed_or_skip(&missing) {
        return;
    }
    let probe = run_bounded(
        Command::new("unshare").args(namespace_args()).arg("true"),
        "unshare (probe)",
        Duration::from_secs(20),
    );
    if !probe.status.success() {
        let why = format!("unshare: {}", text(&probe.stderr).trim());
        if !present_or_skip(
            "cannot create namespaces here",
            "run as root with CAP_SYS_ADMIN",
            &[why],
        ) {
            return;
        }
    }

    let dir = fresh_dir();
    let exe = std::env::current_exe().expect("test binary path");
    let out = run_bounded(
        Command::new("unshare")
            .args(namespace_args())
            .arg(exe)
            .args([
                INSIDE_TEST,
                "--exact",
                "--include-ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(INSIDE, &dir),
        "the scenario inside the namespaces",
        Duration::from_secs(240),
    );
    assert!(
        out.status.success(),
        "inside the namespaces ({}):\n{}\n{}\nfiles kept in {}",
        out.status,
        text(&out.stdout),
        text(&out.stderr),
        dir.display()
    );
    for line in text(&out.stderr).lines() {
        if line.starts_with("verbatim: ") {
            say(line);
        }
    }
    let _ = fs::remove_dir_all(&dir);
}

/// `unshare`'s arguments: new mount, network and pid namespaces, the
/// command as init of the last (its death kills the rest), mounts private.
fn namespace_args() -> [&'static str; 8] {
    [
        "--mount",
        "--net",
        "--pid",
        "--fork",
        "--mount-proc",
        "--kill-child",
        "--propagation",
        "private",
    ]
}

/// The scenario, run by [`core_config_verbatim_serves_http_and_https`] in
/// fresh namespaces as their init; anywhere else it does nothing.
#[test]
#[ignore = "run inside namespaces by core_config_verbatim_serves_http_and_https"]
fn inside_namespaces() {
    let Some(dir) = std::env::var_os(INSIDE).map(PathBuf::from) else {
        say("inside_namespaces: started by core_config_verbatim_serves_http_and_https only");
        return;
    };
    assert_eq!(
        std::process::id(),
        1,
        "{INSIDE} is set but this is not a fresh pid namespace's init: \
         refusing to mount over /etc/hosts"
    );
    let (cert, key) = cert_for_127_0_0_1(&dir);
    isolate(&dir, &cert, &key);

    // glibc, as nginx calls it, finds both servers in the private hosts.
    for (name, port) in [("server1.example.com", 80), ("server2.example.com", 443)] {
        let got: Vec<SocketAddr> = (name, port)
            .to_socket_addrs()
            .unwrap_or_else(|e| panic!("{name}: {e} (is `hosts: files` in nsswitch.conf?)"))
            .collect();
        assert_eq!(got, [SocketAddr::from(([0u16, 0, 0, 0, 0, 0, 0, 1], port))]);
    }

    let backends = Backends::start(&dir.join("backend"), &cert, &key);

    // The file, unchanged; `reload: true` applies to -o only, so the first
    // rendering is read from standard output.
    let yaml = dir.join("core-config.yaml");
    fs::write(&yaml, CORE_CONFIG).unwrap();
    let out = hab(&["render", yaml.to_str().unwrap()]);
    assert!(out.status.success(), "hab render: {}", text(&out.stderr));
    let rendered = text(&out.stdout);
    for want in [
        "load_module modules/ngx_http_upstream_ha_module.so;",
        "worker_processes auto;",
        "upstream http-backend {",
        "server server1.example.com:80 max_conns=1024;",
        "upstream https-backend {",
        "server server2.example.com:443 max_conns=1024;",
        "listen 80 default_server;",
        "proxy_pass http://http-backend;",
        "listen 443 ssl default_server;",
        "proxy_pass https://https-backend;",
        "proxy_ssl_server_name on;",
        "proxy_ssl_name server2.example.com;",
        "ssl_certificate /etc/ssl/certs/ssl-cert-snakeoil.pem;",
    ] {
        assert!(rendered.contains(want), "no {want:?} in:\n{rendered}");
    }
    assert_eq!(rendered.matches("max_conns=1024").count(), 2, "{rendered}");
    let conf = dir.join("nginx.conf");
    fs::write(&conf, &rendered).unwrap();
    // The module where the rendered load_module looks: the prefix.
    fs::create_dir_all(dir.join("modules")).unwrap();
    std::os::unix::fs::symlink(
        module_so(),
        dir.join("modules/ngx_http_upstream_ha_module.so"),
    )
    .unwrap();

    nginx_t(&dir, &conf);
    let mut nginx = Nginx::start(&dir, &conf, &[80, 443]);
    assert_eq!(nginx.workers().len(), WORKERS, "worker_processes auto");

    let http = http_tally(REQUESTS);
    assert_eq!(http, BTreeMap::from([(HTTP_ANSWER.to_owned(), REQUESTS)]));
    let https = https_tally(&cert, REQUESTS);
    assert_eq!(
        https,
        BTreeMap::from([(format!("{HTTPS_ANSWER} 200"), REQUESTS)])
    );

    // `reload: true`: hab render -o tests the new file and reloads nginx.
    let old_workers = nginx.workers();
    let out = hab(&[
        "render",
        yaml.to_str().unwrap(),
        "-o",
        conf.to_str().unwrap(),
        "--nginx",
        nginx_bin().to_str().unwrap(),
        "-p",
        dir.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "hab render -o (reload: true): {}",
        text(&out.stderr)
    );
    assert!(
        text(&out.stdout).contains("nginx reloaded"),
        "{}",
        text(&out.stdout)
    );
    assert_eq!(fs::read_to_string(&conf).unwrap(), rendered);
    let replaced = wait_until(Duration::from_secs(15), || {
        let now = nginx.workers();
        now.len() == WORKERS && now.iter().all(|p| !old_workers.contains(p))
    });
    assert!(
        replaced,
        "old workers still running after the reload:\n{}",
        nginx.error_log()
    );
    let http = http_tally(AFTER_RELOAD);
    assert_eq!(
        http,
        BTreeMap::from([(HTTP_ANSWER.to_owned(), AFTER_RELOAD)])
    );
    let https = https_tally(&cert, AFTER_RELOAD);
    assert_eq!(
        https,
        BTreeMap::from([(format!("{HTTPS_ANSWER} 200"), AFTER_RELOAD)])
    );

    assert_no_crash(&nginx);
    nginx.stop();
    // What the backends saw: every request once, on its own port, TLS and
    // SNI on 443 only.
    let seen = backends.seen();
    let n = REQUESTS + AFTER_RELOAD;
    assert_eq!(
        seen,
        BTreeMap::from([
            ("443 https=on sni=server2.example.com".to_owned(), n),
            ("80 https= sni=-".to_owned(), n),
        ]),
        "backend access log"
    );
    say(&format!(
        "verbatim: {} (4 workers): {n} requests on :80 answered by \
         server1.example.com:80, {n} on :443 by server2.example.com:443 over \
         TLS with SNI; reloaded by hab render -o",
        nginx_bin().display()
    ));
}

/// `n` plain requests to port 80; answer (or error) → count.
fn http_tally(n: usize) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for _ in 0..n {
        let key = match get(80, "127.0.0.1") {
            Ok((200, body)) => body,
            Ok((status, body)) => format!("HTTP {status} {body}"),
            Err(e) => format!("ERR {e}"),
        };
        *m.entry(key).or_insert(0) += 1;
    }
    m
}

/// `n` requests over TLS to port 443, each on its own connection, the
/// listener's certificate verified against the test's own;
/// `"answer status"` → count.
fn https_tally(cert: &Path, n: usize) -> BTreeMap<String, usize> {
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "--max-time", "5", "-H", "Connection: close"])
        .arg("--cacert")
        .arg(cert)
        .args(["-w", " %{http_code}\\n"]);
    for _ in 0..n {
        cmd.arg("https://127.0.0.1/");
    }
    let out = run_bounded(&mut cmd, "curl", Duration::from_secs(60));
    let mut m = BTreeMap::new();
    for line in text(&out.stdout).lines() {
        *m.entry(line.to_owned()).or_insert(0) += 1;
    }
    assert!(
        out.status.success(),
        "curl ({}): {}\n{m:?}",
        out.status,
        text(&out.stderr)
    );
    m
}

/// A self-signed EC pair for `127.0.0.1` (and `server2.example.com`).
fn cert_for_127_0_0_1(dir: &Path) -> (PathBuf, PathBuf) {
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let out = run_bounded(
        Command::new("openssl")
            .args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
            .args(["ec_paramgen_curve:prime256v1", "-nodes", "-days", "2"])
            .args(["-subj", "/CN=ha-balancer test"])
            .args([
                "-addext",
                "subjectAltName=IP:127.0.0.1,DNS:server2.example.com",
            ])
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&cert),
        "openssl req",
        Duration::from_secs(30),
    );
    assert!(out.status.success(), "openssl: {}", text(&out.stderr));
    (cert, key)
}

/// The namespace's view of the machine: loopback up, the servers' names
/// in /etc/hosts, 4 CPUs, the test's pair as the snakeoil one, and
/// nginx's default run, log and state directories private.
fn isolate(dir: &Path, cert: &Path, key: &Path) {
    // Not inherited from the parent namespace: unshare made it private,
    // and so does this, whatever unshare's defaults become.
    mount(None, Path::new("/"), None, libc::MS_REC | libc::MS_PRIVATE);
    loopback_up().expect("set lo up");

    let hosts = dir.join("hosts");
    fs::write(
        &hosts,
        "127.0.0.1 localhost\n::1 server1.example.com server2.example.com\n",
    )
    .unwrap();
    bind(&hosts, Path::new("/etc/hosts"));

    // glibc's sysconf(_SC_NPROCESSORS_ONLN) reads this file; nginx's
    // `worker_processes auto` is that count.
    let online = dir.join("cpu-online");
    fs::write(&online, "0-3\n").unwrap();
    bind(&online, Path::new("/sys/devices/system/cpu/online"));
    // SAFETY: sysconf has no preconditions.
    let cpus = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
    assert_eq!(
        cpus, WORKERS as libc::c_long,
        "online CPUs as glibc counts them"
    );

    // Debian's ssl-cert is only suggested by nginx: its snakeoil pair may
    // be absent, so both directories are replaced in here.
    for (d, name, from) in [
        ("/etc/ssl/certs", "ssl-cert-snakeoil.pem", cert),
        ("/etc/ssl/private", "ssl-cert-snakeoil.key", key),
    ] {
        let d = Path::new(d);
        assert!(d.is_dir(), "{} missing (package openssl)", d.display());
        mount(Some("tmpfs"), d, Some("tmpfs"), 0);
        fs::copy(from, d.join(name)).unwrap();
    }

    // Debian's nginx: pid /run/nginx.pid, logs in /var/log/nginx (seen as
    // the prefix's logs/, where the harness reads error.log), temporary
    // files in /var/lib/nginx.
    mount(Some("tmpfs"), Path::new("/run"), Some("tmpfs"), 0);
    for (d, own) in [("/var/log/nginx", "logs"), ("/var/lib/nginx", "lib")] {
        if Path::new(d).is_dir() {
            let own = dir.join(own);
            fs::create_dir_all(&own).unwrap();
            bind(&own, Path::new(d));
        }
    }
}

fn bind(from: &Path, to: &Path) {
    let from = from.to_str().expect("UTF-8 path");
    mount(Some(from), to, None, libc::MS_BIND);
}

/// mount(2), or a panic naming what failed.
fn mount(source: Option<&str>, target: &Path, fstype: Option<&str>, flags: libc::c_ulong) {
    let c = |s: &str| CString::new(s).expect("no NUL");
    let source = source.map(c);
    let fstype = fstype.map(c);
    let t = CString::new(target.as_os_str().as_bytes()).expect("no NUL");
    let ptr = |s: &Option<CString>| s.as_ref().map_or(std::ptr::null(), |s| s.as_ptr());
    // SAFETY: every pointer is NULL or a NUL-terminated string that
    // outlives the call; no data argument.
    let rc = unsafe {
        libc::mount(
            ptr(&source),
            t.as_ptr(),
            ptr(&fstype),
            flags,
            std::ptr::null(),
        )
    };
    assert!(
        rc == 0,
        "mount {source:?} on {} ({fstype:?}, flags {flags:#x}): {}",
        target.display(),
        io::Error::last_os_error()
    );
}

/// `ip link set lo up`, without iproute2: SIOCSIFFLAGS with IFF_UP.
fn loopback_up() -> io::Result<()> {
    // SAFETY: socket(2) with constant arguments; the result is checked.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh descriptor that nothing else owns.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: ifreq is plain data (a name and a union of integers and
    // addresses), for which all zero bytes are a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, s) in req.ifr_name.iter_mut().zip(b"lo\0") {
        *d = *s as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS reads ifr_name and writes ifr_flags of `req`,
    // which lives across the call.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel just wrote the flags member of the union.
    unsafe { req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short };
    // SAFETY: SIOCSIFFLAGS reads ifr_name and ifr_flags of `req`.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &req) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The servers of the file: a stock nginx (1 worker, no module) on
/// [::1]:80 and, over TLS, [::1]:443, answering with the server's name,
/// `$https`, the SNI it saw and the X-Forwarded-Proto nginx under test
/// sent; its access log records port, TLS and SNI of every request.
struct Backends {
    dir: PathBuf,
    child: Child,
}

impl Backends {
    fn start(dir: &Path, cert: &Path, key: &Path) -> Backends {
        fs::create_dir_all(dir).unwrap();
        let d = dir.display();
        let answer = "https=$https sni=$ssl_server_name proto=$http_x_forwarded_proto";
        let conf = format!(
            "worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log info;
events {{ worker_connections 256; }}
http {{
    client_body_temp_path {d}/body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    log_format seen '$server_port https=$https sni=$ssl_server_name';
    access_log {d}/access.log seen;
    server {{
        listen [::1]:80;
        return 200 \"server1.example.com {answer}\";
    }}
    server {{
        listen [::1]:443 ssl;
        ssl_certificate {cert};
        ssl_certificate_key {key};
        return 200 \"server2.example.com {answer}\";
    }}
}}
",
            cert = cert.display(),
            key = key.display(),
        );
        let path = dir.join("nginx.conf");
        fs::write(&path, conf).unwrap();
        let child = Command::new(nginx_bin())
            .arg("-p")
            .arg(dir)
            .arg("-e")
            .arg(dir.join("error.log"))
            .arg("-c")
            .arg(&path)
            .args(["-g", "daemon off;"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the backend nginx");
        let b = Backends {
            dir: dir.to_path_buf(),
            child,
        };
        let up = wait_until(Duration::from_secs(10), || {
            [80, 443].iter().all(|&p| {
                TcpStream::connect_timeout(
                    &([0u16, 0, 0, 0, 0, 0, 0, 1], p).into(),
                    Duration::from_millis(200),
                )
                .is_ok()
            })
        });
        assert!(
            up,
            "backend nginx did not start:\n{}",
            fs::read_to_string(dir.join("error.log")).unwrap_or_default()
        );
        b
    }

    /// Access-log lines → count.
    fn seen(&self) -> BTreeMap<String, usize> {
        let log = fs::read_to_string(self.dir.join("access.log")).unwrap_or_default();
        let mut m = BTreeMap::new();
        for line in log.lines() {
            *m.entry(line.to_owned()).or_insert(0) += 1;
        }
        m
    }
}

impl Drop for Backends {
    fn drop(&mut self) {
        // The namespace dies with the test anyway; this is for order.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The file with one change, `hab render`'s exit status 1 and its one
/// line on stderr, `-o` left as it was.
#[test]
fn core_config_broken_variants_give_line_and_column() {
    let dir = fresh_dir();
    let yaml = dir.join("core-config.yaml");
    let out = dir.join("nginx.conf");
    let cases: &[(&str, &str, &str)] = &[
        (
            "  connections",
            "  conections",
            "line 7 column 3: unknown field `conections`, expected one of",
        ),
        (
            "reload:",
            "relaod:",
            "line 1 column 1: unknown field `relaod`, expected one of reload,",
        ),
        (
            "forwarded_protocols:",
            "forwarded_protocol:",
            "line 2 column 1: unknown field `forwarded_protocol`,",
        ),
        (
            "[\"http\", \"https\"]",
            "[\"http\", \"htps\"]",
            "line 2 column 31: unknown variant `htps`, expected one of http, https",
        ),
        (
            "connections: 1024",
            "connections: many",
            "line 7 column 16: ",
        ),
        // A backend whose servers key is misspelt is no backend: its name
        // is the unknown key, and the message says what a backend is.
        (
            "  servers",
            "  sevrers",
            "line 5 column 1: unknown field `http-backend`, expected one of \
             reload, module, worker_processes, pid, error_log, access_log, \
             forwarded_protocols, listen, tls, proxy, api, default_backend, \
             backends, servers, connections, or a backend (a mapping with servers)",
        ),
        (
            "https-backend:",
            "http-backend:",
            "line 9 column 1: duplicate mapping key: http-backend",
        ),
    ];
    for (from, to, want) in cases {
        assert!(CORE_CONFIG.contains(from), "{from:?}");
        let broken = CORE_CONFIG.replacen(from, to, 1);
        fs::write(&yaml, &broken).unwrap();
        fs::write(&out, "old\n").unwrap();
        let o = hab(&[
            "render",
            yaml.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
        ]);
        let err = text(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{to:?}: {err}");
        assert!(
            err.starts_with(&format!("hab: {}: {want}", yaml.display())),
            "{to:?}: {err}"
        );
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(o.stdout.is_empty(), "{to:?}");
        assert_eq!(fs::read_to_string(&out).unwrap(), "old\n", "{to:?}");
    }
    // Nothing staged beside OUT was left behind.
    let mut left: Vec<String> = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    assert_eq!(left, ["core-config.yaml", "logs", "nginx.conf"]);
    let _ = fs::remove_dir_all(&dir);
}

/// A YAML syntax error inside a top-level backend, as the design's file
/// has them, should be reported where it is, as it is under `backends:`.
#[test]
fn core_config_syntax_error_in_a_backend_is_reported_where_it_is() {
    let dir = fresh_dir();
    let yaml = dir.join("core-config.yaml");
    fs::write(&yaml, CORE_CONFIG.replacen(":443\"]", ":443]", 1)).unwrap();
    let o = hab(&["render", yaml.to_str().unwrap()]);
    let err = text(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.starts_with(&format!("hab: {}: line 10 column ", yaml.display()))
            && err.contains("quote"),
        "{err}"
    );
    let _ = fs::remove_dir_all(&dir);
}
