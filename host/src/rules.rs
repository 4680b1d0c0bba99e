//! What the host refuses in a job's Dockerfile before any build, read
//! with the one Dockerfile parser (`helix-dockerfile`) every check shares.
//!
//! Each refusal names its rule and the line, and fails the job as
//! `invalid job` before a builder runs:
//!
//! - `parse`: a Dockerfile the parser cannot read (an unknown instruction,
//!   a malformed one), named as the parser says it: `Dockerfile line 3:
//!   unknown instruction "RUNN"`. The build tools would read it some way
//!   of their own, which the host cannot check.
//! - `frontend`: a `syntax` directive (`# syntax=`, `// syntax=`, after a
//!   shebang, or a JSON file's `"syntax"`) on a builder that builds in a
//!   BuildKit engine: BuildKit would pull that image from any address
//!   the engine reaches and run it as the build's frontend, outside the
//!   `RUN` steps' sandbox. podman and buildah ignore the directive.
//! - `bind-mount`: `RUN --mount=type=bind` must read either a path of the
//!   build context that stays inside it with every symbolic link of the
//!   checkout followed (podman 4.3 and buildah 1.28 resolve it on the
//!   host, CVE-2024-1753), or a path without `..` of an earlier stage
//!   (`from=` a stage name or index; another image's files cannot be
//!   checked).
//! - `cache-mount`: a `RUN --mount=type=cache` id must hold no `/` and no
//!   `..` (buildah joins it to a host directory, CVE-2024-9675); `from=`
//!   as for bind mounts.
//! - `mount-variable`: a `$` in a mount's `source`, `from` or `id`: the
//!   tools differ in whether they expand it, so the host could check a
//!   value the tool does not use.
//! - `run-options`: `RUN --network` other than `default`/`none`, or
//!   `RUN --security` other than `sandbox`: podman and buildah would give
//!   the step the host's network or a privileged container.
//! - `remote-source`: `ADD`/`COPY` of a URL (or a git address) is fetched
//!   by the build tool itself, on the host's network rather than in a
//!   `RUN` step's: allowed only on a builder whose `network` is `host`,
//!   which the operator chose to trust with the host's network.
//!
//! podman 4.3 and buildah 1.28 do not know heredocs and read a heredoc's
//! lines as instructions, BuildKit does: the rules hold for both readings.

use std::collections::HashMap;
use std::path::{Component, Path};

use helix_dockerfile::{Dockerfile, MountKind, ParseError, ParseOptions, Stage};
use sha2::Digest as _;

use crate::exec::JobValues;
use crate::job::Job;
use crate::network::BuildNetwork;
use crate::platform::Platform;
use crate::plugin::Builder;
use crate::source::{CheckedSource, ContextError, check_context};

/// A job's checked-out source whose Dockerfile passed every rule.
#[derive(Debug, Clone)]
pub struct CheckedBuild {
    pub checkout: CheckedSource,
    /// The external images the Dockerfile uses (`FROM`, `COPY --from`,
    /// mounts `from=` an image), as the job's build args resolve them.
    pub external_images: Vec<String>,
    /// The sha256 of the Dockerfile's text, hex.
    pub dockerfile_sha256: String,
}

impl CheckedBuild {
    /// Pins the builder's `dockerfile`, `context` and `build-arg` values
    /// to what the host checked.
    pub fn pin(&self, job: &Job, values: &mut JobValues) {
        values.dockerfile = Some(self.checkout.dockerfile.clone());
        values.context = Some(self.checkout.context.clone());
        values.build_args = job.build_args.clone();
    }
}

/// What about a builder decides which rules apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BuildShape {
    /// Builds in a BuildKit engine (which honours frontend directives).
    pub engine: bool,
    /// Where its build steps, and so its build tool's fetches, may go.
    pub network: BuildNetwork,
}

impl BuildShape {
    pub fn of(builder: &Builder) -> Self {
        BuildShape {
            engine: builder.in_engine(),
            network: builder.network(),
        }
    }
}

/// A rule a Dockerfile broke.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct Refusal {
    pub rule: &'static str,
    pub line: usize,
    pub message: String,
}

/// The rule of a Dockerfile the parser cannot read.
pub const PARSE: &str = "parse";

/// `line 3: … (rule `bind-mount`)`; a parse error is the parser's words
/// alone (`line 3: unknown instruction "RUNN"`).
impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "line {}: {}", self.line, self.message)?;
        if self.rule != PARSE {
            write!(f, " (rule `{}`)", self.rule)?;
        }
        Ok(())
    }
}

