//! Upstream configuration as the caller parsed it

use crate::error::Error;

/// How `hash` maps keys to peers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HashMode {
    /// nginx's plain `hash $key`: crc32 of the key modulo the total weight.
    Plain,
    /// nginx's `hash $key consistent` (ketama): same points, same crc32.
    Consistent,
    /// Maglev lookup table.
    Maglev,
}

/// Balancing policy of an upstream, with its parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    /// Smooth weighted round robin, nginx's sequence.
    RoundRobin,
    /// Weighted least connections on global in-flight counts.
    LeastConn,
    /// Power of two choices on in-flight / weight.
    P2c,
    /// Peak-EWMA latency × (in-flight + 1), two weighted choices.
    Ewma {
        /// Decay time constant of the latency estimate, ms.
        decay_ms: u32,
    },
    /// Weighted random.
    Random,
    /// Key hashing.
    Hash {
        /// Mapping of keys to peers.
        mode: HashMode,
        /// Bounded load in percent of the mean (e.g. 125); 0 for none.
        balance_factor: u32,
        /// Maglev table size (`table_size=`); 0 for the default.
        maglev_size: u32,
    },
}

/// Default `decay=` of `ewma`, ms.
pub const DEFAULT_DECAY_MS: u32 = 10_000;

impl Policy {
    /// ABI number of the policy (without parameters).
    pub fn code(&self) -> u32 {
        match self {
            Policy::RoundRobin => 1,
            Policy::LeastConn => 2,
            Policy::P2c => 3,
            Policy::Ewma { .. } => 4,
            Policy::Random => 5,
            Policy::Hash { .. } => 6,
        }
    }

    /// Parameters as stored in the table header: `[decay_ms, hash mode,
    /// balance_factor, maglev_size]`.
    pub fn params(&self) -> [u32; 4] {
        match *self {
            Policy::Ewma { decay_ms } => [decay_ms, 0, 0, 0],
            Policy::Hash {
                mode,
                balance_factor,
                maglev_size,
            } => {
                let m = match mode {
                    HashMode::Plain => 0,
                    HashMode::Consistent => 1,
                    HashMode::Maglev => 2,
                };
                [0, m, balance_factor, maglev_size]
            }
            _ => [0; 4],
        }
    }

    /// The policy with ABI number `code` and header parameters `params`.
    #[inline]
    pub fn from_parts(code: u32, params: [u32; 4]) -> Result<Policy, Error> {
        Ok(match code {
            1 => Policy::RoundRobin,
            2 => Policy::LeastConn,
            3 => Policy::P2c,
            4 => Policy::Ewma {
                decay_ms: if params[0] == 0 {
                    DEFAULT_DECAY_MS
                } else {
                    params[0]
                },
            },
            5 => Policy::Random,
            6 => Policy::Hash {
                mode: match params[1] {
                    0 => HashMode::Plain,
                    1 => HashMode::Consistent,
                    2 => HashMode::Maglev,
                    _ => return Err(Error::InvalidArgument),
                },
                balance_factor: params[2],
                maglev_size: params[3],
            },
            _ => return Err(Error::UnknownPolicy),
        })
    }

    /// Whether the zone-wide in-flight total is kept: hashing with a
    /// bounded load (`balance_factor=`).
    #[inline]
    pub fn bounded_load(&self) -> bool {
        matches!(self, Policy::Hash { balance_factor, .. } if *balance_factor != 0)
    }

    /// Whether the policy allows `backup` servers (as nginx: not for hash
    /// and random).
    pub fn allows_backup(&self) -> bool {
        matches!(self, Policy::RoundRobin | Policy::LeastConn)
    }

    /// Whether picks need the request's key.
    pub fn needs_key(&self) -> bool {
        matches!(self, Policy::Hash { .. })
    }

    /// Whether the policy walks a smooth weighted round robin schedule
    /// (whose length grows with the weights: see
    /// [`UpstreamSpec::schedule_room`]).
    pub fn walks_schedule(&self) -> bool {
        matches!(
            self,
            Policy::RoundRobin | Policy::LeastConn | Policy::Hash { .. }
        )
    }
}

