//! ha-balancer's operator API: routing, JSON and the state file
//!
//! The nginx module's `ha_api` content handler hands every request here
//! with the upstreams it knows (name, zone, and the table of learnt
//! sessions of an `ha_sticky learn` upstream); this crate routes it,
//! parses the body with serde_json (never by hand), applies a change to
//! the zone and renders the answer in NGINX Plus API names (see
//! `docs/api.md`). Nothing in the request is trusted: ids are parsed and
//! looked up, never used as indices; bodies are size-capped by the caller
//! and parsed into a closed set of fields.
//!
//! The state file (`ha_state_file`) keeps the admin state (down, drain,
//! weight override) of every server across a restart or a binary upgrade:
//! [`state`]; the sessions file beside it keeps learnt sessions across a
//! restart: [`sessions`].

pub mod body;
mod change;
pub mod json;
pub mod metrics;
pub mod page;
pub mod plus;
pub mod request;
pub mod route;
pub mod sessions;
pub mod state;
pub mod upstream;

pub use body::Body;
pub use route::{handle, ContentType, Method, Request, Response, Upstream};
