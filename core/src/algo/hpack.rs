//! HPACK (RFC 7541): what a client needs to read an HTTP/2 server's
//! header blocks — integers (§5.1), strings with or without Huffman coding
//! (§5.2, Appendix B), the static table (Appendix A) and the dynamic table
//! (§2.3, §4) — and the Huffman encoder, which the tests use against the
//! decoder.
//!
//! The gRPC health checks ([`crate::health::grpc`]) send their own headers
//! as literals that are never indexed and never Huffman coded (§6.2.2), so
//! only the server's encoder has state; a [`Decoder`] follows it.
//!
//! The Huffman code is canonical: each symbol's code is determined by the
//! code lengths alone (shorter codes first, and within one length in
//! symbol order), so the table below holds only the lengths of Appendix
//! B; the tests check the codes they yield against codes the RFC lists.

use std::collections::VecDeque;

/// A header block that cannot be decoded: a connection error
/// (`COMPRESSION_ERROR`, RFC 7540 §4.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HpackError {
    /// The block ends inside a representation.
    Truncated,
    /// An integer past `u32`.
    Integer,
    /// A Huffman string with an EOS symbol, or padding that is longer than
    /// 7 bits or not the EOS code's first bits (§5.2).
    Huffman,
    /// An index of no table entry.
    Index,
    /// A dynamic table size update above the limit, or after the block's
    /// first header field (§4.2).
    TableSize,
}

/// Code lengths in bits of symbols 0..=255 and EOS (256), RFC 7541
/// Appendix B.
const LENGTHS: [u8; 257] = [
    // 0..=31: control characters
    13, 23, 28, 28, 28, 28, 28, 28, 28, 24, 30, 28, 28, 30, 28, 28, //
    28, 28, 28, 28, 28, 28, 30, 28, 28, 28, 28, 28, 28, 28, 28, 28, //
    // ' ' ! " # $ % & ' ( ) * + , - . /
    6, 10, 10, 12, 13, 6, 8, 11, 10, 10, 8, 11, 8, 6, 6, 6, //
    // 0 1 2 3 4 5 6 7 8 9 : ; < = > ?
    5, 5, 5, 6, 6, 6, 6, 6, 6, 6, 7, 8, 15, 6, 12, 10, //
    // @ A B C D E F G H I J K L M N O
    13, 6, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, //
    // P Q R S T U V W X Y Z [ \ ] ^ _
    7, 7, 7, 7, 7, 7, 7, 7, 8, 7, 8, 13, 19, 13, 14, 6, //
    // ` a b c d e f g h i j k l m n o
    15, 5, 6, 5, 6, 5, 6, 6, 6, 5, 7, 7, 6, 6, 6, 5, //
    // p q r s t u v w x y z { | } ~ DEL
    6, 7, 6, 5, 5, 6, 7, 7, 7, 7, 7, 15, 11, 14, 13, 28, //
    // 128..=255
    20, 22, 20, 20, 22, 22, 22, 23, 22, 23, 23, 23, 23, 23, 24, 23, //
    24, 24, 22, 23, 24, 23, 23, 23, 23, 21, 22, 23, 22, 23, 23, 24, //
    22, 21, 20, 22, 22, 23, 23, 21, 23, 22, 22, 24, 21, 22, 23, 23, //
    21, 21, 22, 21, 23, 22, 23, 23, 20, 22, 22, 22, 23, 22, 22, 23, //
    26, 26, 20, 19, 22, 23, 22, 25, 26, 26, 26, 27, 27, 26, 24, 25, //
    19, 21, 26, 27, 27, 26, 27, 24, 21, 21, 26, 26, 28, 27, 27, 27, //
    20, 24, 20, 21, 22, 21, 21, 23, 22, 22, 25, 25, 24, 24, 26, 23, //
    26, 27, 26, 26, 27, 27, 27, 27, 27, 28, 27, 27, 27, 27, 27, 26, //
    // EOS
    30,
];

/// The longest code.
const MAX_LEN: usize = 30;

/// The symbol of EOS.
const EOS: u16 = 256;

/// The canonical code built from [`LENGTHS`]: per length, how many codes
/// it has, the first of them, and where its symbols start in `symbols`
/// (sorted by length, then symbol); per symbol, its code.
struct Canonical {
    count: [u16; MAX_LEN + 1],
    first: [u32; MAX_LEN + 1],
    offset: [u16; MAX_LEN + 1],
    symbols: [u16; 257],
    codes: [u32; 257],
}

