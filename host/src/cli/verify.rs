//! `verify`: checks an image's provenance in its registry against a public key, offline from any server.

use std::collections::BTreeMap;

/// `helix-build verify`: checks `image`'s provenance and says what it
/// proves, or why it does not.
pub async fn verify(
    image: &str,
    key: &std::path::Path,
    policy: &helix_build::provenance::Policy,
    insecure: bool,
    authfile: Option<std::path::PathBuf>,
) -> Result<(), String> {
    use helix_build::config::RegistryConfig;
    use helix_build::provenance::{dsse::PublicKey, statement::sha256_hex};
    use helix_build::registry::{RegistrySettings, oci::RegistryClient};
    let key = PublicKey::load(key)?;
    let registry = image.split('/').next().unwrap_or_default().to_string();
    let registries = match insecure {
        true => BTreeMap::from([(
            registry,
            RegistryConfig {
                tls_verify: false,
                ..RegistryConfig::default()
            },
        )]),
        false => BTreeMap::new(),
    };
    let client = RegistryClient::new(std::sync::Arc::new(RegistrySettings::new(
        registries, authfile,
    )));
    let verified = helix_build::provenance::verify(&client, image, &key, policy).await?;
    let statement = &verified.statement;
    let build = &statement.predicate.build_definition;
    let parameters = &build.external_parameters;
    let run = &statement.predicate.run_details;
    println!("{}: verified", verified.image);
    println!("  signed by      key {}", key.id());
    println!("  attestation    {}", verified.attestation);
    println!(
        "  built from     {} at commit {} (ref {})",
        parameters.repository,
        statement.commit().unwrap_or("?"),
        parameters.git_ref
    );
    println!(
        "  dockerfile     {} in context {}{}",
        parameters.dockerfile,
        parameters.context,
        parameters
            .target
            .as_ref()
            .map(|t| format!(", target {t}"))
            .unwrap_or_default()
    );
    println!(
        "  builder        {} ({}), component {}",
        build.internal_parameters.builder,
        run.builder.id,
        statement.builder_digest().unwrap_or_else(|| "?".into())
    );
    println!(
        "  grants digest  {}",
        build.internal_parameters.grants_digest
    );
    if let Some(project) = &build.internal_parameters.project {
        let protected = match build.internal_parameters.protected {
            true => "a protected ref",
            false => "not a protected ref",
        };
        println!("  project        {project} ({protected})");
    }
    println!(
        "  job            {} on {}, finished {}",
        run.metadata.invocation_id,
        run.builder.id.split(':').nth(3).unwrap_or("?"),
        run.metadata.finished_on.to_rfc3339()
    );
    for subject in &statement.subject {
        let platform = subject
            .annotations
            .get("platform")
            .map(String::as_str)
            .unwrap_or("image");
        let digest = subject
            .digest
            .get("sha256")
            .map(String::as_str)
            .unwrap_or("?");
        println!(
            "  subject        {platform:<14} sha256:{}",
            sha256_hex(digest)
        );
    }
    for base in build.resolved_dependencies.iter().skip(1) {
        if base.name.as_deref() == Some(helix_build::provenance::DOCKERFILE) {
            println!(
                "  dockerfile     {} sha256:{}",
                base.uri.as_deref().unwrap_or("?"),
                base.digest.get("sha256").map(String::as_str).unwrap_or("?")
            );
            continue;
        }
        println!(
            "  base image     {} {}",
            base.uri.as_deref().unwrap_or("?"),
            base.digest
                .get("sha256")
                .map(|d| format!("sha256:{d}"))
                .unwrap_or_else(|| "(not resolved)".into())
        );
    }
    Ok(())
}
