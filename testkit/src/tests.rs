//! Unit tests of the test kit

mod http {
    use crate::http::*;

    fn req(raw: &str) -> Request {
        read_request(&mut raw.as_bytes()).unwrap().unwrap()
    }

    #[test]
    fn parses_request_and_query() {
        let r = req("GET /a?delay=5&close=1&x HTTP/1.1\r\nHost: h\r\n\r\n");
        assert_eq!(r.path(), "/a");
        assert_eq!(r.query("delay"), Some("5"));
        assert_eq!(r.query("close"), Some("1"));
        assert_eq!(r.query("x"), Some(""));
        assert_eq!(r.query("status"), None);
        assert!(r.keep_alive());
    }

    #[test]
    fn keep_alive_rules() {
        let cases = [
            ("HTTP/1.1", "", true),
            ("HTTP/1.1", "Connection: close\r\n", false),
            ("HTTP/1.1", "Connection: Keep-Alive, TE\r\n", true),
            ("HTTP/1.0", "", false),
            ("HTTP/1.0", "Connection: keep-alive\r\n", true),
        ];
        for (v, h, want) in cases {
            let r = req(&format!("GET / {v}\r\n{h}\r\n"));
            assert_eq!(r.keep_alive(), want, "{v} {h:?}");
        }
    }

    #[test]
    fn reads_bodies() {
        let raw = "POST / HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc\
                   POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nde\r\n1\r\nf\r\n0\r\n\r\n";
        let mut rd = raw.as_bytes();
        assert_eq!(read_request(&mut rd).unwrap().unwrap().body, b"abc");
        assert_eq!(read_request(&mut rd).unwrap().unwrap().body, b"def");
        assert_eq!(read_request(&mut rd).unwrap(), None);
    }

    #[test]
    fn rejects_garbage_and_oversize() {
        assert!(read_request(&mut "BLAH\r\n\r\n".as_bytes()).is_err());
        let big = format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(MAX_HEAD));
        assert!(read_request(&mut big.as_bytes()).is_err());
    }

    #[test]
    fn response_roundtrip() {
        let mut out = Vec::new();
        write_response(&mut out, 500, &[("X-Backend", "b1")], b"b1\n", false).unwrap();
        let r = read_response(&mut out.as_slice(), false).unwrap();
        assert_eq!(r.status, 500);
        assert_eq!(r.header("x-backend"), Some("b1"));
        assert_eq!(r.body_trimmed(), "b1");
    }
}

mod backend {
    use std::io::{BufRead, BufReader, Read, Write};
    use std::net::{TcpListener, TcpStream};
    use std::sync::atomic::Ordering;
    use std::time::Duration;

    use crate::backend::*;
    use crate::http::get;

    #[test]
    fn modes_parse_and_print() {
        for s in ["ok", "fail500", "fail404", "close", "delay:250"] {
            assert_eq!(s.parse::<Mode>().unwrap().to_string(), s);
        }
        for s in ["", "delay:", "delay:x", "fail", "delay:999999999"] {
            assert!(s.parse::<Mode>().is_err(), "{s}");
        }
    }

    #[test]
    fn serves_overrides_and_control() {
        let b = Backend::new("t1");
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = b.spawn(l).unwrap().port();

        let r = get(port, "/").unwrap();
        assert_eq!((r.status, r.body_trimmed()), (200, "t1".to_owned()));
        assert_eq!(r.header("X-Backend"), Some("t1"));
        assert_eq!(get(port, "/?status=503").unwrap().status, 503);
        assert!(get(port, "/?close=1").is_err());

        assert_eq!(get(port, "/_ctl/mode?set=fail404").unwrap().status, 200);
        assert_eq!(get(port, "/x").unwrap().status, 404);
        assert_eq!(get(port, "/_ctl/mode?set=bogus").unwrap().status, 400);
        assert_eq!(get(port, "/_ctl/mode").unwrap().body_trimmed(), "fail404");
        get(port, "/_ctl/mode?set=ok").unwrap();

        let s: StatsSnapshot = get(port, "/_ctl/stats")
            .unwrap()
            .body_trimmed()
            .parse()
            .unwrap();
        assert_eq!(s.requests, 4);
        assert_eq!((s.inflight, s.max_inflight), (0, 1));
    }

