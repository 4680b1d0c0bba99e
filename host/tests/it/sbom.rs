//! The SBOM of a real build and the Sigstore bundles beside the DSSE
//! attestations, checked with outside tools nobody here wrote: the
//! image (`FROM scratch`) carries this machine's own dpkg database (a
//! stale one in a lower layer, which the upper one replaces) and a
//! hand-written apk database; the SPDX document is validated by
//! `pyspdxtools` (spdx-tools, PyPI) and the bundles verified with the
//! key by the Sigstore project's `@sigstore/verify` (npm), a tampered one
//! refused. Both are installed by `.ci/setup` under
//! `/usr/local/lib/helix-test`.

use crate::common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use helix_build::job::{JobRequest, State};
use helix_build::provenance::attach;
use helix_build::provenance::bundle::BUNDLE_TYPE;
use helix_build::provenance::dsse::{PublicKey, SigningKey};
use helix_build::provenance::sbom::{JobSbom, SPDX_DOCUMENT};
use helix_build::provenance::statement::SLSA_PROVENANCE;
use helix_build::registry::oci::{RegistryClient, reference};
use helix_fixtures::Registry;
use serde_json::Value;

const TOOLS: &str = "/usr/local/lib/helix-test";

const APK: &str = "C:Q1abc=\nP:musl\nV:1.2.5-r0\nA:x86_64\n\nP:busybox\nV:1.36.1-r29\nA:x86_64\n";

/// `pyspdxtools -i document`: validates it as SPDX.
fn spdx_tools(document: &Path) -> Output {
    let dir = format!("{TOOLS}/spdx-tools");
    let program = PathBuf::from(format!("{dir}/bin/pyspdxtools"));
    assert!(
        program.exists(),
        "{} is missing: run .ci/setup",
        program.display()
    );
    Command::new(program)
        .arg("-i")
        .arg(document)
        .env("PYTHONPATH", &dir)
        .output()
        .unwrap()
}

/// `@sigstore/verify` on `bundle` with `key`, for an image of `digest`.
fn sigstore_verify(bundle: &Path, key: &Path, digest: &str) -> Output {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/it/sigstore/verify-bundle.js");
    assert!(
        Path::new(&format!("{TOOLS}/sigstore/node_modules/@sigstore/verify")).exists(),
        "@sigstore/verify is missing: run .ci/setup"
    );
    Command::new("node")
        .arg(script)
        .args([bundle.as_os_str(), key.as_os_str(), digest.as_ref()])
        .env("NODE_PATH", format!("{TOOLS}/sigstore/node_modules"))
        .output()
        .unwrap()
}

/// The one layer (a bundle) of the artifact `at` (`repository@digest`).
async fn bundle_at(registry: &RegistryClient, at: &str) -> Vec<u8> {
    let at = reference(at).unwrap();
    let manifest = registry.manifest(&at).await.unwrap().unwrap();
    let manifest: Value = serde_json::from_slice(&manifest.bytes).unwrap();
    assert_eq!(manifest["artifactType"], BUNDLE_TYPE, "{manifest}");
    assert_eq!(
        manifest["layers"][0]["mediaType"], BUNDLE_TYPE,
        "{manifest}"
    );
    let layer = manifest["layers"][0]["digest"].as_str().unwrap();
    registry.blob(&at, layer).await.unwrap()
}

