//! Errors of the core

use core::fmt;

/// Why a core operation could not be carried out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Error {
    /// No peer is eligible for this attempt.
    Busy,
    /// An argument is out of range (weight 0, unknown outcome, ...).
    InvalidArgument,
    /// The memory region is smaller than the table needs, or misaligned.
    NoSpace,
    /// The memory region does not hold a table built for this configuration.
    BadLayout,
    /// The policy number is unknown.
    UnknownPolicy,
    /// Too many peers, or a total weight too large for the schedule.
    TooLarge,
    /// A new generation would fit, but older ones still serve requests in
    /// flight and hold the room: retry once they finish.
    Pinned,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Error::Busy => "no eligible peer",
            Error::InvalidArgument => "invalid argument",
            Error::NoSpace => "memory region too small or misaligned",
            Error::BadLayout => "memory region holds no matching table",
            Error::UnknownPolicy => "unknown balancing policy",
            Error::TooLarge => "too many peers or total weight too large",
            Error::Pinned => "older table generations still serve requests in flight",
        })
    }
}

impl std::error::Error for Error {}
