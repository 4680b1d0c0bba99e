//! Provenance of real builds: a two-platform podman build through the
//! service, its signed SLSA statement attached in a real registry
//! (Debian's docker-registry 2.8, which has no referrers API, so the
//! fallback tag is what is exercised), verified with the public key, and
//! forgeries refused each for its own reason.

use crate::common;

use std::collections::BTreeMap;
use std::process::Command;

use helix_build::job::{JobRequest, State};
use helix_build::provenance::dsse::{PublicKey, SigningKey};
use helix_build::provenance::statement::SLSA_PROVENANCE;
use helix_build::provenance::{Policy, attach, verify};
use helix_build::registry::oci::{RawManifest, RegistryClient, reference};
use helix_build::secrets::SecretSource;
use helix_build::service::ServiceError;
use helix_fixtures::{Registry, Repo};
use oci_client::Reference;

/// A key pair in `dir` named `name`; the private key's path and the public key.
fn key_pair(dir: &std::path::Path, name: &str) -> (std::path::PathBuf, PublicKey) {
    let (private, public) = (
        dir.join(format!("{name}.key")),
        dir.join(format!("{name}.pub")),
    );
    SigningKey::generate()
        .unwrap()
        .write(&private, &public)
        .unwrap();
    (private, PublicKey::load(&public).unwrap())
}

/// Pushes an empty image labelled `label` to `reference` with buildah, in
/// a storage of its own: an image pushed without Helix.
fn push_plain_image(reference: &str, label: &str) {
    let storage = tempfile::tempdir().unwrap();
    let buildah = |args: &[&str]| {
        let output = Command::new("buildah")
            .arg(format!("--root={}", storage.path().join("root").display()))
            .arg(format!(
                "--runroot={}",
                storage.path().join("run").display()
            ))
            .arg("--storage-driver=vfs")
            .args(args)
            .output()
            .unwrap();
        assert!(output.status.success(), "buildah {args:?}: {output:?}");
        String::from_utf8(output.stdout).unwrap().trim().to_string()
    };
    let container = buildah(&["from", "scratch"]);
    buildah(&["config", "--label", &format!("plain={label}"), &container]);
    buildah(&["commit", "--quiet", &container, "plain"]);
    buildah(&[
        "push",
        "--quiet",
        "--tls-verify=false",
        "plain",
        &format!("docker://{reference}"),
    ]);
}

/// Attaches `artifact` to `subject` (a manifest of `repository`) as the
/// attest step does, listed in its referrers.
async fn attach_one(
    registry: &RegistryClient,
    repository: &Reference,
    subject: &RawManifest,
    artifact: &attach::Artifact<'_>,
) {
    let pushed = attach::push(
        registry,
        repository,
        subject,
        std::slice::from_ref(artifact),
    )
    .await
    .unwrap();
    let listing = attach::listing(registry, repository, &subject.digest)
        .await
        .unwrap();
    attach::list(registry, repository, &subject.digest, &pushed, listing)
        .await
        .unwrap();
}

