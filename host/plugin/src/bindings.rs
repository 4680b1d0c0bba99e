//! Host bindings generated from `wit/current` (the newest published
//! version of the plugin contract, its single source).

wasmtime::component::bindgen!({
    path: "../../wit/current",
    world: "helix:build/builder",
    imports: { "helix:build/command-runner.run": async },
    exports: { default: async },
});

pub use exports::helix::build::builder_info::Metadata;
pub use helix::build::command_runner;
pub use helix::build::job_context;
pub use helix::build::types::{BuildArg, Platform};

/// The version of `helix:build` this host implements, read from
/// `wit/current/world.wit` by `build.rs`.
pub const WIT_VERSION: &str = env!("HELIX_WIT_VERSION");
/// The WIT package name, without version.
pub const WIT_PACKAGE: &str = "helix:build";

/// Bindings of the previous contract, `helix:build@0.2.0` (`wit/v0.2.0`),
/// for components built against it; [`super::legacy`] adapts them.
pub mod v0_2 {
    wasmtime::component::bindgen!({
        path: "../../wit/v0.2.0",
        world: "helix:build/builder",
        imports: { "helix:build/command-runner.run": async },
        exports: { default: async },
    });
}
