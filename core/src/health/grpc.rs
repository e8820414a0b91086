//! gRPC health checks: the bytes of one `grpc.health.v1.Health/Check` call
//! over HTTP/2 and the verdict on what the server sent back.
//!
//! One check is one connection: the client preface, a SETTINGS frame
//! (server push off), a HEADERS frame for `POST
//! /grpc.health.v1.Health/Check` and one DATA frame with the
//! length-prefixed `HealthCheckRequest { service }` that ends the stream
//! (stream 1). The prober sends them in one write, then reads; after the
//! server's SETTINGS it sends [`SETTINGS_ACK`] once.
//!
//! The verdict is taken on everything read so far, from its first byte
//! ([`answer`] is called again as bytes come; a check's answer is a few
//! hundred bytes): the server's frames are walked in order, every header
//! block goes through one HPACK [`Decoder`] (the server may index fields in
//! its dynamic table), and stream 1 decides. It passes when the answer's
//! `:status` is 200, its `grpc-status` 0 and its one message a
//! `HealthCheckResponse` whose status is `SERVING` (1); or, with
//! `grpc_status=` set, when `grpc-status` is that code (NGINX Plus's
//! `grpc_status=12` for servers without the health service).
//!
//! Our own header fields are literals never indexed and never Huffman
//! coded, so the server's decoder needs no state of ours.

use crate::algo::hpack::{encode_int, Decoder};

/// The client connection preface (RFC 7540 §3.5).
pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// A SETTINGS frame with the ACK flag: sent once the server's came.
pub const SETTINGS_ACK: [u8; 9] = [0, 0, 0, 4, 1, 0, 0, 0, 0];

/// The path of the health service's `Check` method.
pub const PATH: &str = "/grpc.health.v1.Health/Check";

/// Longest service name `grpc_service=` takes, bytes.
pub const MAX_SERVICE: usize = 1024;

/// Longest `:authority` sent, bytes.
pub const MAX_AUTHORITY: usize = 1024;

/// The header table size the client announces (the default, not sent).
const TABLE_LIMIT: usize = 4096;

/// The largest frame payload a client that says nothing else takes.
const MAX_FRAME: usize = 16_384;

const DATA: u8 = 0x0;
const HEADERS: u8 = 0x1;
const RST_STREAM: u8 = 0x3;
const SETTINGS: u8 = 0x4;
const PUSH_PROMISE: u8 = 0x5;
const GOAWAY: u8 = 0x7;
const CONTINUATION: u8 = 0x9;

const END_STREAM: u8 = 0x1;
const ACK: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const PADDED: u8 = 0x8;
const PRIORITY: u8 = 0x20;

/// `HealthCheckResponse.ServingStatus.SERVING`.
pub const SERVING: u32 = 1;

/// What one check sends.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// `:authority`: the server's name, or `host=`.
    pub authority: &'a [u8],
    /// `HealthCheckRequest.service`; empty for the whole server.
    pub service: &'a [u8],
    /// Over TLS: `:scheme https`.
    pub tls: bool,
}

fn frame_header(len: usize, kind: u8, flags: u8, stream: u32, out: &mut Vec<u8>) {
    out.extend_from_slice(&(len as u32).to_be_bytes()[1..]);
    out.push(kind);
    out.push(flags);
    out.extend_from_slice(&stream.to_be_bytes());
}

/// A literal header field never indexed (§6.2.3) with the static table's
/// name `index` (0: `name` given), plain strings.
fn literal(index: u32, name: &[u8], value: &[u8], out: &mut Vec<u8>) {
    encode_int(index, 4, 0x10, out);
    if index == 0 {
        encode_int(name.len() as u32, 7, 0, out);
        out.extend_from_slice(name);
    }
    encode_int(value.len() as u32, 7, 0, out);
    out.extend_from_slice(value);
}

