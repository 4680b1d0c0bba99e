//! Helix Build: build orchestration with sandboxed WebAssembly builders.
//!
//! A job goes: [`api`] → [`service`] (queue, workers) → [`plugin`] (a
//! fresh wasm instance of the job's builder) → an [`job::Outcome`] the
//! service records.

pub mod api;
pub mod app;
pub mod audit;
pub mod backoff;
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
pub mod job;
pub mod log;
pub mod manifest;
pub mod network;
pub mod notify;
pub mod openapi;
pub mod platform;
pub mod plugin;
pub mod provenance;
pub mod queue;
pub mod quota;
pub mod reference;
pub mod registry;
pub mod rules;
pub mod secrets;
pub mod service;
pub mod source;
pub mod store;
pub mod workspace;
