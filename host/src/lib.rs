//! Helix Build: build orchestration with sandboxed WebAssembly builders.
//!
//! A job goes: [`api`] → [`service`] (queue, workers) → [`plugin`] (a
//! fresh wasm instance of the job's builder) → an [`job::Outcome`] the
//! service records.

// The core types, at the paths the rest of the host names them by.
pub use helix_core::{audit, backoff, job, log, manifest, platform, reference};
pub use helix_plugin as plugin;
pub use helix_sandbox::{
    cancel, cgroup, docker_engine, exec, jail, layer, managed_engine, network, quota, secrets,
    written,
};
pub use helix_store::{self as store, queue};

pub mod access;
pub mod api;
pub mod app;
pub mod builtin;
pub mod client;
pub mod config;
pub mod dashboard;
pub mod hooks;
pub mod layer_cache;
pub mod notify;
pub mod oidc;
pub mod openapi;
pub mod plugin_tools;
pub mod provenance;
pub mod registry;
pub mod reuse;
pub mod rules;
pub mod service;
pub mod source;
pub mod workspace;
