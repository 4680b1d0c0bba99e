//! The plugin contract, one module per published version of `helix:build`
//! (`wit/vX.Y.Z/`, frozen once published): [`latest`] is the version this
//! host implements and the types the rest of the runtime speaks; each
//! older module adapts its version to it. [`Pre`] is the one place that
//! dispatches on a component's version.
//!
//! A new version: a `wit/vX.Y.Z/` folder, `wit/current` linked to it, a
//! `since_vX_Y_Z` module for it made [`latest`] (the previous one becomes
//! an adapter to it), and its entry in [`SUPPORTED`] and [`Pre`].

mod since_v0_2_0;
pub(crate) mod since_v0_3_0;

use wasmtime::AsContextMut;
use wasmtime::component::{Component, HasSelf, Linker};

use crate::host::JobHost;
pub use since_v0_2_0::UnsupportedByContract;
pub(crate) use since_v0_3_0 as latest;

/// The WIT package name, without version.
pub const WIT_PACKAGE: &str = "helix:build";
/// The version of `helix:build` this host implements: `wit/current`'s,
/// read by `build.rs`, and checked below to be [`latest`]'s.
pub const WIT_VERSION: &str = env!("HELIX_WIT_VERSION");
const _: () = assert!(
    same(WIT_VERSION, latest::VERSION),
    "wit/current is not the version of the `latest` bindings"
);

/// The contract versions this host runs: its own first, then those it
/// adapts.
pub const SUPPORTED: [&str; 2] = [latest::VERSION, since_v0_2_0::VERSION];

const fn same(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    let mut i = 0;
    while i < a.len() {
        if a[i] != b[i] {
            return false;
        }
        i += 1;
    }
    true
}

/// Defines every supported version's imports in `linker`.
pub(crate) fn add_to_linker(linker: &mut Linker<JobHost>) -> wasmtime::Result<()> {
    latest::Builder::add_to_linker::<JobHost, HasSelf<JobHost>>(linker, |host| host)?;
    since_v0_2_0::Builder::add_to_linker::<JobHost, HasSelf<JobHost>>(linker, |host| host)
}

/// A linked component, by the contract version it was built against.
pub(crate) enum Pre {
    V0_3(latest::BuilderPre<JobHost>),
    V0_2(since_v0_2_0::BuilderPre<JobHost>),
}

/// Why a call into the guest did not return a value.
pub(crate) enum CallError {
    /// The job needs what the component's version cannot carry.
    Unfit(UnsupportedByContract),
    Instantiate(wasmtime::Error),
    Trap(wasmtime::Error),
}

impl Pre {
    /// Links `component`, built against `version` (one of [`SUPPORTED`]).
    pub(crate) fn new(
        linker: &Linker<JobHost>,
        component: &Component,
        version: &str,
    ) -> wasmtime::Result<Self> {
        let pre = linker.instantiate_pre(component)?;
        match version {
            since_v0_2_0::VERSION => since_v0_2_0::BuilderPre::new(pre).map(Pre::V0_2),
            _ => latest::BuilderPre::new(pre).map(Pre::V0_3),
        }
    }

    /// The contract version the component was built against.
    pub(crate) fn version(&self) -> &'static str {
        match self {
            Pre::V0_3(_) => latest::VERSION,
            Pre::V0_2(_) => since_v0_2_0::VERSION,
        }
    }

    /// The builder's `info`, in a fresh instance.
    pub(crate) async fn info(
        &self,
        mut store: impl AsContextMut<Data = JobHost>,
    ) -> wasmtime::Result<latest::Metadata> {
        match self {
            Pre::V0_3(pre) => {
                let instance = pre.instantiate_async(&mut store).await?;
                instance
                    .helix_build_builder_info()
                    .call_info(&mut store)
                    .await
            }
            Pre::V0_2(pre) => {
                let instance = pre.instantiate_async(&mut store).await?;
                instance
                    .helix_build_builder_info()
                    .call_info(&mut store)
                    .await
                    .map(since_v0_2_0::metadata)
            }
        }
    }

    /// Builds `job` in a fresh instance, calling `instantiated` once the
    /// instance exists (so instantiation can be timed apart).
    pub(crate) async fn build(
        &self,
        mut store: impl AsContextMut<Data = JobHost>,
        job: latest::Job,
        instantiated: impl FnOnce(),
    ) -> Result<Result<latest::BuildOutput, latest::BuildError>, CallError> {
        match self {
            Pre::V0_3(pre) => {
                let instance = pre
                    .instantiate_async(&mut store)
                    .await
                    .map_err(CallError::Instantiate)?;
                instantiated();
                instance
                    .call_build(&mut store, &job)
                    .await
                    .map_err(CallError::Trap)
            }
            Pre::V0_2(pre) => {
                let job = since_v0_2_0::job(job).map_err(CallError::Unfit)?;
                let instance = pre
                    .instantiate_async(&mut store)
                    .await
                    .map_err(CallError::Instantiate)?;
                instantiated();
                instance
                    .call_build(&mut store, &job)
                    .await
                    .map(since_v0_2_0::result)
                    .map_err(CallError::Trap)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every folder in `wit/` has its module here, and each module's
    /// version is the one its folder's `world.wit` declares.
    #[test]
    fn every_published_version_has_its_module() {
        let wit = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../wit");
        let mut folders: Vec<String> = std::fs::read_dir(&wit)
            .unwrap()
            .flatten()
            .filter_map(|e| {
                e.file_name()
                    .to_str()?
                    .strip_prefix('v')
                    .map(str::to_string)
            })
            .collect();
        folders.sort();
        let mut supported = SUPPORTED.map(str::to_string).to_vec();
        supported.sort();
        assert_eq!(folders, supported);
        for version in SUPPORTED {
            let world = std::fs::read_to_string(wit.join(format!("v{version}/world.wit"))).unwrap();
            assert!(
                world.contains(&format!("package {WIT_PACKAGE}@{version};")),
                "wit/v{version}/world.wit declares another version"
            );
        }
    }
}
