//! A response body built in bounded chunks
//!
//! Large answers (an upstream of 10,000 servers renders megabytes of JSON
//! or metrics) are written into a list of chunks of at most [`CHUNK`]
//! bytes rather than one buffer that doubles as it grows: no single large
//! allocation, no copy of everything written so far on each growth, and
//! nginx sends the chunks as they are, one buffer each.

use std::io;

/// Bytes per chunk.
pub const CHUNK: usize = 64 * 1024;

/// A body: chunks in order, each at most [`CHUNK`] bytes.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Body {
    chunks: Vec<Vec<u8>>,
    len: usize,
}

impl Body {
    /// An empty body.
    pub fn new() -> Body {
        Body::default()
    }

    /// Total bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing was written.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The chunks, in order.
    pub fn chunks(&self) -> &[Vec<u8>] {
        &self.chunks
    }

    /// Every byte in one vector (tests, small bodies).
    pub fn to_vec(&self) -> Vec<u8> {
        self.chunks.concat()
    }

    /// Appends `bytes`.
    pub fn push(&mut self, mut bytes: &[u8]) {
        self.len += bytes.len();
        while !bytes.is_empty() {
            let room = match self.chunks.last() {
                Some(c) if c.len() < CHUNK => CHUNK - c.len(),
                _ => {
                    self.chunks
                        .push(Vec::with_capacity(CHUNK.min(bytes.len().max(256))));
                    CHUNK
                }
            };
            let (now, rest) = bytes.split_at(room.min(bytes.len()));
            let last = self.chunks.last_mut().expect("a chunk was just ensured");
            if last.capacity() - last.len() < now.len() {
                // Grow small first chunks geometrically, never past CHUNK.
                let want = (last.len() + now.len()).max(2 * last.capacity()).min(CHUNK);
                last.reserve_exact(want - last.len());
            }
            last.extend_from_slice(now);
            bytes = rest;
        }
    }
}

impl Body {
    /// Lets `write` append at most `room` bytes (at most [`CHUNK`]) to the
    /// last chunk directly, with no intermediate buffer; the chunk is a
    /// fresh one when the last has less room left.
    #[inline]
    pub fn append_with(&mut self, room: usize, write: impl FnOnce(&mut Vec<u8>)) {
        let room = room.min(CHUNK);
        if self
            .chunks
            .last()
            .is_none_or(|c| c.capacity() - c.len() < room || c.len() + room > CHUNK)
        {
            self.chunks.push(Vec::with_capacity(CHUNK));
        }
        let last = self.chunks.last_mut().expect("a chunk was just ensured");
        let before = last.len();
        write(last);
        debug_assert!(
            last.len() - before <= room,
            "append_with wrote past its room"
        );
        self.len += last.len() - before;
    }
}

impl From<Vec<u8>> for Body {
    fn from(v: Vec<u8>) -> Body {
        let mut b = Body::new();
        b.push(&v);
        b
    }
}

impl io::Write for Body {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.push(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_are_bounded_and_keep_every_byte() {
        let mut b = Body::new();
        let mut want = Vec::new();
        for k in 0..5000u32 {
            let piece = vec![(k % 251) as u8; (k as usize * 37) % 300];
            b.push(&piece);
            want.extend_from_slice(&piece);
        }
        b.push(&vec![7u8; 3 * CHUNK + 5]);
        want.extend_from_slice(&vec![7u8; 3 * CHUNK + 5]);
        assert_eq!(b.len(), want.len());
        assert_eq!(b.to_vec(), want);
        assert!(b.chunks().iter().all(|c| !c.is_empty() && c.len() <= CHUNK));
        assert!(b.chunks().iter().all(|c| c.capacity() <= CHUNK));
        assert!(Body::new().chunks().is_empty());
    }

    #[test]
    fn appends_in_place_stay_bounded() {
        let mut b = Body::new();
        let mut want = Vec::new();
        for k in 0..20_000u32 {
            let line = format!("sample_{k} {}\n", k * 7);
            b.append_with(64, |v| v.extend_from_slice(line.as_bytes()));
            want.extend_from_slice(line.as_bytes());
            if k % 1000 == 0 {
                b.push(b"# a pushed line\n");
                want.extend_from_slice(b"# a pushed line\n");
            }
        }
        assert_eq!(b.len(), want.len());
        assert_eq!(b.to_vec(), want);
        assert!(b.chunks().iter().all(|c| !c.is_empty() && c.len() <= CHUNK));
    }
}
