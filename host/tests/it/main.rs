//! The host's integration tests, one binary (each links wasmtime and the
//! whole host once): real components, real podman, buildah and dockerd
//! builds, a real registry, git repositories and PostgreSQL, started by
//! the tests themselves (see `helix-fixtures`). Each module is one area;
//! `common` holds the helpers they share.
//!
//! Needs root and what `.ci/setup` installs.

mod common;

mod build_cache;
mod buildkit;
mod durability;
mod exec;
mod faults;
mod hostile_output;
mod isolation;
mod jail;
mod limits;
mod mirror;
mod plugin;
mod projects;
mod provenance;
mod python_builder;
mod quotas;
mod real_build;
mod reuse;
mod sandbox;
mod sbom;
mod scale_out;
mod service;
mod slots;
mod store;