const fn canonical() -> Canonical {
    let mut count = [0u16; MAX_LEN + 1];
    let mut i = 0;
    while i < 257 {
        count[LENGTHS[i] as usize] += 1;
        i += 1;
    }
    let mut first = [0u32; MAX_LEN + 1];
    let mut offset = [0u16; MAX_LEN + 1];
    let mut len = 1;
    while len <= MAX_LEN {
        first[len] = (first[len - 1] + count[len - 1] as u32) << 1;
        offset[len] = offset[len - 1] + count[len - 1];
        len += 1;
    }
    let mut symbols = [0u16; 257];
    let mut codes = [0u32; 257];
    let mut next = offset;
    let mut sym = 0;
    while sym < 257 {
        let len = LENGTHS[sym] as usize;
        let rank = next[len];
        symbols[rank as usize] = sym as u16;
        codes[sym] = first[len] + (rank - offset[len]) as u32;
        next[len] += 1;
        sym += 1;
    }
    Canonical {
        count,
        first,
        offset,
        symbols,
        codes,
    }
}

static HUFFMAN: Canonical = canonical();

/// Decodes a Huffman-coded string (§5.2) onto `out`.
pub fn huffman_decode(src: &[u8], out: &mut Vec<u8>) -> Result<(), HpackError> {
    let h = &HUFFMAN;
    let mut code: u32 = 0;
    let mut len: usize = 0;
    for &byte in src {
        for shift in (0..8).rev() {
            code = code << 1 | u32::from(byte >> shift & 1);
            len += 1;
            let k = code.wrapping_sub(h.first[len]);
            if k < u32::from(h.count[len]) {
                let sym = h.symbols[usize::from(h.offset[len]) + k as usize];
                if sym == EOS {
                    return Err(HpackError::Huffman);
                }
                out.push(sym as u8);
                code = 0;
                len = 0;
            } else if len == MAX_LEN {
                return Err(HpackError::Huffman);
            }
        }
    }
    // Padding: at most 7 bits, the most significant bits of EOS (all 1s).
    if len > 7 || code != (1 << len) - 1 {
        return Err(HpackError::Huffman);
    }
    Ok(())
}

/// Huffman-codes `src` (§5.2) onto `out`, padded with 1 bits.
pub fn huffman_encode(src: &[u8], out: &mut Vec<u8>) {
    let mut acc: u64 = 0;
    let mut bits: u32 = 0;
    for &b in src {
        let len = u32::from(LENGTHS[usize::from(b)]);
        acc = acc << len | u64::from(HUFFMAN.codes[usize::from(b)]);
        bits += len;
        while bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
        acc &= (1 << bits) - 1;
    }
    if bits > 0 {
        out.push((acc << (8 - bits) | (0xff >> bits)) as u8);
    }
}

/// The length of `src` once Huffman coded, bytes.
pub fn huffman_len(src: &[u8]) -> usize {
    let bits: usize = src
        .iter()
        .map(|&b| usize::from(LENGTHS[usize::from(b)]))
        .sum();
    bits.div_ceil(8)
}

/// Reads an integer with an `n`-bit prefix (§5.1) at `*pos`, moving past it.
pub fn decode_int(buf: &[u8], pos: &mut usize, n: u8) -> Result<u32, HpackError> {
    let mask = (1u32 << n) - 1;
    let first = *buf.get(*pos).ok_or(HpackError::Truncated)?;
    *pos += 1;
    let mut value = u32::from(first) & mask;
    if value < mask {
        return Ok(value);
    }
    let mut shift = 0u32;
    loop {
        let b = *buf.get(*pos).ok_or(HpackError::Truncated)?;
        *pos += 1;
        let part = u32::from(b & 0x7f);
        if shift > 28 || (shift == 28 && part > 0xf) {
            return Err(HpackError::Integer);
        }
        value = value
            .checked_add(part << shift)
            .ok_or(HpackError::Integer)?;
        if b & 0x80 == 0 {
            return Ok(value);
        }
        shift += 7;
    }
}