/// Schedule entries a zone keeps room for when the configuration does not
/// say (`ha_balance ... schedule_room=`): 262,144.
pub const DEFAULT_SCHEDULE_ROOM: u32 = 1 << 18;

/// Most schedule entries a zone may keep room for: the longest schedule a
/// group may have (`algo::schedule::MAX_PERIOD`), 4,194,304.
pub const MAX_SCHEDULE_ROOM: u32 = 1 << 22;

const _: () = assert!(DEFAULT_SCHEDULE_ROOM <= MAX_SCHEDULE_ROOM);

/// One `server` line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerSpec<'a> {
    /// Identity: upstream name, server string and address, as bytes.
    pub id: &'a [u8],
    /// The `server` directive's address as written (consistent hashing
    /// places points by it, as nginx does).
    pub server: &'a [u8],
    /// `weight=`, at least 1.
    pub weight: u32,
    /// `max_conns=`, 0 for unlimited.
    pub max_conns: u32,
    /// `max_fails=`, 0 to never disable the peer.
    pub max_fails: u32,
    /// `fail_timeout=` in milliseconds.
    pub fail_timeout_ms: u64,
    /// `backup`.
    pub backup: bool,
    /// `down`.
    pub down: bool,
    /// Position in the upstream in configuration order, backups included
    /// (the API's server `id`); `None`: the index in this list.
    pub position: Option<u32>,
    /// The session id the server is known by (`ha_route`), at most
    /// [`MAX_SID`] bytes; empty: nginx's, the hex MD5 of its address (see
    /// [`session_id`]).
    pub sid: &'a [u8],
}

impl<'a> PeerSpec<'a> {
    /// A peer with nginx's defaults: weight 1, max_fails 1, fail_timeout 10s.
    pub fn new(id: &'a [u8]) -> Self {
        PeerSpec {
            id,
            server: id,
            weight: 1,
            max_conns: 0,
            max_fails: 1,
            fail_timeout_ms: 10_000,
            backup: false,
            down: false,
            position: None,
            sid: b"",
        }
    }

    /// Sets the weight.
    pub fn weight(mut self, weight: u32) -> Self {
        self.weight = weight;
        self
    }
}

/// An upstream block: its policy and its peers, primaries before backups.
#[derive(Debug, Clone, Copy)]
pub struct UpstreamSpec<'a> {
    /// The balancing policy.
    pub policy: Policy,
    /// Peers: every primary before the first backup.
    pub peers: &'a [PeerSpec<'a>],
    /// Active health, slow start, outlier ejection and panic
    /// (`ha_check`, `ha_slow_start`, `ha_outlier`, `ha_panic`); all off by
    /// default.
    pub health: HealthSpec,
    /// `ha_balance ... schedule_room=`: the schedule entries (total weight
    /// / common divisor of a group) that weight changes at run time may
    /// always reach, for policies that walk a schedule; 0 for
    /// [`DEFAULT_SCHEDULE_ROOM`], at most [`MAX_SCHEDULE_ROOM`].
    pub schedule_room: u32,
    /// `ha_sticky`: the zone keeps each server's session id and every
    /// generation an index of them, so that a request bound to a server
    /// finds it in O(1).
    pub sessions: bool,
}

