//! `helix:build@0.3.0` (`wit/v0.3.0`), the version this host implements:
//! its types are the ones the rest of the runtime speaks.

wasmtime::component::bindgen!({
    path: "../../wit/v0.3.0",
    world: "helix:build/builder",
    imports: { "helix:build/command-runner.run": async },
    exports: { default: async },
});

/// The version these bindings are of, as `wit/v0.3.0/world.wit` declares it.
pub const VERSION: &str = "0.3.0";

pub use exports::helix::build::builder_info::Metadata;
pub use helix::build::command_runner;
pub use helix::build::job_context;
pub use helix::build::types::{BuildArg, Platform, PlatformDigest, SimulatedImage};
