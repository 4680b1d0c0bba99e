//! Publishing a build: the host pushes the image a builder left in its
//! workspace, with credentials no builder and no granted program can read,
//! and the job succeeds only if the registry then holds the tag at the
//! digest the host pushed and, for several platforms, an index listing
//! every requested one.
//!
//! Pushes run in the run's jail (`podman push`, `skopeo copy`, with the
//! run's copy of the credentials); the host reads the registry back
//! itself, over the OCI distribution API with the configured TLS settings
//! and auth file.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest as _, Sha256};

use super::RegistrySettings;
use super::oci::RawManifest;
use crate::cancel::CancelSignal;
use crate::cgroup::RunCgroup;
use crate::docker_engine::{DockerEngine, DockerEngineError, platform_tag};
use crate::exec::{Confinement, HostCommand, RunError};
use crate::jail::Jail;
use crate::job::BuildResult;
use crate::log::JobLog;
use crate::platform::Platform;

/// Why the host could not publish what a builder built.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("cancelled: {reason}")]
    Cancelled { reason: String },
    #[error("pushing {image} took longer than {}s", PUSH_TIMEOUT.as_secs())]
    PushTimedOut { image: String },
    /// The host's push tool could not run.
    #[error("cannot run {program} to push: {source}; install {program} on the build host")]
    Tool {
        program: String,
        #[source]
        source: RunError,
    },
    /// The registry refused the push or could not be reached.
    #[error("pushing {image} failed: {said}")]
    Refused { image: String, said: String },
    #[error("pushing the index of {image} failed: {said}")]
    Index { image: String, said: String },
    /// The registry, read back, does not hold what the host pushed.
    #[error("{0}")]
    Unverified(String),
    /// The job's image name cannot be pushed to.
    #[error("{0}")]
    Destination(String),
    /// What the builder left is not a pushable image.
    #[error("{0}")]
    Builder(String),
    /// The Docker Engine holding the images failed the host.
    #[error(transparent)]
    Engine(DockerEngineError),
    /// An earlier build's image could not be given the job's name.
    #[error("giving the earlier build's image the job's name failed: {0}")]
    Copy(#[source] super::CopyError),
    /// The engine could not push to the registry.
    #[error("pushing {image} failed: {source}")]
    EnginePush {
        image: String,
        #[source]
        source: DockerEngineError,
    },
}

/// What a builder left for the host to push.
pub enum Pushed<'a> {
    /// An OCI layout directory inside the workspace; `env` names the
    /// run's registry settings and its copy of the credentials.
    Layout {
        layout: &'a Path,
        env: &'a BTreeMap<String, String>,
    },
    /// The image in the job's container storage, which `env` names with
    /// the run's registry settings and its copy of the credentials.
    Storage {
        env: &'a BTreeMap<String, String>,
        workspace: &'a Path,
        several_platforms: bool,
    },
    /// One image per platform in a Docker Engine, called `name` and
    /// tagged by platform ([`crate::docker_engine::platform_tag`]).
    Engine {
        engine: &'a DockerEngine,
        name: &'a str,
    },
}

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|a| a.to_string()).collect()
}

/// Media types of what `docker push` sends, and of the index of them.
const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";

/// One push to `image`, run as the host.
struct Push<'a> {
    image: &'a str,
    log: &'a JobLog,
    cancel: &'a CancelSignal,
    cgroup: Option<&'a RunCgroup>,
    jail: Option<&'a Jail>,
}

impl Push<'_> {
    /// Runs `program` to push; its output, or why the push failed.
    async fn run(
        &self,
        program: &str,
        args: &[String],
        env: &BTreeMap<String, String>,
        cwd: &Path,
    ) -> Result<crate::exec::CommandOutput, PublishError> {
        let image = self.image.to_string();
        let output = HostCommand {
            program,
            args,
            env,
            cwd,
            timeout: Some(PUSH_TIMEOUT),
            log: self.log,
            cancel: self.cancel,
            cgroup: self.cgroup,
            jail: self.jail,
        }
        .run()
        .await
        .map_err(|e| match e {
            RunError::Cancelled => PublishError::Cancelled {
                reason: self.cancel.reason(),
            },
            RunError::TimedOut => PublishError::PushTimedOut {
                image: image.clone(),
            },
            source => PublishError::Tool {
                program: program.to_string(),
                source,
            },
        })?;
        if output.exit_code != 0 {
            return Err(PublishError::Refused {
                image,
                said: output.error_line(),
            });
        }
        Ok(output)
    }
}

