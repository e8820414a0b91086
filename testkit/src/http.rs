//! Minimal HTTP/1.1 message reading and a blocking client
//!
//! Just enough HTTP for tests: request line / status line, headers,
//! `Content-Length` and `chunked` bodies, keep-alive decisions. Sizes are
//! capped so a misbehaving peer cannot make a test allocate without bound.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream};
use std::time::Duration;

/// Longest request or status line plus headers accepted.
pub const MAX_HEAD: usize = 16 * 1024;
/// Largest body accepted.
pub const MAX_BODY: usize = 8 * 1024 * 1024;
/// Connect timeout of [`get`].
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Read and write timeout of [`get`].
pub const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// A parsed request (body read and kept, usually empty).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub method: String,
    /// The request target as sent, e.g. `/x?delay=10`.
    pub target: String,
    /// `HTTP/1.0` or `HTTP/1.1`.
    pub version: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Request {
    /// First value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        find_header(&self.headers, name)
    }

    /// Path part of the target (before `?`).
    pub fn path(&self) -> &str {
        self.target.split('?').next().unwrap_or("")
    }

    /// Value of query parameter `key`, if present.
    pub fn query(&self, key: &str) -> Option<&str> {
        let (_, q) = self.target.split_once('?')?;
        q.split('&').find_map(|kv| match kv.split_once('=') {
            Some((k, v)) if k == key => Some(v),
            None if kv == key => Some(""),
            _ => None,
        })
    }

    /// Whether the connection stays open after the response (RFC 9112 9.3).
    pub fn keep_alive(&self) -> bool {
        let conn = self.header("connection").map(str::to_ascii_lowercase);
        let has = |t: &str| {
            conn.as_deref()
                .is_some_and(|c| c.split(',').any(|x| x.trim() == t))
        };
        if self.version == "HTTP/1.1" {
            !has("close")
        } else {
            has("keep-alive")
        }
    }
}

/// A parsed response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    /// First value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        find_header(&self.headers, name)
    }

    /// The body as text, lossily decoded.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as text without surrounding whitespace (backend bodies are
    /// `NAME\n`, so this is the backend name).
    pub fn body_trimmed(&self) -> String {
        self.text().trim().to_owned()
    }
}

fn find_header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

fn bad(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

/// Reads one CRLF (or LF) terminated line, without the terminator.
/// `Ok(None)` on EOF before any byte.
fn read_line<R: BufRead>(r: &mut R, budget: &mut usize) -> io::Result<Option<String>> {
    let mut buf = Vec::new();
    let limit = (*budget as u64) + 1;
    let n = r.by_ref().take(limit).read_until(b'\n', &mut buf)?;
    if n == 0 {
        return Ok(None);
    }
    if buf.last() != Some(&b'\n') {
        return Err(if n as u64 >= limit {
            bad("header section too large")
        } else {
            io::Error::new(io::ErrorKind::UnexpectedEof, "eof inside line")
        });
    }
    *budget -= n.min(*budget);
    buf.pop();
    if buf.last() == Some(&b'\r') {
        buf.pop();
    }
    String::from_utf8(buf)
        .map(Some)
        .map_err(|_| bad("non-utf8 header line"))
}

fn read_headers<R: BufRead>(r: &mut R, budget: &mut usize) -> io::Result<Vec<(String, String)>> {
    let mut headers = Vec::new();
    loop {
        let line = read_line(r, budget)?
            .ok_or_else(|| io::Error::new(io::ErrorKind::UnexpectedEof, "eof in headers"))?;
        if line.is_empty() {
            return Ok(headers);
        }
        let (k, v) = line
            .split_once(':')
            .ok_or_else(|| bad(format!("bad header line {line:?}")))?;
        headers.push((k.trim().to_owned(), v.trim().to_owned()));
        if headers.len() > 200 {
            return Err(bad("too many headers"));
        }
    }
}

/// Reads a body framed by `Content-Length` or `Transfer-Encoding: chunked`.
/// Returns `None` if neither is present.
fn read_framed_body<R: BufRead>(
    r: &mut R,
    headers: &[(String, String)],
) -> io::Result<Option<Vec<u8>>> {
    let chunked = find_header(headers, "transfer-encoding")
        .is_some_and(|te| te.to_ascii_lowercase().contains("chunked"));
    if chunked {
        let mut body = Vec::new();
        let mut budget = MAX_HEAD;
        loop {
            let line = read_line(r, &mut budget)?
                .ok_or_else(|| io::Error::new(io::ErrorKind::UnexpectedEof, "eof in chunk"))?;
            let size_hex = line.split(';').next().unwrap_or("").trim();
            let size = usize::from_str_radix(size_hex, 16)
                .map_err(|_| bad(format!("bad chunk size {line:?}")))?;
            if size == 0 {
                // Trailer section, ends with an empty line.
                read_headers(r, &mut budget)?;
                return Ok(Some(body));
            }
            if body.len() + size > MAX_BODY {
                return Err(bad("body too large"));
            }
            let start = body.len();
            body.resize(start + size, 0);
            r.read_exact(&mut body[start..])?;
            let mut crlf = [0u8; 2];
            r.read_exact(&mut crlf)?;
        }
    }
    if let Some(cl) = find_header(headers, "content-length") {
        let len: usize = cl
            .parse()
            .map_err(|_| bad(format!("bad content-length {cl:?}")))?;
        if len > MAX_BODY {
            return Err(bad("body too large"));
        }
        let mut body = vec![0u8; len];
        r.read_exact(&mut body)?;
        return Ok(Some(body));
    }
    Ok(None)
}

/// Reads one request from a connection. `Ok(None)` means the peer closed
/// the connection cleanly between requests.
pub fn read_request<R: BufRead>(r: &mut R) -> io::Result<Option<Request>> {
    let mut budget = MAX_HEAD;
    let line = loop {
        match read_line(r, &mut budget)? {
            None => return Ok(None),
            // Tolerate stray empty lines between requests (RFC 9112 2.2).
            Some(l) if l.is_empty() => continue,
            Some(l) => break l,
        }
    };
    let mut parts = line.split(' ');
    let (method, target, version) = match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some(m), Some(t), Some(v), None) if v.starts_with("HTTP/1.") => (m, t, v),
        _ => return Err(bad(format!("bad request line {line:?}"))),
    };
    let headers = read_headers(r, &mut budget)?;
    let body = read_framed_body(r, &headers)?.unwrap_or_default();
    Ok(Some(Request {
        method: method.to_owned(),
        target: target.to_owned(),
        version: version.to_owned(),
        headers,
        body,
    }))
}

