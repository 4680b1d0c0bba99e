//! Helix Build: build orchestration with sandboxed WebAssembly builders.

pub mod builtin;
pub mod cancel;
pub mod job;
pub mod log;
pub mod manifest;
pub mod platform;
pub mod plugin;
pub mod reference;