/// Waits for the other pushes to `image` from an engine (the host names
/// the image there by its destination to push it) and holds the turn.
async fn push_turn(image: &str) -> tokio::sync::OwnedMutexGuard<()> {
    type Turns = BTreeMap<String, std::sync::Weak<tokio::sync::Mutex<()>>>;
    static TURNS: std::sync::Mutex<Turns> = std::sync::Mutex::new(BTreeMap::new());
    let turn = {
        let mut turns = TURNS.lock().unwrap_or_else(|e| e.into_inner());
        turns.retain(|_, turn| turn.strong_count() > 0);
        match turns.get(image).and_then(std::sync::Weak::upgrade) {
            Some(turn) => turn,
            None => {
                let turn = Arc::new(tokio::sync::Mutex::new(()));
                turns.insert(image.to_string(), Arc::downgrade(&turn));
                turn
            }
        }
    };
    turn.lock_owned().await
}

/// How long one registry query may take.
const QUERY_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a push may take.
const PUSH_TIMEOUT: Duration = Duration::from_secs(1800);

/// What a push left in the registry, checked there.
#[derive(Debug, Clone)]
pub struct Published {
    pub result: BuildResult,
    /// What the image at the tag holds, in bytes (see `size`).
    pub bytes: u64,
}

/// Pushes images and asks registries what a tag really points to.
#[derive(Debug, Clone, Default)]
pub struct Publisher {
    registries: Arc<RegistrySettings>,
}

impl Publisher {
    pub fn new(registries: Arc<RegistrySettings>) -> Self {
        Publisher { registries }
    }

    /// Pushes the image a builder left to `image`: the digest pushed,
    /// which [`Publisher::check_pushed`] then reads back.
    pub async fn push(
        &self,
        built: Pushed<'_>,
        image: &str,
        requested: &[Platform],
        log: &JobLog,
        cancel: &CancelSignal,
        confined: Confinement<'_>,
    ) -> Result<String, PublishError> {
        log.push(&format!("[helix] pushing the built image to {image}"));
        let push = Push {
            image,
            log,
            cancel,
            cgroup: confined.cgroup,
            jail: confined.jail,
        };
        let insecure = self.registries.is_insecure(image);
        let destination = format!("docker://{image}");
        let digest = match built {
            Pushed::Layout { layout, env } => {
                check_layout(layout).map_err(PublishError::Builder)?;
                let mut args =
                    strings(&["copy", "--all", "--quiet", "--digestfile", "/dev/stdout"]);
                if insecure {
                    args.push("--dest-tls-verify=false".into());
                }
                args.push(format!("oci:{}", layout.display()));
                args.push(destination);
                push.run("skopeo", &args, env, layout).await?.stdout
            }
            // podman, not skopeo: it pushes manifest lists from storage.
            // Layers the registry has (a base image's) are not sent again.
            Pushed::Storage {
                env,
                workspace,
                several_platforms,
            } => {
                let mut args = match several_platforms {
                    true => strings(&["manifest", "push", "--all"]),
                    false => strings(&["push"]),
                };
                args.extend(strings(&["--quiet", "--digestfile", "/dev/stdout"]));
                if insecure {
                    args.push("--tls-verify=false".into());
                }
                args.push(crate::layer_cache::LOCAL_IMAGE.into());
                args.push(destination);
                push.run("podman", &args, env, workspace).await?.stdout
            }
            Pushed::Engine { engine, name } => {
                self.push_from_engine(&push, engine, name, requested)
                    .await?
            }
        };
        Ok(digest.trim().to_string())
    }

    /// Reads the registry back through `client` (with the job's
    /// credentials: the run's own, whose pool and token its other reads
    /// share) after a push of `digest` to `image`: the job's result and
    /// what the image holds, or why it failed.
    pub async fn check_pushed(
        client: &super::oci::RegistryClient,
        image: &str,
        digest: &str,
        requested: &[Platform],
        log: &JobLog,
    ) -> Result<Published, PublishError> {
        let (result, manifest) = Self::verify(client, image, digest, requested)
            .await
            .map_err(PublishError::Unverified)?;
        let reference = super::oci::reference(image).map_err(PublishError::Unverified)?;
        let bytes = super::size::image_bytes(client, &reference, &manifest.bytes).await;
        log.push(&format!(
            "[helix] verified: {image} is {digest} in the registry ({bytes} bytes)"
        ));
        Ok(Published { result, bytes })
    }

