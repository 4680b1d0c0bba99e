//! Helix Build's core: what a build job is and how it moves through its
//! lifecycle ([`job`]), how a run ended and whose fault a failure was, the
//! platforms, manifests and image references a build names, a job's log
//! ([`log`]) and the audit trail of the programs its builder ran
//! ([`audit`]), retry waits ([`backoff`]) and the config's patterns
//! ([`pattern`]). No I/O: every layer above
//! builds on these types.

pub mod audit;
pub mod backoff;
pub mod job;
pub mod log;
pub mod manifest;
pub mod pattern;
pub mod platform;
pub mod reference;