fn said(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sbom_lists_the_images_packages_and_outside_tools_verify_it_and_the_bundles() {
    let registry = Registry::start(false);
    let dir = tempfile::tempdir().unwrap();
    let (private, public) = (dir.path().join("helix.key"), dir.path().join("helix.pub"));
    SigningKey::generate()
        .unwrap()
        .write(&private, &public)
        .unwrap();
    let key = PublicKey::load(&public).unwrap();

    let repo = tempfile::tempdir().unwrap();
    let status = std::fs::read_to_string("/var/lib/dpkg/status").unwrap();
    std::fs::write(repo.path().join("status"), &status).unwrap();
    std::fs::write(
        repo.path().join("stale"),
        "Package: stale\nStatus: install ok installed\nVersion: 0.1\n",
    )
    .unwrap();
    std::fs::write(repo.path().join("installed"), APK).unwrap();
    std::fs::write(
        repo.path().join("Dockerfile"),
        "FROM scratch\n\
         COPY stale /var/lib/dpkg/status\n\
         COPY installed /lib/apk/db/installed\n\
         COPY status /var/lib/dpkg/status\n",
    )
    .unwrap();
    for args in [
        &["init", "-q", "-b", "main"][..],
        &["add", "-A"],
        &["commit", "-qm", "an image of package databases"],
    ] {
        helix_fixtures::git(repo.path(), args);
    }
    let mut config = common::real_config(&dir, &registry.address);
    config.provenance_key = Some(private);
    let service = common::start(&config.validated().unwrap()).await;
    let (job, logs) = common::run_logged(
        &service,
        JobRequest {
            platforms: vec!["linux/amd64".into()],
            ..common::on_repo(repo.path(), "podman")
        },
    )
    .await;
    assert_eq!(job.state, State::Succeeded, "{:?}", job.error);
    let digest = job.digest.clone().unwrap().to_string();

    // What the host kept: one platform, every package dpkg says is
    // installed here (not the stale database below it), and apk's.
    let JobSbom { sboms } = service.sbom(job.id.as_str()).await.unwrap();
    assert_eq!(sboms.len(), 1, "{sboms:?}");
    let sbom = &sboms[0];
    assert_eq!(sbom.platform, "linux/amd64");
    assert!(
        logs.iter()
            .any(|l| l.starts_with("[helix] sbom: linux/amd64: ") && l.contains(&sbom.reference)),
        "{logs:?}"
    );
    let statement = &sbom.statement;
    assert_eq!(statement.predicate_type, SPDX_DOCUMENT);
    assert_eq!(
        statement.subject[0].digest["sha256"],
        digest.trim_start_matches("sha256:")
    );
    let document = &statement.predicate;
    let purls: Vec<&str> = document
        .packages
        .iter()
        .flat_map(|p| &p.external_refs)
        .map(|r| r.reference_locator.as_str())
        .collect();
    let libc6 = Command::new("dpkg-query")
        .args(["-W", "-f=${Version}", "libc6"])
        .output()
        .unwrap();
    let libc6 = String::from_utf8(libc6.stdout).unwrap().replace('+', "%2B");
    assert!(
        purls.contains(&format!("pkg:deb/debian/libc6@{libc6}?arch=amd64").as_str()),
        "{purls:?}"
    );
    assert!(purls.contains(&"pkg:apk/alpine/busybox@1.36.1-r29?arch=x86_64"));
    assert!(!purls.iter().any(|p| p.contains("/stale@")), "{purls:?}");
    let installed = status
        .split("\n\n")
        .filter(|p| p.contains("\nStatus: install ok installed"))
        .count();
    assert_eq!(
        document.packages.len(),
        1 + installed + 2,
        "the image, dpkg's, apk's"
    );
    assert_eq!(
        key.open(&sbom.envelope).unwrap(),
        serde_json::to_vec(statement).unwrap()
    );

    // Served as kept.
    let router = helix_build::api::router(service.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router).await });
    let served: JobSbom = reqwest::get(format!("{base}/v1/jobs/{}/sbom", job.id))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(served.sboms, sboms);

    // spdx-tools: valid SPDX 2.3; and it does say when it is not.
    let file = dir.path().join("sbom.spdx.json");
    std::fs::write(&file, serde_json::to_vec(document).unwrap()).unwrap();
    let checked = spdx_tools(&file);
    assert!(checked.status.success(), "{}", said(&checked));
    let mut broken = serde_json::to_value(document).unwrap();
    broken["relationships"][1]["relatedSpdxElement"] = "SPDXRef-nowhere".into();
    std::fs::write(&file, broken.to_string()).unwrap();
    let refused = spdx_tools(&file);
    assert!(!refused.status.success(), "{}", said(&refused));

    // Found as cosign finds them: bundles among the image's referrers,
    // one about each statement; verified with the key by @sigstore/verify.
    let client = common::registry_client(&registry.address, None);
    let image = reference(&job.image_tag.clone().unwrap()).unwrap();
    let bundles = attach::attestations(&client, &image, &digest, None, BUNDLE_TYPE)
        .await
        .unwrap();
    let provenance = service.provenance(job.id.as_str()).await.unwrap();
    let kept = [provenance.bundle.clone().unwrap(), sbom.bundle.clone()];
    for at in &kept {
        let listed = at.rsplit_once('@').unwrap().1;
        assert!(bundles.iter().any(|b| b == listed), "{at} in {bundles:?}");
    }
    for (at, predicate) in kept.iter().zip([SLSA_PROVENANCE, SPDX_DOCUMENT]) {
        let path = dir.path().join("bundle.json");
        std::fs::write(&path, bundle_at(&client, at).await).unwrap();
        let verified = sigstore_verify(&path, &public, &digest);
        assert!(verified.status.success(), "{at}: {}", said(&verified));
        assert_eq!(String::from_utf8_lossy(&verified.stdout).trim(), predicate);
    }

    // Refused: a bundle whose statement was changed after signing, one
    // checked with another key, and one checked for another image.
    let path = dir.path().join("tampered.json");
    let mut tampered: Value =
        serde_json::from_slice(&bundle_at(&client, &sbom.bundle).await).unwrap();
    let payload = BASE64
        .decode(tampered["dsseEnvelope"]["payload"].as_str().unwrap())
        .unwrap();
    let forged = String::from_utf8(payload)
        .unwrap()
        .replace(&libc6, "9.99-1");
    tampered["dsseEnvelope"]["payload"] = BASE64.encode(forged).into();
    std::fs::write(&path, tampered.to_string()).unwrap();
    let refused = sigstore_verify(&path, &public, &digest);
    assert!(!refused.status.success());
    assert!(
        said(&refused).contains("SIGNATURE_ERROR"),
        "{}",
        said(&refused)
    );
    let (stranger, stranger_public) = (dir.path().join("s.key"), dir.path().join("s.pub"));
    SigningKey::generate()
        .unwrap()
        .write(&stranger, &stranger_public)
        .unwrap();
    let genuine = dir.path().join("genuine.json");
    std::fs::write(&genuine, bundle_at(&client, &sbom.bundle).await).unwrap();
    let refused = sigstore_verify(&genuine, &stranger_public, &digest);
    assert!(
        said(&refused).contains("SIGNATURE_ERROR"),
        "{}",
        said(&refused)
    );
    let elsewhere = format!("sha256:{}", "0".repeat(64));
    let refused = sigstore_verify(&genuine, &public, &elsewhere);
    assert!(
        said(&refused).contains("is not about"),
        "{}",
        said(&refused)
    );
}

