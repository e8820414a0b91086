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
    use std::net::TcpListener;

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
        if !browser_or_skip("drives_a_data_page") {
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
