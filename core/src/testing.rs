//! Process-local regions for tests and benches
//!
//! nginx hands the core shared memory; tests and benches use these owned,
//! suitably aligned allocations instead. Not used on any nginx path.
//!
//! The region is reached only through the raw pointer of its allocation
//! (never through a reference to its bytes), as shared memory is: the
//! zone's atomics and a builder's writes then never alias a Rust
//! reference.

use std::alloc::{alloc_zeroed, dealloc, Layout};
use std::ptr::NonNull;

use crate::attempt::{self, Attempt};
use crate::error::Error;
use crate::layout::pin::Pin;
use crate::layout::{Table, Zone};
use crate::request::{Outcome, Pick, Report};
use crate::spec::UpstreamSpec;
use crate::write;

/// A zeroed, 64-byte aligned memory region.
pub struct Region {
    ptr: NonNull<u8>,
    layout: Layout,
}

impl core::fmt::Debug for Region {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "Region({} bytes)", self.layout.size())
    }
}

impl Region {
    /// A region of at least `len` bytes (at least 64).
    pub fn new(len: usize) -> Region {
        let layout = Layout::from_size_align(len.max(1).div_ceil(64) * 64, 64)
            .expect("region size overflows");
        // SAFETY: the layout has a non-zero size.
        let ptr = unsafe { alloc_zeroed(layout) };
        let ptr = NonNull::new(ptr).unwrap_or_else(|| std::alloc::handle_alloc_error(layout));
        Region { ptr, layout }
    }

    /// Start of the region.
    pub fn as_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    /// Bytes in the region.
    pub fn len(&self) -> usize {
        self.layout.size()
    }

    /// Whether the region is empty (never: at least 64 bytes).
    pub fn is_empty(&self) -> bool {
        false
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this layout, freed once.
        unsafe { dealloc(self.ptr.as_ptr(), self.layout) }
    }
}

// SAFETY: the region is plain memory; what is shared through it is
// synchronised by the zone's atomics, as between processes.
unsafe impl Send for Region {}
// SAFETY: as above.
unsafe impl Sync for Region {}

/// A zone in its own process-local region.
#[derive(Debug)]
pub struct OwnedTable {
    region: Region,
}

impl OwnedTable {
    /// Builds a zone for `spec` (generation 1 published).
    pub fn new(spec: &UpstreamSpec<'_>) -> Result<OwnedTable, Error> {
        let size = write::zone_size(spec)?;
        let region = Region::new(size);
        // SAFETY: the region is ours, `size` bytes, alive as long as `self`.
        unsafe { Zone::init(spec, region.as_ptr(), region.len()) }?;
        Ok(OwnedTable { region })
    }

    /// Builds a zone for `spec` with `capacity` peer slots
    /// ([`Zone::init_with`]).
    pub fn with_capacity(spec: &UpstreamSpec<'_>, capacity: usize) -> Result<OwnedTable, Error> {
        let size = write::zone_size_with(spec, capacity)?;
        let region = Region::new(size);
        // SAFETY: the region is ours, `size` bytes, alive as long as `self`.
        unsafe { Zone::init_with(spec, capacity, region.as_ptr(), region.len()) }?;
        Ok(OwnedTable { region })
    }

    /// Builds a zone for `spec` with `capacity` peer slots and room for
    /// `api_max` servers added through the API ([`Zone::init_api`]).
    pub fn with_api(
        spec: &UpstreamSpec<'_>,
        capacity: usize,
        api_max: u32,
    ) -> Result<OwnedTable, Error> {
        let size = write::zone_size_with(spec, capacity)?;
        let region = Region::new(size);
        // SAFETY: the region is ours, `size` bytes, alive as long as `self`.
        unsafe { Zone::init_api(spec, capacity, api_max, region.as_ptr(), region.len()) }?;
        Ok(OwnedTable { region })
    }

    /// Builds a zone for `spec` with `room` ([`Zone::init_room`]).
    pub fn with_room(spec: &UpstreamSpec<'_>, room: &write::Room) -> Result<OwnedTable, Error> {
        let size = write::zone_size_with(spec, room.capacity)?;
        let region = Region::new(size);
        // SAFETY: the region is ours, `size` bytes, alive as long as `self`.
        unsafe { Zone::init_room(spec, room, region.as_ptr(), region.len()) }?;
        Ok(OwnedTable { region })
    }