/// What a layer said is kept by its digest: reading an image again (as a
/// rebuild's image over the same base is read) takes its layers from what
/// was kept, though the registry no longer serves them, while a reader
/// that kept nothing has to fetch them and cannot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_layer_read_once_is_taken_from_what_was_kept_not_fetched_again() {
    use helix_build::provenance::layers::{self, LayersRead};
    const STATUS: &str = "var/lib/dpkg/status";
    let registry = Registry::start(false);
    let dir = tempfile::tempdir().unwrap();
    let repo = helix_fixtures::dockerfile_repo(
        "FROM scratch\nCOPY Dockerfile /var/lib/dpkg/status\nCOPY Dockerfile /app\n",
    );
    let service = common::start(&common::real_config(&dir, &registry.address)).await;
    let (job, _) = common::run_logged(&service, common::on_repo(repo.path(), "podman")).await;
    assert_eq!(job.state, State::Succeeded, "{:?}", job.error);

    let client = common::registry_client(&registry.address, None);
    let image = reference(&job.image_tag.clone().unwrap()).unwrap();
    let manifest = client.manifest(&image).await.unwrap().unwrap();
    let json: Value = serde_json::from_slice(&manifest.bytes).unwrap();
    let read = async |kept: &LayersRead| {
        layers::read(&client, &image, &manifest.digest, &json, &[STATUS], kept).await
    };
    let kept = LayersRead::default();
    let first = read(&kept).await.unwrap();
    assert!(
        first.files[STATUS].starts_with(b"FROM scratch"),
        "{first:?}"
    );

    for layer in json["layers"].as_array().unwrap() {
        registry.forget_blob(layer["digest"].as_str().unwrap());
    }
    assert_eq!(read(&kept).await.unwrap(), first, "from what was kept");
    assert!(
        read(&LayersRead::default()).await.is_err(),
        "the registry no longer serves the layers"
    );
}
