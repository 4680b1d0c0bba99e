//! The sandbox: everything the host does on Linux to keep a builder, and
//! the programs it is granted, inside what the operator allowed. Nothing
//! is allowed by default.
//!
//! - [`exec`]: a builder's program calls checked against its grants, run
//!   without a shell in a process group of their own, with an environment
//!   made from the grants alone; the host's own helper commands alike.
//! - [`jail`]: the mount, PID and network namespaces every program of a
//!   job's build runs in, never on the host.
//! - [`cgroup`]: a control group per job run, its limits and the sweep
//!   after a crash; [`quota`]: a file system of a fixed size per job
//!   directory; [`layer`]: a run's writable layer over a tree the host
//!   keeps; [`network`]: the build steps' network.
//! - [`secrets`]: build secrets, handed over as files the builder cannot
//!   read and redacted from everything it sees.
//! - [`docker_engine`]: a Docker Engine a BuildKit builder builds in,
//!   spoken to over its unix socket; [`managed_engine`]: one the host
//!   runs itself, per cache slot, in a jail and a control group.
//! - [`written`]: reading on the host, safely, a file a jail wrote.
//! - [`cancel`]: stopping a run, and why.

pub mod cancel;
pub mod cgroup;
pub mod docker_engine;
pub mod exec;
pub mod jail;
pub mod layer;
pub mod managed_engine;
pub mod network;
pub mod quota;
pub mod secrets;
pub mod written;
