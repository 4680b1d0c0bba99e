//! Target platforms: parsing and normalising `os/arch[/variant]`.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A normalised target platform such as `linux/amd64` or `linux/arm/v7`.
///
/// Guarantees: every part is non-empty, lower case and made of
/// `[a-z0-9._-]`; architecture aliases are resolved (`x86_64` → `amd64`,
/// `aarch64` → `arm64`, …); `Display` prints a string that parses back to
/// the same value.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Platform {
    os: String,
    arch: String,
    variant: Option<String>,
}

/// Why a platform string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid platform {input:?}: {reason}")]
pub struct PlatformError {
    input: String,
    reason: &'static str,
}

impl Platform {
    /// Parses `os/arch[/variant]`, trimming white space around each part and
    /// lower-casing it, e.g. `"Linux/ AMD64"` → `linux/amd64`.
    pub fn parse(input: &str) -> Result<Self, PlatformError> {
        let err = |reason| PlatformError {
            input: input.to_string(),
            reason,
        };
        let parts: Vec<String> = input
            .split('/')
            .map(|p| p.trim().to_ascii_lowercase())
            .collect();
        if input.trim().is_empty() {
            return Err(err("expected os/arch[/variant], e.g. linux/amd64"));
        }
        if !(2..=3).contains(&parts.len()) {
            return Err(err(
                "expected two or three parts, os/arch[/variant], e.g. linux/amd64 or linux/arm/v7",
            ));
        }
        if parts.iter().any(|p| p.is_empty()) {
            return Err(err("os, arch and variant must not be empty"));
        }
        let valid = |p: &String| {
            p.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        };
        if !parts.iter().all(valid) {
            return Err(err(
                "parts may contain only letters, digits, '.', '_' and '-'",
            ));
        }
        let mut parts = parts.into_iter();
        let os = parts.next().unwrap_or_default();
        let (arch, implied_variant) = normalise_arch(&parts.next().unwrap_or_default());
        let variant = normalise_variant(&arch, parts.next().or(implied_variant));
        Ok(Platform { os, arch, variant })
    }

    pub fn os(&self) -> &str {
        &self.os
    }

    pub fn arch(&self) -> &str {
        &self.arch
    }

    pub fn variant(&self) -> Option<&str> {
        self.variant.as_deref()
    }

    /// The platform podman and buildah build for when a job names none.
    pub fn default_target() -> Self {
        Platform {
            os: "linux".into(),
            arch: "amd64".into(),
            variant: None,
        }
    }
}

/// This host's own platform (what `BUILDPLATFORM` names in a build).
pub fn native() -> Platform {
    let arch = normalise_arch(std::env::consts::ARCH);
    Platform {
        os: "linux".into(),
        arch: arch.0,
        variant: arch.1,
    }
}

/// Where binfmt_misc lists the interpreters the kernel runs foreign
/// executables with.
const BINFMT_MISC: &str = "/proc/sys/fs/binfmt_misc";

/// The platforms this host can run build steps for: its own, and each one
/// a QEMU user-mode emulator is registered with binfmt_misc for (enabled,
/// its interpreter present).
pub fn buildable_here() -> Vec<Platform> {
    let native = std::env::consts::ARCH;
    let mut platforms: Vec<Platform> = emulated(native)
        .into_iter()
        .chain(qemu_handlers().flat_map(|arch| emulated(&arch)))
        .collect();
    platforms.sort();
    platforms.dedup();
    platforms
}

/// The names (`aarch64`, `arm`, …) of the QEMU handlers binfmt_misc has
/// enabled.
fn qemu_handlers() -> impl Iterator<Item = String> {
    let entries = std::fs::read_dir(BINFMT_MISC)
        .into_iter()
        .flatten()
        .flatten();
    entries.filter_map(|entry| {
        let arch = entry
            .file_name()
            .to_str()?
            .strip_prefix("qemu-")?
            .to_string();
        let text = std::fs::read_to_string(entry.path()).ok()?;
        let enabled = text.lines().next() == Some("enabled");
        let interpreter = text
            .lines()
            .find_map(|l| l.strip_prefix("interpreter "))
            .is_some_and(|path| std::path::Path::new(path).exists());
        (enabled && interpreter).then_some(arch)
    })
}

