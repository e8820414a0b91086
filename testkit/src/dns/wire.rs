//! DNS messages: a minimal query encoder and reply decoder (RFC 1035, SRV from RFC 2782)
//!
//! Enough for tests to ask a server on 127.0.0.1 what it serves: one
//! question per query, over UDP, and a decoder that reads the header, the
//! answer and additional sections, A and SRV data, and follows name
//! compression pointers (bounded, so a malformed reply is an error, never a
//! loop). Everything else is kept as its type number.

use std::fmt;
use std::io;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::Duration;

/// Record type A.
pub const A: u16 = 1;
/// Record type NS.
pub const NS: u16 = 2;
/// Record type SOA.
pub const SOA: u16 = 6;
/// Record type AAAA.
pub const AAAA: u16 = 28;
/// Record type SRV.
pub const SRV: u16 = 33;

/// Class IN.
const IN: u16 = 1;

/// Response code: no error.
pub const NOERROR: u8 = 0;
/// Response code: server failure.
pub const SERVFAIL: u8 = 2;
/// Response code: the name does not exist.
pub const NXDOMAIN: u8 = 3;
/// Response code: refused.
pub const REFUSED: u8 = 5;

/// Longest name in presentation form (RFC 1035 2.3.4).
const MAX_NAME: usize = 253;
/// Compression pointers followed in one name before giving up.
const MAX_JUMPS: usize = 32;

/// An SRV record's data.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Srv {
    /// Lower is preferred; nginx makes every priority but the lowest a
    /// backup.
    pub priority: u16,
    /// Relative weight among records of one priority.
    pub weight: u16,
    /// Port of the service on the target.
    pub port: u16,
    /// Host name of the target, without the trailing dot.
    pub target: String,
}

impl fmt::Display for Srv {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} {} {}.",
            self.priority, self.weight, self.port, self.target
        )
    }
}

/// Data of one resource record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Data {
    /// An IPv4 address.
    A(Ipv4Addr),
    /// A service location.
    Srv(Srv),
    /// Any other type, by number (its data is skipped).
    Other(u16),
}

/// One resource record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Owner name, lower case, without the trailing dot.
    pub name: String,
    /// Time to live, seconds.
    pub ttl: u32,
    /// The data.
    pub data: Data,
}

/// A decoded reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// Message id (the query's).
    pub id: u16,
    /// Response code ([`NOERROR`], [`NXDOMAIN`], ...).
    pub rcode: u8,
    /// The AA bit: the server is authoritative for the name.
    pub authoritative: bool,
    /// The answer section.
    pub answers: Vec<Record>,
    /// The additional section.
    pub additional: Vec<Record>,
}

impl Reply {
    /// Addresses of the A records in the answer, sorted.
    pub fn a(&self) -> Vec<Ipv4Addr> {
        let mut v: Vec<Ipv4Addr> = self
            .answers
            .iter()
            .filter_map(|r| match r.data {
                Data::A(a) => Some(a),
                _ => None,
            })
            .collect();
        v.sort_unstable();
        v
    }

    /// SRV records of the answer, sorted.
    pub fn srv(&self) -> Vec<Srv> {
        let mut v: Vec<Srv> = self
            .answers
            .iter()
            .filter_map(|r| match &r.data {
                Data::Srv(s) => Some(s.clone()),
                _ => None,
            })
            .collect();
        v.sort_unstable();
        v
    }

    /// TTLs of the answer's records.
    pub fn ttls(&self) -> Vec<u32> {
        self.answers.iter().map(|r| r.ttl).collect()
    }
}