    /// Reads one keep-alive answer with a `Content-Length` body.
    fn read_answer(r: &mut BufReader<TcpStream>) -> String {
        let mut len = 0;
        let mut head = String::new();
        for _ in 0..50 {
            let mut l = String::new();
            r.read_line(&mut l).unwrap();
            if let Some(v) = l.to_ascii_lowercase().strip_prefix("content-length:") {
                len = v.trim().parse().unwrap();
            }
            head.push_str(&l);
            if l == "\r\n" {
                break;
            }
        }
        let mut body = vec![0; len];
        r.read_exact(&mut body).unwrap();
        head + &String::from_utf8(body).unwrap()
    }

    #[test]
    fn an_answered_request_is_no_longer_in_flight() {
        // nginx frees a max_conns peer as soon as it has the answer and
        // may send the next request at once: by then the backend must not
        // count the first one in flight. linger=MS holds the backend's
        // thread after the answer, as a loaded machine may; the counts
        // must not depend on it.
        let b = Backend::new("t2");
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = b.spawn(l).unwrap().port();
        let conn = TcpStream::connect(("127.0.0.1", port)).unwrap();
        conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut r = BufReader::new(conn.try_clone().unwrap());
        for (i, q) in [
            "/?linger=300",
            "/?delay=10&linger=300",
            "/?close=1&linger=300",
        ]
        .iter()
        .enumerate()
        {
            (&conn)
                .write_all(format!("GET {q} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes())
                .unwrap();
            if q.contains("close=1") {
                let mut rest = Vec::new();
                let _ = r.read_to_end(&mut rest);
            } else {
                let a = read_answer(&mut r);
                assert!(a.ends_with("t2\n"), "{a}");
            }
            let inflight = b.stats().inflight.load(Ordering::Relaxed);
            assert_eq!(inflight, 0, "after answer {i} ({q})");
        }
        assert_eq!(b.stats().max_inflight.load(Ordering::Relaxed), 1);
    }
}

mod base64 {
    use crate::browser::base64_decode;

    #[test]
    fn decodes_rfc4648_vectors() {
        for (text, want) in [
            ("", ""),
            ("Zg==", "f"),
            ("Zm8=", "fo"),
            ("Zm9v", "foo"),
            ("Zm9vYg==", "foob"),
            ("Zm9vYmE=", "fooba"),
            ("Zm9v\r\nYmFy", "foobar"),
        ] {
            assert_eq!(base64_decode(text).unwrap(), want.as_bytes(), "{text}");
        }
        assert_eq!(base64_decode("+/8=").unwrap(), [0xfb, 0xff]);
        for bad in ["Zm9", "Zg=", "Zg===", "Zg==Zg==", "Zm9v!", "Z==="] {
            assert!(base64_decode(bad).is_err(), "{bad:?} should not decode");
        }
    }
}

mod browser {
    use crate::browser::*;
    use serde_json::Value;
    use std::time::Duration;

    /// A real headless Chromium on a `data:` page: find, text, attribute,
    /// script, click and screenshot.
    #[test]
    fn drives_a_data_page() {
        if !browser_or_skip() {
            return;
        }
        let b = Browser::start().expect("start browser");
        let page = "data:text/html,<p id=a data-x=1>hi</p><button id=b \
                    onclick=\"this.textContent='done'\">go</button>";
        b.goto(page).unwrap();
        let p = b.find("#a").unwrap().expect("#a");
        assert_eq!(b.text(&p).unwrap(), "hi");
        assert_eq!(b.attr(&p, "data-x").unwrap().as_deref(), Some("1"));
        assert_eq!(b.attr(&p, "data-none").unwrap(), None);
        assert!(b.find("#nothing").unwrap().is_none());
        let v = b
            .execute(
                "return arguments[0].id + arguments[1];",
                &[p.to_json(), Value::from(2)],
            )
            .unwrap();
        assert_eq!(v.as_str(), Some("a2"));
        b.click(&b.find("#b").unwrap().unwrap()).unwrap();
        b.wait_js(
            "document.getElementById('b').textContent === 'done'",
            Duration::from_secs(2),
        )
        .unwrap();
        let png = b.screenshot().unwrap();
        assert!(png.len() > 100);
    }
}

mod dns {
    use std::net::Ipv4Addr;
    use std::process::Command;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    use std::thread;
    use std::time::{Duration, Instant};

    use crate::dns::wire::{self, Srv, A, AAAA, NOERROR, NXDOMAIN, SRV};
    use crate::dns::{dns_or_skip, Change, Named, Record};

    const WEB: &str = "_web._tcp.service.consul";

    fn srv(priority: u16, weight: u16, port: u16, target: &str) -> Srv {
        Srv {
            priority,
            weight,
            port,
            target: target.to_owned(),
        }
    }

    fn start() -> Named {
        let lo = Ipv4Addr::LOCALHOST;
        Named::start(
            "consul",
            &[
                Record::a("web1.node.consul", lo),
                Record::a("web2.node.consul", Ipv4Addr::new(127, 0, 0, 2)),
                Record::srv(WEB, 1, 10, 8081, "web1.node.consul"),
                Record::srv(WEB, 1, 20, 8082, "web2.node.consul."),
            ],
        )
        .expect("start named")
    }

    #[test]
    fn dns_serves_consul_names_with_ttl_0_and_nxdomain() {
        if !dns_or_skip() {
            return;
        }
        let ns = start();
        assert!(ns.port() < 32768, "port {}", ns.port());
        let r = ns.query("web1.node.consul", A).unwrap();
        assert_eq!((r.rcode, r.authoritative), (NOERROR, true));
        assert_eq!(r.a(), vec![Ipv4Addr::LOCALHOST]);
        assert_eq!(r.ttls(), vec![0]);
        let r = ns.query(WEB, SRV).unwrap();
        assert_eq!(
            r.srv(),
            vec![
                srv(1, 10, 8081, "web1.node.consul"),
                srv(1, 20, 8082, "web2.node.consul")
            ]
        );
        assert_eq!(r.ttls(), vec![0, 0]);
        // names are case-insensitive
        let r = ns.query("WEB1.Node.Consul", A).unwrap();
        assert_eq!(r.a(), vec![Ipv4Addr::LOCALHOST]);
        // a name that does not exist, and a type a name does not have
        let r = ns.query("web9.node.consul", A).unwrap();
        assert_eq!((r.rcode, r.answers.len()), (NXDOMAIN, 0));
        let r = ns.query("_db._tcp.service.consul", SRV).unwrap();
        assert_eq!(r.rcode, NXDOMAIN);
        let r = ns.query("web1.node.consul", AAAA).unwrap();
        assert_eq!((r.rcode, r.answers.len()), (NOERROR, 0));
    }

    #[test]
    fn dns_a_change_is_seen_at_once() {
        if !dns_or_skip() {
            return;
        }
        let ns = start();
        let (two, three) = (Ipv4Addr::new(127, 0, 0, 2), Ipv4Addr::new(127, 0, 0, 3));
        ns.set_a("web1.node.consul", &[three, two]).unwrap();
        assert_eq!(
            ns.query("web1.node.consul", A).unwrap().a(),
            vec![two, three]
        );
        ns.set_a("web1.node.consul", &[three]).unwrap();
        assert_eq!(ns.query("web1.node.consul", A).unwrap().a(), vec![three]);
        // removed: NXDOMAIN; the other names stay
        ns.remove("web1.node.consul").unwrap();
        assert_eq!(ns.query("web1.node.consul", A).unwrap().rcode, NXDOMAIN);
        assert_eq!(ns.query("web2.node.consul", A).unwrap().a(), vec![two]);
        // a new name
        ns.update(&[Change::Add(Record::a("web3.node.consul", three))])
            .unwrap();
        let r = ns.query("web3.node.consul", A).unwrap();
        assert_eq!((r.rcode, r.a(), r.ttls()), (NOERROR, vec![three], vec![0]));
    }

    #[test]
    fn dns_srv_change_is_seen_at_once() {
        if !dns_or_skip() {
            return;
        }
        let ns = start();
        // targets, weights, priorities and ports all change in one update
        let next = vec![
            srv(1, 5, 9001, "web2.node.consul"),
            srv(2, 1, 9002, "web3.node.consul"),
        ];
        ns.set_srv(WEB, &next).unwrap();
        let r = ns.query(WEB, SRV).unwrap();
        assert_eq!((r.rcode, r.srv()), (NOERROR, next));
        ns.set_srv(WEB, &[srv(1, 1, 9003, "web1.node.consul")])
            .unwrap();
        assert_eq!(
            ns.query(WEB, SRV).unwrap().srv(),
            vec![srv(1, 1, 9003, "web1.node.consul")]
        );
        // no SRV record left: the name is gone
        ns.set_srv(WEB, &[]).unwrap();
        let r = ns.query(WEB, SRV).unwrap();
        assert_eq!((r.rcode, r.answers.len()), (NXDOMAIN, 0));
    }

    #[test]
    fn dns_answers_throughout_changes_old_set_or_new() {
        if !dns_or_skip() {
            return;
        }
        let ns = start();
        let sets = [
            vec![srv(1, 1, 8001, "web1.node.consul")],
            vec![
                srv(1, 2, 8002, "web2.node.consul"),
                srv(2, 3, 8003, "web3.node.consul"),
            ],
        ];
        ns.set_srv(WEB, &sets[0]).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let addr = ns.addr();
        let querier = {
            let (stop, sets) = (stop.clone(), sets.clone());
            thread::spawn(move || {
                let (mut seen, mut bad) = ([0usize; 2], Vec::new());
                let deadline = Instant::now() + Duration::from_secs(60);
                while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                    match wire::query(addr, WEB, SRV, Duration::from_secs(2)) {
                        Ok(r) if r.rcode == NOERROR && r.srv() == sets[0] => seen[0] += 1,
                        Ok(r) if r.rcode == NOERROR && r.srv() == sets[1] => seen[1] += 1,
                        other => bad.push(format!("{other:?}")),
                    }
                }
                (seen, bad)
            })
        };
        let changes = 40;
        for i in 0..changes {
            ns.set_srv(WEB, &sets[(i + 1) % 2]).unwrap();
            thread::sleep(Duration::from_millis(10));
        }
        stop.store(true, Ordering::Relaxed);
        let (seen, bad) = querier.join().unwrap();
        assert!(
            bad.is_empty(),
            "{} bad replies: {:?}",
            bad.len(),
            &bad[..bad.len().min(5)]
        );
        assert!(
            seen[0] > 0 && seen[1] > 0,
            "both sets served during {changes} changes: {seen:?}"
        );
    }

    #[test]
    fn dns_server_stops_on_drop() {
        if !dns_or_skip() {
            return;
        }
        let ns = start();
        let (pid, addr) = (ns.pid(), ns.addr());
        assert!(std::path::Path::new(&format!("/proc/{pid}")).exists());
        drop(ns);
        // reaped by the drop: no process, nothing answers on the port
        assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists());
        assert!(wire::query(addr, WEB, SRV, Duration::from_millis(300)).is_err());
    }