    /// The zone.
    pub fn zone(&self) -> Zone<'_> {
        // SAFETY: `region` holds a zone built by `Zone::init` in `new`,
        // alive as long as `self`.
        unsafe { Zone::from_ptr(self.region.as_ptr()) }
    }

    /// The generation serving now.
    pub fn table(&self) -> Table<'_> {
        self.zone().serving()
    }
}

/// Something with a zone: a zone, or one of its generations.
pub trait AsZone<'a> {
    /// The zone.
    fn as_zone(&self) -> Zone<'a>;
}

impl<'a> AsZone<'a> for Zone<'a> {
    fn as_zone(&self) -> Zone<'a> {
        *self
    }
}

impl<'a> AsZone<'a> for Table<'a> {
    fn as_zone(&self) -> Zone<'a> {
        self.zone()
    }
}

/// One request's state in its own buffer, pinned to the generation that
/// served when it was made; the pin is dropped on drop.
#[derive(Debug)]
pub struct OwnedAttempt<'a> {
    zone: Zone<'a>,
    words: Box<[u64]>,
}

impl<'a> OwnedAttempt<'a> {
    /// A fresh request on `zone` (or a generation's zone), without a
    /// ledger slot.
    pub fn new(zone: impl AsZone<'a>, now_ms: u64) -> OwnedAttempt<'a> {
        Self::with_slot(zone, now_ms, None)
    }

    /// A fresh request of the worker owning ledger slot `slot`.
    pub fn with_slot(zone: impl AsZone<'a>, now_ms: u64, slot: Option<u32>) -> OwnedAttempt<'a> {
        let zone = zone.as_zone();
        let mut words = vec![0u64; attempt::words(zone.peers())].into_boxed_slice();
        let mut a = Attempt::init(&mut words, now_ms);
        a.set_slot(slot);
        zone.begin(&mut a).expect("pin the serving generation");
        OwnedAttempt { zone, words }
    }

    /// The attempt.
    pub fn attempt(&mut self) -> Attempt<'_> {
        Attempt::from_words(&mut self.words)
    }

    /// The pinned generation.
    pub fn pin(&self) -> Option<Pin> {
        let mut w = self.words.clone();
        Attempt::from_words(&mut w).pin()
    }

    /// Picks a peer for the next try ([`Zone::get_keyed`], empty key).
    pub fn pick(&mut self, now: u64) -> Result<Pick, Error> {
        self.pick_keyed(&[], now)
    }

    /// Picks a peer for the next try with a hash key.
    pub fn pick_keyed(&mut self, key: &[u8], now: u64) -> Result<Pick, Error> {
        let zone = self.zone;
        zone.get_keyed(&mut self.attempt(), key, now)
    }

    /// Picks a peer for the next try of a request bound as `binding`
    /// says ([`Zone::get_bound`]).
    pub fn pick_bound(&mut self, binding: crate::Binding<'_>, now: u64) -> Result<Pick, Error> {
        let zone = self.zone;
        zone.get_bound(&mut self.attempt(), &[], binding, now)
    }

    /// Ends the try in progress ([`Zone::free`]).
    pub fn release(&mut self, outcome: Outcome, now: u64) -> Result<Report, Error> {
        let zone = self.zone;
        zone.free(&mut self.attempt(), outcome, now)
    }

    /// Ends the try in progress with what is known of it
    /// ([`Zone::free_with`]).
    pub fn release_with(
        &mut self,
        outcome: Outcome,
        info: &crate::layout::stats::TryInfo,
        now: u64,
    ) -> Result<Report, Error> {
        let zone = self.zone;
        zone.free_with(&mut self.attempt(), outcome, info, now)
    }

    /// Ends the request ([`Zone::end`]).
    pub fn end(&mut self) {
        let zone = self.zone;
        zone.end(&mut self.attempt());
    }
}

impl Drop for OwnedAttempt<'_> {
    fn drop(&mut self) {
        self.end();
    }
}