    /// Gives the image `from` (`repository@sha256:…`, an earlier job's)
    /// the name `image` within its registry and reads the registry back
    /// as after a push, through `client` (as [`Publisher::check_pushed`]):
    /// the job's result, or why it could not be reused.
    pub async fn publish_copy(
        client: &super::oci::RegistryClient,
        from: &str,
        image: &str,
        requested: &[Platform],
        log: &JobLog,
    ) -> Result<BuildResult, PublishError> {
        super::copy::copy(client, from, image)
            .await
            .map_err(PublishError::Copy)?;
        let digest = from.rsplit_once('@').map(|(_, d)| d).unwrap_or_default();
        let (result, _) = Self::verify(client, image, digest, requested)
            .await
            .map_err(PublishError::Unverified)?;
        log.push(&format!(
            "[helix] verified: {image} is {digest} in the registry"
        ));
        Ok(result)
    }

    /// The first of a failed build's base `images` whose registry shows it
    /// cannot serve `requested` (see [`super::base`]).
    pub async fn check_base_images(
        &self,
        images: &[String],
        requested: &[Platform],
    ) -> Option<super::BaseImageError> {
        super::base::check(self.registries.clone(), images, requested).await
    }

    /// The digest of each of `images` in the job's container storage after
    /// its build: what the build tool pulled (or found there, from an
    /// earlier job of the same cache slot) and built on, which can differ
    /// from what the tag names in the registry now. An image the storage
    /// does not hold is left out.
    pub async fn storage_digests(
        &self,
        images: &[String],
        env: &BTreeMap<String, String>,
        workspace: &Path,
        log: &JobLog,
        cancel: &CancelSignal,
        confined: Confinement<'_>,
    ) -> BTreeMap<String, String> {
        let mut digests = BTreeMap::new();
        for image in images {
            let args = strings(&["image", "inspect", "--format", "{{.Digest}}", image]);
            let inspected = HostCommand {
                program: "podman",
                args: &args,
                env,
                cwd: workspace,
                timeout: Some(QUERY_TIMEOUT),
                log,
                cancel,
                cgroup: confined.cgroup,
                jail: confined.jail,
            }
            .run()
            .await;
            if let Ok(output) = inspected
                && output.exit_code == 0
                && let Some(digest) = output.stdout.lines().next()
                && digest.starts_with("sha256:")
            {
                digests.insert(image.clone(), digest.trim().to_string());
            }
        }
        digests
    }