/// The health directives of an upstream, as the zone's root keeps them.
///
/// Plain `u32`s (`#[repr(C)]`, 64 bytes) so that the root can hold a copy
/// written once at init; times in milliseconds; 0 turns a feature off.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct HealthSpec {
    /// [`HealthSpec::CHECK`] | [`HealthSpec::MANDATORY`] |
    /// [`HealthSpec::PERSISTENT`] | [`HealthSpec::CLEAR_FAILS`].
    pub flags: u32,
    /// `ha_check interval=`: a check starts this long after the previous
    /// one did.
    pub interval_ms: u32,
    /// `jitter=`: each check is delayed by up to this much more.
    pub jitter_ms: u32,
    /// `timeout=`: a check that has not passed by then failed.
    pub timeout_ms: u32,
    /// `fails=`: consecutive failed checks that make a server unhealthy.
    pub fails: u32,
    /// `passes=`: consecutive passed checks that make it healthy again.
    pub passes: u32,
    /// `ha_slow_start`: the ramp of a returning server's weight.
    pub slow_start_ms: u32,
    /// `ha_outlier consecutive_5xx=`: 0 for off.
    pub consecutive_5xx: u32,
    /// `consecutive_errors=` (connection errors, timeouts, 502/503/504):
    /// 0 for off.
    pub consecutive_errors: u32,
    /// `base_ejection=`: the first ejection's length; the n-th lasts n
    /// times as long.
    pub base_ejection_ms: u32,
    /// `max_ejection_time=`: the longest ejection.
    pub max_ejection_ms: u32,
    /// `max_ejection=`: most servers (percent of the upstream's) ejected
    /// at once.
    pub max_ejection_percent: u32,
    /// `ha_panic`: below this percentage of healthy primaries, health is
    /// ignored; 0 for off.
    pub panic_percent: u32,
    /// `ha_queue number`: most requests waiting for a server, across all
    /// workers (docs/queue-design.md); 0 for none, at most [`MAX_QUEUE`].
    /// Not a health directive, but one of the same shape (a `u32` the
    /// root keeps, 0 for off): here, every `UpstreamSpec` literal of the
    /// workspace stays as it is. `timeout=` is the C side's alone.
    pub queue: u32,
    /// Zero.
    pub reserved: [u32; 2],
}

impl HealthSpec {
    /// `ha_check` is configured.
    pub const CHECK: u32 = 1;
    /// `mandatory`: servers start `checking` until their first check.
    pub const MANDATORY: u32 = 2;
    /// `persistent`: a server healthy before a restart (state file) starts
    /// up.
    pub const PERSISTENT: u32 = 4;
    /// `clear_fails`: a passed check clears the passive failure window.
    pub const CLEAR_FAILS: u32 = 8;

    /// Whether active checks run.
    #[inline]
    pub fn checks(&self) -> bool {
        self.flags & Self::CHECK != 0
    }

    /// Whether outlier ejection is on.
    #[inline]
    pub fn outlier(&self) -> bool {
        self.consecutive_5xx != 0 || self.consecutive_errors != 0
    }

    /// Whether anything here can take a server out of rotation (then picks
    /// consult the panic flag).
    #[inline]
    pub fn any(&self) -> bool {
        self.checks() || self.outlier() || self.slow_start_ms != 0
    }

    /// Checks the values the core relies on: thresholds >= 1 and a timeout
    /// shorter than the interval when checks run, percentages <= 100, a
    /// queue of at most [`MAX_QUEUE`].
    pub fn validate(&self) -> Result<(), Error> {
        if self.checks()
            && (self.interval_ms == 0
                || self.timeout_ms == 0
                || self.timeout_ms > self.interval_ms
                || self.fails == 0
                || self.passes == 0)
        {
            return Err(Error::InvalidArgument);
        }
        if self.flags & !(Self::CHECK | Self::MANDATORY | Self::PERSISTENT | Self::CLEAR_FAILS) != 0
            || (!self.checks() && self.flags != 0)
        {
            return Err(Error::InvalidArgument);
        }
        if self.outlier() && self.base_ejection_ms == 0 {
            return Err(Error::InvalidArgument);
        }
        if self.max_ejection_percent > 100 || self.panic_percent > 100 {
            return Err(Error::InvalidArgument);
        }
        if self.queue > MAX_QUEUE {
            return Err(Error::InvalidArgument);
        }
        Ok(())
    }
}

/// Most waiters `ha_queue number` may ask for (`nginx -t` refuses more):
/// 262,144, a ring of 524,288 cells (8 MiB).
pub const MAX_QUEUE: u32 = 262_144;

/// Longest `fail_timeout=` in ms (49 days and a bit: 32 bits).
pub const MAX_FAIL_TIMEOUT_MS: u32 = u32::MAX;

/// Most peers one upstream may have.
pub const MAX_PEERS: usize = 1 << 20;

/// Most servers an upstream may take through the API (`ha_api_max`):
/// 1,048,576.
pub const MAX_API_SERVERS: u32 = 1 << 20;

/// Most finite bounds of the latency histograms (`ha_latency_buckets`).
pub const MAX_BUCKETS: usize = 15;