/// `envelope` (JSON) as an attestation of SLSA provenance.
fn dsse_artifact(envelope: &[u8]) -> attach::Artifact<'_> {
    attach::Artifact {
        media_type: attach::ENVELOPE_TYPE,
        bytes: envelope,
        predicate_type: SLSA_PROVENANCE,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_two_platform_build_is_attested_verifies_and_forgeries_do_not() {
    let registry = Registry::start(false);
    let repo = Repo::new();
    let dir = tempfile::tempdir().unwrap();
    let (signing, public) = key_pair(dir.path(), "helix");
    let secret = dir.path().join("token");
    std::fs::write(&secret, "s3cr3t-provenance").unwrap();
    let mut config = common::real_config(&dir, &registry.address);
    config.provenance_key = Some(signing);
    config.secrets.insert(
        "token".into(),
        SecretSource {
            env: None,
            file: Some(secret),
        },
    );
    let service = common::start(&config.validated().unwrap()).await;
    let request = JobRequest {
        repo_url: repo.url(),
        git_ref: Some("v1".into()),
        builder: Some("podman".into()),
        platforms: vec!["linux/amd64".into(), "linux/arm64".into()],
        build_args: BTreeMap::from([("GREETING".to_string(), "hello".to_string())]),
        secrets: vec!["token".into()],
        ..JobRequest::default()
    };
    let (job, logs) = common::run_logged(&service, request).await;
    assert_eq!(job.state, State::Succeeded, "{:?}", job.error);
    assert!(
        logs.iter()
            .any(|l| l.starts_with("[helix] provenance: a signed SLSA v1 statement")),
        "{logs:?}"
    );

    // What the host kept and what it says.
    let attestation = service.provenance(job.id.as_str()).await.unwrap();
    let statement = &attestation.statement;
    let index = job.digest.clone().unwrap().to_string();
    assert!(statement.names_subject(&index), "the index: {statement:?}");
    assert_eq!(job.manifest.iter().count(), 2);
    for (platform, digest) in job.manifest.iter() {
        assert!(
            statement.names_subject(digest.as_str()),
            "{platform}: {statement:?}"
        );
    }
    assert_eq!(statement.commit(), Some(repo.first_commit.as_str()));
    let component = service
        .runtime()
        .builder("podman")
        .unwrap()
        .info()
        .component_digest
        .clone();
    assert_eq!(
        statement.builder_digest().unwrap(),
        format!("sha256:{}", component.trim_start_matches("sha256:"))
    );
    let parameters = &statement.predicate.build_definition.external_parameters;
    assert_eq!(parameters.secrets, ["token"], "named, never valued");
    assert_eq!(parameters.platforms, ["linux/amd64", "linux/arm64"]);
    let text = serde_json::to_string(&attestation).unwrap();
    assert!(!text.contains("s3cr3t-provenance"), "{text}");
    let audit = serde_json::to_string(&service.audit(job.id.as_str()).await.unwrap()).unwrap();
    assert!(!audit.contains("s3cr3t-provenance"), "{audit}");
    assert!(audit.contains("--secret=id=token"), "{audit}");

    // In the registry, listed by the referrers fallback tag.
    let tag = job.image_tag.clone().unwrap();
    let repository = tag.rsplit_once(':').unwrap().0.to_string();
    let fallback = Command::new("skopeo")
        .args(["inspect", "--raw", "--tls-verify=false"])
        .arg(format!(
            "docker://{repository}:sha256-{}",
            index.trim_start_matches("sha256:")
        ))
        .output()
        .unwrap();
    assert!(fallback.status.success(), "{fallback:?}");
    let listed: serde_json::Value = serde_json::from_slice(&fallback.stdout).unwrap();
    let attached = attestation.reference.rsplit_once('@').unwrap().1;
    assert_eq!(listed["manifests"][0]["digest"], attached, "{listed}");

    // Verified by tag and by digest, with the public key.
    let registry_client = common::registry_client(&registry.address, None);
    for image in [tag.clone(), format!("{repository}@{index}")] {
        let verified = verify(&registry_client, &image, &public, &Policy::default())
            .await
            .unwrap();
        assert_eq!(verified.image, format!("{repository}@{index}"));
        assert_eq!(verified.statement, *statement);
    }
    let parameters = &statement.predicate.build_definition.external_parameters;
    let policy = Policy {
        builder_digests: vec![statement.builder_digest().unwrap()],
        source_repo: Some(parameters.repository.clone()),
        git_ref: Some(parameters.git_ref.clone()),
        ..Policy::default()
    };
    verify(&registry_client, &tag, &public, &policy)
        .await
        .unwrap();

    // Each way of failing says its own reason.
    let failure = |result: Result<_, String>| result.map(|_| ()).unwrap_err();
    let require = |policy: Policy| {
        let (registry_client, tag, public) = (&registry_client, &tag, &public);
        async move { failure(verify(registry_client, tag, public, &policy).await) }
    };
    let err = require(Policy {
        builder_digests: vec!["sha256:0000".into()],
        ..Policy::default()
    })
    .await;
    assert!(err.contains("is not one --builder-digest allows"), "{err}");
    let err = require(Policy {
        source_repo: Some("https://git.example/elsewhere.git".into()),
        ..Policy::default()
    })
    .await;
    assert!(
        err.contains("not --source-repo https://git.example/elsewhere.git"),
        "{err}"
    );
    let err = require(Policy {
        git_ref: Some("refs/heads/release".into()),
        ..policy.clone()
    })
    .await;
    assert!(err.contains("not --ref refs/heads/release"), "{err}");
    // A job of no project: neither protected nor any project's.
    let err = require(Policy {
        protected: true,
        ..Policy::default()
    })
    .await;
    assert!(
        err.contains("is not a protected ref of its project (--protected)"),
        "{err}"
    );
    let err = require(Policy {
        project: Some("web".into()),
        ..Policy::default()
    })
    .await;
    assert!(
        err.contains("built by no project, not by --project web"),
        "{err}"
    );
    let (_, stranger) = key_pair(dir.path(), "stranger");
    let err = failure(verify(&registry_client, &tag, &stranger, &Policy::default()).await);
    assert!(err.contains("signed by another key"), "{err}");

    // An image pushed without Helix has none.
    let plain = format!("{}/plain/app:1", registry.address);
    push_plain_image(&plain, "one");
    let err = failure(verify(&registry_client, &plain, &public, &Policy::default()).await);
    assert!(err.contains("has no provenance"), "{err}");

    // The real envelope attached to it: about another image.
    let plain_ref = reference(&plain).unwrap();
    let plain_manifest = registry_client.manifest(&plain_ref).await.unwrap().unwrap();
    let envelope = serde_json::to_vec(&attestation.envelope).unwrap();
    attach_one(
        &registry_client,
        &plain_ref,
        &plain_manifest,
        &dsse_artifact(&envelope),
    )
    .await;
    let err = failure(verify(&registry_client, &plain, &public, &Policy::default()).await);
    assert!(err.contains("it was made for another image"), "{err}");

    // A statement rewritten to name another image and commit, under the
    // real signature: altered.
    let other = format!("{}/plain/other:1", registry.address);
    push_plain_image(&other, "two");
    let other_ref = reference(&other).unwrap();
    let other_manifest = registry_client.manifest(&other_ref).await.unwrap().unwrap();
    let forged = serde_json::to_string(statement)
        .unwrap()
        .replace(&repo.first_commit, &"f".repeat(40))
        .replace(
            index.trim_start_matches("sha256:"),
            other_manifest.digest.trim_start_matches("sha256:"),
        );
    let mut tampered = attestation.envelope.clone();
    use base64::Engine as _;
    tampered.payload = base64::engine::general_purpose::STANDARD.encode(forged);
    attach_one(
        &registry_client,
        &other_ref,
        &other_manifest,
        &dsse_artifact(&serde_json::to_vec(&tampered).unwrap()),
    )
    .await;
    let err = failure(verify(&registry_client, &other, &public, &Policy::default()).await);
    assert!(err.contains("altered after it was signed"), "{err}");

    // The command consumers run: exit 0 and a summary, or non-zero and
    // the reason.
    let public_file = dir.path().join("helix.pub");
    let cli = |image: &str| {
        Command::new(env!("CARGO_BIN_EXE_helix-build"))
            .args(["verify", image, "--insecure", "--key"])
            .arg(&public_file)
            .output()
            .unwrap()
    };
    let ok = cli(&tag);
    let out = String::from_utf8_lossy(&ok.stdout);
    assert!(
        ok.status.success(),
        "{out} {}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert!(
        out.contains(&format!("{repository}@{index}: verified")),
        "{out}"
    );
    assert!(out.contains(&repo.first_commit), "{out}");
    assert!(out.contains("linux/arm64"), "{out}");
    let refused = cli(&plain);
    assert!(!refused.status.success());
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(err.contains("made for another image"), "{err}");

    // The simulated builder builds nothing, so it attests nothing, and
    // says so.
    let simulated = service
        .submit(JobRequest {
            repo_url: "https://git.example/app.git".into(),
            builder: Some("simulated".into()),
            ..JobRequest::default()
        })
        .await
        .unwrap();
    common::finished(&service, &simulated.id).await;
    match service.provenance(simulated.id.as_str()).await {
        Err(ServiceError::NoProvenance { reason, .. }) => {
            assert!(reason.contains("is simulated"), "{reason}")
        }
        other => panic!("{other:?}"),
    }
}

/// The digest the registry gives `image` now.
async fn registry_digest(registry: &str, image: &str) -> String {
    let manifest = common::registry_client(registry, None)
        .manifest(&reference(image).unwrap())
        .await;
    manifest.unwrap().unwrap().digest
}

/// The `sha256` of the resolved dependency whose `uri` is `image`, and who
/// resolved it.
fn dependency<'a>(
    statement: &'a helix_build::provenance::statement::Statement,
    image: &str,
) -> Option<(&'a str, &'a str)> {
    let entry = statement
        .predicate
        .build_definition
        .resolved_dependencies
        .iter()
        .find(|d| d.uri.as_deref() == Some(image))?;
    Some((
        entry.digest.get("sha256").map(String::as_str).unwrap_or(""),
        entry
            .annotations
            .get("resolvedBy")
            .map(String::as_str)
            .unwrap_or(""),
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_statement_names_the_images_the_build_used_and_the_dockerfile_it_built() {
    let registry = Registry::start(false);
    let base = format!("{}/helix-test/base:1", registry.address);
    let trusted = format!("{}/helix-test/trusted:1", registry.address);
    helix_fixtures::push_base_image(&base, 0);
    push_plain_image(&trusted, "never used");
    // The base behind a continuation and a global ARG; a `FROM` inside a
    // `RUN` continuation is part of that command, not a stage.
    let dockerfile = format!(
        "ARG BASE={base}\n\
         FROM \\\n    ${{BASE}} AS build\n\
         RUN [\"/bin/busybox\", \"ln\", \"-s\", \"busybox\", \"/bin/sh\"]\n\
         RUN /bin/busybox true \\\n\
         FROM {trusted}\n\
         FROM build\n\
         RUN /bin/busybox true\n"
    );
    let repo = helix_fixtures::dockerfile_repo(&dockerfile);
    let dir = tempfile::tempdir().unwrap();
    let (signing, _) = key_pair(dir.path(), "helix");
    let mut config = common::real_config(&dir, &registry.address);
    config.provenance_key = Some(signing);
    let service = common::start(&config.validated().unwrap()).await;
    let request = JobRequest {
        repo_url: format!("file://{}", repo.path().display()),
        builder: Some("podman".into()),
        ..JobRequest::default()
    };

    let pulled = registry_digest(&registry.address, &base).await;
    let (job, _) = common::run_logged(&service, request.clone()).await;
    assert_eq!(job.state, State::Succeeded, "{:?}", job.error);
    let statement = service.provenance(job.id.as_str()).await.unwrap().statement;
    assert_eq!(
        dependency(&statement, &base),
        Some((pulled.trim_start_matches("sha256:"), "build-tool")),
        "{statement:?}"
    );
    assert_eq!(dependency(&statement, &trusted), None, "{statement:?}");
    let dependencies = &statement.predicate.build_definition.resolved_dependencies;
    let built = dependencies
        .iter()
        .find(|d| d.name.as_deref() == Some(helix_build::provenance::DOCKERFILE))
        .expect("the Dockerfile is a dependency");
    use sha2::Digest as _;
    assert_eq!(
        built.digest["sha256"],
        hex::encode(sha2::Sha256::digest(dockerfile.as_bytes()))
    );
    assert_eq!(
        dependencies.len(),
        3,
        "source, Dockerfile, base: {dependencies:?}"
    );

    // The tag moves in the registry; the tools pull what is newer there
    // (buildah's default), and the statement says what the job's storage
    // built on: the new base.
    helix_fixtures::push_base_image(&base, 1);
    let moved = registry_digest(&registry.address, &base).await;
    assert_ne!(moved, pulled);
    let (again, _) = common::run_logged(&service, request).await;
    assert_eq!(again.state, State::Succeeded, "{:?}", again.error);
    let statement = service
        .provenance(again.id.as_str())
        .await
        .unwrap()
        .statement;
    assert_eq!(
        dependency(&statement, &base),
        Some((moved.trim_start_matches("sha256:"), "build-tool")),
        "{statement:?}"
    );
}

/// A registry away for a moment (stopped, then started again) while a
/// build's provenance is attached (its image read for the SBOM first),
/// and many builds attaching to one repository at once (each uploading
/// the same empty config blob): each step is tried again on its own and
/// succeeds, so no build is redone or failed for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attaching_provenance_rides_out_a_registry_restart_and_concurrent_uploads() {
    use helix_build::job::BuildResult;
    use helix_build::log::JobLog;
    use helix_build::manifest::{Digest, Manifest};
    use helix_build::provenance::{BuildFacts, Provenance};

    let mut registry = Registry::start(false);
    let image = format!("{}/retry/app:1", registry.address);
    push_plain_image(&image, "retry");
    let digest = registry_digest(&registry.address, &image).await;
    let dir = tempfile::tempdir().unwrap();
    let service = common::start(&common::config(&dir, 1, 100)).await;
    let job = service.submit(common::simulated(0)).await.unwrap();
    let runtime = service.runtime();
    let builder = runtime.builders().next().unwrap().info().clone();
    let result = BuildResult {
        image_tag: image.clone(),
        digest: Some(Digest::parse(&digest).unwrap()),
        manifest: Manifest::new(),
    };
    let (commit, dockerfile) = ("c".repeat(40), "d".repeat(64));
    let facts = BuildFacts {
        job: &job,
        commit: &commit,
        result: &result,
        builder: &builder,
        dockerfile_sha256: &dockerfile,
        base_images: Vec::new(),
        audit: b"[]",
        reused_from: None,
    };
    let (key, public) = key_pair(dir.path(), "retry");
    let provenance = Provenance::new(SigningKey::load(&key).unwrap(), "test-host".into());
    let registry_client = common::registry_client(&registry.address, None);

    registry.stop();
    let log = JobLog::new(100);
    let (attested, ()) = tokio::join!(provenance.attest(&registry_client, &facts, &log), async {
        tokio::time::sleep(std::time::Duration::from_millis(700)).await;
        tokio::task::block_in_place(|| registry.resume());
    });
    let attested = attested
        .expect("attached once the registry is back")
        .provenance;
    let retries = log.snapshot();
    assert!(
        retries.iter().any(|l| l.starts_with("[helix] provenance: ")
            && l.contains(" failed (")
            && l.contains("trying again in")),
        "{retries:?}"
    );
    let verified = verify(&registry_client, &image, &public, &Policy::default())
        .await
        .unwrap();
    assert_eq!(
        verified.image,
        format!("{}/retry/app@{digest}", registry.address)
    );

    // Six images of one repository attached at once (distinct images: the
    // fallback tag of one image is read, changed and written back whole).
    let mut results = Vec::new();
    for i in 0..6 {
        let image = format!("{}/retry/app:c{i}", registry.address);
        push_plain_image(&image, &format!("c{i}"));
        let digest = registry_digest(&registry.address, &image).await;
        results.push(BuildResult {
            image_tag: image,
            digest: Some(Digest::parse(&digest).unwrap()),
            manifest: Manifest::new(),
        });
    }
    let each: Vec<BuildFacts> = results
        .iter()
        .map(|result| BuildFacts {
            result,
            base_images: Vec::new(),
            ..facts
        })
        .collect();
    let logs: Vec<JobLog> = (0..each.len()).map(|_| JobLog::new(100)).collect();
    let all = futures_util::future::join_all(
        each.iter()
            .zip(&logs)
            .map(|(facts, log)| provenance.attest(&registry_client, facts, log)),
    )
    .await;
    let failed: Vec<&String> = all.iter().filter_map(|a| a.as_ref().err()).collect();
    assert!(failed.is_empty(), "{failed:?}");
    for result in &results {
        verify(
            &registry_client,
            &result.image_tag,
            &public,
            &Policy::default(),
        )
        .await
        .unwrap_or_else(|e| panic!("{}: {e}", result.image_tag));
    }

    // Six attestations of one image attached at once (one build's
    // platforms, or jobs reused from one build): the fallback tag lists
    // every one.
    let subject = reference(&image).unwrap();
    let manifest = registry_client.manifest(&subject).await.unwrap().unwrap();
    let envelopes: Vec<Vec<u8>> = (0..6)
        .map(|i| format!(r#"{{"payload":"{i}"}}"#).into_bytes())
        .collect();
    let artifacts: Vec<attach::Artifact> = envelopes.iter().map(|e| dsse_artifact(e)).collect();
    let pushed = attach::push(&registry_client, &subject, &manifest, &artifacts)
        .await
        .unwrap();
    let listings = futures_util::future::join_all(pushed.chunks(1).map(async |one| {
        let listing = attach::listing(&registry_client, &subject, &manifest.digest).await?;
        attach::list(&registry_client, &subject, &manifest.digest, one, listing).await
    }))
    .await;
    for listing in listings {
        listing.unwrap();
    }
    let attached: Vec<String> = pushed.into_iter().map(|p| p.digest).collect();
    let listed = attach::attestations(
        &registry_client,
        &subject,
        &manifest.digest,
        None,
        attach::ENVELOPE_TYPE,
    )
    .await
    .unwrap();
    for digest in &attached {
        assert!(listed.contains(digest), "{digest} not in {listed:?}");
    }
    assert!(
        attested
            .reference
            .starts_with(&format!("{}/retry/app@", registry.address))
    );
}