/// Why a job's checked-out source may not be built.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error(transparent)]
    Context(#[from] ContextError),
    /// `Dockerfile line 3: unknown instruction "RUNN"`.
    #[error("{dockerfile_path} {refusal}")]
    Refused {
        dockerfile_path: String,
        #[source]
        refusal: Refusal,
    },
}

/// Checks the job's context and Dockerfile in the checkout in
/// `workspace`, then the Dockerfile against the rules for `builder`.
pub fn check_source(
    workspace: &Path,
    job: &Job,
    builder: &Builder,
) -> Result<CheckedBuild, SourceError> {
    let checkout = check_context(workspace, &job.context, &job.dockerfile_path)?;
    let external_images =
        check(&checkout, job, BuildShape::of(builder)).map_err(|refusal| SourceError::Refused {
            dockerfile_path: job.dockerfile_path.clone(),
            refusal,
        })?;
    let dockerfile_sha256 = hex::encode(sha2::Sha256::digest(checkout.text.as_bytes()));
    Ok(CheckedBuild {
        checkout,
        external_images,
        dockerfile_sha256,
    })
}

/// The rules, on both readings of the Dockerfile; the external images the
/// build uses, as its tool reads the Dockerfile, when it passes.
pub fn check(source: &CheckedSource, job: &Job, shape: BuildShape) -> Result<Vec<String>, Refusal> {
    let text = &source.text;
    if shape.engine
        && let Some(directive) = helix_dockerfile::detect_syntax(text)
    {
        return Err(Refusal {
            rule: "frontend",
            line: directive.line,
            message: format!(
                "the `syntax` directive ({:?}) chooses BuildKit's frontend image, which this \
                 builder does not allow; remove it (the built-in Dockerfile frontend is used)",
                directive.value
            ),
        });
    }
    let buildkit = helix_dockerfile::parse(text).map_err(unreadable)?;
    // What podman 4.3 and buildah 1.28 run; nothing when even its first
    // instructions do not read.
    let legacy = helix_dockerfile::parse_with(text, ParseOptions { heredocs: false }).ok();
    let args: Vec<HashMap<String, String>> =
        job.platforms.iter().map(|p| build_args(job, p)).collect();
    for dockerfile in std::iter::once(&buildkit).chain(&legacy) {
        for args in &args {
            check_mounts(dockerfile, source, args)?;
            check_remote_sources(dockerfile, shape.network, args)?;
        }
        check_run_options(dockerfile)?;
    }
    let read_by_tool = match (&legacy, shape.engine) {
        (Some(legacy), false) => legacy,
        _ => &buildkit,
    };
    let mut images = Vec::new();
    for args in &args {
        for image in read_by_tool.external_images(args).map_err(unreadable)? {
            if !images.contains(&image.image) {
                images.push(image.image);
            }
        }
    }
    Ok(images)
}

fn unreadable(e: ParseError) -> Refusal {
    Refusal {
        rule: PARSE,
        line: e.line,
        message: e.message,
    }
}

/// The values the Dockerfile sees for one target platform: the job's
/// build args and the platform args BuildKit and podman predefine.
fn build_args(job: &Job, platform: &Platform) -> HashMap<String, String> {
    let host = crate::platform::native();
    let mut args: HashMap<String, String> = job.build_args.clone().into_iter().collect();
    for (prefix, p) in [("TARGET", platform), ("BUILD", &host)] {
        args.insert(format!("{prefix}PLATFORM"), p.to_string());
        args.insert(format!("{prefix}OS"), p.os().to_string());
        args.insert(format!("{prefix}ARCH"), p.arch().to_string());
        args.insert(
            format!("{prefix}VARIANT"),
            p.variant().unwrap_or_default().to_string(),
        );
    }
    args
}