    #[test]
    fn dns_dig_agrees_with_the_decoder() {
        let dig = std::path::Path::new("/usr/bin/dig");
        let missing: Vec<String> = if dig.is_file() {
            crate::dns::missing()
        } else {
            vec![dig.display().to_string()]
        };
        if !crate::skip::installed_or_skip(&missing) {
            return;
        }
        let ns = start();
        let out = Command::new(dig)
            .args(["+short", "+time=2", "+tries=2", "-p"])
            .arg(ns.port().to_string())
            .args(["@127.0.0.1", WEB, "SRV"])
            .output()
            .expect("run dig");
        let text = String::from_utf8_lossy(&out.stdout);
        let mut from_dig: Vec<String> = text.lines().map(str::to_owned).collect();
        from_dig.sort();
        let ours: Vec<String> = ns
            .query(WEB, SRV)
            .unwrap()
            .srv()
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(from_dig, ours);
    }

    #[test]
    fn dns_names_that_scripts_would_interpret_are_refused() {
        for bad in [
            "",
            "a b.consul",
            "x.consul\nupdate delete consul",
            "a..b",
            "a;b",
        ] {
            assert!(
                Record::a(bad, Ipv4Addr::LOCALHOST).check().is_err(),
                "{bad:?}"
            );
        }
        assert!(Record::srv(WEB, 1, 1, 1, "t arget").check().is_err());
        assert!(Record::srv(WEB, 1, 1, 1, "web1.node.consul.")
            .check()
            .is_ok());
    }
}

