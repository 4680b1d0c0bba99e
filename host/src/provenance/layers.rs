//! A few files of a pushed image, read by the host from its layers in the
//! registry, in-process: no program runs on the image. Each layer streams
//! through a tar reader (gzip or uncompressed) on a blocking thread; only
//! the wanted files are kept, each up to [`MAX_FILE`] bytes, and a layer
//! is walked for at most [`MAX_LAYER`] bytes. Layers are read from the
//! top down, so a file is what the topmost layer holding it or a
//! whiteout of it (`.wh.NAME`, or an opaque `.wh..wh..opq` in a directory
//! above it) says, and lower layers are not read once every file is
//! settled. What could not be read (a zstd layer, a file too large) is
//! said in [`Found::notes`], never silently left out.
//!
//! What a layer said is kept by its digest ([`LayersRead`]): a rebuild's
//! image shares every layer but its top ones with the build before, so
//! only those are walked again, not the base image's.

use std::collections::{BTreeMap, VecDeque};
use std::io::Read;
use std::sync::{Mutex, MutexGuard};

use oci_client::Reference;
use serde_json::Value;

use crate::registry::oci::RegistryClient;

/// The most bytes of one wanted file kept.
pub const MAX_FILE: u64 = 64 << 20;
/// The most (uncompressed) bytes of one layer walked.
pub const MAX_LAYER: u64 = 8 << 30;

/// Why an image's files could not be read.
#[derive(Debug, thiserror::Error)]
pub enum LayerError {
    /// The registry failed or refused (worth trying again).
    #[error("{0}")]
    Registry(String),
    #[error("the blob {digest} is unreadable: {source}")]
    Read {
        digest: String,
        source: std::io::Error,
    },
    #[error("the manifest {digest} lists no layers")]
    Manifest { digest: String },
}

/// The wanted files an image has, by path, and what could not be read.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Found {
    pub files: BTreeMap<&'static str, Vec<u8>>,
    pub notes: Vec<String>,
}

/// What one layer says of a wanted file.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Said {
    Content(Vec<u8>),
    TooLarge(u64),
    Hidden,
}

/// How a layer is compressed, from its media type; `None` for one this
/// reader cannot walk.
fn compression(media_type: &str) -> Option<bool> {
    match media_type
        .rsplit_once('.')
        .map_or(media_type, |(_, last)| last)
    {
        "tar+gzip" | "gzip" => Some(true),
        "tar" => Some(false),
        _ => None,
    }
}

/// `path` as a layer names it, relative to the root (`./a/b/` is `a/b`).
fn normal(path: &str) -> &str {
    path.trim_start_matches("./")
        .trim_start_matches('/')
        .trim_end_matches('/')
}

/// Whether the whiteout entry `entry` hides `wanted` of the layers below.
fn hides(entry: &str, wanted: &str) -> bool {
    let (dir, name) = entry.rsplit_once('/').unwrap_or(("", entry));
    let Some(hidden) = name.strip_prefix(".wh.") else {
        return false;
    };
    let under = |prefix: &str| prefix.is_empty() || wanted.starts_with(&format!("{prefix}/"));
    if hidden == ".wh..opq" {
        return under(dir);
    }
    let hidden = match dir {
        "" => hidden.to_string(),
        dir => format!("{dir}/{hidden}"),
    };
    wanted == hidden || under(&hidden)
}