/// Writes `value` with an `n`-bit prefix (§5.1); `flags` fills the first
/// byte's bits above the prefix.
pub fn encode_int(value: u32, n: u8, flags: u8, out: &mut Vec<u8>) {
    let mask = (1u32 << n) - 1;
    if value < mask {
        out.push(flags | value as u8);
        return;
    }
    out.push(flags | mask as u8);
    let mut rest = value - mask;
    while rest >= 0x80 {
        out.push((rest & 0x7f) as u8 | 0x80);
        rest >>= 7;
    }
    out.push(rest as u8);
}

/// Reads a string literal (§5.2) at `*pos` onto `out`, moving past it.
fn decode_str(buf: &[u8], pos: &mut usize, out: &mut Vec<u8>) -> Result<(), HpackError> {
    let huffman = *buf.get(*pos).ok_or(HpackError::Truncated)? & 0x80 != 0;
    let len = decode_int(buf, pos, 7)? as usize;
    let end = pos.checked_add(len).ok_or(HpackError::Truncated)?;
    let raw = buf.get(*pos..end).ok_or(HpackError::Truncated)?;
    *pos = end;
    if huffman {
        huffman_decode(raw, out)
    } else {
        out.extend_from_slice(raw);
        Ok(())
    }
}

/// The static table, RFC 7541 Appendix A: index 1 is `STATIC[0]`.
pub const STATIC: [(&str, &str); 61] = [
    (":authority", ""),
    (":method", "GET"),
    (":method", "POST"),
    (":path", "/"),
    (":path", "/index.html"),
    (":scheme", "http"),
    (":scheme", "https"),
    (":status", "200"),
    (":status", "204"),
    (":status", "206"),
    (":status", "304"),
    (":status", "400"),
    (":status", "404"),
    (":status", "500"),
    ("accept-charset", ""),
    ("accept-encoding", "gzip, deflate"),
    ("accept-language", ""),
    ("accept-ranges", ""),
    ("accept", ""),
    ("access-control-allow-origin", ""),
    ("age", ""),
    ("allow", ""),
    ("authorization", ""),
    ("cache-control", ""),
    ("content-disposition", ""),
    ("content-encoding", ""),
    ("content-language", ""),
    ("content-length", ""),
    ("content-location", ""),
    ("content-range", ""),
    ("content-type", ""),
    ("cookie", ""),
    ("date", ""),
    ("etag", ""),
    ("expect", ""),
    ("expires", ""),
    ("from", ""),
    ("host", ""),
    ("if-match", ""),
    ("if-modified-since", ""),
    ("if-none-match", ""),
    ("if-range", ""),
    ("if-unmodified-since", ""),
    ("last-modified", ""),
    ("link", ""),
    ("location", ""),
    ("max-forwards", ""),
    ("proxy-authenticate", ""),
    ("proxy-authorization", ""),
    ("range", ""),
    ("referer", ""),
    ("refresh", ""),
    ("retry-after", ""),
    ("server", ""),
    ("set-cookie", ""),
    ("strict-transport-security", ""),
    ("transfer-encoding", ""),
    ("user-agent", ""),
    ("vary", ""),
    ("via", ""),
    ("www-authenticate", ""),
];

/// The size the dynamic table counts for an entry (§4.1).
const fn entry_size(name: usize, value: usize) -> usize {
    name + value + 32
}

/// The decoding side of one HTTP/2 connection's header compression: the
/// dynamic table the server's encoder fills, within the limit the client
/// announced (`SETTINGS_HEADER_TABLE_SIZE`, 4,096 bytes by default).
#[derive(Debug)]
pub struct Decoder {
    /// Newest first.
    entries: VecDeque<(Vec<u8>, Vec<u8>)>,
    size: usize,
    max: usize,
    limit: usize,
}

impl Decoder {
    /// A decoder whose table may grow to `limit` bytes.
    pub fn new(limit: usize) -> Self {
        Decoder {
            entries: VecDeque::new(),
            size: 0,
            max: limit,
            limit,
        }
    }

    /// The dynamic table's size now, as §4.1 counts it.
    pub fn size(&self) -> usize {
        self.size
    }

    /// The dynamic table's entries, newest first.
    pub fn entries(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.entries.iter().map(|(n, v)| (&n[..], &v[..]))
    }

    fn evict(&mut self, room: usize) {
        while self.size + room > self.max {
            match self.entries.pop_back() {
                Some((n, v)) => self.size -= entry_size(n.len(), v.len()),
                None => break,
            }
        }
    }

