//! Scheduling policy names: parsing, printing and what each one means.

use std::fmt;
use std::str::FromStr;

use crate::dispatch::Pick;

/// Environment variable that selects the policy, like Node's `NODE_CLUSTER_SCHED_POLICY`.
///
/// Read it with [`from_env_value`]; this crate never touches the environment itself.
pub const ENV_VAR: &str = "HERD_SCHED_POLICY";

/// Accepted spellings that are not a policy's canonical [`Policy::name`].
///
/// The error message of [`ParsePolicyError`] is generated from this table and [`Policy::ALL`].
const ALIASES: &[(&str, Policy)] = &[("shared", Policy::Shared)];

/// How incoming connections on a listening handle are spread over the workers.
///
/// Two policies let the kernel pick the worker ([`Shared`](Policy::Shared),
/// [`ReusePort`](Policy::ReusePort)); two make the primary accept every connection and hand
/// its fd to a worker ([`RoundRobin`](Policy::RoundRobin),
/// [`LeastConnections`](Policy::LeastConnections)), driven by a [`Dispatcher`](crate::Dispatcher).
///
/// | name | variant | who accepts |
/// | --- | --- | --- |
/// | `none` (alias `shared`) | [`Shared`](Policy::Shared) | every worker, on one shared socket |
/// | `rr` | [`RoundRobin`](Policy::RoundRobin) | the primary, then hands off |
/// | `least-conn` | [`LeastConnections`](Policy::LeastConnections) | the primary, then hands off |
/// | `reuseport` | [`ReusePort`](Policy::ReusePort) | every worker, on its own `SO_REUSEPORT` socket |
///
/// ```
/// use herd_sched::Policy;
///
/// let p: Policy = "least-conn".parse()?;
/// assert_eq!(p, Policy::LeastConnections);
/// assert_eq!(p.to_string(), "least-conn");
/// assert!(p.is_handoff());
/// assert_eq!("shared".parse::<Policy>()?, Policy::Shared);
/// assert_eq!(Policy::default(), Policy::RoundRobin);
/// # Ok::<(), herd_sched::ParsePolicyError>(())
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Policy {
    /// `none`: the primary binds one socket and sends a duplicate of it to every worker; all
    /// workers `accept(2)` on it and the kernel decides who wins each connection.
    ///
    /// Good for: no extra hop per connection, so the lowest latency and no load on the
    /// primary; the policy to use for UDP.
    ///
    /// Limits: the kernel does not balance. On Linux, workers blocked in `epoll_wait` are
    /// woken in an order that favours a few of them, so under light load two or three
    /// processes take most connections; every waiting worker may also be woken for one
    /// connection (thundering herd).
    Shared,
    /// `rr`: the primary accepts each connection and hands it to the next free worker in
    /// rotation (Node's default and ours).
    ///
    /// Good for: an even spread when connections cost about the same, independent of how
    /// the kernel wakes processes; a refused connection is retried on another worker.
    ///
    /// Limits: every connection costs the primary an `accept(2)` and an fd hand-off over the
    /// channel, so the primary can become the bottleneck at very high connection rates; the
    /// rotation counts connections, not how long they live or how much work they bring.
    #[default]
    RoundRobin,
    /// `least-conn`: like [`RoundRobin`](Policy::RoundRobin), but each connection goes to the
    /// worker with the fewest open plus in-flight connections (ties in rotation order).
    ///
    /// Good for: long-lived connections of uneven length (WebSockets, streaming), where a
    /// plain rotation piles connections on workers that still hold old ones; a newly joined
    /// worker receives new connections until it has caught up.
    ///
    /// Limits: the same primary hop as `rr`; the counts are only as good as the workers'
    /// close reports, and an open connection says nothing about how busy it keeps the worker.
    LeastConnections,
    /// `reuseport`: every worker listens on its own socket bound with `SO_REUSEPORT` to the
    /// same address, and the kernel hashes each connection to one of the sockets.
    ///
    /// Good for: no primary hop and no shared accept queue, so it scales with cores; each
    /// socket has its own backlog. Sockets are held in numbered [`Slots`](crate::Slots) so a
    /// replacement worker inherits a dead worker's socket and the connections queued on it.
    ///
    /// Limits: the spread is a hash of the connection's addresses, not a measure of load, and
    /// a busy worker keeps receiving its share; connections queued on a socket that closes
    /// are reset; the balancing behaviour is Linux's (other systems differ, e.g. FreeBSD
    /// needs `SO_REUSEPORT_LB`).
    ReusePort,
}