mod skip {
    use crate::skip::test_name;

    #[test]
    fn a_test_is_named_by_its_thread() {
        assert_eq!(test_name(), "tests::skip::a_test_is_named_by_its_thread");
        let other = std::thread::spawn(test_name).join().unwrap();
        assert_eq!(other, "test");
    }
}

/// The gRPC health server against grpc's own Python client: each status,
/// an unknown service, no health service, TLS, the calls it records, a
/// kill and a restart.
mod grpc {
    use std::process::{Command, Stdio};

    use crate::grpc::{grpc_or_skip, GrpcHealth, GrpcOptions, PYTHON};

    /// `python3 -c CLIENT PORT SERVICE AUTHORITY [CERT]`: one Check, prints
    /// `OK <response hex>` or `ERR <grpc-status>`.
    const CLIENT: &str = r#"
import sys, grpc
port, service, authority = int(sys.argv[1]), sys.argv[2], sys.argv[3]
opts = [("grpc.default_authority", authority)]
if len(sys.argv) > 4:
    creds = grpc.ssl_channel_credentials(root_certificates=open(sys.argv[4], "rb").read())
    ch = grpc.secure_channel("127.0.0.1:%d" % port, creds, options=opts + [("grpc.ssl_target_name_override", "localhost")])
else:
    ch = grpc.insecure_channel("127.0.0.1:%d" % port, options=opts)
s = service.encode()
req = b"\x0a" + bytes([len(s)]) + s if s else b""
try:
    print("OK " + ch.unary_unary("/grpc.health.v1.Health/Check")(req, timeout=5).hex())
except grpc.RpcError as e:
    print("ERR %d" % e.code().value[0])
"#;