/// What the layer tar `reader` says of each of `wanted`, and whether the
/// walk stopped at [`MAX_LAYER`]. Read to its end, so a stream that
/// checks its digest at the end does.
fn scan(
    reader: impl Read,
    wanted: &[&'static str],
) -> std::io::Result<(BTreeMap<&'static str, Said>, bool)> {
    let mut archive = tar::Archive::new(reader.take(MAX_LAYER));
    let mut said = BTreeMap::new();
    let walked = (|| {
        for entry in archive.entries()? {
            let mut entry = entry?;
            let path = match entry.path()?.to_str() {
                Some(path) => normal(path).to_string(),
                None => continue,
            };
            for &file in wanted {
                if path == file && entry.header().entry_type().is_file() {
                    let size = entry.size();
                    let content = match size > MAX_FILE {
                        true => Said::TooLarge(size),
                        false => {
                            let mut bytes = Vec::with_capacity(size as usize);
                            entry.read_to_end(&mut bytes)?;
                            Said::Content(bytes)
                        }
                    };
                    said.insert(file, content);
                } else if hides(&path, file) {
                    said.entry(file).or_insert(Said::Hidden);
                }
            }
        }
        Ok(())
    })();
    let rest = archive.into_inner();
    let truncated = rest.limit() == 0;
    match walked {
        Err(_) if truncated => {}
        Err(e) => return Err(e),
        Ok(()) => {
            std::io::copy(&mut rest.into_inner(), &mut std::io::sink())?;
        }
    }
    Ok((said, truncated))
}

/// What one layer says of each wanted file, and whether its walk stopped
/// at [`MAX_LAYER`].
type Scanned = (BTreeMap<&'static str, Said>, bool);

/// What layers read lately said, by layer digest and the files looked
/// for. A digest names a layer's content, and a job reads a layer's
/// digest only from its own image in its own repository (with its own
/// credentials), so what was read for it holds for every job that names
/// it. At most [`LAYERS_KEPT`] layers and [`LAYERS_KEPT_BYTES`] of files
/// are kept, the oldest dropped first.
#[derive(Default)]
pub struct LayersRead(Mutex<VecDeque<(String, Scanned)>>);

const LAYERS_KEPT: usize = 256;
const LAYERS_KEPT_BYTES: usize = 64 << 20;

impl LayersRead {
    fn lock(&self) -> MutexGuard<'_, VecDeque<(String, Scanned)>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn get(&self, key: &str) -> Option<Scanned> {
        let kept = self.lock();
        kept.iter()
            .find(|(k, _)| k == key)
            .map(|(_, scanned)| scanned.clone())
    }

    fn keep(&self, key: String, scanned: &Scanned) {
        let size = |scanned: &Scanned| -> usize {
            scanned
                .0
                .values()
                .map(|said| match said {
                    Said::Content(bytes) => bytes.len(),
                    _ => 0,
                })
                .sum()
        };
        if size(scanned) > LAYERS_KEPT_BYTES {
            return;
        }
        let mut kept = self.lock();
        if kept.iter().any(|(k, _)| *k == key) {
            return;
        }
        kept.push_back((key, scanned.clone()));
        while kept.len() > LAYERS_KEPT
            || kept.iter().map(|(_, s)| size(s)).sum::<usize>() > LAYERS_KEPT_BYTES
        {
            kept.pop_front();
        }
    }
}

/// The wanted files of the image whose manifest (JSON) is `manifest`, in
/// `repository`: its layers read through `registry`, or taken from
/// `kept` where read lately.
pub async fn read(
    registry: &RegistryClient,
    repository: &Reference,
    digest: &str,
    manifest: &Value,
    wanted: &[&'static str],
    kept: &LayersRead,
) -> Result<Found, LayerError> {
    let layers = manifest["layers"]
        .as_array()
        .ok_or_else(|| LayerError::Manifest {
            digest: digest.to_string(),
        })?;
    let mut found = Found::default();
    let mut pending: Vec<&'static str> = wanted.to_vec();
    for layer in layers.iter().rev() {
        if pending.is_empty() {
            break;
        }
        let (Some(layer_digest), Some(media_type)) =
            (layer["digest"].as_str(), layer["mediaType"].as_str())
        else {
            continue;
        };
        let Some(gzip) = compression(media_type) else {
            found.notes.push(format!(
                "layer {layer_digest} not read: its type {media_type} is not tar or gzip"
            ));
            continue;
        };
        // Every wanted file is looked for, whatever is settled already, so
        // what is kept answers any later image with this layer.
        let key = format!("{layer_digest} {}", wanted.join(" "));
        let scanned = match kept.get(&key) {
            Some(scanned) => scanned,
            None => {
                let stream = registry
                    .blob_reader(repository, layer_digest)
                    .await
                    .map_err(LayerError::Registry)?;
                let reader = tokio_util::io::SyncIoBridge::new(stream);
                let looking = wanted.to_vec();
                let scanned = tokio::task::spawn_blocking(move || match gzip {
                    true => scan(flate2::read::MultiGzDecoder::new(reader), &looking),
                    false => scan(reader, &looking),
                })
                .await
                .map_err(|e| std::io::Error::other(e.to_string()))
                .and_then(|scanned| scanned)
                .map_err(|source| LayerError::Read {
                    digest: layer_digest.to_string(),
                    source,
                })?;
                kept.keep(key, &scanned);
                scanned
            }
        };
        let (said, truncated) = scanned;
        if truncated {
            found.notes.push(format!(
                "layer {layer_digest} read only to its first {MAX_LAYER} bytes"
            ));
        }
        for (file, said) in said {
            if !pending.contains(&file) {
                continue;
            }
            pending.retain(|p| *p != file);
            match said {
                Said::Content(bytes) => {
                    found.files.insert(file, bytes);
                }
                Said::TooLarge(size) => found.notes.push(format!(
                    "/{file} not read: {size} bytes, more than {MAX_FILE}"
                )),
                Said::Hidden => {}
            }
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A layer tar of `entries` (path, content).
    fn layer(entries: &[(&str, &[u8])]) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        for (path, content) in entries {
            let mut header = tar::Header::new_gnu();
            header.set_size(content.len() as u64);
            header.set_mode(0o644);
            header.set_cksum();
            builder.append_data(&mut header, path, *content).unwrap();
        }
        builder.into_inner().unwrap()
    }

    const STATUS: &str = "var/lib/dpkg/status";

    #[test]
    fn a_layer_gives_the_wanted_file_or_hides_it() {
        let (said, truncated) = scan(
            &layer(&[
                ("./etc/passwd", b"root"),
                ("./var/lib/dpkg/status", b"Package: a"),
            ])[..],
            &[STATUS],
        )
        .unwrap();
        assert!(!truncated);
        assert_eq!(said[STATUS], Said::Content(b"Package: a".to_vec()));

        for whiteout in [
            "var/lib/dpkg/.wh.status",
            "var/lib/.wh.dpkg",
            "var/lib/dpkg/.wh..wh..opq",
            ".wh.var",
        ] {
            let (said, _) = scan(&layer(&[(whiteout, b"")])[..], &[STATUS]).unwrap();
            assert_eq!(said.get(STATUS), Some(&Said::Hidden), "{whiteout}");
        }
        for unrelated in [
            "var/lib/dpkg/.wh.status-old",
            "var/.wh.lib2",
            "usr/.wh..wh..opq",
        ] {
            let (said, _) = scan(&layer(&[(unrelated, b"")])[..], &[STATUS]).unwrap();
            assert!(said.is_empty(), "{unrelated}");
        }
    }

    #[test]
    fn layer_types_are_told_apart() {
        assert_eq!(
            compression("application/vnd.oci.image.layer.v1.tar+gzip"),
            Some(true)
        );
        assert_eq!(
            compression("application/vnd.docker.image.rootfs.diff.tar.gzip"),
            Some(true)
        );
        assert_eq!(
            compression("application/vnd.oci.image.layer.v1.tar"),
            Some(false)
        );
        assert_eq!(
            compression("application/vnd.oci.image.layer.v1.tar+zstd"),
            None
        );
    }
}
