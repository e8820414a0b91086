//! Applying an admin change to one server, its refusals and its log line
//! (shared by our paths and the NGINX Plus API's).

use hab_core::algo::schedule::MAX_PERIOD;
use hab_core::write::membership::SlotMark;
use hab_core::write::{PeerView, Refusal, ServerChange};
use hab_core::Error;

use crate::json;
use crate::request::{not_found, refuse, Request, Response};
use crate::upstream::Upstream;

/// A server's admin state, as a change is logged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Admin {
    down: bool,
    drain: bool,
    weight: u32,
    weight_override: bool,
}

impl Admin {
    /// Server `i`'s admin state now, before a change.
    pub(crate) fn read(u: &Upstream<'_>, i: usize, now_ms: u64) -> Option<Admin> {
        u.zone.view(i, now_ms).map(|v| Admin::of(&v))
    }

    /// The `notice` line for the change from `self` to server `i`'s state
    /// now.
    pub(crate) fn notice(&self, u: &Upstream<'_>, i: usize, now_ms: u64) -> Option<String> {
        let a = u.zone.view(i, now_ms)?;
        let (name, addr) = json::names(a.identity);
        let name = if name == addr {
            String::new()
        } else {
            format!(" ({name})")
        };
        Some(format!(
            "upstream \"{}\" server {addr}{name} id {}: {}",
            u.name,
            a.position,
            self.changes(&Admin::of(&a))
        ))
    }

    fn of(v: &PeerView<'_>) -> Admin {
        Admin {
            down: v.admin_down,
            drain: v.drain,
            weight: v.weight,
            weight_override: v.weight_override.is_some(),
        }
    }

    /// What changed from `self` to `after`, e.g. `drain false -> true,
    /// weight 3 -> 5`; "no change" when nothing did.
    fn changes(&self, after: &Admin) -> String {
        let mut parts = Vec::new();
        if self.down != after.down {
            parts.push(format!("down {} -> {}", self.down, after.down));
        }
        if self.drain != after.drain {
            parts.push(format!("drain {} -> {}", self.drain, after.drain));
        }
        if self.weight != after.weight || self.weight_override != after.weight_override {
            let conf = |o: bool| if o { "" } else { " (configured)" };
            parts.push(format!(
                "weight {}{} -> {}{}",
                self.weight,
                conf(self.weight_override),
                after.weight,
                conf(after.weight_override)
            ));
        }
        if parts.is_empty() {
            "no change".to_owned()
        } else {
            parts.join(", ")
        }
    }
}
/// Applies `change` to server `i` of `u` (seen as `mark`): `Ok(true)` when
/// applied, else the refusal.
pub(crate) fn apply(
    req: &Request<'_>,
    u: &Upstream<'_>,
    i: usize,
    mark: SlotMark,
    change: ServerChange,
    alive: impl Fn(u64) -> bool,
) -> Result<bool, Response> {
    let zone = u.zone;
    match zone.change_server(i, mark, change, req.now_ms, req.owner, alive) {
        Ok(()) => Ok(true),
        Err(Refusal::Gone) => Err(not_found("server not found")),
        Err(Refusal::ConfiguredDown) => Err(refuse(
            409,
            "ConfiguredDown",
            format!(
                "server {} of upstream \"{}\" is \"down\" in the configuration; \
                 the API cannot bring it up (remove \"down\" and reload)",
                String::from_utf8_lossy(zone.server(i)),
                u.name
            ),
        )),
        Err(Refusal::InvalidWeight) => Err(refuse(400, "BadRequest", "invalid \"weight\"")),
        Err(Refusal::Publish { error, entries }) => Err(publish_refusal(
            u.name,
            error,
            entries,
            zone.schedule_room(),
        )),
    }
}

/// Entries of the smooth round robin schedule of server `i`'s group
/// (primaries or backups) with the weights asked for (overrides staged),
/// for a policy that walks one; `None` for the others.
pub(crate) fn publish_refusal(
    upstream: &str,
    e: Error,
    entries: Option<u64>,
    room: usize,
) -> Response {
    match e {
        Error::Busy => refuse(
            409,
            "Busy",
            format!("another change of upstream \"{upstream}\" is being applied; retry"),
        ),
        Error::Pinned => refuse(
            409,
            "Busy",
            format!(
                "older table generations of upstream \"{upstream}\" still serve \
                 requests in flight; retry shortly"
            ),
        ),
        Error::NoSpace | Error::TooLarge => {
            let why = match entries {
                Some(n) => format!(
                    "its smooth round robin schedule would have {n} entries (total \
                     weight / common divisor of the group); room is kept for {room} \
                     (ha_balance ... schedule_room=), and never more than {MAX_PERIOD}"
                ),
                None => e.to_string(),
            };
            let text = format!(
                "the new generation of upstream \"{upstream}\" does not fit in its \
                 shared memory zone: {why}; the current generation keeps serving"
            );
            Response {
                log: Some(text.clone()),
                ..refuse(507, "NoSpace", text)
            }
        }
        e => {
            let text = format!("cannot change upstream \"{upstream}\": {e}");
            Response {
                log: Some(text.clone()),
                ..refuse(500, "Internal", text)
            }
        }
    }
}
