//! Helix Build: build orchestration with sandboxed WebAssembly builders.
//!
//! A job goes: [`api`] → [`service`] (queue, workers) → [`plugin`] (a
//! fresh wasm instance of the job's builder) → an [`job::Outcome`] the
//! service records.

// The core types, at the paths the rest of the host names them by.
pub use helix_core::{audit, backoff, job, log, manifest, platform, reference};
pub use helix_store::{self as store, queue};

pub mod api;
pub mod app;
pub mod builtin;
pub mod cache;
pub mod cancel;
pub mod cgroup;
pub mod client;
pub mod config;
pub mod dashboard;
pub mod engine;
pub mod exec;
pub mod hooks;
pub mod network;
pub mod notify;
pub mod openapi;
pub mod plugin;
pub mod provenance;
pub mod quota;
pub mod registry;
pub mod rules;
pub mod secrets;
pub mod service;
pub mod source;
pub mod workspace;