    /// Pushes each platform's image from the engine through its API, as
    /// `docker push` does (layers the registry has are not sent again)
    /// and, for several, the index of them; the digest of what `image`
    /// now names.
    ///
    /// A push takes only a tag, so each platform's image is pushed to
    /// `image` in turn before the index replaces it: the tag names one
    /// platform's image for a moment. Pushes to the same tag wait for
    /// each other, so none sends another job's image under its name.
    async fn push_from_engine(
        &self,
        push: &Push<'_>,
        engine: &DockerEngine,
        name: &str,
        requested: &[Platform],
    ) -> Result<String, PublishError> {
        let _turn = push_turn(push.image).await;
        let (repository, tag) = crate::reference::split_tag(push.image).ok_or_else(|| {
            PublishError::Destination(format!("{} names no tag to push to", push.image))
        })?;
        let engine_fault = PublishError::Engine;
        let credentials = self
            .registries
            .credentials(crate::reference::registry_of(push.image));
        let mut pushed = Vec::new();
        for platform in requested {
            let built = format!("{name}:{}", platform_tag(platform));
            match engine.platform_of(&built).await.map_err(engine_fault)? {
                Some(found) if Platform::parse(&found).ok().as_ref() == Some(platform) => {}
                Some(found) => {
                    return Err(PublishError::Builder(format!(
                        "the builder's image {built} is for {found}, not {platform}"
                    )));
                }
                None => {
                    return Err(PublishError::Builder(format!(
                        "the builder left no image {built} for {platform} in the engine"
                    )));
                }
            }
            engine
                .tag(&built, repository, tag)
                .await
                .map_err(engine_fault)?;
            let result = tokio::select! {
                result = engine.push(repository, tag, credentials.clone(), PUSH_TIMEOUT) => result,
                reason = push.cancel.cancelled() => {
                    let _ = engine.remove(push.image).await;
                    return Err(PublishError::Cancelled { reason });
                }
            };
            // The destination's name goes whether the push worked or not.
            engine.remove(push.image).await.map_err(engine_fault)?;
            let (digest, size) = result.map_err(|source| PublishError::EnginePush {
                image: push.image.to_string(),
                source,
            })?;
            push.log.push(&format!(
                "[helix] pushed {platform} from the engine: {digest}"
            ));
            pushed.push((platform, digest, size));
        }
        if let [(_, digest, _)] = pushed.as_slice() {
            return Ok(digest.clone());
        }
        let index = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": DOCKER_LIST,
            "manifests": pushed.iter().map(|(platform, digest, size)| {
                let mut entry = serde_json::json!({
                    "mediaType": DOCKER_MANIFEST,
                    "digest": digest,
                    "size": size,
                    "platform": { "os": platform.os(), "architecture": platform.arch() },
                });
                if let Some(variant) = platform.variant() {
                    entry["platform"]["variant"] = variant.into();
                }
                entry
            }).collect::<Vec<_>>(),
        });
        let bytes = serde_json::to_vec(&index).expect("JSON values serialize");
        let digest = super::oci::digest_of(&bytes);
        let reference = super::oci::reference(push.image).map_err(PublishError::Destination)?;
        super::oci::RegistryClient::new(self.registries.clone())
            .push_manifest(&reference, bytes, DOCKER_LIST)
            .await
            .map_err(|said| PublishError::Index {
                image: push.image.to_string(),
                said,
            })?;
        Ok(digest)
    }

    /// What `tag` holds now, read through `client`, if it is the `pushed`
    /// digest with every requested platform.
    async fn verify(
        client: &super::oci::RegistryClient,
        tag: &str,
        pushed: &str,
        requested: &[Platform],
    ) -> Result<(BuildResult, RawManifest), String> {
        let manifest = Self::raw_manifest(client, tag).await?;
        let actual = format!("sha256:{}", hex::encode(Sha256::digest(&manifest.bytes)));
        if pushed != actual {
            return Err(format!(
                "{tag} resolves to {actual} in the registry, but the host pushed {pushed:?}; \
                 did something else push the same tag?"
            ));
        }
        let mut platform_digests = Vec::new();
        if requested.len() > 1 {
            let listed = index_platforms(&manifest.bytes).map_err(|e| format!("{tag}: {e}"))?;
            let missing: Vec<String> = requested
                .iter()
                .filter(|p| !listed.iter().any(|(listed, _)| listed == *p))
                .map(ToString::to_string)
                .collect();
            if !missing.is_empty() {
                return Err(format!(
                    "the index of {tag} lists no image for {}",
                    missing.join(", ")
                ));
            }
            platform_digests = listed
                .into_iter()
                .filter(|(p, _)| requested.contains(p))
                .map(|(p, d)| (p.to_string(), d))
                .collect();
        }
        let result =
            BuildResult::validate(tag.to_string(), Some(actual), platform_digests, requested)
                .map_err(|e| format!("the registry {e}"))?;
        Ok((result, manifest))
    }

    /// The manifest `tag` names in the registry, as stored, read by the
    /// host itself (no program: nothing the registry answers reaches a
    /// tool outside a jail).
    async fn raw_manifest(
        client: &super::oci::RegistryClient,
        tag: &str,
    ) -> Result<RawManifest, String> {
        let reference = super::oci::reference(tag)?;
        match tokio::time::timeout(QUERY_TIMEOUT, client.manifest(&reference)).await {
            Err(_) => Err(format!(
                "the registry did not answer about {tag} within {}s",
                QUERY_TIMEOUT.as_secs()
            )),
            Ok(Err(e)) => Err(format!("cannot read {tag} from the registry: {e}")),
            Ok(Ok(None)) => Err(format!(
                "cannot read {tag} from the registry: it has no such manifest"
            )),
            Ok(Ok(Some(manifest))) => Ok(manifest),
        }
    }
}