    fn insert(&mut self, name: Vec<u8>, value: Vec<u8>) {
        let size = entry_size(name.len(), value.len());
        self.evict(size);
        // An entry larger than the table empties it and is not added (§4.4).
        if size <= self.max {
            self.size += size;
            self.entries.push_front((name, value));
        }
    }

    /// The name and value at `index` of the static then dynamic table.
    fn get(&self, index: u32) -> Result<(&[u8], &[u8]), HpackError> {
        let i = index as usize;
        if i == 0 {
            return Err(HpackError::Index);
        }
        if let Some((n, v)) = STATIC.get(i - 1) {
            return Ok((n.as_bytes(), v.as_bytes()));
        }
        self.entries
            .get(i - 1 - STATIC.len())
            .map(|(n, v)| (&n[..], &v[..]))
            .ok_or(HpackError::Index)
    }

    /// Decodes one whole header block (a HEADERS frame's fragment and its
    /// CONTINUATIONs), calling `field(name, value)` for each field in order.
    pub fn decode(
        &mut self,
        block: &[u8],
        mut field: impl FnMut(&[u8], &[u8]),
    ) -> Result<(), HpackError> {
        let mut pos = 0;
        let mut fields = 0usize;
        while pos < block.len() {
            let b = block[pos];
            if b & 0x80 != 0 {
                // §6.1 indexed header field
                let index = decode_int(block, &mut pos, 7)?;
                let (n, v) = self.get(index)?;
                field(n, v);
            } else if b & 0xe0 == 0x20 {
                // §6.3 dynamic table size update, only before any field
                if fields != 0 {
                    return Err(HpackError::TableSize);
                }
                let max = decode_int(block, &mut pos, 5)? as usize;
                if max > self.limit {
                    return Err(HpackError::TableSize);
                }
                self.max = max;
                self.evict(0);
                continue;
            } else {
                // §6.2 literals: with incremental indexing (01, 6-bit
                // index), without indexing (0000) or never indexed (0001),
                // 4-bit index; index 0: a new name follows
                let indexing = b & 0xc0 == 0x40;
                let index = decode_int(block, &mut pos, if indexing { 6 } else { 4 })?;
                let mut name = Vec::new();
                if index == 0 {
                    decode_str(block, &mut pos, &mut name)?;
                } else {
                    name.extend_from_slice(self.get(index)?.0);
                }
                let mut value = Vec::new();
                decode_str(block, &mut pos, &mut value)?;
                field(&name, &value);
                if indexing {
                    self.insert(name, value);
                }
            }
            fields += 1;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        let s: String = s.chars().filter(|c| !c.is_whitespace()).collect();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    /// Codes the RFC's Appendix B lists (as hex, aligned to the LSB), here
    /// rebuilt from the lengths alone.
    #[test]
    fn canonical_codes_are_the_rfcs() {
        let listed: [(usize, u32, u8); 16] = [
            (0, 0x1ff8, 13),
            (1, 0x7fffd8, 23),
            (9, 0xffffea, 24),
            (10, 0x3ffffffc, 30),
            (22, 0x3ffffffe, 30),
            (32, 0x14, 6),
            (48, 0x0, 5),
            (58, 0x5c, 7),
            (97, 0x3, 5),
            (116, 0x9, 5),
            (127, 0xffffffc, 28),
            (128, 0xfffe6, 20),
            (199, 0x1ffffec, 25),
            (249, 0xffffffe, 28),
            (255, 0x3ffffee, 26),
            (256, 0x3fffffff, 30),
        ];
        for (sym, code, len) in listed {
            assert_eq!(LENGTHS[sym], len, "length of {sym}");
            assert_eq!(HUFFMAN.codes[sym], code, "code of {sym}");
        }
        // A complete prefix code: the Kraft sum is exactly 1.
        let kraft: u64 = LENGTHS
            .iter()
            .map(|&l| 1u64 << (MAX_LEN - l as usize))
            .sum();
        assert_eq!(kraft, 1 << MAX_LEN);
    }

    /// RFC 7541 C.4: Huffman-coded strings of the request examples.
    #[test]
    fn huffman_examples() {
        for (plain, coded) in [
            ("www.example.com", "f1e3 c2e5 f23a 6ba0 ab90 f4ff"),
            ("no-cache", "a8eb 1064 9cbf"),
            ("custom-key", "25a8 49e9 5ba9 7d7f"),
            ("custom-value", "25a8 49e9 5bb8 e8b4 bf"),
        ] {
            let mut out = Vec::new();
            huffman_encode(plain.as_bytes(), &mut out);
            assert_eq!(out, hex(coded), "{plain}");
            assert_eq!(huffman_len(plain.as_bytes()), out.len());
            let mut back = Vec::new();
            huffman_decode(&out, &mut back).unwrap();
            assert_eq!(back, plain.as_bytes());
        }
    }

    #[test]
    fn huffman_rejects_bad_padding_and_eos() {
        let mut out = Vec::new();
        // '0' is 00000: three 0 bits of padding are not EOS's.
        assert_eq!(huffman_decode(&[0x00], &mut out), Err(HpackError::Huffman));
        // A whole byte of 1s is padding longer than 7 bits.
        let mut coded = Vec::new();
        huffman_encode(b"a", &mut coded);
        coded.push(0xff);
        assert_eq!(huffman_decode(&coded, &mut out), Err(HpackError::Huffman));
        // EOS itself: 30 ones.
        assert_eq!(
            huffman_decode(&[0xff, 0xff, 0xff, 0xfc], &mut out),
            Err(HpackError::Huffman)
        );
        // An empty string is fine.
        assert_eq!(huffman_decode(&[], &mut out), Ok(()));
    }

    /// RFC 7541 C.1: integers.
    #[test]
    fn integers() {
        let mut out = Vec::new();
        encode_int(10, 5, 0, &mut out);
        assert_eq!(out, [0x0a]);
        out.clear();
        encode_int(1337, 5, 0, &mut out);
        assert_eq!(out, [0x1f, 0x9a, 0x0a]);
        out.clear();
        encode_int(42, 8, 0, &mut out);
        assert_eq!(out, [0x2a]);
        let mut pos = 0;
        assert_eq!(decode_int(&[0x1f, 0x9a, 0x0a], &mut pos, 5), Ok(1337));
        assert_eq!(pos, 3);
        let mut pos = 0;
        assert_eq!(
            decode_int(&[0x1f, 0x9a], &mut pos, 5),
            Err(HpackError::Truncated)
        );
        let mut pos = 0;
        assert_eq!(
            decode_int(&[0x1f, 0xff, 0xff, 0xff, 0xff, 0x7f], &mut pos, 5),
            Err(HpackError::Integer)
        );
        let mut pos = 0;
        encode_int(u32::MAX, 4, 0, &mut out);
        let mut enc = Vec::new();
        encode_int(u32::MAX, 4, 0, &mut enc);
        assert_eq!(decode_int(&enc, &mut pos, 4), Ok(u32::MAX));
    }

    fn block(d: &mut Decoder, bytes: &str) -> Vec<(String, String)> {
        let mut fields = Vec::new();
        d.decode(&hex(bytes), |n, v| {
            fields.push((
                String::from_utf8(n.to_vec()).unwrap(),
                String::from_utf8(v.to_vec()).unwrap(),
            ))
        })
        .unwrap();
        fields
    }

    fn pairs(v: &[(&str, &str)]) -> Vec<(String, String)> {
        v.iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect()
    }

    /// RFC 7541 C.4: three requests with Huffman coding, one connection.
    #[test]
    fn requests_with_huffman() {
        let mut d = Decoder::new(4096);
        assert_eq!(
            block(&mut d, "8286 8441 8cf1 e3c2 e5f2 3a6b a0ab 90f4 ff"),
            pairs(&[
                (":method", "GET"),
                (":scheme", "http"),
                (":path", "/"),
                (":authority", "www.example.com"),
            ])
        );
        assert_eq!(d.size(), 57);
        assert_eq!(
            block(&mut d, "8286 84be 5886 a8eb 1064 9cbf"),
            pairs(&[
                (":method", "GET"),
                (":scheme", "http"),
                (":path", "/"),
                (":authority", "www.example.com"),
                ("cache-control", "no-cache"),
            ])
        );
        assert_eq!(d.size(), 110);
        assert_eq!(
            block(
                &mut d,
                "8287 85bf 4088 25a8 49e9 5ba9 7d7f 8925 a849 e95b b8e8 b4bf"
            ),
            pairs(&[
                (":method", "GET"),
                (":scheme", "https"),
                (":path", "/index.html"),
                (":authority", "www.example.com"),
                ("custom-key", "custom-value"),
            ])
        );
        assert_eq!(d.size(), 164);
        let names: Vec<&[u8]> = d.entries().map(|(n, _)| n).collect();
        assert_eq!(names, [&b"custom-key"[..], b"cache-control", b":authority"]);
    }

    /// Eviction: a 256-byte table, as RFC 7541 C.5 sets it, filled past
    /// its size; the oldest entries go first, and an entry larger than the
    /// table empties it.
    #[test]
    fn eviction() {
        let mut d = Decoder::new(4096);
        // size update to 256, then four literals with indexing, new names
        let mut b = Vec::new();
        encode_int(256, 5, 0x20, &mut b);
        for k in 0..4u8 {
            b.push(0x40);
            let name = [b'a' + k; 10];
            let value = [b'v'; 40];
            encode_int(10, 7, 0, &mut b);
            b.extend_from_slice(&name);
            encode_int(40, 7, 0, &mut b);
            b.extend_from_slice(&value);
        }
        d.decode(&b, |_, _| {}).unwrap();
        // each entry 82 bytes: three fit in 256
        assert_eq!(d.size(), 246);
        let names: Vec<u8> = d.entries().map(|(n, _)| n[0]).collect();
        assert_eq!(names, [b'd', b'c', b'b']);
        // index 62 is the newest
        let mut seen = Vec::new();
        d.decode(&[0x80 | 62], |n, _| seen.push(n[0])).unwrap();
        assert_eq!(seen, [b'd']);
        assert_eq!(d.decode(&[0x80 | 65], |_, _| {}), Err(HpackError::Index));
        // larger than the table: empties it
        let mut b = vec![0x40];
        encode_int(300, 7, 0, &mut b);
        b.extend_from_slice(&[b'x'; 300]);
        encode_int(0, 7, 0, &mut b);
        d.decode(&b, |_, _| {}).unwrap();
        assert_eq!(d.size(), 0);
    }

    #[test]
    fn table_size_updates_are_bounded_and_first() {
        let mut d = Decoder::new(4096);
        let mut b = Vec::new();
        encode_int(4097, 5, 0x20, &mut b);
        assert_eq!(d.decode(&b, |_, _| {}), Err(HpackError::TableSize));
        // after a field
        let b = [0x88, 0x20];
        assert_eq!(d.decode(&b, |_, _| {}), Err(HpackError::TableSize));
        // 0 then back to 4096, before the fields: fine
        let b = [0x20, 0x3f, 0xe1, 0x1f, 0x88];
        let mut n = 0;
        d.decode(&b, |_, _| n += 1).unwrap();
        assert_eq!(n, 1);
    }

    #[test]
    fn truncated_blocks_are_errors() {
        let full = hex("8287 85bf 4088 25a8 49e9 5ba9 7d7f 8925 a849 e95b b8e8 b4bf");
        for cut in 1..full.len() {
            let mut d = Decoder::new(4096);
            // C.4.1 first, so that index 62 (0xbe/0xbf) exists
            d.decode(
                &hex("8286 8441 8cf1 e3c2 e5f2 3a6b a0ab 90f4 ff"),
                |_, _| {},
            )
            .unwrap();
            d.decode(&hex("8286 84be 5886 a8eb 1064 9cbf"), |_, _| {})
                .unwrap();
            let r = d.decode(&full[..cut], |_, _| {});
            // a cut between two fields decodes those before it
            if r.is_ok() {
                assert!([1, 2, 3, 4].contains(&cut), "cut {cut}");
            }
        }
    }

    proptest::proptest! {
        /// Any bytes: encoded then decoded, the same bytes.
        #[test]
        fn huffman_round_trip(s in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200)) {
            let mut coded = Vec::new();
            huffman_encode(&s, &mut coded);
            proptest::prop_assert_eq!(coded.len(), huffman_len(&s));
            let mut back = Vec::new();
            huffman_decode(&coded, &mut back).unwrap();
            proptest::prop_assert_eq!(back, s);
        }

        /// Any bytes fed to the decoder: an error or fields, never a panic.
        #[test]
        fn decoder_never_panics(s in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300)) {
            let mut d = Decoder::new(4096);
            let _ = d.decode(&s, |_, _| {});
            proptest::prop_assert!(d.size() <= 4096);
        }
    }
}
