//! The package databases an image carries, parsed: dpkg's
//! (`var/lib/dpkg/status`) and apk's (`lib/apk/db/installed`), each a
//! list of paragraphs of `Key: value` (dpkg) or `K:value` (apk) lines.
//! Only what the database says is installed is listed; a paragraph
//! without a name or version is skipped, never guessed at.

/// Where each database is in an image's file system (no leading `/`).
pub const DPKG_STATUS: &str = "var/lib/dpkg/status";
pub const APK_INSTALLED: &str = "lib/apk/db/installed";

/// Which package manager installed a package.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Ecosystem {
    Deb,
    Apk,
}

impl Ecosystem {
    /// The purl type and namespace: `deb/debian`, `apk/alpine`.
    fn purl_prefix(self) -> &'static str {
        match self {
            Ecosystem::Deb => "deb/debian",
            Ecosystem::Apk => "apk/alpine",
        }
    }

    /// The database file of this ecosystem.
    pub fn database(self) -> &'static str {
        match self {
            Ecosystem::Deb => DPKG_STATUS,
            Ecosystem::Apk => APK_INSTALLED,
        }
    }
}

/// One installed package.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Package {
    pub ecosystem: Ecosystem,
    pub name: String,
    pub version: String,
    /// `amd64`, `all`, `x86_64`…; empty when the database names none.
    pub arch: String,
}

impl Package {
    /// Its package URL: `pkg:deb/debian/NAME@VERSION?arch=ARCH`.
    pub fn purl(&self) -> String {
        let mut purl = format!(
            "pkg:{}/{}@{}",
            self.ecosystem.purl_prefix(),
            encode(&self.name),
            encode(&self.version)
        );
        if !self.arch.is_empty() {
            purl.push_str("?arch=");
            purl.push_str(&encode(&self.arch));
        }
        purl
    }
}

/// `text` percent-encoded except for purl's unreserved characters (so a
/// Debian epoch `1:2.3` is `1%3A2.3` and `g++` is `g%2B%2B`).
fn encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'.' | b'-' | b'_' | b'~' => {
                out.push(byte as char)
            }
            _ => out.push_str(&format!("%{byte:02X}")),
        }
    }
    out
}

/// The paragraphs of `text` (separated by blank lines), each as its
/// `(key, value)` lines split at the first `separator`; continuation
/// lines (starting with a space or tab) and lines without it are left out.
fn paragraphs(text: &str, separator: char) -> impl Iterator<Item = Vec<(&str, &str)>> {
    text.split("\n\n").map(move |paragraph| {
        paragraph
            .lines()
            .filter(|line| !line.starts_with([' ', '\t']))
            .filter_map(|line| line.split_once(separator))
            .map(|(key, value)| (key.trim(), value.trim()))
            .collect()
    })
}

/// The value of `key` in `fields`.
fn field<'a>(fields: &[(&str, &'a str)], key: &str) -> Option<&'a str> {
    fields
        .iter()
        .find(|(k, _)| *k == key)
        .map(|(_, v)| *v)
        .filter(|v| !v.is_empty())
}

/// The packages of a dpkg `status` file whose `Status` says installed
/// (`install ok installed`; not `deinstall ok config-files`).
pub fn dpkg(text: &str) -> Vec<Package> {
    paragraphs(text, ':')
        .filter(|fields| {
            field(fields, "Status")
                .is_some_and(|s| s.split_whitespace().nth(2) == Some("installed"))
        })
        .filter_map(|fields| {
            Some(Package {
                ecosystem: Ecosystem::Deb,
                name: field(&fields, "Package")?.to_string(),
                version: field(&fields, "Version")?.to_string(),
                arch: field(&fields, "Architecture").unwrap_or("").to_string(),
            })
        })
        .collect()
}

/// The packages of an apk `installed` file (`P:` name, `V:` version,
/// `A:` architecture).
pub fn apk(text: &str) -> Vec<Package> {
    paragraphs(text, ':')
        .filter_map(|fields| {
            Some(Package {
                ecosystem: Ecosystem::Apk,
                name: field(&fields, "P")?.to_string(),
                version: field(&fields, "V")?.to_string(),
                arch: field(&fields, "A").unwrap_or("").to_string(),
            })
        })
        .collect()
}

/// The packages of `ecosystem`'s database `text`.
pub fn parse(ecosystem: Ecosystem, text: &str) -> Vec<Package> {
    match ecosystem {
        Ecosystem::Deb => dpkg(text),
        Ecosystem::Apk => apk(text),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STATUS: &str = "\
Package: libc6
Status: install ok installed
Priority: optional
Architecture: amd64
Multi-Arch: same
Version: 2.36-9+deb12u4
Description: GNU C Library: Shared libraries
 Contains the standard libraries that are used by nearly all programs on
 the system. Version: 9.9 in a continuation is not a field.

Package: login
Status: install ok installed
Architecture: amd64
Version: 1:4.13+dfsg1-1+b1

Package: oldconf
Status: deinstall ok config-files
Architecture: all
Version: 1.0

Package: noversion
Status: install ok installed
";

    #[test]
    fn dpkg_lists_what_is_installed_with_versions_and_purls() {
        let packages = dpkg(STATUS);
        let names: Vec<&str> = packages.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(
            names,
            ["libc6", "login"],
            "config-files only and no version: out"
        );
        assert_eq!(packages[0].version, "2.36-9+deb12u4");
        assert_eq!(
            packages[0].purl(),
            "pkg:deb/debian/libc6@2.36-9%2Bdeb12u4?arch=amd64"
        );
        assert_eq!(
            packages[1].purl(),
            "pkg:deb/debian/login@1%3A4.13%2Bdfsg1-1%2Bb1?arch=amd64"
        );
    }

    #[test]
    fn apk_lists_its_paragraphs() {
        let installed = "C:Q1abc=\nP:musl\nV:1.2.5-r0\nA:x86_64\nL:MIT\n\n\
                         C:Q1def=\nP:busybox\nV:1.36.1-r29\nA:x86_64\n\nP:broken\n";
        let packages = apk(installed);
        assert_eq!(packages.len(), 2, "{packages:?}");
        assert_eq!(
            packages[1].purl(),
            "pkg:apk/alpine/busybox@1.36.1-r29?arch=x86_64"
        );
        assert!(apk("").is_empty() && dpkg("").is_empty());
    }
}
