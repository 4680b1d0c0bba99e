//! Builds the builder plugins in `plugins/` to `wasm32-wasip2` components,
//! so that `cargo build`, `cargo test` and `cargo run` need no manual step.
//!
//! Built-in builders are embedded in the binary (see `src/builtin.rs`); the
//! testing plugins are left in `OUT_DIR` for the tests, which find them
//! through `HELIX_TESTING_PLUGIN_DIR`.

use std::env;
use std::path::{Path, PathBuf};
use std::process::{Command, exit};

const TARGET: &str = "wasm32-wasip2";
/// (builder name, crate file stem) of builders compiled into the binary.
const BUILTIN: &[(&str, &str)] = &[
    ("buildah", "helix_plugin_buildah"),
    ("buildkit", "helix_plugin_buildkit"),
    ("podman", "helix_plugin_podman"),
    ("simulated", "helix_plugin_simulated"),
];
/// Crate file stems of the plugins tests load: those in plugins/testing/
/// and the examples in plugins/examples/.
const TESTING: &[&str] = &[
    "helix_example_user_policy",
    "helix_plugin_attack",
    "helix_plugin_contract_0_2",
    "helix_plugin_empty_tag",
    "helix_plugin_escape",
    "helix_plugin_exec",
    "helix_plugin_hog",
    "helix_plugin_panic",
    "helix_plugin_shell",
    "helix_plugin_spin",
    "helix_plugin_ungranted",
];

/// Variables of the outer build that must not reach the nested one: flags
/// meant for the host target, and wrappers such as clippy-driver.
const SCRUBBED_ENV: &[&str] = &[
    "RUSTFLAGS",
    "CARGO_ENCODED_RUSTFLAGS",
    "CARGO_BUILD_RUSTFLAGS",
    "RUSTC_WRAPPER",
    "RUSTC_WORKSPACE_WRAPPER",
    "CARGO_BUILD_TARGET",
    "CARGO_TARGET_DIR",
    "CARGO_BUILD_TARGET_DIR",
    "CARGO_MAKEFLAGS",
    "MAKEFLAGS",
    "MFLAGS",
];

fn main() {
    let manifest_dir =
        PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let root = manifest_dir
        .parent()
        .expect("host/ lives in the workspace root");
    let plugins = root.join("plugins");
    println!("cargo::rerun-if-changed={}", root.join("wit").display());
    // Every plugin crate and the plugin workspace's manifest and lock; not
    // plugins/target, which a manual build may fill.
    let entries = std::fs::read_dir(&plugins)
        .unwrap_or_else(|e| fail(&format!("reading {}: {e}", plugins.display())));
    for entry in entries.flatten() {
        if entry.file_name() != "target" {
            println!("cargo::rerun-if-changed={}", entry.path().display());
        }
    }

    check_target_installed();

    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    // One plugin build per target dir (OUT_DIR is <target>/<profile>/build/
    // <unit>/out), not one per build-script run: clippy's check, the build
    // and the benches would each compile every plugin again. The nested
    // cargo locks its own target dir, so outer builds of two profiles
    // take turns there.
    let target_dir = out_dir
        .ancestors()
        .nth(4)
        .unwrap_or(&out_dir)
        .join("helix-plugins");
    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut build = Command::new(cargo);
    build
        .args([
            "build",
            "--release",
            "--locked",
            "--target",
            TARGET,
            "--manifest-path",
        ])
        .arg(plugins.join("Cargo.toml"))
        .arg("--target-dir")
        .arg(&target_dir);
    for var in SCRUBBED_ENV {
        build.env_remove(var);
    }
    let output = build
        .output()
        .unwrap_or_else(|e| fail(&format!("could not run cargo to build the plugins: {e}")));
    if !output.status.success() {
        eprintln!("{}", String::from_utf8_lossy(&output.stderr));
        fail("building the plugins in plugins/ failed; the compiler output is above");
    }

    let built = target_dir.join(TARGET).join("release");
    let staged = out_dir.join("plugins");
    std::fs::create_dir_all(&staged)
        .unwrap_or_else(|e| fail(&format!("creating {}: {e}", staged.display())));
    let stems = BUILTIN
        .iter()
        .map(|(_, stem)| *stem)
        .chain(TESTING.iter().copied());
    for stem in stems {
        let from = built.join(format!("{stem}.wasm"));
        let to = staged.join(format!("{stem}.wasm"));
        std::fs::copy(&from, &to)
            .unwrap_or_else(|e| fail(&format!("copying {}: {e}", from.display())));
    }

    let entries: String = BUILTIN
        .iter()
        .map(|(name, stem)| {
            format!(
                "    ({name:?}, include_bytes!({:?})),\n",
                staged.join(format!("{stem}.wasm")).display().to_string()
            )
        })
        .collect();
    let code = format!(
        "/// (name, component bytes) of every built-in builder.\npub const BUILTIN_COMPONENTS: &[(&str, &[u8])] = &[\n{entries}];\n"
    );
    write(&out_dir.join("builtin_components.rs"), &code);
    println!(
        "cargo::rustc-env=HELIX_TESTING_PLUGIN_DIR={}",
        staged.display()
    );
}

/// Stops with one line saying how to install the target when it is missing
/// (`RUSTUP_AUTO_INSTALL=0` means rust-toolchain.toml does not do it).
fn check_target_installed() {
    let rustc = env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let libdir = Command::new(rustc)
        .args(["--print", "target-libdir", "--target", TARGET])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()));
    if !libdir.is_some_and(|dir| dir.is_dir()) {
        fail(&format!(
            "the {TARGET} target is not installed; run: rustup target add {TARGET}"
        ));
    }
}

fn write(path: &Path, contents: &str) {
    if std::fs::read_to_string(path).ok().as_deref() != Some(contents) {
        std::fs::write(path, contents)
            .unwrap_or_else(|e| fail(&format!("writing {}: {e}", path.display())));
    }
}

fn fail(message: &str) -> ! {
    println!("cargo::error={message}");
    exit(1);
}