/// The default bounds of the latency histograms, ms: NGINX Plus's
/// (`response_time_hist`, API version 9), 5 ms to 10 s.
pub const DEFAULT_BUCKETS_MS: [u32; 14] = [
    5, 10, 25, 50, 75, 100, 250, 500, 750, 1000, 2500, 5000, 7500, 10000,
];

/// The finite bounds of an upstream's latency histograms
/// (`ha_latency_buckets`), in ms: 1 to [`MAX_BUCKETS`] of them, strictly
/// increasing, none 0. A response of `t` ms is counted in the first bucket
/// whose bound is at least `t` (Prometheus's `le`), or above the last.
///
/// `#[repr(C)]`, 64 bytes: the zone's root keeps a copy.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Buckets {
    len: u32,
    bounds_ms: [u32; MAX_BUCKETS],
}

impl Default for Buckets {
    fn default() -> Self {
        let mut bounds_ms = [0; MAX_BUCKETS];
        bounds_ms[..DEFAULT_BUCKETS_MS.len()].copy_from_slice(&DEFAULT_BUCKETS_MS);
        Buckets {
            len: DEFAULT_BUCKETS_MS.len() as u32,
            bounds_ms,
        }
    }
}

impl Buckets {
    /// Buckets with these bounds: [`Error::InvalidArgument`] unless there
    /// are 1 to [`MAX_BUCKETS`], strictly increasing, the first above 0.
    pub fn new(bounds_ms: &[u32]) -> Result<Buckets, Error> {
        if bounds_ms.is_empty()
            || bounds_ms.len() > MAX_BUCKETS
            || bounds_ms[0] == 0
            || bounds_ms.windows(2).any(|w| w[0] >= w[1])
        {
            return Err(Error::InvalidArgument);
        }
        let mut b = Buckets {
            len: bounds_ms.len() as u32,
            bounds_ms: [0; MAX_BUCKETS],
        };
        b.bounds_ms[..bounds_ms.len()].copy_from_slice(bounds_ms);
        Ok(b)
    }

    /// The bounds, ms.
    #[inline]
    pub fn bounds(&self) -> &[u32] {
        &self.bounds_ms[..(self.len as usize).min(MAX_BUCKETS)]
    }

    /// The bucket a time of `ms` falls in: the first whose bound is at
    /// least `ms`, or `bounds().len()` above the last.
    #[inline]
    pub fn index(&self, ms: u64) -> usize {
        let b = self.bounds();
        b.iter()
            .position(|&x| ms <= u64::from(x))
            .unwrap_or(b.len())
    }
}

const _: () = assert!(core::mem::size_of::<Buckets>() == 64);

/// Longest session id a server may have: nginx's
/// `NGX_HTTP_UPSTREAM_SID_LEN`, the length of an MD5 in hex.
pub const MAX_SID: usize = 32;

/// The address part of an identity (`upstream\0server\0address`): what
/// follows its last NUL, the whole identity when it has none.
pub fn identity_address(id: &[u8]) -> &[u8] {
    match id.iter().rposition(|&b| b == 0) {
        Some(k) => &id[k + 1..],
        None => id,
    }
}

/// The session id of `p`, as nginx's `sticky` names a server: its route
/// when it has one, else the lowercase hex MD5 of its address (the text
/// nginx prints for it, e.g. `127.0.0.1:8080`), and its length.
pub fn session_id(p: &PeerSpec<'_>) -> ([u8; MAX_SID], usize) {
    let mut out = [0u8; MAX_SID];
    if p.sid.is_empty() {
        out = crate::algo::md5::hex(identity_address(p.id));
        (out, MAX_SID)
    } else {
        let n = p.sid.len().min(MAX_SID);
        out[..n].copy_from_slice(&p.sid[..n]);
        (out, n)
    }
}

