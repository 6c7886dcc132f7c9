//! Process primitives, below supervision and health: creating a child with what it inherits
//! ([`fork`]), reaping children ([`reaper`]), reading and ending process trees ([`tree`]),
//! cgroups and their delegation ([`cgroup`], [`delegate`]), kernel limits ([`limits`]), the
//! open file limit ([`nofile`]), ending an instance's processes ([`terminate`]) and CPU and
//! memory sampling ([`usage`]).
//!
//! Nothing here knows about apps' lifecycles: the supervisor, probes and hooks build on it.

pub mod cgroup;
pub mod delegate;
pub mod fork;
pub mod limits;
pub mod listen;
pub mod nofile;
pub mod ports;
pub mod reaper;
pub mod round_robin;
pub mod terminate;
pub mod tree;
pub mod usage;
