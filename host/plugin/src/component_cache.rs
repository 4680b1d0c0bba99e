//! Compiled components cached on disk, so a restart loads builders without
//! compiling them again.
//!
//! An entry is keyed by the SHA-256 of the component bytes together with
//! the engine's compatibility hash (wasmtime version, target, compiler
//! settings): a changed component or a changed engine never reads a stale
//! artifact. Entries are written to a temporary file and renamed into
//! place, so a crash never leaves a half-written entry under a real key.

use std::hash::Hasher;
use std::io;
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

/// A directory of compiled components.
#[derive(Debug, Clone)]
pub struct ComponentCache {
    dir: PathBuf,
}

/// How a component was obtained.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheUse {
    /// Compiled now, and stored for next time.
    Compiled,
    /// Loaded from a stored artifact, no compilation.
    Loaded,
}

impl ComponentCache {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        ComponentCache { dir: dir.into() }
    }

    /// Returns the compiled form of `bytes`, from the cache when present.
    /// A cache entry that cannot be read (corrupt, truncated) is replaced;
    /// failing to write the cache is logged and otherwise ignored.
    pub fn load(&self, engine: &Engine, bytes: &[u8]) -> wasmtime::Result<(Component, CacheUse)> {
        let path = self.entry_path(engine, bytes);
        if path.exists() {
            // SAFETY: only this module writes files under this directory,
            // and wasmtime checks the artifact's header against the engine
            // before using it.
            match unsafe { Component::deserialize_file(engine, &path) } {
                Ok(component) => return Ok((component, CacheUse::Loaded)),
                Err(e) => {
                    tracing::warn!(path = %path.display(), "ignoring unreadable compiled component: {e}")
                }
            }
        }
        let component = Component::new(engine, bytes)?;
        if let Err(e) = component
            .serialize()
            .map_err(io::Error::other)
            .and_then(|data| write_atomically(&path, &data))
        {
            tracing::warn!(path = %path.display(), "could not cache compiled component: {e}");
        }
        Ok((component, CacheUse::Compiled))
    }

    fn entry_path(&self, engine: &Engine, bytes: &[u8]) -> PathBuf {
        let mut hasher = Sha256Hasher(Sha256::new());
        hasher.0.update(bytes);
        std::hash::Hash::hash(&engine.precompile_compatibility_hash(), &mut hasher);
        self.dir
            .join(format!("{}.cwasm", hex::encode(hasher.0.finalize())))
    }
}

fn write_atomically(path: &Path, data: &[u8]) -> io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(format!(
        ".{}.{}.tmp",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("entry"),
        uuid::Uuid::now_v7()
    ));
    std::fs::write(&tmp, data)?;
    std::fs::rename(&tmp, path).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}

/// Feeds `Hash` output into SHA-256, so the key is stable across processes
/// (unlike `DefaultHasher`, whose algorithm may change between releases).
struct Sha256Hasher(Sha256);

impl Hasher for Sha256Hasher {
    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }

    fn finish(&self) -> u64 {
        let digest = self.0.clone().finalize();
        u64::from_le_bytes(digest[..8].try_into().expect("SHA-256 has 32 bytes"))
    }
}
