//! Upstream configuration as the caller parsed it

use crate::error::Error;

/// Balancing policy of an upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum Policy {
    /// Smooth weighted round robin, nginx's sequence.
    RoundRobin = 1,
    /// Weighted least connections on global in-flight counts.
    LeastConn = 2,
}

impl Policy {
    /// The policy with ABI number `n`.
    pub fn from_u32(n: u32) -> Result<Policy, Error> {
        match n {
            1 => Ok(Policy::RoundRobin),
            2 => Ok(Policy::LeastConn),
            _ => Err(Error::UnknownPolicy),
        }
    }
}

/// One `server` line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerSpec<'a> {
    /// Identity: upstream name, server string and address, as bytes.
    pub id: &'a [u8],
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
}

impl<'a> PeerSpec<'a> {
    /// A peer with nginx's defaults: weight 1, max_fails 1, fail_timeout 10s.
    pub fn new(id: &'a [u8]) -> Self {
        PeerSpec {
            id,
            weight: 1,
            max_conns: 0,
            max_fails: 1,
            fail_timeout_ms: 10_000,
            backup: false,
            down: false,
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
}

/// Most peers one upstream may have.
pub const MAX_PEERS: usize = 1 << 20;

impl UpstreamSpec<'_> {
    /// Checks what the table relies on: weights >= 1, primaries first, a
    /// bounded peer count.
    pub fn validate(&self) -> Result<(), Error> {
        if self.peers.len() > MAX_PEERS {
            return Err(Error::TooLarge);
        }
        let mut seen_backup = false;
        for p in self.peers {
            if p.weight == 0 {
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

    /// A 64-bit digest of the policy and every peer's identity and
    /// parameters (FNV-1a). Equal digests: a table may be adopted as is.
    pub fn digest(&self) -> u64 {
        let mut h = Fnv::new();
        h.write(&(self.policy as u32).to_le_bytes());
        h.write(&(self.peers.len() as u64).to_le_bytes());
        for p in self.peers {
            h.write(&(p.id.len() as u64).to_le_bytes());
            h.write(p.id);
            h.write(&p.weight.to_le_bytes());
            h.write(&p.max_conns.to_le_bytes());
            h.write(&p.max_fails.to_le_bytes());
            h.write(&p.fail_timeout_ms.to_le_bytes());
            h.write(&[p.backup as u8, p.down as u8]);
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