impl Policy {
    /// Every policy, in the order their names are listed in messages.
    pub const ALL: [Policy; 4] =
        [Policy::Shared, Policy::RoundRobin, Policy::LeastConnections, Policy::ReusePort];

    /// The canonical name, as printed by `Display` and accepted by `FromStr`.
    pub const fn name(self) -> &'static str {
        match self {
            Policy::Shared => "none",
            Policy::RoundRobin => "rr",
            Policy::LeastConnections => "least-conn",
            Policy::ReusePort => "reuseport",
        }
    }

    /// Whether the primary accepts connections and hands them to workers (`rr`,
    /// `least-conn`), as opposed to the workers accepting directly (`none`, `reuseport`).
    pub const fn is_handoff(self) -> bool {
        self.pick().is_some()
    }

    /// The [`Dispatcher`](crate::Dispatcher) rule for a hand-off policy; `None` for the
    /// kernel-side ones.
    pub const fn pick(self) -> Option<Pick> {
        match self {
            Policy::RoundRobin => Some(Pick::RoundRobin),
            Policy::LeastConnections => Some(Pick::LeastConnections),
            Policy::Shared | Policy::ReusePort => None,
        }
    }
}

impl From<Pick> for Policy {
    fn from(pick: Pick) -> Self {
        match pick {
            Pick::RoundRobin => Policy::RoundRobin,
            Pick::LeastConnections => Policy::LeastConnections,
        }
    }
}

impl fmt::Display for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Policy {
    type Err = ParsePolicyError;

    /// Parses a canonical name or an alias, ignoring surrounding whitespace. Names are
    /// case-sensitive (lowercase).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let name = s.trim();
        Policy::ALL
            .iter()
            .map(|&p| (p.name(), p))
            .chain(ALIASES.iter().copied())
            .find_map(|(n, p)| (n == name).then_some(p))
            .ok_or_else(|| ParsePolicyError { input: name.to_owned() })
    }
}

/// Reads the policy from the value of [`ENV_VAR`], as obtained by the caller (for example
/// `std::env::var(ENV_VAR).ok().as_deref()`).
///
/// An unset, empty or blank value gives `Ok(None)`: the caller keeps its configured policy or
/// [`Policy::default`]. Unlike Node, which silently falls back to the default for an unknown
/// value, an unknown name is an error.
///
/// ```
/// use herd_sched::{Policy, from_env_value};
///
/// assert_eq!(from_env_value(None)?, None);
/// assert_eq!(from_env_value(Some(""))?, None);
/// assert_eq!(from_env_value(Some("none"))?, Some(Policy::Shared));
/// assert!(from_env_value(Some("random")).is_err());
/// # Ok::<(), herd_sched::ParsePolicyError>(())
/// ```
pub fn from_env_value(value: Option<&str>) -> Result<Option<Policy>, ParsePolicyError> {
    match value.map(str::trim) {
        None | Some("") => Ok(None),
        Some(name) => name.parse().map(Some),
    }
}

/// A scheduling policy name that is neither a canonical name nor an alias.
///
/// Its message quotes the input and lists the valid names, e.g.
/// `unknown scheduling policy "foo" (valid: none, rr, least-conn, reuseport; "shared" is an
/// alias of none)`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown scheduling policy {input:?} ({})", ValidNames)]
pub struct ParsePolicyError {
    input: String,
}

impl ParsePolicyError {
    /// The rejected name, with surrounding whitespace removed.
    pub fn input(&self) -> &str {
        &self.input
    }
}

/// Formats the list of valid names from [`Policy::ALL`] and [`ALIASES`].
struct ValidNames;

impl fmt::Display for ValidNames {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("valid: ")?;
        for (i, p) in Policy::ALL.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            f.write_str(p.name())?;
        }
        for (alias, p) in ALIASES {
            write!(f, "; {alias:?} is an alias of {p}")?;
        }
        Ok(())
    }
}