/// The bytes of one check, from the preface to the request's end.
pub fn request(r: &Request<'_>, out: &mut Vec<u8>) {
    out.extend_from_slice(PREFACE);

    // SETTINGS_ENABLE_PUSH = 0
    frame_header(6, SETTINGS, 0, 0, out);
    out.extend_from_slice(&[0, 2, 0, 0, 0, 0]);

    let mut block = Vec::with_capacity(128 + r.authority.len());
    // :method POST (static 3), :scheme http/https (6/7): indexed
    block.push(0x80 | 3);
    block.push(0x80 | if r.tls { 7 } else { 6 });
    literal(4, b"", PATH.as_bytes(), &mut block); // :path
    literal(1, b"", r.authority, &mut block); // :authority
    literal(31, b"", b"application/grpc", &mut block); // content-type
    literal(0, b"te", b"trailers", &mut block);
    literal(58, b"", b"ha-balancer health check", &mut block); // user-agent
    frame_header(block.len(), HEADERS, END_HEADERS, 1, out);
    out.extend_from_slice(&block);

    // HealthCheckRequest: field 1 (service), length-delimited; nothing
    // for the empty string (proto3's default)
    let mut message = Vec::with_capacity(8 + r.service.len());
    if !r.service.is_empty() {
        message.push(0x0a);
        varint(r.service.len() as u64, &mut message);
        message.extend_from_slice(r.service);
    }
    frame_header(5 + message.len(), DATA, END_STREAM, 1, out);
    out.push(0); // not compressed
    out.extend_from_slice(&(message.len() as u32).to_be_bytes());
    out.extend_from_slice(&message);
}

fn varint(mut v: u64, out: &mut Vec<u8>) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Why a check failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// Nothing came before the server closed.
    NoResponse,
    /// The server closed, or the buffer filled, before the answer's
    /// headers were whole.
    IncompleteHeader,
    /// ... or before its end.
    IncompleteBody,
    /// Not HTTP/2 (an HTTP/1.x answer, say), or the protocol broken: a
    /// malformed frame or header block, a stream reset, GOAWAY before
    /// our stream, an answer without `grpc-status`, a malformed or
    /// compressed message.
    Protocol,
    /// `:status` other than 200.
    Status(u16),
    /// `grpc-status` other than 0 (and other than `grpc_status=`).
    GrpcStatus(u32),
    /// `grpc-status` 0, but the service is not `SERVING`: the status the
    /// message gave (0 `UNKNOWN`, 2 `NOT_SERVING`, 3 `SERVICE_UNKNOWN`).
    NotServing(u32),
}

/// The verdict on what was read so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// More is needed.
    Again,
    /// The check passed.
    Passed,
    /// The check failed.
    Failed(Failure),
}

/// [`answer`]'s result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Answer {
    /// The verdict.
    pub verdict: Verdict,
    /// The server's SETTINGS came (to be acknowledged once).
    pub settings: bool,
}

/// Stream 1 as read so far.
#[derive(Default)]
struct Stream {
    /// Header blocks seen: 1 the response's head, 2 its trailers.
    blocks: u8,
    status: Option<u16>,
    grpc_status: Option<u32>,
    /// A `grpc-status` that is no number.
    bad_grpc_status: bool,
    message: Vec<u8>,
    ended: bool,
}

/// The verdict on `buf`, all the server sent so far; `eof`: nothing more
/// will come (the server closed, or the buffer is full). `pass_status`:
/// `grpc_status=`, a code that passes (0: none).
pub fn answer(buf: &[u8], eof: bool, pass_status: u32) -> Answer {
    let mut settings = false;
    let verdict = walk(buf, &mut settings)
        .map(|s| decide(&s, buf.is_empty(), eof, pass_status))
        .unwrap_or_else(Verdict::Failed);
    Answer { verdict, settings }
}