fn check_mounts(
    dockerfile: &Dockerfile,
    source: &CheckedSource,
    args: &HashMap<String, String>,
) -> Result<(), Refusal> {
    let stages = dockerfile.stages(args).map_err(unreadable)?;
    for mount in dockerfile.run_mounts().map_err(unreadable)? {
        let refuse = |rule, message: String| {
            Err(Refusal {
                rule,
                line: mount.line,
                message,
            })
        };
        for (key, value) in [
            ("source", &mount.source),
            ("from", &mount.from),
            ("id", &mount.id),
        ] {
            if let Some(value) = value.as_deref()
                && value.contains('$')
            {
                return refuse(
                    "mount-variable",
                    format!("--mount {key}={value:?} holds a variable; write the value out"),
                );
            }
        }
        let rule = match mount.kind {
            MountKind::Bind => "bind-mount",
            MountKind::Cache => "cache-mount",
            _ => continue,
        };
        if let Some(id) = &mount.id
            && mount.kind == MountKind::Cache
            && (id.contains('/') || id.contains(".."))
        {
            return refuse(rule, format!("cache id {id:?} must not hold '/' or '..'"));
        }
        match (&mount.from, mount.kind) {
            (Some(from), _) => {
                if !is_earlier_stage(from, &stages, mount.line) {
                    return refuse(
                        rule,
                        format!(
                            "--mount from={from:?} must name an earlier stage of this Dockerfile \
                             (an image's files cannot be checked)"
                        ),
                    );
                }
                if let Some(path) = &mount.source
                    && Path::new(path)
                        .components()
                        .any(|c| c == Component::ParentDir)
                {
                    return refuse(rule, format!("--mount source={path:?} must not hold '..'"));
                }
            }
            (None, MountKind::Bind) => {
                let path = mount.source.as_deref().unwrap_or(".");
                if !inside_context(path, &source.context) {
                    return refuse(
                        rule,
                        format!(
                            "--mount source={path:?} must be a path of the build context that \
                             stays inside it (symbolic links followed)"
                        ),
                    );
                }
            }
            // A cache of its own: nothing of the context.
            (None, _) => {}
        }
    }
    Ok(())
}

/// Whether `from` names a stage that starts before `line`, by name or
/// index.
fn is_earlier_stage(from: &str, stages: &[Stage], line: usize) -> bool {
    let mut earlier = stages.iter().filter(|stage| stage.line < line);
    match from.parse::<usize>() {
        Ok(index) => earlier.any(|stage| stage.index == index),
        Err(_) => earlier.any(|stage| {
            stage
                .name
                .as_deref()
                .is_some_and(|name| name.eq_ignore_ascii_case(from))
        }),
    }
}

/// Whether `path` of the build context (absolute paths are the context's
/// root) exists and resolves inside `context`, links followed.
fn inside_context(path: &str, context: &Path) -> bool {
    context
        .join(path.trim_start_matches('/'))
        .canonicalize()
        .is_ok_and(|resolved| resolved.starts_with(context))
}

/// `RUN --network` other than `default` or `none`, and `RUN --security`
/// other than `sandbox`: a step of its own choosing on the host's network,
/// or a privileged one (BuildKit wants an entitlement the host never
/// grants; podman and buildah would just do it).
fn check_run_options(dockerfile: &Dockerfile) -> Result<(), Refusal> {
    let runs = dockerfile
        .instructions
        .iter()
        .flat_map(|i| std::iter::once(i).chain(i.onbuild.as_deref()))
        .filter(|i| i.keyword == "RUN");
    for run in runs {
        for (flag, allowed) in [
            ("network", &["default", "none"][..]),
            ("security", &["sandbox"]),
        ] {
            if let Some(f) = run.flags.iter().find(|f| f.name == flag)
                && !f.value.as_deref().is_some_and(|v| allowed.contains(&v))
            {
                return Err(Refusal {
                    rule: "run-options",
                    line: run.start_line,
                    message: format!(
                        "RUN --{flag}={} would step outside the builder's sandbox; only {} is \
                         allowed (the builder's network setting decides a step's network)",
                        f.value.as_deref().unwrap_or_default(),
                        allowed.join(" or ")
                    ),
                });
            }
        }
    }
    Ok(())
}

