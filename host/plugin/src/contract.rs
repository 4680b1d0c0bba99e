//! Does a component speak this host's `helix:build` version? Checked before
//! linking, so an incompatible plugin gets a message naming both versions
//! instead of a linker error about a missing import.

use wasmtime::Engine;
use wasmtime::component::Component;

use super::wit::{SUPPORTED, WIT_PACKAGE, WIT_VERSION};

/// Checks that every `helix:build` interface `component` imports or
/// exports is of one contract version this host runs ([`SUPPORTED`]:
/// its own, [`WIT_VERSION`], or one it adapts; versions compatible with
/// one by semver count as it) and that it exports what a builder must.
/// Returns that supported version; the error is a sentence for the
/// operator.
pub(crate) fn check(engine: &Engine, component: &Component) -> Result<String, String> {
    let ty = component.component_type();
    let mut versions = std::collections::BTreeSet::new();
    for (name, _) in ty.imports(engine).chain(ty.exports(engine)) {
        versions.extend(check_name(name)?);
    }
    let has_info = ty
        .exports(engine)
        .any(|(name, _)| name.starts_with(&format!("{WIT_PACKAGE}/builder-info@")));
    let has_build = ty.exports(engine).any(|(name, _)| name == "build");
    if !has_info || !has_build {
        return Err(format!(
            "it is not a builder: it must export `{WIT_PACKAGE}/builder-info` and `build` \
             (target the `{WIT_PACKAGE}/builder@{WIT_VERSION}` world)"
        ));
    }
    match versions.len() {
        1 => Ok(versions.into_iter().next().unwrap_or_default()),
        _ => Err(format!(
            "it mixes versions of {WIT_PACKAGE} ({}); build it against one",
            versions.into_iter().collect::<Vec<_>>().join(", ")
        )),
    }
}

/// The supported version `name` (an import or export) is of; `None` for
/// a name outside the package.
fn check_name(name: &str) -> Result<Option<String>, String> {
    let Some(rest) = name
        .strip_prefix(WIT_PACKAGE)
        .and_then(|r| r.strip_prefix('/'))
    else {
        return Ok(None);
    };
    let Some((_, version)) = rest.split_once('@') else {
        return Err(format!(
            "it uses `{name}` without a version; this host implements {WIT_PACKAGE}@{WIT_VERSION}"
        ));
    };
    if let Some(supported) = SUPPORTED.iter().find(|s| compatible(version, s)) {
        return Ok(Some(supported.to_string()));
    }
    let what_to_do = if newer(version, WIT_VERSION) {
        "upgrade helix-build to a version that implements it, or rebuild the plugin against"
    } else {
        "this host no longer runs it; rebuild the plugin against"
    };
    Err(format!(
        "it was built against {WIT_PACKAGE}@{version}, but this host runs \
         {WIT_PACKAGE}@{} only: {what_to_do} wit/v{WIT_VERSION}",
        SUPPORTED.join(" and @")
    ))
}

/// (major, minor, patch) of a version, pre-release and build ignored.
fn parse(version: &str) -> Option<(u64, u64, u64)> {
    let core = version.split(['-', '+']).next()?;
    let mut parts = core.split('.').map(|p| p.parse().ok());
    let parsed = (parts.next()??, parts.next()??, parts.next()??);
    parts.next().is_none().then_some(parsed)
}

/// Whether `plugin` is a later version than `host`.
fn newer(plugin: &str, host: &str) -> bool {
    matches!((parse(plugin), parse(host)), (Some(p), Some(h)) if p > h)
}

/// Semver compatibility of a plugin's version with the host's.
fn compatible(plugin: &str, host: &str) -> bool {
    match (parse(plugin), parse(host)) {
        // A plugin built for a newer minor may import what this host lacks.
        (Some((pm, pn, _)), Some((hm, hn, _))) => {
            pm == hm && (if hm > 0 { pn <= hn } else { pn == hn })
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_compatibility() {
        assert!(compatible("0.2.0", "0.2.0"));
        assert!(compatible("0.2.7", "0.2.0"));
        assert!(!compatible("0.1.0", "0.2.0"));
        assert!(!compatible("0.3.0", "0.2.0"));
        assert!(!compatible("1.0.0", "0.1.0"));
        assert!(compatible("1.0.0", "1.4.0"));
        assert!(!compatible("1.4.0", "1.0.0"));
        assert!(!compatible("2.0.0", "1.0.0"));
        assert!(!compatible("junk", "0.1.0"));
    }

    #[test]
    fn names_outside_the_package_are_not_checked() {
        assert_eq!(check_name("wasi:cli/environment@0.2.6"), Ok(None));
        assert_eq!(check_name("build"), Ok(None));
        assert_eq!(
            check_name(&format!("{WIT_PACKAGE}/job-context@{WIT_VERSION}")),
            Ok(Some(WIT_VERSION.to_string()))
        );
        assert_eq!(
            check_name(&format!("{WIT_PACKAGE}/job-context@0.2.0")),
            Ok(Some("0.2.0".to_string())),
            "the previous contract, adapted"
        );
        let err = check_name(&format!("{WIT_PACKAGE}/job-context@0.9.0")).unwrap_err();
        assert!(
            err.contains("helix:build@0.9.0") && err.contains(WIT_VERSION),
            "{err}"
        );
        assert!(err.contains("upgrade helix-build"), "{err}");
        let err = check_name(&format!("{WIT_PACKAGE}/job-context@0.1.0")).unwrap_err();
        assert!(err.contains("no longer runs"), "{err}");
        assert!(err.ends_with(&format!("wit/v{WIT_VERSION}")), "{err}");
    }

    /// Each published version of the contract, by its folder in wit/, and
    /// the digest of its files: a component built against one relies on
    /// every byte of it. A change is a new version, in a new folder.
    const PUBLISHED: &[(&str, &str)] = &[
        (
            "v0.2.0",
            "bd9c8c96ef5d344e95be881150f5d9ed24a3825d2bd89bfdb9caac124d0abe60",
        ),
        (
            "v0.3.0",
            "20c28272f14bbff7630d1cba97d2bc16a052df64ae715e897e4d2ed15de84e58",
        ),
    ];

    #[test]
    fn published_contracts_are_frozen() {
        use sha2::Digest as _;
        let wit = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../wit");
        let mut folders: Vec<String> = std::fs::read_dir(&wit)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|name| name.starts_with('v'))
            .collect();
        folders.sort();
        let recorded: Vec<&str> = PUBLISHED.iter().map(|(folder, _)| *folder).collect();
        assert_eq!(folders, recorded, "record a new version's digest here");
        for (folder, digest) in PUBLISHED {
            let mut files: Vec<_> = std::fs::read_dir(wit.join(folder))
                .unwrap()
                .flatten()
                .map(|e| e.path())
                .collect();
            files.sort();
            let mut hasher = sha2::Sha256::new();
            for file in files {
                hasher.update(format!("{}\n", file.file_name().unwrap().to_string_lossy()));
                hasher.update(std::fs::read(&file).unwrap());
            }
            assert_eq!(
                hex::encode(hasher.finalize()),
                *digest,
                "wit/{folder} changed after it was published; put the change in a new version"
            );
        }
        assert_eq!(
            std::fs::read_link(wit.join("current")).unwrap(),
            std::path::Path::new(&format!("v{WIT_VERSION}"))
        );
    }
}
