//! Test kit: the harness of the end-to-end tests, an HTTP/1.1 client and
//! test backend
//!
//! Used by the `hab-backend` binary, by the real-nginx tests under `tests/`
//! and `cli/tests/`, and by `scripts/demo.sh` (through the binary):
//!
//! - [`nginx`]: real nginx with the module in a fresh prefix, its
//!   configuration and logs; [`backend::process`]: `hab-backend`
//!   processes; [`load`]: HTTP clients and concurrent loads; [`api`]: the
//!   module's API; [`resolve`]: what the tests of servers nginx resolves
//!   share; [`skip`]: skip visibly or fail when something is missing.
//! - [`http`], [`backend`]: the HTTP/1.1 client and the backend server.
//! - [`port`], [`proc`]: free ports, bounded waits, processes.
//! - [`recorder`]: a backend in threads that records each request's
//!   arrival, answer and one header (which nginx worker sent it).
//! - [`browser`]: a headless-browser client (WebDriver through
//!   chromedriver); [`dns`]: a real DNS server (BIND's `named`, changed
//!   at run time with `nsupdate`) with a small DNS client; [`shm`]: a
//!   shared memory mapping for forked "workers".
//! - [`grpc`]: a gRPC health server (`grpc.health.v1.Health/Check`, in
//!   Debian's python3 with `python3-grpcio`), its answers set at run time
//!   and its calls recorded.
//!
//! Everything here is std (and serde_json for WebDriver and the API),
//! blocking, and talks to 127.0.0.1 only. Every read and write has a
//! timeout, so nothing here can hang a test.

pub mod api;
pub mod backend;
pub mod browser;
pub mod dns;
pub mod grpc;
pub mod http;
pub mod load;
pub mod nginx;
pub mod port;
pub mod proc;
pub mod prometheus;
pub mod recorder;
pub mod resolve;
pub mod shm;
pub mod skip;

#[cfg(test)]
mod tests;