/// The frames of `buf` in order, up to the last whole one; stream 1's
/// state, or a failure found on the way.
fn walk(buf: &[u8], settings: &mut bool) -> Result<Stream, Failure> {
    let mut decoder = Decoder::new(TABLE_LIMIT);
    let mut s = Stream::default();
    // a header block being gathered: its stream, END_STREAM, the block
    let mut gathering: Option<(u32, bool, Vec<u8>)> = None;
    let mut pos = 0;
    let mut first = true;

    while let Some(head) = buf.get(pos..pos + 9) {
        let len = (usize::from(head[0]) << 16) | (usize::from(head[1]) << 8) | usize::from(head[2]);
        let kind = head[3];
        let flags = head[4];
        let stream = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;

        // The server's preface is a SETTINGS frame: anything else, an
        // HTTP/1.x answer say, is not HTTP/2.
        if first && (kind != SETTINGS || flags & ACK != 0 || stream != 0) {
            return Err(Failure::Protocol);
        }
        first = false;
        if len > MAX_FRAME {
            return Err(Failure::Protocol);
        }
        let Some(payload) = buf.get(pos + 9..pos + 9 + len) else {
            break;
        };
        pos += 9 + len;

        if let Some((on, _, _)) = &gathering {
            if kind != CONTINUATION || stream != *on {
                return Err(Failure::Protocol);
            }
        }

        match kind {
            SETTINGS => {
                if stream != 0 || len % 6 != 0 || (flags & ACK != 0 && len != 0) {
                    return Err(Failure::Protocol);
                }
                if flags & ACK == 0 {
                    *settings = true;
                }
            }
            HEADERS => {
                if stream == 0 {
                    return Err(Failure::Protocol);
                }
                let mut fragment = unpad(payload, flags)?;
                if flags & PRIORITY != 0 {
                    fragment = fragment.get(5..).ok_or(Failure::Protocol)?;
                }
                let end_stream = flags & END_STREAM != 0;
                if flags & END_HEADERS != 0 {
                    block(&mut decoder, &mut s, stream, end_stream, fragment)?;
                } else {
                    gathering = Some((stream, end_stream, fragment.to_vec()));
                }
            }
            CONTINUATION => {
                let Some((on, end_stream, mut gathered)) = gathering.take() else {
                    return Err(Failure::Protocol);
                };
                gathered.extend_from_slice(payload);
                if flags & END_HEADERS != 0 {
                    block(&mut decoder, &mut s, on, end_stream, &gathered)?;
                } else {
                    gathering = Some((on, end_stream, gathered));
                }
            }
            DATA => {
                if stream == 0 {
                    return Err(Failure::Protocol);
                }
                if stream == 1 {
                    if s.blocks != 1 || s.ended {
                        return Err(Failure::Protocol);
                    }
                    s.message.extend_from_slice(unpad(payload, flags)?);
                    if flags & END_STREAM != 0 {
                        s.ended = true;
                    }
                }
            }
            RST_STREAM => {
                if stream == 0 || len != 4 {
                    return Err(Failure::Protocol);
                }
                if stream == 1 && !s.ended {
                    return Err(Failure::Protocol);
                }
            }
            GOAWAY => {
                if stream != 0 || len < 8 {
                    return Err(Failure::Protocol);
                }
                let last = u32::from_be_bytes([payload[0], payload[1], payload[2], payload[3]])
                    & 0x7fff_ffff;
                if last < 1 && !s.ended {
                    return Err(Failure::Protocol);
                }
            }
            // push was turned off in our SETTINGS
            PUSH_PROMISE => return Err(Failure::Protocol),
            // PRIORITY, PING, WINDOW_UPDATE, extensions: nothing to do
            _ => {}
        }

        if s.ended {
            break;
        }
    }
    Ok(s)
}

/// A frame's payload without its padding.
fn unpad(payload: &[u8], flags: u8) -> Result<&[u8], Failure> {
    if flags & PADDED == 0 {
        return Ok(payload);
    }
    let (&pad, rest) = payload.split_first().ok_or(Failure::Protocol)?;
    let pad = usize::from(pad);
    if pad > rest.len() {
        return Err(Failure::Protocol);
    }
    Ok(&rest[..rest.len() - pad])
}

/// One whole header block of `stream`; stream 1's fields kept.
fn block(
    decoder: &mut Decoder,
    s: &mut Stream,
    stream: u32,
    end_stream: bool,
    block: &[u8],
) -> Result<(), Failure> {
    let mine = stream == 1;
    let mut status = None;
    let mut grpc_status = None;
    let mut bad = false;
    decoder
        .decode(block, |name, value| {
            if !mine {
                return;
            }
            match name {
                b":status" => status = parse_u32(value).and_then(|v| u16::try_from(v).ok()),
                b"grpc-status" => match parse_u32(value) {
                    Some(v) => grpc_status = Some(v),
                    None => bad = true,
                },
                _ => {}
            }
        })
        .map_err(|_| Failure::Protocol)?;
    if !mine {
        return Ok(());
    }
    if s.ended {
        return Err(Failure::Protocol);
    }
    s.blocks += 1;
    match s.blocks {
        1 => {
            s.status = Some(status.ok_or(Failure::Protocol)?);
            // Trailers-Only: the head carries grpc-status
            s.grpc_status = grpc_status;
        }
        2 => {
            // trailers end the stream
            if !end_stream {
                return Err(Failure::Protocol);
            }
            s.grpc_status = grpc_status.or(s.grpc_status);
        }
        _ => return Err(Failure::Protocol),
    }
    s.bad_grpc_status |= bad;
    if end_stream {
        s.ended = true;
    }
    Ok(())
}

