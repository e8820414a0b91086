//! Process-local regions for tests and benches
//!
//! nginx hands the core shared memory; tests and benches use these owned,
//! suitably aligned buffers instead. Not used on any nginx path.

use crate::attempt::{self, Attempt};
use crate::error::Error;
use crate::spec::UpstreamSpec;
use crate::table::{self, Table};

#[repr(C, align(64))]
#[derive(Clone, Copy)]
struct Line([u8; 64]);

/// A zeroed, 64-byte aligned memory region.
pub struct Region {
    lines: Box<[Line]>,
}

impl core::fmt::Debug for Region {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "Region({} bytes)", self.lines.len() * 64)
    }
}

impl Region {
    /// A region of at least `len` bytes.
    pub fn new(len: usize) -> Region {
        Region {
            lines: vec![Line([0; 64]); len.div_ceil(64)].into_boxed_slice(),
        }
    }

    /// The bytes, read-only.
    pub fn bytes(&self) -> &[u8] {
        // SAFETY: `Line` is 64 plain bytes without padding; the boxed slice
        // is one allocation of `len * 64` bytes.
        unsafe { core::slice::from_raw_parts(self.lines.as_ptr().cast(), self.lines.len() * 64) }
    }

    /// The bytes, writable.
    pub fn bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `bytes`, with unique access through `&mut self`.
        unsafe {
            core::slice::from_raw_parts_mut(self.lines.as_mut_ptr().cast(), self.lines.len() * 64)
        }
    }
}

/// A table in its own process-local region.
#[derive(Debug)]
pub struct OwnedTable {
    region: Region,
}

impl OwnedTable {
    /// Builds a table for `spec`.
    pub fn new(spec: &UpstreamSpec<'_>) -> Result<OwnedTable, Error> {
        let mut region = Region::new(table::table_size(spec)?);
        Table::init(spec, region.bytes_mut())?;
        Ok(OwnedTable { region })
    }

    /// The table.
    pub fn table(&self) -> Table<'_> {
        // SAFETY: `region` holds a table built by `Table::init` in `new`,
        // alive as long as `self`; only atomics are written afterwards.
        unsafe { Table::from_ptr(self.region.bytes().as_ptr().cast_mut()) }
    }
}

/// Per-request state in its own buffer, for tests.
#[derive(Debug)]
pub struct OwnedAttempt {
    words: Box<[u64]>,
}

impl OwnedAttempt {
    /// Fresh attempt state for `table`.
    pub fn new(table: Table<'_>, now_ms: u64) -> OwnedAttempt {
        let mut words = vec![0u64; attempt::words(table)].into_boxed_slice();
        Attempt::init(&mut words, now_ms);
        OwnedAttempt { words }
    }

    /// The attempt.
    pub fn attempt(&mut self) -> Attempt<'_> {
        Attempt::from_words(&mut self.words)
    }
}