/// Reads one response. A body without framing runs to EOF.
pub fn read_response<R: BufRead>(r: &mut R, head_request: bool) -> io::Result<Response> {
    let mut budget = MAX_HEAD;
    let line = read_line(r, &mut budget)?.ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "connection closed before response",
        )
    })?;
    let mut parts = line.splitn(3, ' ');
    let status = match (parts.next(), parts.next()) {
        (Some(v), Some(code)) if v.starts_with("HTTP/1.") => code
            .parse::<u16>()
            .map_err(|_| bad(format!("bad status line {line:?}")))?,
        _ => return Err(bad(format!("bad status line {line:?}"))),
    };
    let headers = read_headers(r, &mut budget)?;
    let no_body = head_request || status == 204 || status == 304 || (100..200).contains(&status);
    let body = if no_body {
        Vec::new()
    } else if let Some(b) = read_framed_body(r, &headers)? {
        b
    } else {
        let mut b = Vec::new();
        r.take(MAX_BODY as u64).read_to_end(&mut b)?;
        b
    };
    Ok(Response {
        status,
        headers,
        body,
    })
}

/// Writes a complete response with a `Content-Length` body.
pub fn write_response<W: Write>(
    w: &mut W,
    status: u16,
    headers: &[(&str, &str)],
    body: &[u8],
    keep_alive: bool,
) -> io::Result<()> {
    let mut out = format!("HTTP/1.1 {status} {}\r\n", reason(status));
    for (k, v) in headers {
        out.push_str(&format!("{k}: {v}\r\n"));
    }
    out.push_str(&format!("Content-Length: {}\r\n", body.len()));
    out.push_str(if keep_alive {
        "Connection: keep-alive\r\n\r\n"
    } else {
        "Connection: close\r\n\r\n"
    });
    let mut buf = out.into_bytes();
    buf.extend_from_slice(body);
    w.write_all(&buf)?;
    w.flush()
}

/// Reason phrase for the status codes tests use.
pub fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        204 => "No Content",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Status",
    }
}

/// `127.0.0.1:port`.
pub fn local(port: u16) -> SocketAddr {
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, port))
}

/// `GET path` on 127.0.0.1:`port` with `Connection: close`; reads the whole
/// response and waits for the server to close the connection, so when this
/// returns the server has finished with the request.
pub fn get(port: u16, path: &str) -> io::Result<Response> {
    get_with(port, path, &[])
}

/// `METHOD path` with `body` (sent with its `Content-Length` when not
/// empty) and `Connection: close`, as [`get`].
pub fn request(port: u16, method: &str, path: &str, body: &[u8]) -> io::Result<Response> {
    send(port, method, path, body, IO_TIMEOUT, true)
}

/// `METHOD path` with `body` as [`request`], but with `timeout` for each
/// read and write, and returning as soon as the response is read, without
/// waiting for the server to close (chromedriver keeps connections open
/// despite `Connection: close`).
pub fn exchange(
    port: u16,
    method: &str,
    path: &str,
    body: &[u8],
    timeout: Duration,
) -> io::Result<Response> {
    send(port, method, path, body, timeout, false)
}

fn send(
    port: u16,
    method: &str,
    path: &str,
    body: &[u8],
    timeout: Duration,
    drain: bool,
) -> io::Result<Response> {
    let stream = TcpStream::connect_timeout(&local(port), CONNECT_TIMEOUT)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    stream.set_nodelay(true)?;
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n");
    if !body.is_empty() {
        req.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    req.push_str("Connection: close\r\n\r\n");
    (&stream).write_all(req.as_bytes())?;
    (&stream).write_all(body)?;
    let mut r = BufReader::new(&stream);
    let resp = read_response(&mut r, method == "HEAD")?;
    if drain {
        let mut rest = Vec::new();
        let _ = r.take(MAX_BODY as u64).read_to_end(&mut rest);
    }
    Ok(resp)
}

/// Like [`get`], with extra request headers.
pub fn get_with(port: u16, path: &str, headers: &[(&str, &str)]) -> io::Result<Response> {
    let stream = TcpStream::connect_timeout(&local(port), CONNECT_TIMEOUT)?;
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    stream.set_nodelay(true)?;
    let mut req = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("Connection: close\r\n\r\n");
    (&stream).write_all(req.as_bytes())?;
    let mut r = BufReader::new(&stream);
    let resp = read_response(&mut r, false)?;
    // Drain to EOF (bounded by the read timeout and size cap) so the server
    // has closed its side before we report the response.
    let mut rest = Vec::new();
    let _ = r.take(MAX_BODY as u64).read_to_end(&mut rest);
    Ok(resp)
}