    fn check(port: u16, service: &str, authority: &str, cert: Option<&std::path::Path>) -> String {
        let mut cmd = Command::new(PYTHON);
        cmd.args(["-c", CLIENT, &port.to_string(), service, authority])
            .env("GRPC_VERBOSITY", "NONE")
            .stdin(Stdio::null())
            .stderr(Stdio::null());
        if let Some(c) = cert {
            cmd.arg(c);
        }
        // The client's own timeout (5 s) bounds it.
        let out = cmd.output().expect("python3 client");
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    #[test]
    fn answers_each_status_and_records_the_calls() {
        if !grpc_or_skip() {
            return;
        }
        let s = GrpcHealth::plain();
        assert_eq!(check(s.port, "", "a.example", None), "OK 0801");
        assert_eq!(check(s.port, "app", "b", None), "ERR 5");
        for (status, want) in [
            ("SERVING", "OK 0801"),
            ("NOT_SERVING", "OK 0802"),
            ("SERVICE_UNKNOWN", "OK 0803"),
            ("UNKNOWN", "OK "),
            ("abort 14", "ERR 14"),
            ("absent", "ERR 5"),
        ] {
            s.set("app", status);
            assert_eq!(
                check(s.port, "app", "b", None).trim(),
                want.trim(),
                "{status}"
            );
        }
        let calls = s.calls();
        assert_eq!(calls.len(), 8, "{calls:?}");
        assert_eq!(calls[0].service.as_deref(), Some(""));
        assert_eq!(calls[0].request.as_deref(), Some(&b""[..]));
        assert_eq!(calls[0].authority.as_deref(), Some("a.example"));
        assert_eq!(calls[0].method, "/grpc.health.v1.Health/Check");
        assert_eq!(calls[1].service.as_deref(), Some("app"));
        assert_eq!(calls[1].request.as_deref(), Some(&b"\x0a\x03app"[..]));
        assert_eq!(calls[1].authority.as_deref(), Some("b"));
        assert!(calls[1]
            .peer
            .as_deref()
            .is_some_and(|p| p.starts_with("ipv4:127.0.0.1:")));
        s.clear();
        assert_eq!(s.count(), 0);
        // Without the health service: UNIMPLEMENTED, still recorded.
        s.set_health(false);
        assert_eq!(check(s.port, "", "c", None), "ERR 12");
        let calls = s.calls();
        assert_eq!(calls.len(), 1);
        assert_eq!(calls[0].service, None);
    }

    #[test]
    fn no_health_service_tls_kill_and_restart() {
        if !grpc_or_skip() {
            return;
        }
        let none = GrpcHealth::start(GrpcOptions {
            health: false,
            ..GrpcOptions::default()
        });
        assert_eq!(check(none.port, "", "x", None), "ERR 12");
        let dir = crate::nginx::scratch_dir();
        let (cert, key) = crate::nginx::self_signed_cert(&dir);
        let mut tls = GrpcHealth::start(GrpcOptions {
            tls: Some((cert.clone(), key)),
            health: true,
        });
        assert_eq!(check(tls.port, "", "localhost", Some(&cert)), "OK 0801");
        // Cleartext HTTP/2 to a TLS server fails (UNAVAILABLE).
        assert_eq!(check(tls.port, "", "localhost", None), "ERR 14");
        assert_eq!(tls.count(), 1);
        tls.kill();
        assert!(!crate::port::port_open(tls.port));
        tls.restart();
        assert_eq!(tls.count(), 0);
        assert_eq!(check(tls.port, "", "localhost", Some(&cert)), "OK 0801");
        drop(tls);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