fn check_remote_sources(
    dockerfile: &Dockerfile,
    network: BuildNetwork,
    args: &HashMap<String, String>,
) -> Result<(), Refusal> {
    if network == BuildNetwork::Host {
        return Ok(());
    }
    match dockerfile.remote_sources(args).into_iter().next() {
        Some((line, url)) => Err(Refusal {
            rule: "remote-source",
            line,
            message: format!(
                "{url:?} would be fetched by the build tool itself on the host's network, not \
                 under the builder's network policy ({}); fetch it in a RUN step, or put it in \
                 the repository",
                match network {
                    BuildNetwork::None => "none",
                    _ => "private",
                }
            ),
        }),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::{JobRequest, SubmitPolicy};

    /// A checkout with `Dockerfile`, a directory `app` and a link `hostroot`
    /// to the host's `/`; the context is the checkout.
    struct Checkout {
        _dir: tempfile::TempDir,
        source: CheckedSource,
    }

    fn checkout(dockerfile: &str) -> Checkout {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        std::fs::create_dir(root.join("app")).unwrap();
        std::os::unix::fs::symlink("/", root.join("hostroot")).unwrap();
        std::fs::write(root.join("Dockerfile"), dockerfile).unwrap();
        Checkout {
            source: CheckedSource {
                context: root.clone(),
                dockerfile: root.join("Dockerfile"),
                text: dockerfile.to_string(),
            },
            _dir: dir,
        }
    }

    fn job(build_args: &[(&str, &str)], platforms: &[&str]) -> Job {
        let request = JobRequest {
            repo_url: "https://git.example/app.git".into(),
            build_args: build_args
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            platforms: platforms.iter().map(|p| p.to_string()).collect(),
            ..JobRequest::default()
        };
        Job::from_request(
            request,
            &SubmitPolicy::for_builders("podman", ["podman"]),
            chrono::Utc::now(),
        )
        .unwrap()
    }

    const STORAGE: BuildShape = BuildShape {
        engine: false,
        network: BuildNetwork::Private,
    };
    const ENGINE: BuildShape = BuildShape {
        engine: true,
        network: BuildNetwork::None,
    };

    fn refusal(dockerfile: &str, shape: BuildShape) -> Option<(&'static str, usize)> {
        let checkout = checkout(dockerfile);
        check(&checkout.source, &job(&[], &[]), shape)
            .err()
            .map(|r| (r.rule, r.line))
    }

    #[test]
    fn a_dockerfile_that_does_not_parse_is_named_by_its_line() {
        let checkout = checkout("FROM scratch\n\nRUNN true\n");
        let refusal = check(&checkout.source, &job(&[], &[]), STORAGE).unwrap_err();
        let error = SourceError::Refused {
            dockerfile_path: "Dockerfile".into(),
            refusal,
        };
        assert_eq!(
            error.to_string(),
            "Dockerfile line 3: unknown instruction \"RUNN\""
        );
    }

    #[test]
    fn each_rule_names_itself_and_the_line() {
        type Case = (&'static str, BuildShape, Option<(&'static str, usize)>);
        let cases: &[Case] = &[
            ("FROM scratch\nRUN true\n", STORAGE, None),
            ("FROM scratch\nFORM x\n", STORAGE, Some(("parse", 2))),
            (
                "# syntax=evil.example/fe\nFROM scratch\n",
                ENGINE,
                Some(("frontend", 1)),
            ),
            (
                "// syntax=evil.example/fe\nFROM scratch\n",
                ENGINE,
                Some(("frontend", 1)),
            ),
            // podman and buildah do not load frontends.
            (
                "# syntax=docker/dockerfile:1\nFROM scratch\n",
                STORAGE,
                None,
            ),
            (
                "FROM scratch\nRUN --mount=type=bind,source=hostroot,target=/h true\n",
                STORAGE,
                Some(("bind-mount", 2)),
            ),
            (
                "FROM scratch\nRUN --mount=type=bind,source=/hostroot/etc,target=/h true\n",
                STORAGE,
                Some(("bind-mount", 2)),
            ),
            (
                "FROM scratch\nRUN --mount=source=../..,target=/h true\n",
                STORAGE,
                Some(("bind-mount", 2)),
            ),
            (
                "FROM scratch\nRUN --mount=source=missing,target=/h true\n",
                STORAGE,
                Some(("bind-mount", 2)),
            ),
            (
                "FROM scratch\nRUN --mount=type=bind,source=app,target=/h \\\n  --mount=target=/ctx true\n",
                STORAGE,
                None,
            ),
            (
                "FROM scratch\nRUN --mount=from=alpine,source=/,target=/h true\n",
                STORAGE,
                Some(("bind-mount", 2)),
            ),
            // A stage named later is no stage yet: BuildKit pulls an image.
            (
                "FROM scratch\nRUN --mount=from=later,target=/h true\nFROM scratch AS later\n",
                STORAGE,
                Some(("bind-mount", 2)),
            ),
            (
                "FROM scratch AS Tools\nFROM scratch\nRUN --mount=from=tools,source=/bin,target=/t \\\n    --mount=from=0,target=/z true\n",
                STORAGE,
                None,
            ),
            (
                "FROM scratch AS tools\nFROM scratch\nRUN --mount=from=tools,source=/../..,target=/t true\n",
                STORAGE,
                Some(("bind-mount", 3)),
            ),
            (
                "FROM scratch\nRUN --mount=type=cache,id=../../../x,target=/c true\n",
                STORAGE,
                Some(("cache-mount", 2)),
            ),
            (
                "FROM scratch\nRUN --mount=type=cache,id=a/b,target=/c true\n",
                STORAGE,
                Some(("cache-mount", 2)),
            ),
            (
                "FROM scratch\nRUN --mount=type=cache,id=pip,target=/root/.cache/pip true\n",
                STORAGE,
                None,
            ),
            (
                "FROM scratch\nARG X\nRUN --mount=type=cache,id=$X,target=/c true\n",
                STORAGE,
                Some(("mount-variable", 3)),
            ),
            (
                "FROM scratch\nADD https://example.com/x /x\n",
                STORAGE,
                Some(("remote-source", 2)),
            ),
            (
                "FROM scratch\nADD git@example.com:a/b.git /x\n",
                ENGINE,
                Some(("remote-source", 2)),
            ),
            (
                "FROM scratch\nARG SRC=http://127.0.0.1:1/x\nADD $SRC /x\n",
                STORAGE,
                Some(("remote-source", 3)),
            ),
            ("FROM scratch\nADD app /x\n", STORAGE, None),
            (
                "FROM scratch\nRUN --network=host true\n",
                STORAGE,
                Some(("run-options", 2)),
            ),
            ("FROM scratch\nRUN --network=none true\n", STORAGE, None),
            (
                "FROM scratch\nRUN --security=insecure true\n",
                ENGINE,
                Some(("run-options", 2)),
            ),
            (
                "FROM scratch\nONBUILD RUN --network=host true\n",
                STORAGE,
                Some(("run-options", 2)),
            ),
            // Read as instructions by podman and buildah 1.28 only.
            (
                "FROM alpine\nRUN <<EOF\nADD http://127.0.0.1:1/x /x\nEOF\n",
                STORAGE,
                Some(("remote-source", 3)),
            ),
            (
                "FROM alpine\nRUN <<EOF\nRUN --mount=type=cache,id=../x,target=/c true\nEOF\n",
                STORAGE,
                Some(("cache-mount", 3)),
            ),
        ];
        for (dockerfile, shape, expected) in cases {
            assert_eq!(
                refusal(dockerfile, *shape),
                expected.map(|(rule, line)| (rule, line)),
                "{dockerfile:?}"
            );
        }
    }

    #[test]
    fn a_builder_on_the_hosts_network_may_add_urls() {
        let host = BuildShape {
            engine: false,
            network: BuildNetwork::Host,
        };
        assert_eq!(
            refusal("FROM scratch\nADD https://example.com/x /x\n", host),
            None
        );
    }

    #[test]
    fn external_images_are_read_as_the_tool_reads_the_dockerfile() {
        let dockerfile = "ARG BASE=registry.example/base:1\n\
                          FROM \\\n  ${BASE} AS build\n\
                          RUN true \\\n\
                          FROM registry.example/never-used:1\n\
                          FROM --platform=$BUILDPLATFORM registry.example/tools:${TARGETARCH}\n\
                          COPY --from=registry.example/files:1 /f /f\n\
                          RUN <<EOF\n\
                          FROM registry.example/heredoc:1\n\
                          EOF\n";
        let checkout = checkout(dockerfile);
        let job = job(
            &[("BASE", "registry.example/chosen:2")],
            &["linux/amd64", "linux/arm64"],
        );
        let buildkit = check(&checkout.source, &job, ENGINE).unwrap();
        assert_eq!(
            buildkit,
            [
                "registry.example/chosen:2",
                "registry.example/tools:amd64",
                "registry.example/files:1",
                "registry.example/tools:arm64",
            ]
        );
        // podman and buildah 1.28 take the heredoc's FROM for a stage.
        let legacy = check(&checkout.source, &job, STORAGE).unwrap();
        assert!(
            legacy.contains(&"registry.example/heredoc:1".to_string()),
            "{legacy:?}"
        );
        assert!(
            !legacy.iter().any(|i| i.contains("never-used")),
            "{legacy:?}"
        );
    }
}