/// The Linux platforms a machine (or emulator) of architecture `arch`, in
/// the kernel's or QEMU's naming, runs.
fn emulated(arch: &str) -> Vec<Platform> {
    let names: &[&str] = match arch {
        "x86_64" => &["linux/amd64"],
        "aarch64" => &["linux/arm64"],
        "arm" => &["linux/arm", "linux/arm/v6", "linux/arm/v7"],
        "i386" => &["linux/386"],
        "ppc64le" => &["linux/ppc64le"],
        "s390x" => &["linux/s390x"],
        "riscv64" => &["linux/riscv64"],
        "mips64el" => &["linux/mips64le"],
        _ => &[],
    };
    names
        .iter()
        .filter_map(|n| Platform::parse(n).ok())
        .collect()
}

/// Maps architecture aliases to the names OCI image indexes use, with the
/// variant an alias implies (`armv7l` is `arm` variant `v7`).
fn normalise_arch(arch: &str) -> (String, Option<String>) {
    let (arch, variant) = match arch {
        "x86_64" | "x86-64" => ("amd64", None),
        "aarch64" => ("arm64", None),
        "i386" | "i686" | "x86" => ("386", None),
        "armhf" | "armv7" | "armv7l" => ("arm", Some("v7")),
        "armel" | "armv6" | "armv6l" => ("arm", Some("v6")),
        other => (other, None),
    };
    (arch.to_string(), variant.map(str::to_string))
}

/// `arm64/v8` is plain `arm64` in image indexes; bare version numbers get
/// their `v` (`arm/7` → `arm/v7`).
fn normalise_variant(arch: &str, variant: Option<String>) -> Option<String> {
    let variant = variant?;
    let variant = if variant.bytes().all(|b| b.is_ascii_digit()) {
        format!("v{variant}")
    } else {
        variant
    };
    if arch == "arm64" && variant == "v8" {
        return None;
    }
    Some(variant)
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.arch)?;
        if let Some(variant) = &self.variant {
            write!(f, "/{variant}")?;
        }
        Ok(())
    }
}

impl FromStr for Platform {
    type Err = PlatformError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Platform::parse(s)
    }
}

impl Serialize for Platform {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Platform {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(deserializer)?;
        Platform::parse(&raw).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises_case_space_and_aliases() {
        let cases = [
            ("linux/amd64", "linux/amd64"),
            ("Linux/AMD64", "linux/amd64"),
            ("linux/ arm64", "linux/arm64"),
            (" linux / x86_64 ", "linux/amd64"),
            ("linux/aarch64", "linux/arm64"),
            ("linux/arm64/v8", "linux/arm64"),
            ("linux/arm/v7", "linux/arm/v7"),
            ("linux/arm/7", "linux/arm/v7"),
            ("linux/armv7l", "linux/arm/v7"),
            ("linux/i686", "linux/386"),
            ("windows/amd64", "windows/amd64"),
        ];
        for (input, want) in cases {
            let got = Platform::parse(input).unwrap_or_else(|e| panic!("{input:?}: {e}"));
            assert_eq!(got.to_string(), want, "input {input:?}");
        }
    }

    #[test]
    fn refuses_malformed_strings() {
        for input in [
            "",
            "   ",
            "invalid",
            "/amd64",
            "linux/",
            "linux//v7",
            "linux/arm/v7/extra",
            "linux/amd 64",
            "linux/amd64;rm",
        ] {
            let err = Platform::parse(input).expect_err(input);
            assert!(err.to_string().contains("invalid platform"), "{err}");
        }
    }

    #[test]
    fn display_round_trips() {
        for input in ["linux/amd64", "linux/arm/v6", "darwin/arm64", "linux/s390x"] {
            let platform = Platform::parse(input).unwrap();
            assert_eq!(Platform::parse(&platform.to_string()).unwrap(), platform);
            assert_eq!(platform.to_string(), input);
        }
    }

    #[test]
    fn this_host_builds_its_own_platform_and_registered_emulators() {
        let here = buildable_here();
        let native = Platform::parse(&format!("linux/{}", std::env::consts::ARCH)).unwrap();
        assert!(here.contains(&native), "{here:?}");
        let aarch64 = std::path::Path::new(BINFMT_MISC).join("qemu-aarch64");
        let emulated = std::fs::read_to_string(aarch64).is_ok_and(|t| t.starts_with("enabled"));
        assert_eq!(
            here.contains(&Platform::parse("linux/arm64").unwrap()),
            emulated || native.arch() == "arm64",
            "{here:?}"
        );
    }

    #[test]
    fn exposes_parts() {
        let p = Platform::parse("linux/arm/v7").unwrap();
        assert_eq!(
            (p.os(), p.arch(), p.variant()),
            ("linux", "arm", Some("v7"))
        );
    }
}
