//! Reads the contract version the host implements from `wit/current`, so
//! the runtime's version can never drift from the WIT it was built from.

use std::path::{Path, PathBuf};
use std::process::exit;

fn main() {
    let manifest_dir = PathBuf::from(
        std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"),
    );
    let wit = manifest_dir.join("../../wit");
    println!("cargo::rerun-if-changed={}", wit.display());
    println!(
        "cargo::rustc-env=HELIX_WIT_VERSION={}",
        current_wit_version(&wit)
    );
}

/// The version `wit/current` implements, checked against the layout:
/// `wit/vX.Y.Z/` holds each published version, frozen, and `current`
/// links to the newest, whose `world.wit` declares that version.
fn current_wit_version(wit: &Path) -> String {
    let current = std::fs::read_link(wit.join("current"))
        .unwrap_or_else(|e| fail(&format!("wit/current must link to a version folder: {e}")));
    let newest = std::fs::read_dir(wit)
        .unwrap_or_else(|e| fail(&format!("reading {}: {e}", wit.display())))
        .flatten()
        .filter_map(|entry| {
            let name = entry.file_name().into_string().ok()?;
            let version = name.strip_prefix('v')?;
            let parts: Vec<u64> = version
                .split('.')
                .map(|p| p.parse().ok())
                .collect::<Option<_>>()?;
            (parts.len() == 3).then_some((parts, name))
        })
        .max()
        .map(|(_, name)| name)
        .unwrap_or_else(|| fail("wit/ holds no version folder vX.Y.Z"));
    if current != Path::new(&newest) {
        fail(&format!(
            "wit/current links to {}, but the newest version is {newest}",
            current.display()
        ));
    }
    let version = wit_version(&wit.join(&newest).join("world.wit"));
    if newest != format!("v{version}") {
        fail(&format!(
            "wit/{newest}/world.wit declares helix:build@{version}; the folder must be v{version}"
        ));
    }
    version
}

/// The version a `world.wit` declares (`package helix:build@X.Y.Z;`).
fn wit_version(world: &Path) -> String {
    let text = std::fs::read_to_string(world)
        .unwrap_or_else(|e| fail(&format!("reading {}: {e}", world.display())));
    text.lines()
        .find_map(|line| line.trim().strip_prefix("package helix:build@"))
        .and_then(|rest| rest.strip_suffix(';'))
        .map(str::to_string)
        .unwrap_or_else(|| {
            fail(&format!(
                "{} declares no `package helix:build@X.Y.Z;`",
                world.display()
            ))
        })
}

fn fail(message: &str) -> ! {
    println!("cargo::error={message}");
    exit(1);
}