fn bad(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

/// Appends `name` in wire form (labels, then the root label).
fn put_name(out: &mut Vec<u8>, name: &str) -> io::Result<()> {
    let name = name.strip_suffix('.').unwrap_or(name);
    if name.len() > MAX_NAME {
        return Err(bad(format!("name longer than {MAX_NAME} bytes")));
    }
    if !name.is_empty() {
        for label in name.split('.') {
            if label.is_empty() || label.len() > 63 {
                return Err(bad(format!("bad label in {name:?}")));
            }
            out.push(label.len() as u8);
            out.extend_from_slice(label.as_bytes());
        }
    }
    out.push(0);
    Ok(())
}

/// A query for `name`, type `qtype`, class IN, with message id `id`
/// (recursion not desired: the server is asked what it holds).
pub fn encode_query(id: u16, name: &str, qtype: u16) -> io::Result<Vec<u8>> {
    let mut out = Vec::with_capacity(32 + name.len());
    out.extend_from_slice(&id.to_be_bytes());
    out.extend_from_slice(&0u16.to_be_bytes()); // QUERY, no flags
    out.extend_from_slice(&1u16.to_be_bytes()); // QDCOUNT
    out.extend_from_slice(&[0; 6]); // AN, NS, AR
    put_name(&mut out, name)?;
    out.extend_from_slice(&qtype.to_be_bytes());
    out.extend_from_slice(&IN.to_be_bytes());
    Ok(out)
}

/// A reader over one message.
struct Reader<'a> {
    msg: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> io::Result<&'a [u8]> {
        let end = self.at.checked_add(n).filter(|&e| e <= self.msg.len());
        let end = end.ok_or_else(|| bad("message truncated"))?;
        let s = &self.msg[self.at..end];
        self.at = end;
        Ok(s)
    }

    fn u16(&mut self) -> io::Result<u16> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    fn u32(&mut self) -> io::Result<u32> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// A name at the cursor, compression pointers followed.
    fn name(&mut self) -> io::Result<String> {
        let mut name = String::new();
        let mut pos = self.at;
        let mut resume = None;
        let mut jumps = 0;
        loop {
            let len = *self.msg.get(pos).ok_or_else(|| bad("name truncated"))? as usize;
            match len & 0xc0 {
                0x00 if len == 0 => {
                    pos += 1;
                    break;
                }
                0x00 => {
                    let label = self
                        .msg
                        .get(pos + 1..pos + 1 + len)
                        .ok_or_else(|| bad("label truncated"))?;
                    if !name.is_empty() {
                        name.push('.');
                    }
                    name.push_str(&String::from_utf8_lossy(label).to_ascii_lowercase());
                    if name.len() > MAX_NAME {
                        return Err(bad("name too long"));
                    }
                    pos += 1 + len;
                }
                0xc0 => {
                    let lo = *self
                        .msg
                        .get(pos + 1)
                        .ok_or_else(|| bad("pointer truncated"))?;
                    jumps += 1;
                    if jumps > MAX_JUMPS {
                        return Err(bad("compression pointer loop"));
                    }
                    resume.get_or_insert(pos + 2);
                    pos = ((len & 0x3f) << 8) | lo as usize;
                }
                _ => return Err(bad("unknown label type")),
            }
        }
        self.at = resume.unwrap_or(pos);
        Ok(name)
    }

    fn record(&mut self) -> io::Result<Record> {
        let name = self.name()?;
        let rtype = self.u16()?;
        let _class = self.u16()?;
        let ttl = self.u32()?;
        let rdlen = self.u16()? as usize;
        let start = self.at;
        let data = match rtype {
            A if rdlen == 4 => {
                let b = self.take(4)?;
                Data::A(Ipv4Addr::new(b[0], b[1], b[2], b[3]))
            }
            SRV if rdlen >= 7 => Data::Srv(Srv {
                priority: self.u16()?,
                weight: self.u16()?,
                port: self.u16()?,
                target: self.name()?,
            }),
            A | SRV => return Err(bad(format!("type {rtype} with {rdlen} bytes of data"))),
            t => Data::Other(t),
        };
        if self.at > start + rdlen {
            return Err(bad("record data overruns its length"));
        }
        self.at = start;
        self.take(rdlen)?;
        Ok(Record { name, ttl, data })
    }
}

/// Decodes a reply.
pub fn decode_reply(msg: &[u8]) -> io::Result<Reply> {
    let mut r = Reader { msg, at: 0 };
    let id = r.u16()?;
    let flags = r.u16()?;
    if flags & 0x8000 == 0 {
        return Err(bad("not a response"));
    }
    let counts = [r.u16()?, r.u16()?, r.u16()?, r.u16()?];
    for _ in 0..counts[0] {
        r.name()?;
        r.take(4)?;
    }
    let mut answers = Vec::new();
    for _ in 0..counts[1] {
        answers.push(r.record()?);
    }
    for _ in 0..counts[2] {
        r.record()?;
    }
    let mut additional = Vec::new();
    for _ in 0..counts[3] {
        additional.push(r.record()?);
    }
    Ok(Reply {
        id,
        rcode: (flags & 0x000f) as u8,
        authoritative: flags & 0x0400 != 0,
        answers,
        additional,
    })
}

/// A message id: distinct across calls in this process, mixed with the
/// process id so that two processes do not start from the same one.
fn next_id() -> u16 {
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    n.wrapping_mul(40503) ^ (std::process::id() as u16)
}