fn parse_u32(v: &[u8]) -> Option<u32> {
    if v.is_empty() || v.len() > 9 || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(v.iter().fold(0, |n, d| n * 10 + u32::from(d - b'0')))
}

fn decide(s: &Stream, empty: bool, eof: bool, pass_status: u32) -> Verdict {
    // a head that is no success decides at once
    if let Some(status) = s.status {
        if status != 200 {
            return Verdict::Failed(Failure::Status(status));
        }
    }
    if !s.ended {
        if !eof {
            return Verdict::Again;
        }
        return Verdict::Failed(if empty {
            Failure::NoResponse
        } else if s.blocks == 0 {
            Failure::IncompleteHeader
        } else {
            Failure::IncompleteBody
        });
    }
    let grpc_status = match s.grpc_status {
        Some(g) if !s.bad_grpc_status => g,
        _ => return Verdict::Failed(Failure::Protocol),
    };
    if pass_status != 0 && grpc_status == pass_status {
        return Verdict::Passed;
    }
    if grpc_status != 0 {
        return Verdict::Failed(Failure::GrpcStatus(grpc_status));
    }
    match serving_status(&s.message) {
        Some(SERVING) => Verdict::Passed,
        Some(other) => Verdict::Failed(Failure::NotServing(other)),
        None => Verdict::Failed(Failure::Protocol),
    }
}

/// The status of the one length-prefixed, uncompressed
/// `HealthCheckResponse` in `data` (0, `UNKNOWN`, when the field is absent,
/// as proto3 reads it); `None` when `data` is not that.
fn serving_status(data: &[u8]) -> Option<u32> {
    let (&compressed, rest) = data.split_first()?;
    if compressed != 0 || rest.len() < 4 {
        return None;
    }
    let len = u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
    let mut m = rest.get(4..)?;
    if m.len() != len {
        return None;
    }
    let mut status = 0;
    while !m.is_empty() {
        let key = read_varint(&mut m)?;
        match key & 7 {
            0 => {
                let v = read_varint(&mut m)?;
                if key >> 3 == 1 {
                    status = u32::try_from(v).ok()?;
                }
            }
            1 => m = m.get(8..)?,
            2 => {
                let n = usize::try_from(read_varint(&mut m)?).ok()?;
                m = m.get(n..)?;
            }
            5 => m = m.get(4..)?,
            _ => return None,
        }
    }
    Some(status)
}

