//! Test kit: an HTTP/1.1 client and test backend for end-to-end tests
//!
//! Used by the `hab-backend` binary, by the real-nginx tests under `tests/`
//! (through `tests/common`) and by `scripts/demo.sh` (through the binary).
//! Also a headless-browser client ([`browser`]: WebDriver through
//! chromedriver), and a real DNS server ([`dns`]: BIND's `named`, changed
//! at run time with `nsupdate`) with a small DNS client, and a shared
//! memory mapping for forked "workers" ([`shm`]).
//! Everything here is std (and serde_json for WebDriver), blocking, and
//! talks to 127.0.0.1 only.
//! Every read and write has a timeout, so nothing here can hang a test.

pub mod backend;
pub mod browser;
pub mod dns;
pub mod http;
pub mod shm;
pub mod skip;

#[cfg(test)]
mod tests;