/// Asks `server` (UDP) for `name`, type `qtype`; waits at most `timeout`
/// for the matching reply (replies with another id are ignored).
pub fn query(server: SocketAddr, name: &str, qtype: u16, timeout: Duration) -> io::Result<Reply> {
    let id = next_id();
    let q = encode_query(id, name, qtype)?;
    let sock = UdpSocket::bind(("127.0.0.1", 0))?;
    sock.connect(server)?;
    sock.set_read_timeout(Some(timeout))?;
    sock.send(&q)?;
    let deadline = std::time::Instant::now() + timeout;
    let mut buf = [0u8; 4096];
    // Bounded: each pass either returns or consumes a stray datagram, and
    // the socket's own timeout ends the wait.
    for _ in 0..64 {
        let n = sock.recv(&mut buf)?;
        if let Ok(reply) = decode_reply(&buf[..n]) {
            if reply.id == id {
                return Ok(reply);
            }
        }
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            break;
        }
        sock.set_read_timeout(Some(left))?;
    }
    Err(io::Error::new(
        io::ErrorKind::TimedOut,
        format!("no reply from {server} for {name}"),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns_query_encoding_is_rfc_1035() {
        let q = encode_query(0x1234, "web1.node.consul.", A).unwrap();
        let mut want = vec![0x12, 0x34, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0];
        want.extend_from_slice(b"\x04web1\x04node\x06consul\x00");
        want.extend_from_slice(&[0, 1, 0, 1]);
        assert_eq!(q, want);
        assert!(encode_query(1, "a..b", A).is_err());
        assert!(encode_query(1, &"x".repeat(64), A).is_err());
    }

    /// A reply to "_web._tcp.service.consul SRV" with one SRV record whose
    /// owner and target use compression pointers, and an A record in the
    /// additional section.
    fn srv_reply() -> Vec<u8> {
        let mut m = vec![0xab, 0xcd, 0x84, 0x00, 0, 1, 0, 1, 0, 0, 0, 1];
        // question at 12: _web._tcp.service.consul SRV IN
        m.extend_from_slice(b"\x04_web\x04_tcp\x07service\x06consul\x00");
        m.extend_from_slice(&[0, 33, 0, 1]);
        // answer: pointer to 12, SRV IN ttl 0
        m.extend_from_slice(&[0xc0, 12, 0, 33, 0, 1, 0, 0, 0, 0]);
        let target_at = m.len() + 2 + 6;
        let rdata: Vec<u8> = [0u8, 1, 0, 10, 0x1f, 0x91]
            .iter()
            .copied()
            .chain(b"\x04web1\x04node".iter().copied())
            // "consul" of the question, at 12 + 5 + 5 + 8
            .chain([0xc0, 30])
            .collect();
        m.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
        m.extend_from_slice(&rdata);
        // additional: pointer to the target, A IN ttl 0, 127.0.0.1
        m.extend_from_slice(&[0xc0, target_at as u8, 0, 1, 0, 1, 0, 0, 0, 0, 0, 4]);
        m.extend_from_slice(&[127, 0, 0, 1]);
        m
    }

    #[test]
    fn dns_reply_decoding_follows_compression() {
        let r = decode_reply(&srv_reply()).unwrap();
        assert_eq!(r.id, 0xabcd);
        assert_eq!(r.rcode, NOERROR);
        assert!(r.authoritative);
        assert_eq!(r.answers[0].name, "_web._tcp.service.consul");
        assert_eq!(
            r.srv(),
            vec![Srv {
                priority: 1,
                weight: 10,
                port: 8081,
                target: "web1.node.consul".into()
            }]
        );
        assert_eq!(r.ttls(), vec![0]);
        assert_eq!(r.additional[0].name, "web1.node.consul");
        assert_eq!(r.additional[0].data, Data::A(Ipv4Addr::LOCALHOST));
    }

    #[test]
    fn dns_malformed_replies_are_errors_not_loops() {
        let good = srv_reply();
        // every truncation fails cleanly
        for n in 0..good.len() {
            assert!(decode_reply(&good[..n]).is_err(), "truncated at {n}");
        }
        // a pointer to itself
        let mut m = vec![0, 1, 0x80, 0, 0, 1, 0, 0, 0, 0, 0, 0];
        m.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1]);
        assert!(decode_reply(&m).is_err());
        // a query, not a response
        let q = encode_query(7, "a.consul", A).unwrap();
        assert!(decode_reply(&q).is_err());
        // NXDOMAIN with no records
        let mut nx = q.clone();
        nx[2] = 0x84;
        nx[3] = NXDOMAIN;
        let r = decode_reply(&nx).unwrap();
        assert_eq!((r.rcode, r.answers.len()), (NXDOMAIN, 0));
    }
}
