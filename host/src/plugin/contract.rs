//! Does a component speak this host's `helix:build` version? Checked before
//! linking, so an incompatible plugin gets a message naming both versions
//! instead of a linker error about a missing import.

use wasmtime::Engine;
use wasmtime::component::Component;

use super::bindings::{WIT_PACKAGE, WIT_VERSION};

/// Checks that every `helix:build` interface `component` imports or
/// exports is of a version compatible with [`WIT_VERSION`] (same major and no newer minor;
/// same minor while the major is 0) and that it exports what a builder
/// must. The error is a sentence for the operator.
pub(crate) fn check(engine: &Engine, component: &Component) -> Result<(), String> {
    let ty = component.component_type();
    for (name, _) in ty.imports(engine) {
        check_name(name)?;
    }
    let mut has_info = false;
    let mut has_build = false;
    for (name, _) in ty.exports(engine) {
        check_name(name)?;
        has_info |= name.starts_with(&format!("{WIT_PACKAGE}/builder-info@"));
        has_build |= name == "build";
    }
    if !has_info || !has_build {
        return Err(format!(
            "it is not a builder: it must export `{WIT_PACKAGE}/builder-info` and `build` \
             (target the `{WIT_PACKAGE}/builder@{WIT_VERSION}` world)"
        ));
    }
    Ok(())
}

fn check_name(name: &str) -> Result<(), String> {
    let Some(rest) = name
        .strip_prefix(WIT_PACKAGE)
        .and_then(|r| r.strip_prefix('/'))
    else {
        return Ok(());
    };
    let Some((_, version)) = rest.split_once('@') else {
        return Err(format!(
            "it uses `{name}` without a version; this host implements {WIT_PACKAGE}@{WIT_VERSION}"
        ));
    };
    if compatible(version, WIT_VERSION) {
        Ok(())
    } else {
        Err(format!(
            "it was built against {WIT_PACKAGE}@{version}, but this host implements \
             {WIT_PACKAGE}@{WIT_VERSION}; rebuild the plugin against this host's wit/"
        ))
    }
}

/// Semver compatibility of a plugin's version with the host's.
fn compatible(plugin: &str, host: &str) -> bool {
    let parse = |v: &str| -> Option<(u64, u64)> {
        let core = v.split(['-', '+']).next()?;
        let mut parts = core.split('.');
        let major = parts.next()?.parse().ok()?;
        let minor = parts.next()?.parse().ok()?;
        parts.next()?.parse::<u64>().ok()?;
        Some((major, minor))
    };
    match (parse(plugin), parse(host)) {
        // A plugin built for a newer minor may import what this host lacks.
        (Some((pm, pn)), Some((hm, hn))) => pm == hm && (if hm > 0 { pn <= hn } else { pn == hn }),
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
        assert_eq!(check_name("wasi:cli/environment@0.2.6"), Ok(()));
        assert_eq!(check_name("build"), Ok(()));
        assert_eq!(
            check_name(&format!("{WIT_PACKAGE}/job-context@{WIT_VERSION}")),
            Ok(())
        );
        let err = check_name(&format!("{WIT_PACKAGE}/job-context@0.9.0")).unwrap_err();
        assert!(
            err.contains("helix:build@0.9.0") && err.contains(WIT_VERSION),
            "{err}"
        );
    }
}
