//! JSON shapes of the API, with NGINX Plus names where the meaning is the
//! same

use hab_core::table::{PeerView, Zone};
use hab_core::Policy;
use serde::{Deserialize, Deserializer, Serialize};

/// One server, as `GET .../servers/{id}` shows it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Server {
    /// Position in the upstream, configuration order, backups included.
    pub id: u32,
    /// The address.
    pub server: String,
    /// The `server` line's name as written.
    pub name: String,
    /// A backup server.
    pub backup: bool,
    /// Weight in force.
    pub weight: u32,
    /// Weight in the configuration.
    pub configured_weight: u32,
    /// `up`, `draining`, `down`, `unavail`.
    pub state: String,
    /// Requests in flight, all workers.
    pub active: u32,
    /// `max_conns`, 0 for unlimited.
    pub max_conns: u32,
    /// Set down (configuration or API).
    pub down: bool,
    /// Draining.
    pub drain: bool,
    /// The upstream's balancing policy (ours).
    pub policy: String,
    /// Number of the generation serving the upstream (ours).
    pub generation: u64,
}

/// One upstream, as `GET .../upstreams/{name}` shows it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct UpstreamJson {
    /// The upstream's name.
    pub name: String,
    /// The balancing policy.
    pub policy: String,
    /// Number of the generation serving.
    pub generation: u64,
    /// Every server, in configuration order.
    pub peers: Vec<Server>,
    /// Older generations still held by requests in flight (ours).
    pub retiring: Vec<Retiring>,
}

/// An older generation that requests in flight still hold.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Retiring {
    /// Its number.
    pub generation: u64,
    /// Requests in flight holding it, all workers.
    pub requests: u64,
}

/// An error body: `{"error": {"status", "code", "text"}}`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

/// What went wrong.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ErrorDetail {
    /// HTTP status.
    pub status: u16,
    /// Stable code, e.g. `BadRequest`.
    pub code: String,
    /// For people.
    pub text: String,
}

/// A `PATCH` body: any combination of the three fields, nothing else.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Patch {
    /// Drain (`true`) or stop draining.
    pub drain: Option<bool>,
    /// Set down (`true`) or up.
    pub down: Option<bool>,
    /// Absent: unchanged; `null`: back to the configured weight; a number:
    /// the override (checked by the caller).
    #[serde(default, deserialize_with = "present")]
    pub weight: Option<Option<u64>>,
}

/// Tells an absent field (`None`, by `default`) from `null` (`Some(None)`).
fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Option<u64>>, D::Error> {
    Option::<u64>::deserialize(d).map(Some)
}

/// The policy's name in the configuration.
pub fn policy_name(p: Policy) -> &'static str {
    match p {
        Policy::RoundRobin => "round_robin",
        Policy::LeastConn => "least_conn",
        Policy::P2c => "p2c",
        Policy::Ewma { .. } => "ewma",
        Policy::Random => "random",
        Policy::Hash { .. } => "hash",
    }
}

/// `(name, address)` of a peer from its identity: nginx's module writes
/// `upstream\0server\0address`; anything else is shown whole as both.
pub fn names(identity: &[u8]) -> (String, String) {
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    let mut parts = identity.splitn(3, |&b| b == 0);
    match (parts.next(), parts.next(), parts.next()) {
        (Some(_), Some(server), Some(addr)) => (text(server), text(addr)),
        _ => (text(identity), text(identity)),
    }
}

/// The JSON of one server of `zone`.
pub fn server(v: &PeerView<'_>, zone: Zone<'_>) -> Server {
    let (name, addr) = names(v.identity);
    Server {
        id: v.position,
        server: addr,
        name,
        backup: v.backup,
        weight: v.weight,
        configured_weight: v.configured_weight,
        state: v.state.name().to_owned(),
        active: v.active,
        max_conns: v.max_conns,
        down: v.down,
        drain: v.drain,
        policy: policy_name(zone.policy()).to_owned(),
        generation: zone.generation(),
    }
}

/// The JSON of one upstream at `now`, servers in configuration order.
pub fn upstream(name: &str, zone: Zone<'_>, now: u64) -> UpstreamJson {
    let mut peers: Vec<Server> = (0..zone.peers())
        .filter_map(|i| zone.view(i, now))
        .map(|v| server(&v, zone))
        .collect();
    peers.sort_by_key(|s| s.id);
    UpstreamJson {
        name: name.to_owned(),
        policy: policy_name(zone.policy()).to_owned(),
        generation: zone.generation(),
        peers,
        retiring: zone
            .generations()
            .into_iter()
            .filter(|g| !g.3 && g.2 > 0)
            .map(|g| Retiring {
                generation: g.1,
                requests: g.2,
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patch_tells_absent_from_null() {
        let p: Patch = serde_json::from_str(r#"{"drain":true}"#).unwrap();
        assert_eq!(p.weight, None);
        let p: Patch = serde_json::from_str(r#"{"weight":null}"#).unwrap();
        assert_eq!(p.weight, Some(None));
        let p: Patch = serde_json::from_str(r#"{"weight":3,"down":false}"#).unwrap();
        assert_eq!((p.weight, p.down), (Some(Some(3)), Some(false)));
        assert!(serde_json::from_str::<Patch>(r#"{"wieght":3}"#).is_err());
        assert!(serde_json::from_str::<Patch>(r#"{"weight":-1}"#).is_err());
        assert!(serde_json::from_str::<Patch>(r#"{"weight":1.5}"#).is_err());
        assert!(serde_json::from_str::<Patch>(r#"{"drain":"yes"}"#).is_err());
        assert!(serde_json::from_str::<Patch>(r#"[1]"#).is_err());
    }

    #[test]
    fn names_from_identity() {
        assert_eq!(
            names(b"app\0backend:80\x00127.0.0.1:80"),
            ("backend:80".into(), "127.0.0.1:80".into())
        );
        assert_eq!(names(b"a"), ("a".into(), "a".into()));
    }
}