fn read_varint(m: &mut &[u8]) -> Option<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let (&b, rest) = m.split_first()?;
        *m = rest;
        v |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Some(v);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::algo::hpack::{huffman_encode, Decoder};

    /// A server's side of the connection, written the way the tests want
    /// it: frames, header blocks with or without Huffman and indexing.
    struct Server {
        out: Vec<u8>,
    }

    #[derive(Clone, Copy)]
    enum Field<'a> {
        /// A static table index.
        Indexed(u8),
        /// Literal with incremental indexing, a new name, Huffman or not.
        Indexing(&'a str, &'a str, bool),
        /// Literal without indexing, a new name.
        Plain(&'a str, &'a str),
    }

    fn string(s: &str, huffman: bool, out: &mut Vec<u8>) {
        if huffman {
            let mut h = Vec::new();
            huffman_encode(s.as_bytes(), &mut h);
            encode_int(h.len() as u32, 7, 0x80, out);
            out.extend_from_slice(&h);
        } else {
            encode_int(s.len() as u32, 7, 0, out);
            out.extend_from_slice(s.as_bytes());
        }
    }

    fn block_of(fields: &[Field<'_>]) -> Vec<u8> {
        let mut b = Vec::new();
        for f in fields {
            match *f {
                Field::Indexed(i) => b.push(0x80 | i),
                Field::Indexing(n, v, h) => {
                    b.push(0x40);
                    string(n, h, &mut b);
                    string(v, h, &mut b);
                }
                Field::Plain(n, v) => {
                    b.push(0);
                    string(n, false, &mut b);
                    string(v, false, &mut b);
                }
            }
        }
        b
    }

    impl Server {
        fn new() -> Self {
            let mut s = Server { out: Vec::new() };
            s.frame(SETTINGS, 0, 0, &[0, 3, 0, 0, 0, 100]);
            s
        }
        fn frame(&mut self, kind: u8, flags: u8, stream: u32, payload: &[u8]) -> &mut Self {
            frame_header(payload.len(), kind, flags, stream, &mut self.out);
            self.out.extend_from_slice(payload);
            self
        }
        fn headers(&mut self, flags: u8, fields: &[Field<'_>]) -> &mut Self {
            let b = block_of(fields);
            self.frame(HEADERS, flags | END_HEADERS, 1, &b)
        }
        fn message(&mut self, status: Option<u8>) -> &mut Self {
            let m: Vec<u8> = status.map_or(vec![], |s| vec![0x08, s]);
            let mut d = vec![0];
            d.extend_from_slice(&(m.len() as u32).to_be_bytes());
            d.extend_from_slice(&m);
            self.frame(DATA, 0, 1, &d)
        }
        /// A whole answer: head, message, trailers.
        fn answer(status: Option<u8>, grpc_status: &str) -> Vec<u8> {
            let mut s = Server::new();
            s.frame(SETTINGS, ACK, 0, &[])
                .headers(
                    0,
                    &[
                        Field::Indexed(8),
                        Field::Indexing("content-type", "application/grpc", true),
                    ],
                )
                .message(status)
                .headers(
                    END_STREAM,
                    &[Field::Indexing("grpc-status", grpc_status, true)],
                );
            s.out
        }
    }

    fn verdict(buf: &[u8], pass: u32) -> Verdict {
        answer(buf, false, pass).verdict
    }

    #[test]
    fn the_request_decodes_as_sent() {
        let mut out = Vec::new();
        request(
            &Request {
                authority: b"api.example:50051",
                service: b"shop.Cart",
                tls: false,
            },
            &mut out,
        );
        assert!(out.starts_with(PREFACE));
        let mut pos = PREFACE.len();
        let mut frames = Vec::new();
        while pos < out.len() {
            let h = &out[pos..pos + 9];
            let len = usize::from(h[2]) | usize::from(h[1]) << 8;
            frames.push((h[3], h[4], h[8], out[pos + 9..pos + 9 + len].to_vec()));
            pos += 9 + len;
        }
        assert_eq!(pos, out.len());
        assert_eq!(frames.len(), 3);
        assert_eq!(frames[0], (SETTINGS, 0, 0, vec![0, 2, 0, 0, 0, 0]));
        let (kind, flags, stream, block) = &frames[1];
        assert_eq!((*kind, *flags, *stream), (HEADERS, END_HEADERS, 1));
        let mut fields = Vec::new();
        Decoder::new(4096)
            .decode(block, |n, v| {
                fields.push((
                    String::from_utf8(n.to_vec()).unwrap(),
                    String::from_utf8(v.to_vec()).unwrap(),
                ))
            })
            .unwrap();
        let want = [
            (":method", "POST"),
            (":scheme", "http"),
            (":path", "/grpc.health.v1.Health/Check"),
            (":authority", "api.example:50051"),
            ("content-type", "application/grpc"),
            ("te", "trailers"),
            ("user-agent", "ha-balancer health check"),
        ];
        let want: Vec<(String, String)> = want
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect();
        assert_eq!(fields, want);
        // :path, the first literal: never indexed (0001xxxx)
        assert_eq!(block[2] & 0xf0, 0x10);
        let (kind, flags, stream, data) = &frames[2];
        assert_eq!((*kind, *flags, *stream), (DATA, END_STREAM, 1));
        let mut want = vec![0, 0, 0, 0, 11, 0x0a, 9];
        want.extend_from_slice(b"shop.Cart");
        assert_eq!(data, &want);
    }

    #[test]
    fn empty_service_sends_an_empty_message() {
        let mut out = Vec::new();
        request(
            &Request {
                authority: b"a",
                service: b"",
                tls: true,
            },
            &mut out,
        );
        assert!(out.ends_with(&[0, 0, 5, DATA, END_STREAM, 0, 0, 0, 1, 0, 0, 0, 0, 0]));
    }

    #[test]
    fn serving_passes_and_others_fail() {
        assert_eq!(verdict(&Server::answer(Some(1), "0"), 0), Verdict::Passed);
        assert_eq!(
            verdict(&Server::answer(Some(2), "0"), 0),
            Verdict::Failed(Failure::NotServing(2))
        );
        assert_eq!(
            verdict(&Server::answer(Some(3), "0"), 0),
            Verdict::Failed(Failure::NotServing(3))
        );
        // an empty message is UNKNOWN (proto3's default)
        assert_eq!(
            verdict(&Server::answer(None, "0"), 0),
            Verdict::Failed(Failure::NotServing(0))
        );
        assert_eq!(
            verdict(&Server::answer(Some(1), "5"), 0),
            Verdict::Failed(Failure::GrpcStatus(5))
        );
        assert_eq!(verdict(&Server::answer(Some(1), "12"), 12), Verdict::Passed);
        // grpc_status= does not stop SERVING from passing
        assert_eq!(verdict(&Server::answer(Some(1), "0"), 12), Verdict::Passed);
        assert_eq!(
            verdict(&Server::answer(Some(1), "x"), 0),
            Verdict::Failed(Failure::Protocol)
        );
    }

    /// Every prefix of an answer is "more", and the whole one decides;
    /// at eof a prefix fails as what it lacks.
    #[test]
    fn prefixes_wait() {
        let full = Server::answer(Some(1), "0");
        for cut in 0..full.len() {
            assert_eq!(verdict(&full[..cut], 0), Verdict::Again, "cut {cut}");
            let at_eof = answer(&full[..cut], true, 0).verdict;
            assert!(matches!(at_eof, Verdict::Failed(_)), "cut {cut}");
        }
        assert_eq!(
            answer(&[], true, 0).verdict,
            Verdict::Failed(Failure::NoResponse)
        );
        assert_eq!(
            answer(&full[..9], true, 0).verdict,
            Verdict::Failed(Failure::IncompleteHeader)
        );
        // the server's SETTINGS is seen once whole
        assert!(!answer(&full[..14], false, 0).settings);
        assert!(answer(&full[..15], false, 0).settings);
    }

    #[test]
    fn trailers_only_and_http_errors() {
        let mut s = Server::new();
        s.headers(
            END_STREAM,
            &[
                Field::Indexed(8),
                Field::Plain("grpc-status", "12"),
                Field::Plain("grpc-message", "Method not found!"),
            ],
        );
        assert_eq!(verdict(&s.out, 0), Verdict::Failed(Failure::GrpcStatus(12)));
        assert_eq!(verdict(&s.out, 12), Verdict::Passed);

        // :status 503 decides on the head
        let mut s = Server::new();
        s.headers(0, &[Field::Indexing(":status", "503", true)]);
        assert_eq!(verdict(&s.out, 0), Verdict::Failed(Failure::Status(503)));

        // a head without :status
        let mut s = Server::new();
        s.headers(0, &[Field::Plain("content-type", "application/grpc")]);
        assert_eq!(verdict(&s.out, 0), Verdict::Failed(Failure::Protocol));
    }

    #[test]
    fn not_http2_is_a_protocol_error() {
        let v = verdict(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n", 0);
        assert_eq!(v, Verdict::Failed(Failure::Protocol));
        // a short HTTP/1 answer is known as soon as 9 bytes are there
        assert_eq!(verdict(b"HTTP/1.1 ", 0), Verdict::Failed(Failure::Protocol));
        assert_eq!(verdict(b"HTTP/1.", 0), Verdict::Again);
    }

    #[test]
    fn resets_goaway_push_and_bad_frames() {
        let mut s = Server::new();
        s.headers(0, &[Field::Indexed(8)])
            .frame(RST_STREAM, 0, 1, &[0, 0, 0, 2]);
        assert_eq!(verdict(&s.out, 0), Verdict::Failed(Failure::Protocol));

        let mut s = Server::new();
        s.frame(GOAWAY, 0, 0, &[0, 0, 0, 0, 0, 0, 0, 1]);
        assert_eq!(verdict(&s.out, 0), Verdict::Failed(Failure::Protocol));

        // GOAWAY that lets stream 1 finish: still waits for it
        let mut s = Server::new();
        s.frame(GOAWAY, 0, 0, &[0, 0, 0, 1, 0, 0, 0, 0]);
        assert_eq!(verdict(&s.out, 0), Verdict::Again);

        let mut s = Server::new();
        s.frame(PUSH_PROMISE, END_HEADERS, 1, &[0, 0, 0, 2, 0x82]);
        assert_eq!(verdict(&s.out, 0), Verdict::Failed(Failure::Protocol));

        // a frame larger than we allow
        let mut s = Server::new();
        frame_header(MAX_FRAME + 1, DATA, 0, 1, &mut s.out);
        assert_eq!(verdict(&s.out, 0), Verdict::Failed(Failure::Protocol));

        // DATA before the head
        let mut s = Server::new();
        s.message(Some(1));
        assert_eq!(verdict(&s.out, 0), Verdict::Failed(Failure::Protocol));

        // a compressed message
        let mut s = Server::new();
        s.headers(0, &[Field::Indexed(8)])
            .frame(DATA, 0, 1, &[1, 0, 0, 0, 2, 0x08, 1])
            .headers(END_STREAM, &[Field::Plain("grpc-status", "0")]);
        assert_eq!(verdict(&s.out, 0), Verdict::Failed(Failure::Protocol));

        // trailers without END_STREAM
        let mut s = Server::new();
        s.headers(0, &[Field::Indexed(8)])
            .message(Some(1))
            .headers(0, &[Field::Plain("grpc-status", "0")]);
        assert_eq!(verdict(&s.out, 0), Verdict::Failed(Failure::Protocol));

        // a malformed header block
        let mut s = Server::new();
        s.frame(HEADERS, END_HEADERS, 1, &[0x80 | 0x7f, 0xff, 0xff]);
        assert_eq!(verdict(&s.out, 0), Verdict::Failed(Failure::Protocol));
    }

    /// Padding, priority, CONTINUATION, frames of other streams and
    /// types in between, the server's dynamic table used across blocks.
    #[test]
    fn the_protocol_in_full() {
        let mut s = Server::new();
        s.frame(0x8, 0, 0, &[0, 1, 0, 0]) // WINDOW_UPDATE
            .frame(0x6, 0, 0, &[0; 8]) // PING
            .frame(0xfa, 0, 0, b"an extension");
        // head in HEADERS (padded, priority) + CONTINUATION
        let head = block_of(&[
            Field::Indexed(8),
            Field::Indexing("content-type", "application/grpc", true),
            Field::Indexing("grpc-accept-encoding", "identity,deflate,gzip", true),
        ]);
        let mut first = vec![3]; // pad length
        first.extend_from_slice(&[0, 0, 0, 0, 16]); // priority
        first.extend_from_slice(&head[..4]);
        first.extend_from_slice(&[0, 0, 0]);
        s.frame(HEADERS, PADDED | PRIORITY, 1, &first).frame(
            CONTINUATION,
            END_HEADERS,
            1,
            &head[4..],
        );
        // the message in two DATA frames, the first padded
        let mut d = vec![2, 0, 0, 0, 0, 2, 0x08];
        d.extend_from_slice(&[0, 0]);
        s.frame(DATA, PADDED, 1, &d).frame(DATA, 0, 1, &[1]);
        // trailers: an indexed field of the dynamic table (content-type is
        // 63 now, after grpc-accept-encoding at 62) and grpc-status
        let trailers = block_of(&[
            Field::Indexed(63),
            Field::Indexing("grpc-status", "0", true),
        ]);
        s.frame(HEADERS, END_HEADERS | END_STREAM, 1, &trailers);
        assert_eq!(verdict(&s.out, 0), Verdict::Passed);

        // a CONTINUATION interrupted by another frame
        let mut s = Server::new();
        s.frame(HEADERS, 0, 1, &head[..4])
            .frame(0x8, 0, 0, &[0, 1, 0, 0]);
        assert_eq!(verdict(&s.out, 0), Verdict::Failed(Failure::Protocol));
    }

    proptest::proptest! {
        /// Any bytes after a valid preface: a verdict, never a panic.
        #[test]
        fn any_answer_is_judged(tail in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..400), eof: bool) {
            let mut s = Server::new();
            s.out.extend_from_slice(&tail);
            let a = answer(&s.out, eof, 0);
            if eof {
                proptest::prop_assert!(a.verdict != Verdict::Again);
            }
        }

        /// A well-formed answer split anywhere: waits until whole.
        #[test]
        fn split_answers(status in 0u8..4, cut in 0usize..200) {
            let full = Server::answer(Some(status), "0");
            let cut = cut.min(full.len());
            let part = verdict(&full[..cut], 0);
            if cut < full.len() {
                proptest::prop_assert_eq!(part, Verdict::Again);
            }
            let whole = verdict(&full, 0);
            let want = if status == 1 { Verdict::Passed } else { Verdict::Failed(Failure::NotServing(u32::from(status))) };
            proptest::prop_assert_eq!(whole, want);
        }
    }
}