/// A layout the host may read: a directory of plain files and directories
/// only. A symbolic link (or a device, a FIFO) could make the push read a
/// host file or hang, so any is refused.
fn check_layout(layout: &Path) -> Result<(), String> {
    let shown = layout.display();
    let mut pending = vec![layout.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let meta = std::fs::symlink_metadata(&dir)
            .map_err(|e| format!("the builder left no image at {shown}: {e}"))?;
        if !meta.is_dir() {
            return Err(format!(
                "the builder's image {shown} must be an OCI layout directory, found {}",
                kind(&meta)
            ));
        }
        let entries = std::fs::read_dir(&dir).map_err(|e| format!("cannot read {shown}: {e}"))?;
        for entry in entries {
            let entry = entry.map_err(|e| format!("cannot read {shown}: {e}"))?;
            let meta = entry
                .metadata()
                .map_err(|e| format!("cannot read {}: {e}", entry.path().display()))?;
            if meta.is_dir() {
                pending.push(entry.path());
            } else if !meta.is_file() {
                return Err(format!(
                    "the builder's image holds {} at {}; an OCI layout may hold only files and directories",
                    kind(&meta),
                    entry.path().display()
                ));
            }
        }
    }
    if !layout.join("index.json").is_file() {
        return Err(format!(
            "the builder's image {shown} has no index.json: it is not an OCI layout"
        ));
    }
    Ok(())
}

fn kind(meta: &std::fs::Metadata) -> &'static str {
    if meta.file_type().is_symlink() {
        "a symbolic link"
    } else if meta.is_file() {
        "a file"
    } else {
        "a special file"
    }
}

/// (platform, digest) of every entry of an image index.
pub(super) fn index_platforms(raw: &[u8]) -> Result<Vec<(Platform, String)>, String> {
    let value: serde_json::Value = serde_json::from_slice(raw)
        .map_err(|e| format!("the registry's manifest is not JSON: {e}"))?;
    let Some(entries) = value["manifests"].as_array() else {
        return Err("it is a single image, not an index of platforms".into());
    };
    Ok(entries
        .iter()
        .filter_map(|entry| {
            let platform = &entry["platform"];
            let mut text = format!(
                "{}/{}",
                platform["os"].as_str()?,
                platform["architecture"].as_str()?
            );
            if let Some(variant) = platform["variant"].as_str().filter(|v| !v.is_empty()) {
                text = format!("{text}/{variant}");
            }
            Some((
                Platform::parse(&text).ok()?,
                entry["digest"].as_str()?.to_string(),
            ))
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_layout_holding_a_link_or_no_index_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let layout = dir.path().join("image");
        std::fs::create_dir_all(layout.join("blobs/sha256")).unwrap();
        std::fs::write(layout.join("index.json"), "{}").unwrap();
        std::fs::write(layout.join("oci-layout"), "{}").unwrap();
        assert_eq!(check_layout(&layout), Ok(()));

        std::os::unix::fs::symlink("/etc/shadow", layout.join("blobs/sha256/abc")).unwrap();
        let err = check_layout(&layout).unwrap_err();
        assert!(err.contains("a symbolic link"), "{err}");

        std::fs::remove_file(layout.join("blobs/sha256/abc")).unwrap();
        std::fs::remove_file(layout.join("index.json")).unwrap();
        let err = check_layout(&layout).unwrap_err();
        assert!(err.contains("no index.json"), "{err}");

        std::os::unix::fs::symlink(&layout, dir.path().join("link")).unwrap();
        let err = check_layout(&dir.path().join("link")).unwrap_err();
        assert!(err.contains("a symbolic link"), "{err}");
    }

    #[test]
    fn reads_platforms_of_an_index() {
        let raw = br#"{"manifests":[
            {"digest":"sha256:aa","platform":{"os":"linux","architecture":"amd64"}},
            {"digest":"sha256:bb","platform":{"os":"linux","architecture":"arm","variant":"v7"}}]}"#;
        let listed = index_platforms(raw).unwrap();
        let names: Vec<String> = listed.iter().map(|(p, d)| format!("{p}={d}")).collect();
        assert_eq!(names, ["linux/amd64=sha256:aa", "linux/arm/v7=sha256:bb"]);
        assert!(
            index_platforms(br#"{"layers":[]}"#)
                .unwrap_err()
                .contains("single image")
        );
    }
}
