//! The plugin author's tools in the `helix-build` binary: `plugin new`
//! ([`scaffold`]) and `plugin test` ([`trial`]).

pub mod scaffold;
pub mod trial;
