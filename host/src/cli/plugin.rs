//! `plugin test`: runs a builder component once, outside any server, for its author.

use std::collections::BTreeMap;

/// The files `helix-build plugin test` was given.
pub struct TrialFiles {
    pub component: std::path::PathBuf,
    pub job: std::path::PathBuf,
    pub grants: Option<std::path::PathBuf>,
    pub grants_of: Option<String>,
    pub settings: BTreeMap<String, String>,
    pub dry_run: bool,
    pub canned: Option<std::path::PathBuf>,
    pub source: Option<std::path::PathBuf>,
}

/// `helix-build plugin test`: runs the builder once and reports each
/// call it made and how the build ended; true if it succeeded.
pub async fn plugin_test(files: TrialFiles) -> Result<bool, String> {
    use helix_build::plugin::Built;
    use helix_build::plugin_tools::trial::{Trial, run};
    let read = |path: &std::path::Path| {
        std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
    };
    let job = serde_json::from_str(&read(&files.job)?)
        .map_err(|e| format!("{}: not a job: {e}", files.job.display()))?;
    let grants = match (&files.grants, &files.grants_of) {
        (Some(path), _) => {
            toml::from_str(&read(path)?).map_err(|e| format!("{}: {e}", path.display()))?
        }
        (None, Some(name)) if name == "podman" || name == "buildah" => {
            helix_build::builtin::default_grants(
                name,
                helix_build::network::BuildNetwork::None,
                helix_build::docker_engine::DEFAULT_ENGINE_CLIENT,
            )
        }
        (None, Some(name)) => {
            return Err(format!(
                "--grants-of {name}: no such built-in builder with grants; use podman or buildah"
            ));
        }
        (None, None) => Default::default(),
    };
    let canned = match (&files.canned, files.dry_run) {
        (Some(path), _) => {
            Some(toml::from_str(&read(path)?).map_err(|e| format!("{}: {e}", path.display()))?)
        }
        (None, true) => Some(Default::default()),
        (None, false) => None,
    };
    // The network the grants were written for: the built-in grants asked
    // for take none; any others, a server's default for a builder.
    let network = match files.grants_of {
        Some(_) => helix_build::network::BuildNetwork::None,
        None => helix_build::config::BuilderConfig::default().network(),
    };
    let dry = canned.is_some();
    let trial = run(Trial {
        component: files.component,
        job,
        grants,
        settings: files.settings,
        network,
        canned,
        source: files.source,
    })
    .await?;
    println!(
        "job {}: {} at {}{}",
        trial.job.id,
        trial.job.repo_url,
        trial.job.git_ref,
        trial
            .commit
            .as_ref()
            .map(|c| format!(" (checked out {c})"))
            .unwrap_or_default()
    );
    println!(
        "calls{}:",
        if dry { " (dry run: none was run)" } else { "" }
    );
    if trial.calls.is_empty() {
        println!("  (none)");
    }
    for (n, call) in trial.calls.iter().enumerate() {
        let command = std::iter::once(call.program.as_str())
            .chain(call.args.iter().map(String::as_str))
            .collect::<Vec<_>>()
            .join(" ");
        println!("  {:>3}. {command}", n + 1);
        match (&call.grant, &call.error) {
            (Some(grant), _) => println!(
                "       allowed by `{grant}`; exit {}",
                call.exit_code.unwrap_or_default()
            ),
            (None, Some(error)) => println!("       REFUSED: {error}"),
            (None, None) => {}
        }
    }
    println!("log:");
    for line in &trial.log {
        println!("  {line}");
    }
    let ok = trial.result.is_ok();
    match trial.result {
        Ok(Built::Simulated(_)) => println!("result: succeeded (simulated: no image)"),
        Ok(Built::Layout(path)) => println!(
            "result: succeeded: an OCI layout at {} (the host would push it now)",
            path.display()
        ),
        Ok(Built::LocalImage) => println!(
            "result: succeeded: the image is in the job's container storage (the host would push it now)"
        ),
        Err(outcome) => println!(
            "result: {}: {}",
            outcome.state(),
            outcome.error().unwrap_or_default()
        ),
    }
    Ok(ok)
}
