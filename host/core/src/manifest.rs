//! Image digests and the per-platform manifest of a multi-platform image.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::platform::Platform;

/// A content digest, `sha256:` followed by 64 lower-case hex digits.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Digest(String);

/// Why a digest string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid digest {0:?}: expected sha256: followed by 64 lower-case hex digits")]
pub struct DigestError(String);

impl Digest {
    pub fn parse(input: &str) -> Result<Self, DigestError> {
        let hex = input
            .strip_prefix("sha256:")
            .ok_or_else(|| DigestError(input.to_string()))?;
        let well_formed =
            hex.len() == 64 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        if !well_formed {
            return Err(DigestError(input.to_string()));
        }
        Ok(Digest(input.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Serialize for Digest {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Digest {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(deserializer)?;
        Digest::parse(&raw).map_err(serde::de::Error::custom)
    }
}

/// Platform → digest of that platform's image. Iterates in sorted platform
/// order, whatever order entries were added in, so JSON output and
/// comparisons are stable. Serialises as a JSON object.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Manifest(BTreeMap<Platform, Digest>);

impl Manifest {
    pub fn new() -> Self {
        Self::default()
    }

    /// Records `digest` for `platform`, returning the digest it replaces.
    pub fn insert(&mut self, platform: Platform, digest: Digest) -> Option<Digest> {
        self.0.insert(platform, digest)
    }

    pub fn get(&self, platform: &Platform) -> Option<&Digest> {
        self.0.get(platform)
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Entries in sorted platform order.
    pub fn iter(&self) -> impl Iterator<Item = (&Platform, &Digest)> {
        self.0.iter()
    }

    pub fn platforms(&self) -> impl Iterator<Item = &Platform> {
        self.0.keys()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest(c: char) -> Digest {
        Digest::parse(&format!("sha256:{}", c.to_string().repeat(64))).unwrap()
    }

    #[test]
    fn digest_validation() {
        assert!(Digest::parse(&format!("sha256:{}", "0123456789abcdef".repeat(4))).is_ok());
        for bad in [
            String::new(),
            "sha256:".into(),
            "a".repeat(64),
            format!("sha512:{}", "a".repeat(64)),
            format!("sha256:{}", "A".repeat(64)),
            format!("sha256:{}", "a".repeat(63)),
            format!("sha256:{}", "a".repeat(65)),
            format!("sha256:{}g", "a".repeat(63)),
        ] {
            let err = Digest::parse(&bad).expect_err(&bad);
            assert!(err.to_string().contains("invalid digest"), "{err}");
        }
    }

    #[test]
    fn manifest_iterates_in_sorted_order() {
        let mut manifest = Manifest::new();
        for (p, c) in [
            ("linux/s390x", 'c'),
            ("linux/amd64", 'a'),
            ("linux/arm/v7", 'b'),
        ] {
            manifest.insert(Platform::parse(p).unwrap(), digest(c));
        }
        let order: Vec<String> = manifest.platforms().map(|p| p.to_string()).collect();
        assert_eq!(order, ["linux/amd64", "linux/arm/v7", "linux/s390x"]);
        let json = serde_json::to_string(&manifest).unwrap();
        assert!(json.starts_with("{\"linux/amd64\":\"sha256:aaaa"), "{json}");
        let back: Manifest = serde_json::from_str(&json).unwrap();
        assert_eq!(back, manifest);
    }

    #[test]
    fn manifest_refuses_bad_entries_from_json() {
        let bad_digest = r#"{"linux/amd64":"sha256:xyz"}"#;
        assert!(serde_json::from_str::<Manifest>(bad_digest).is_err());
        let bad_platform = format!(r#"{{"linux":"sha256:{}"}}"#, "a".repeat(64));
        assert!(serde_json::from_str::<Manifest>(&bad_platform).is_err());
    }

    #[test]
    fn insert_replaces_and_reports_previous() {
        let mut manifest = Manifest::new();
        let amd64 = Platform::parse("linux/amd64").unwrap();
        assert_eq!(manifest.insert(amd64.clone(), digest('a')), None);
        assert_eq!(
            manifest.insert(amd64.clone(), digest('b')),
            Some(digest('a'))
        );
        assert_eq!(manifest.get(&amd64), Some(&digest('b')));
        assert_eq!(manifest.len(), 1);
    }
}