/// The hash a session id is indexed by, never 0 (0 marks a server without
/// one): eight bytes per multiply, then splitmix64's finaliser; a lookup
/// hashes the cookie on every bound request (FNV-1a, a multiply per byte,
/// was a third of a bound pick). Fixed, unkeyed: every process, every
/// restart and the sessions file agree on it. Cookie values choose
/// nothing an attacker could not choose by sending another server's id
/// (they are not secrets), so a crafted collision gains nothing; the
/// index then compares the bytes.
#[inline]
pub fn sid_hash(sid: &[u8]) -> u64 {
    const K: u64 = 0x9e37_79b9_7f4a_7c15;
    let step = |h: u64, w: u64| (h ^ w).wrapping_mul(K).rotate_left(29);
    let mut h = (sid.len() as u64).wrapping_mul(K);
    let mut chunks = sid.chunks_exact(8);
    for c in &mut chunks {
        let mut w = [0u8; 8];
        w.copy_from_slice(c);
        h = step(h, u64::from_le_bytes(w));
    }
    let rest = chunks.remainder();
    if !rest.is_empty() {
        let mut w = [0u8; 8];
        w[..rest.len()].copy_from_slice(rest);
        h = step(h, u64::from_le_bytes(w));
    }
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^= h >> 31;
    h.max(1)
}

impl UpstreamSpec<'_> {
    /// Checks what the table relies on: weights >= 1, primaries first, a
    /// bounded peer count.
    pub fn validate(&self) -> Result<(), Error> {
        if self.peers.len() > MAX_PEERS {
            return Err(Error::TooLarge);
        }
        self.health.validate()?;
        if self.schedule_room > MAX_SCHEDULE_ROOM
            || (self.schedule_room != 0 && !self.policy.walks_schedule())
        {
            return Err(Error::InvalidArgument);
        }
        if let Policy::Hash {
            mode,
            balance_factor,
            maglev_size,
        } = self.policy
        {
            if balance_factor != 0 && balance_factor < 100 {
                return Err(Error::InvalidArgument);
            }
            if maglev_size != 0
                && (mode != HashMode::Maglev
                    || !crate::algo::maglev::valid_table_size(maglev_size as usize)
                    || (maglev_size as usize) < self.primaries())
            {
                return Err(Error::InvalidArgument);
            }
        }
        if !self.policy.allows_backup() && self.peers.iter().any(|p| p.backup) {
            return Err(Error::InvalidArgument);
        }
        let mut seen_backup = false;
        for p in self.peers {
            // The peer's line keeps fail_timeout in 32 bits of ms.
            if p.weight == 0
                || p.fail_timeout_ms > u64::from(MAX_FAIL_TIMEOUT_MS)
                || p.sid.len() > MAX_SID
            {
                return Err(Error::InvalidArgument);
            }
            if p.backup {
                seen_backup = true;
            } else if seen_backup {
                return Err(Error::InvalidArgument);
            }
        }
        Ok(())
    }

    /// Number of primary (non-backup) peers.
    pub fn primaries(&self) -> usize {
        self.peers.iter().take_while(|p| !p.backup).count()
    }

    /// The schedule entries the zone keeps room for: `schedule_room` or
    /// its default for a policy that walks a schedule, 0 for the others.
    pub fn schedule_room(&self) -> u32 {
        match (self.policy.walks_schedule(), self.schedule_room) {
            (false, _) => 0,
            (true, 0) => DEFAULT_SCHEDULE_ROOM,
            (true, n) => n,
        }
    }

    /// A 64-bit digest of the policy and every peer's identity and
    /// parameters (FNV-1a). Equal digests: a table may be adopted as is.
    pub fn digest(&self) -> u64 {
        let mut h = Fnv::new();
        h.write(&self.policy.code().to_le_bytes());
        for p in self.policy.params() {
            h.write(&p.to_le_bytes());
        }
        h.write(&(self.peers.len() as u64).to_le_bytes());
        for p in self.peers {
            h.write(&(p.id.len() as u64).to_le_bytes());
            h.write(p.id);
            h.write(&(p.server.len() as u64).to_le_bytes());
            h.write(p.server);
            h.write(&p.weight.to_le_bytes());
            h.write(&p.max_conns.to_le_bytes());
            h.write(&p.max_fails.to_le_bytes());
            h.write(&p.fail_timeout_ms.to_le_bytes());
            h.write(&[p.backup as u8, p.down as u8]);
            h.write(&(p.sid.len() as u64).to_le_bytes());
            h.write(p.sid);
        }
        let hs = &self.health;
        for v in [
            hs.flags,
            hs.interval_ms,
            hs.jitter_ms,
            hs.timeout_ms,
            hs.fails,
            hs.passes,
            hs.slow_start_ms,
            hs.consecutive_5xx,
            hs.consecutive_errors,
            hs.base_ejection_ms,
            hs.max_ejection_ms,
            hs.max_ejection_percent,
            hs.panic_percent,
        ] {
            h.write(&v.to_le_bytes());
        }
        h.write(&self.schedule_room().to_le_bytes());
        h.write(&[self.sessions as u8]);
        // Only when there is one: an upstream without a queue keeps the
        // digest (and the zone name) it had before queues existed.
        if hs.queue != 0 {
            h.write(b"queue");
            h.write(&hs.queue.to_le_bytes());
        }
        h.finish()
    }

    /// [`UpstreamSpec::digest`] of a zone of `capacity` peer slots: a
    /// dynamic zone's (more slots than peers) has the capacity mixed in,
    /// the FNV-1a continued over its bytes; a static one's is the digest.
    pub fn digest_with_capacity(&self, capacity: usize) -> u64 {
        let digest = self.digest();
        if capacity <= self.peers.len() {
            return digest;
        }
        let mut h = Fnv(digest);
        h.write(&(capacity as u64).to_le_bytes());
        h.finish()
    }

    /// [`UpstreamSpec::digest_with_capacity`] of a zone with room for
    /// `api_max` servers added through the API (`ha_api_max`): mixed in
    /// when not 0, so that a zone without it keeps its digest.
    pub fn digest_with_api(&self, capacity: usize, api_max: u32) -> u64 {
        let digest = self.digest_with_capacity(capacity);
        if api_max == 0 {
            return digest;
        }
        let mut h = Fnv(digest);
        h.write(b"api");
        h.write(&api_max.to_le_bytes());
        h.finish()
    }
}

