//! What a container storage's own records say it holds: containers/
//! storage's `<driver>-images/images.json` (each image's names, the
//! digest it was pulled or built as, and what it keeps, among which a
//! manifest list's `instances.json`) and `<driver>-containers/
//! containers.json`. The host reads them in place of a podman in the
//! jail for what they answer exactly (a fully qualified name's image, a
//! storage without containers), which costs a program start each; what
//! they do not answer is still asked of the tools.
//!
//! The jail's tools write them, so they are read as
//! [`crate::written`] reads a jail's file, and believed no more than the
//! tools' own answers would be: about this run's storage only.

use std::path::Path;

use serde::Deserialize;

use super::StorageDriver;

/// Largest record read: far more than thousands of images take.
const MAX_RECORD: u64 = 64 * 1024 * 1024;

/// A storage's images and whether it holds containers, as it recorded
/// them.
#[derive(Debug)]
pub struct StorageRecord {
    images: Vec<StoredImage>,
    containers: bool,
}

#[derive(Debug, Deserialize)]
struct StoredImage {
    #[serde(default)]
    names: Vec<String>,
    #[serde(default)]
    digest: String,
    #[serde(default, rename = "big-data-names")]
    kept: Vec<String>,
}

#[derive(Debug, Deserialize)]
struct StoredContainer {}

/// What holds a name in a storage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameHolder {
    Nothing,
    Image,
    ManifestList,
}

impl StorageRecord {
    /// The records of the storage at `storage` (relative) below `base`, a
    /// directory the jail cannot replace; `None` when they cannot be read
    /// (a storage never used has none: no images, no containers).
    pub fn read(base: &Path, storage: &Path, driver: StorageDriver) -> Option<StorageRecord> {
        let driver = driver.as_str();
        let images =
            record::<StoredImage>(base, &storage.join(format!("{driver}-images/images.json")))?;
        let containers = record::<StoredContainer>(
            base,
            &storage.join(format!("{driver}-containers/containers.json")),
        )?;
        Some(StorageRecord {
            images,
            containers: !containers.is_empty(),
        })
    }

    /// Whether any container (a build's working container) is left.
    pub fn holds_containers(&self) -> bool {
        self.containers
    }

    /// The digest of the image `name` names, where `name` is fully
    /// qualified (`host/path`, a tag or none, no digest): what `podman
    /// image inspect --format {{.Digest}}` answers for it. `None` for a
    /// short name (the tools resolve those by their own settings) or one
    /// the storage does not hold.
    pub fn digest_of(&self, name: &str) -> Option<&str> {
        self.named(name)?
            .map(|image| image.digest.as_str())
            .filter(|digest| digest.starts_with("sha256:"))
    }

    /// What holds the fully qualified `name`; `None` for a short one.
    pub fn holder_of(&self, name: &str) -> Option<NameHolder> {
        Some(match self.named(name)? {
            None => NameHolder::Nothing,
            Some(image) if image.kept.iter().any(|k| k == "instances.json") => {
                NameHolder::ManifestList
            }
            Some(_) => NameHolder::Image,
        })
    }

    /// The image the fully qualified `name` names, if the storage holds
    /// one; `None` for a short name.
    fn named(&self, name: &str) -> Option<Option<&StoredImage>> {
        let stored = stored_name(name)?;
        Some(
            self.images
                .iter()
                .find(|image| image.names.contains(&stored)),
        )
    }
}

/// The entries of the record at `path` below `base`: none when the file
/// is not there.
fn record<T: serde::de::DeserializeOwned>(base: &Path, path: &Path) -> Option<Vec<T>> {
    match crate::written::read(base, path, MAX_RECORD) {
        Ok(bytes) => serde_json::from_slice(&bytes).ok(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Some(Vec::new()),
        Err(_) => None,
    }
}

/// How containers/storage names the image `name` names: `name` with
/// `:latest` where it has no tag, for a fully qualified name without a
/// digest (its first part a host: a `.` or `:` in it, or `localhost`).
fn stored_name(name: &str) -> Option<String> {
    let (first, rest) = name.split_once('/')?;
    let qualified = first.contains(['.', ':']) || first == "localhost";
    if !qualified || name.contains('@') || rest.is_empty() {
        return None;
    }
    let last = rest.rsplit('/').next().unwrap_or(rest);
    Some(match last.contains(':') {
        true => name.to_string(),
        false => format!("{name}:latest"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record_of(images: &str, containers: &str) -> (tempfile::TempDir, Option<StorageRecord>) {
        let dir = tempfile::tempdir().unwrap();
        for (path, body) in [
            ("storage/overlay-images/images.json", images),
            ("storage/overlay-containers/containers.json", containers),
        ] {
            let path = dir.path().join(path);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, body).unwrap();
        }
        let read = StorageRecord::read(dir.path(), Path::new("storage"), StorageDriver::Overlay);
        (dir, read)
    }

    #[test]
    fn a_qualified_name_finds_its_image_digest_and_a_list_is_told_from_an_image() {
        let images = r#"[
            {"id": "a", "digest": "sha256:aaa", "names": ["127.0.0.1:5000/base:1"],
             "big-data-names": ["manifest"]},
            {"id": "b", "digest": "sha256:bbb", "names": ["localhost/helix-image:latest"],
             "big-data-names": ["manifest", "instances.json"]},
            {"id": "c", "digest": "sha256:ccc", "names": ["registry.example/team/app:latest"]}
        ]"#;
        let (_dir, record) = record_of(images, "[]");
        let record = record.unwrap();
        assert_eq!(
            record.digest_of("127.0.0.1:5000/base:1"),
            Some("sha256:aaa")
        );
        assert_eq!(
            record.digest_of("registry.example/team/app"),
            Some("sha256:ccc")
        );
        assert_eq!(record.digest_of("127.0.0.1:5000/base:2"), None);
        // Short names and digests are the tools' to resolve.
        assert_eq!(record.digest_of("base:1"), None);
        assert_eq!(record.digest_of("127.0.0.1:5000/base@sha256:aaa"), None);
        assert_eq!(
            record.holder_of("localhost/helix-image"),
            Some(NameHolder::ManifestList)
        );
        assert_eq!(
            record.holder_of("registry.example/team/app"),
            Some(NameHolder::Image)
        );
        assert_eq!(
            record.holder_of("localhost/other"),
            Some(NameHolder::Nothing)
        );
        assert!(!record.holds_containers());
    }

    #[test]
    fn containers_are_seen_and_an_unreadable_record_answers_nothing() {
        let (_dir, record) = record_of("[]", r#"[{"id": "x"}]"#);
        assert!(record.unwrap().holds_containers());
        let (_dir, record) = record_of("not json", "[]");
        assert!(record.is_none());
        let unused = tempfile::tempdir().unwrap();
        let record =
            StorageRecord::read(unused.path(), Path::new("storage"), StorageDriver::Overlay)
                .unwrap();
        assert_eq!(
            record.holder_of("localhost/helix-image"),
            Some(NameHolder::Nothing)
        );
    }
}