impl UpstreamSpec<'_> {
    /// [`UpstreamSpec::digest_with_api`] of a zone whose latency
    /// histograms have `buckets`: mixed in unless they are the default,
    /// so that a zone without `ha_latency_buckets` keeps its digest.
    pub fn digest_with_room(&self, capacity: usize, api_max: u32, buckets: &Buckets) -> u64 {
        let digest = self.digest_with_api(capacity, api_max);
        if *buckets == Buckets::default() {
            return digest;
        }
        let mut h = Fnv(digest);
        h.write(b"buckets");
        for b in buckets.bounds() {
            h.write(&b.to_le_bytes());
        }
        h.finish()
    }
}

/// FNV-1a, 64 bit: stable across builds and platforms, unlike `DefaultHasher`.
#[derive(Debug)]
pub(crate) struct Fnv(u64);

impl Fnv {
    pub(crate) fn new() -> Self {
        Fnv(0xcbf2_9ce4_8422_2325)
    }

    pub(crate) fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 ^= u64::from(b);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }

    pub(crate) fn finish(&self) -> u64 {
        self.0
    }
}

/// The FNV-1a hash of one peer identity.
pub fn identity_hash(id: &[u8]) -> u64 {
    let mut h = Fnv::new();
    h.write(id);
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dynamic_zones_digest_tells_its_capacity() {
        let peers = [PeerSpec::new(b"a"), PeerSpec::new(b"b")];
        let spec = UpstreamSpec {
            policy: Policy::RoundRobin,
            peers: &peers,
            health: HealthSpec::default(),
            schedule_room: 0,
            sessions: false,
        };
        assert_eq!(spec.digest_with_capacity(0), spec.digest());
        assert_eq!(spec.digest_with_capacity(2), spec.digest());
        let (a, b) = (spec.digest_with_capacity(3), spec.digest_with_capacity(4));
        assert!(a != spec.digest() && b != spec.digest() && a != b);
        // FNV-1a continued over the capacity's bytes, as before it moved
        // here from the C ABI's crate (zone names keep their digest).
        let old = 3u64.to_le_bytes().iter().fold(spec.digest(), |h, &b| {
            (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
        });
        assert_eq!(a, old);
    }
}
