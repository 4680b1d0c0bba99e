//! The rules each field of a request must meet, one function per field; each error names the field, so a client learns what to fix.

use std::collections::{BTreeMap, BTreeSet};

use super::limits::*;
use super::{InvalidJob, MAX_RUNNING_LIMIT, ROOT_CONTEXT};
use crate::job::Project;
use crate::platform::Platform;

/// Refuses characters that make a name read as something other than what
/// it is: control characters, bidirectional overrides and isolates
/// (U+202A–U+202E, U+2066–U+2069) and zero-width ones (U+200B–U+200D,
/// U+FEFF). Named by code point, as printing them would hide them again.
pub(super) fn refuse_hidden(field: &'static str, text: &str) -> Result<(), InvalidJob> {
    let Some(c) = text.chars().find(|c| {
        c.is_control()
            || matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
            || matches!(c, '\u{200B}'..='\u{200D}' | '\u{FEFF}')
    }) else {
        return Ok(());
    };
    let kind = match c {
        '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' => "a bidirectional control",
        '\u{200B}'..='\u{200D}' | '\u{FEFF}' => "a zero-width character",
        _ => "a control character",
    };
    Err(InvalidJob::new(
        field,
        format!(
            "contains U+{:04X} ({kind}), which hides or reorders what the text shows",
            u32::from(c)
        ),
    ))
}

/// A group name is free text for people (`team/app:main`), bounded;
/// `max_running` and `cancel_in_progress` mean nothing without one.
pub(super) fn validate_group(
    group: Option<String>,
    max_running: Option<u32>,
    cancel_in_progress: bool,
) -> Result<Option<String>, InvalidJob> {
    let Some(group) = group else {
        if max_running.is_some() || cancel_in_progress {
            let field = if cancel_in_progress {
                "cancel_in_progress"
            } else {
                "max_running"
            };
            return Err(InvalidJob::new(
                field,
                "applies to a group; set `group` too",
            ));
        }
        return Ok(None);
    };
    if group.is_empty() || group.len() > MAX_GROUP {
        return Err(InvalidJob::new(
            "group",
            format!("must be 1 to {MAX_GROUP} characters"),
        ));
    }
    refuse_hidden("group", &group)?;
    if let Some(max) = max_running
        && !(1..=MAX_RUNNING_LIMIT).contains(&max)
    {
        return Err(InvalidJob::new(
            "max_running",
            format!("must be 1 to {MAX_RUNNING_LIMIT}, got {max}"),
        ));
    }
    Ok(Some(group))
}

/// A repository URL git may fetch with the transports the server allows,
/// read as git reads it: `scheme://authority/path` (parsed by a URL
/// parser, so a bad port or address is refused here, not by git at run
/// time) or scp-like `[user@]host:path`. One holding credentials is
/// refused first, and its text never echoed: a job's URL is stored,
/// listed and shown in its log.
pub fn validate_repo_url(url: &str, allow_file_repos: bool) -> Result<(), InvalidJob> {
    let err = |message: String| Err(InvalidJob::new("repo_url", message));
    if has_credentials(url) {
        return err(
            "must not hold credentials (a password, or a user or token before '@' in an http(s) URL): \
             the URL is stored and shown with the job. Give the build what it needs as the \
             project's secrets instead (see \"Projects and tokens\")"
                .into(),
        );
    }
    if url.is_empty() || url.len() > MAX_REPO_URL {
        return err(format!("must be 1 to {MAX_REPO_URL} characters"));
    }
    refuse_hidden("repo_url", url)?;
    if url.starts_with('-') {
        return err(format!(
            "{url:?} starts with '-' and could be read as an option"
        ));
    }
    if url.chars().any(char::is_whitespace) {
        return err("must not contain white space".into());
    }
    // Docker's `repo.git#ref:dir`: git has no such syntax and would ask
    // the server for a repository whose name holds the '#'.
    if url.contains('#') {
        return err(format!(
            "{url:?} holds '#', docker's repo.git#ref:dir syntax, which git does not read; \
             name the branch, tag or commit in `ref` and the directory in `context`"
        ));
    }
    if let Some((scheme, rest)) = url.split_once("://") {
        return validate_transport_url(url, scheme, rest, allow_file_repos);
    }
    // scp-like ssh syntax: [user@]host:path, with no '/' before the ':'.
    if let Some((login, path)) = url.split_once(':')
        && !login.contains('/')
    {
        let (user, host) = match login.rsplit_once('@') {
            Some((user, host)) => (Some(user), host),
            None => (None, login),
        };
        let host_ok = !host.is_empty()
            && host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'));
        // A bare word before the ':' reads as a URL scheme (`javascript:`,
        // `mailto:`), not a host: scp-like syntax needs a user or a dotted
        // host name.
        let host_like = user.is_some_and(|u| !u.is_empty()) || host.contains('.');
        if host_ok && host_like && !path.is_empty() && !path.starts_with(':') {
            return Ok(());
        }
    }
    err(format!(
        "{url:?} is not a repository URL; use https://, http://, ssh://, git:// or user@host:path"
    ))
}

/// `scheme://…`: a transport git has (lowercase, as git's are: it finds
/// no helper for `HTTP`), and a URL the parser takes with a host for all
/// but `file://`.
fn validate_transport_url(
    url: &str,
    scheme: &str,
    rest: &str,
    allow_file_repos: bool,
) -> Result<(), InvalidJob> {
    let err = |message: String| Err(InvalidJob::new("repo_url", message));
    let lower = scheme.to_ascii_lowercase();
    match lower.as_str() {
        "https" | "http" | "ssh" | "git" | "file" if scheme != lower => {
            return err(format!(
                "transport {scheme:?} must be written in lowercase ({lower}://): git does not know {scheme:?}"
            ));
        }
        "https" | "http" | "ssh" | "git" => {}
        "file" if allow_file_repos => {}
        "file" => {
            return err(
                "file:// repositories are disabled on this server (the operator can allow them)"
                    .into(),
            );
        }
        _ => {
            return err(format!(
                "transport {scheme:?} is not allowed; use https, http, ssh or git"
            ));
        }
    }
    if rest.is_empty() {
        return err(format!("{url:?} has no host or path after {scheme}://"));
    }
    let parsed = match url::Url::parse(url) {
        Ok(parsed) => parsed,
        Err(e) => return err(format!("{url:?} is not a valid URL: {e}")),
    };
    // The parser reads `http:///x` as host `x`; git reads no host.
    let authority = rest.split(['/', '?']).next().unwrap_or_default();
    if lower != "file" && (authority.is_empty() || parsed.host().is_none()) {
        return err(format!("{url:?} names no host after {scheme}://"));
    }
    Ok(())
}

/// Whether a repository URL carries credentials: a password in any form,
/// or for anything but ssh any user at all (a token alone is one, as in
/// `https://TOKEN@host/…`; ssh's `git@host` is a login name).
fn has_credentials(url: &str) -> bool {
    let (scheme, rest) = match url.split_once("://") {
        Some((scheme, rest)) => (Some(scheme.to_ascii_lowercase()), rest),
        None => (None, url),
    };
    let authority = rest.split('/').next().unwrap_or_default();
    let Some((userinfo, _)) = authority.rsplit_once('@') else {
        return false;
    };
    match scheme.as_deref() {
        // scp-like `user@host:path` too.
        Some("ssh") | None => userinfo.contains(':'),
        Some(_) => true,
    }
}

pub(super) fn validate_ref(git_ref: &str) -> Result<(), InvalidJob> {
    let err = |message: String| Err(InvalidJob::new("ref", message));
    if git_ref.is_empty() || git_ref.len() > MAX_REF {
        return err(format!("must be 1 to {MAX_REF} characters"));
    }
    refuse_hidden("ref", git_ref)?;
    if git_ref.starts_with('-') {
        return err(format!(
            "{git_ref:?} starts with '-' and could be read as an option"
        ));
    }
    let bad_char = git_ref
        .chars()
        .find(|c| c.is_whitespace() || c.is_control() || "~^:?*[\\".contains(*c));
    if let Some(c) = bad_char {
        return err(format!(
            "{git_ref:?} contains {c:?}, which git does not allow in a ref"
        ));
    }
    let bad_shape = git_ref.contains("..")
        || git_ref.contains("@{")
        || git_ref.contains("//")
        || git_ref.starts_with('/')
        || git_ref.ends_with(['/', '.'])
        || git_ref.ends_with(".lock")
        || git_ref == "@"
        || git_ref.split('/').any(|part| part.starts_with('.'));
    if bad_shape {
        return err(format!(
            "{git_ref:?} is not a valid git branch, tag or commit"
        ));
    }
    Ok(())
}

/// A pinned commit: a full commit id (40 hex digits, or 64 in a SHA-256
/// repository), returned in lower case, beside a ref that is a branch,
/// tag or `HEAD`, since the commit is checked to be on it.
pub(super) fn validate_pinned_commit(commit: &str, git_ref: &str) -> Result<String, InvalidJob> {
    let err = |message: String| Err(InvalidJob::new("commit", message));
    if ![40, 64].contains(&commit.len()) || !commit.bytes().all(|b| b.is_ascii_hexdigit()) {
        return err(format!(
            "{commit:?} must be a full commit id: 40 hex digits (64 in a SHA-256 repository)"
        ));
    }
    if (7..=64).contains(&git_ref.len()) && git_ref.bytes().all(|b| b.is_ascii_hexdigit()) {
        return err(format!(
            "ref {git_ref:?} is a commit already; `commit` pins a commit on the branch or tag `ref` names"
        ));
    }
    Ok(commit.to_ascii_lowercase())
}

/// A path below a directory of the checkout: relative, no `..`, so it
/// cannot leave the checkout whatever directory it is joined to (links in
/// the checkout are checked where the path is used).
pub(super) fn validate_relative_path(
    field: &'static str,
    path: &str,
    base: &str,
) -> Result<(), InvalidJob> {
    let err = |message: String| Err(InvalidJob::new(field, message));
    if path.is_empty() || path.len() > MAX_PATH {
        return err(format!("must be 1 to {MAX_PATH} characters"));
    }
    refuse_hidden(field, path)?;
    if path.starts_with('/') || path.starts_with('-') {
        return err(format!("{path:?} must be a path relative to {base}"));
    }
    if path.split(['/', '\\']).any(|part| part == "..") {
        return err(format!(
            "{path:?} must stay inside the repository (no '..')"
        ));
    }
    Ok(())
}

/// The context as stored: relative to the checkout's root, without `.`
/// parts or a trailing `/`; the root itself is `.`.
pub(super) fn normalise_context(context: &str) -> Result<String, InvalidJob> {
    validate_relative_path("context", context, "the repository root")?;
    let parts: Vec<&str> = context
        .split('/')
        .filter(|part| !part.is_empty() && *part != ".")
        .collect();
    Ok(match parts.is_empty() {
        true => ROOT_CONTEXT.into(),
        false => parts.join("/"),
    })
}

/// A stage name as a Dockerfile's `FROM … AS name` allows it.
pub(super) fn validate_target(target: &str) -> Result<(), InvalidJob> {
    refuse_hidden("target", target)?;
    let mut bytes = target.bytes();
    let ok = target.len() <= MAX_TARGET
        && bytes.next().is_some_and(|b| b.is_ascii_alphabetic())
        && bytes.all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(InvalidJob::new(
            "target",
            format!(
                "{target:?} is not a build stage name: a letter, then letters, digits, '.', '_' or '-' (at most {MAX_TARGET})"
            ),
        ))
    }
}

/// Label keys as the OCI image spec recommends them (`org.example.key`);
/// values any text without control characters.
pub(super) fn validate_labels(labels: &BTreeMap<String, String>) -> Result<(), InvalidJob> {
    let err = |message: String| Err(InvalidJob::new("labels", message));
    if labels.len() > MAX_LABELS {
        return err(format!(
            "at most {MAX_LABELS} labels are allowed, got {}",
            labels.len()
        ));
    }
    for (key, value) in labels {
        refuse_hidden("labels", key)?;
        let mut bytes = key.bytes();
        let key_ok = key.len() <= MAX_LABEL_KEY
            && bytes.next().is_some_and(|b| b.is_ascii_alphanumeric())
            && bytes.all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'/'));
        if !key_ok {
            return err(format!(
                "key {key:?} must start with a letter or digit and hold only letters, digits, '.', '_', '-' or '/' (at most {MAX_LABEL_KEY})"
            ));
        }
        if value.len() > MAX_LABEL_VALUE || value.chars().any(char::is_control) {
            return err(format!(
                "value of {key} must be at most 4 KiB with no control characters"
            ));
        }
    }
    Ok(())
}

/// The job's secrets, sorted and unique; each must be one it may use:
/// one the operator defined, or for `project` (with the job's ref) one of
/// the project's. A refusal names only what the caller may use.
pub(super) fn validate_secrets(
    names: Vec<String>,
    usable: &BTreeSet<String>,
    project: Option<(&Project, &str)>,
) -> Result<Vec<String>, InvalidJob> {
    if names.len() > MAX_SECRETS {
        return Err(InvalidJob::new(
            "secrets",
            format!(
                "at most {MAX_SECRETS} secrets are allowed, got {}",
                names.len()
            ),
        ));
    }
    let names: BTreeSet<String> = names.into_iter().collect();
    if let Some(unknown) = names.iter().find(|n| !usable.contains(*n)) {
        if let Some(refused) =
            project.and_then(|(p, git_ref)| p.protected_only(unknown, git_ref, usable))
        {
            return Err(refused);
        }
        let usable: Vec<&str> = usable.iter().map(String::as_str).collect();
        let message = match (project, usable.is_empty()) {
            (None, true) => format!("unknown secret '{unknown}': this server defines no secrets"),
            (None, false) => format!(
                "unknown secret '{unknown}'; this server defines: {}",
                usable.join(", ")
            ),
            (Some((project, _)), true) => format!(
                "unknown secret '{unknown}': project {} may use no secrets",
                project.name
            ),
            (Some((project, _)), false) => format!(
                "unknown secret '{unknown}'; project {} may use: {}",
                project.name,
                usable.join(", ")
            ),
        };
        return Err(InvalidJob::new("secrets", message));
    }
    Ok(names.into_iter().collect())
}

pub(super) fn validate_build_args(args: &BTreeMap<String, String>) -> Result<(), InvalidJob> {
    if args.len() > MAX_BUILD_ARGS {
        return Err(InvalidJob::new(
            "build_args",
            format!(
                "at most {MAX_BUILD_ARGS} build args are allowed, got {}",
                args.len()
            ),
        ));
    }
    for (name, value) in args {
        refuse_hidden("build_args", name)?;
        let mut bytes = name.bytes();
        let name_ok = name.len() <= MAX_BUILD_ARG_NAME
            && bytes
                .next()
                .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
            && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if !name_ok {
            return Err(InvalidJob::new(
                "build_args",
                format!(
                    "name {name:?} must match [A-Za-z_][A-Za-z0-9_]* (at most {MAX_BUILD_ARG_NAME} characters)"
                ),
            ));
        }
        if let Some(why) = reserved_build_arg(name) {
            return Err(InvalidJob::new("build_args", format!("{name}: {why}")));
        }
        if value.len() > MAX_BUILD_ARG_VALUE || value.contains('\0') {
            return Err(InvalidJob::new(
                "build_args",
                format!("value of {name} must be at most 64 KiB with no NUL bytes"),
            ));
        }
    }
    Ok(())
}

/// Why a build arg name is not the job's to set, if it is not.
///
/// - `BUILDKIT_*` are BuildKit's own options (`BUILDKIT_SYNTAX` chooses
///   the frontend image, which the engine pulls and runs outside the
///   `RUN` steps' sandbox).
/// - The predefined proxy args (`HTTP_PROXY`, `HTTPS_PROXY`, `FTP_PROXY`,
///   `NO_PROXY`, `ALL_PROXY`, in either case) reach every `RUN` step
///   without an `ARG` and are left out of the layer cache key by design,
///   so a step built through one job's proxy would be served from the
///   cache to the next job of the repository that builds without it.
///   They are refused rather than given a cache slot of their own: a
///   build step's way out is the builder's network policy, which the
///   operator sets; a per-job proxy would route around it. Matched in any
///   case, as the tools differ in which spellings they honour.
pub fn reserved_build_arg(name: &str) -> Option<&'static str> {
    const PROXIES: [&str; 5] = [
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "FTP_PROXY",
        "NO_PROXY",
        "ALL_PROXY",
    ];
    if name.to_ascii_uppercase().starts_with("BUILDKIT_") {
        Some(
            "BUILDKIT_* names are BuildKit's own options (its frontend among them), not build args",
        )
    } else if PROXIES.iter().any(|p| p.eq_ignore_ascii_case(name)) {
        Some(
            "proxy build args reach every RUN step without an ARG and are not part of the \
             layer cache key, so one job's proxy would feed the next job's cache; a build's \
             network is the builder's policy (builders.NAME.network)",
        )
    } else {
        None
    }
}

/// A real build's image must not be in a `.invalid` registry: that name
/// is reserved never to resolve (RFC 6761), which is why the simulated
/// builder tags its images `simulated.invalid/…`; a push there would
/// fail only after the whole build.
pub(super) fn refuse_reserved_image(image: &str, registry: &str) -> Result<(), InvalidJob> {
    let host = registry
        .rsplit_once(':')
        .map_or(registry, |(host, _)| host)
        .to_ascii_lowercase();
    if host == "invalid" || host.ends_with(".invalid") {
        return Err(InvalidJob::new(
            "image",
            format!(
                "{image:?} is in registry {registry}: the .invalid domain is reserved (the simulated \
                 builder's images are named there) and resolves nowhere, so a real build cannot push to it"
            ),
        ));
    }
    Ok(())
}

/// Every requested platform must be one `builder` can build on this host.
pub(super) fn check_buildable(
    builder: &str,
    requested: &[Platform],
    buildable: &[Platform],
) -> Result<(), InvalidJob> {
    let missing: Vec<String> = requested
        .iter()
        .filter(|p| !buildable.contains(p))
        .map(ToString::to_string)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let available: Vec<String> = buildable.iter().map(ToString::to_string).collect();
    Err(InvalidJob::new(
        "platforms",
        format!(
            "builder '{builder}' cannot build {} on this server; it can build {} \
             (foreign platforms need an emulator the operator registers: qemu-user-static with binfmt_misc)",
            missing.join(", "),
            available.join(", ")
        ),
    ))
}

/// Parses, normalises, sorts and de-duplicates the requested platforms
/// (`x86_64` and `amd64` name one platform).
pub(super) fn parse_platforms(raw: &[String]) -> Result<Vec<Platform>, InvalidJob> {
    if raw.len() > MAX_PLATFORMS {
        return Err(InvalidJob::new(
            "platforms",
            format!(
                "at most {MAX_PLATFORMS} platforms are allowed, got {}",
                raw.len()
            ),
        ));
    }
    if raw.is_empty() {
        return Ok(vec![Platform::default_target()]);
    }
    let set = raw
        .iter()
        .map(|p| Platform::parse(p).map_err(|e| InvalidJob::new("platforms", e.to_string())))
        .collect::<Result<BTreeSet<_>, _>>()?;
    Ok(set.into_iter().collect())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use chrono::Utc;

    use crate::job::fixtures::{job, request};
    use crate::job::{Job, JobRequest, Project, SubmitPolicy};
    use crate::platform::Platform;

    #[test]
    fn build_args_the_tools_read_as_their_own_are_refused_at_submit() {
        let policy = SubmitPolicy::for_builders("podman", ["podman"]);
        for name in [
            "BUILDKIT_SYNTAX",
            "buildkit_inline_cache",
            "http_proxy",
            "HTTP_PROXY",
            "Https_Proxy",
            "FTP_PROXY",
            "no_proxy",
            "ALL_PROXY",
        ] {
            let refused = Job::from_request(
                JobRequest {
                    build_args: [(name.into(), "http://10.0.0.1:3128".into())].into(),
                    ..request()
                },
                &policy,
                Utc::now(),
            )
            .unwrap_err();
            assert_eq!(refused.field, "build_args", "{name}");
            assert!(
                refused.message.starts_with(&format!("{name}: ")),
                "{refused:?}"
            );
        }
        for name in ["PROXY", "HTTP_PROXY_HOST", "MY_BUILDKIT_X"] {
            let accepted = Job::from_request(
                JobRequest {
                    build_args: [(name.into(), "x".into())].into(),
                    ..request()
                },
                &policy,
                Utc::now(),
            );
            assert!(accepted.is_ok(), "{name}: {accepted:?}");
        }
    }

    #[test]
    fn a_pinned_commit_is_a_full_id_beside_a_ref_that_is_not_a_commit() {
        let upper = "0123456789ABCDEF0123456789abcdef01234567";
        let pinned = job(JobRequest {
            git_ref: Some("refs/heads/main".into()),
            commit: Some(upper.into()),
            ..request()
        })
        .unwrap();
        assert_eq!(
            pinned.pinned_commit.as_deref(),
            Some(upper.to_ascii_lowercase().as_str())
        );
        assert_eq!(pinned.git_ref, "refs/heads/main");
        for (git_ref, commit, says) in [
            ("main", "0123456", "must be a full commit id"),
            ("main", &"g".repeat(40), "must be a full commit id"),
            ("main", &"a".repeat(41), "must be a full commit id"),
            ("0123456789abcdef", &"a".repeat(40), "is a commit already"),
        ] {
            let refused = job(JobRequest {
                git_ref: Some(git_ref.into()),
                commit: Some(commit.into()),
                ..request()
            })
            .unwrap_err();
            assert_eq!(refused.field, "commit", "{commit}");
            assert!(refused.message.contains(says), "{refused:?}");
        }
    }

    #[test]
    fn platforms_are_normalised_sorted_and_unique() {
        let job = job(JobRequest {
            platforms: vec![
                "linux/arm64".into(),
                "Linux/x86_64".into(),
                "linux/amd64".into(),
            ],
            ..request()
        })
        .unwrap();
        let names: Vec<String> = job.platforms.iter().map(ToString::to_string).collect();
        assert_eq!(names, ["linux/amd64", "linux/arm64"]);
    }

    #[test]
    fn accepts_every_allowed_transport() {
        for url in [
            "https://h/r.git",
            "http://h/r",
            "ssh://git@h/r",
            "git://h/r",
            "git@github.example:team/r.git",
        ] {
            assert!(
                job(JobRequest {
                    repo_url: url.into(),
                    ..request()
                })
                .is_ok(),
                "{url}"
            );
        }
        let policy = SubmitPolicy {
            allow_file_repos: true,
            ..SubmitPolicy::for_builders("s", ["s"])
        };
        let file = JobRequest {
            repo_url: "file:///srv/repo".into(),
            ..request()
        };
        assert!(Job::from_request(file, &policy, Utc::now()).is_ok());
    }

    #[test]
    fn platforms_must_be_ones_the_builder_can_build_here() {
        let policy = SubmitPolicy {
            builders: BTreeMap::from([(
                "podman".to_string(),
                Some(vec![Platform::parse("linux/amd64").unwrap()]),
            )]),
            ..SubmitPolicy::for_builders("podman", [])
        };
        let submit = |platforms: &[&str]| {
            Job::from_request(
                JobRequest {
                    platforms: platforms.iter().map(|p| p.to_string()).collect(),
                    ..request()
                },
                &policy,
                Utc::now(),
            )
        };
        assert!(submit(&["linux/amd64"]).is_ok());
        let err = submit(&["linux/amd64", "linux/s390x"]).unwrap_err();
        assert_eq!(err.field, "platforms");
        assert!(
            err.message.starts_with(
                "builder 'podman' cannot build linux/s390x on this server; it can build linux/amd64"
            ),
            "{err}"
        );
        // A simulated builder takes any.
        assert!(
            job(JobRequest {
                platforms: vec!["linux/s390x".into()],
                ..request()
            })
            .is_ok()
        );
    }

    #[test]
    fn context_is_normalised_and_stays_in_the_checkout() {
        let context = |c: &str| {
            job(JobRequest {
                context: Some(c.into()),
                ..request()
            })
        };
        assert_eq!(job(request()).unwrap().context, ".");
        assert_eq!(context("./app/").unwrap().context, "app");
        assert_eq!(context("services//api/.").unwrap().context, "services/api");
        assert_eq!(context(".").unwrap().context, ".");
        for bad in ["/etc", "../other", "app/../../x", "-f", ""] {
            assert_eq!(context(bad).unwrap_err().field, "context", "{bad}");
        }
    }

    #[test]
    fn target_labels_and_no_cache_are_checked_and_kept() {
        let mut labels = BTreeMap::new();
        labels.insert(
            "org.opencontainers.image.source".to_string(),
            "https://x".to_string(),
        );
        let accepted = job(JobRequest {
            target: Some("build-stage.2".into()),
            labels: labels.clone(),
            no_cache: true,
            ..request()
        })
        .unwrap();
        assert_eq!(accepted.target.as_deref(), Some("build-stage.2"));
        assert_eq!(accepted.labels, labels);
        assert!(accepted.no_cache);
        for bad in ["", "-x", "1stage", "a b", "a=b"] {
            let err = job(JobRequest {
                target: Some(bad.into()),
                ..request()
            })
            .unwrap_err();
            assert_eq!(err.field, "target", "{bad}");
        }
        for (key, value) in [("", "v"), ("a=b", "v"), ("-k", "v"), ("k", "line\nbreak")] {
            let err = job(JobRequest {
                labels: BTreeMap::from([(key.to_string(), value.to_string())]),
                ..request()
            })
            .unwrap_err();
            assert_eq!(err.field, "labels", "{key}");
        }
    }

    #[test]
    fn secrets_must_be_defined_by_the_operator() {
        let policy = SubmitPolicy {
            secrets: ["npm_token".to_string(), "deploy".to_string()].into(),
            ..SubmitPolicy::for_builders("simulated", ["simulated"])
        };
        let submit = |names: &[&str]| {
            Job::from_request(
                JobRequest {
                    secrets: names.iter().map(|n| n.to_string()).collect(),
                    ..request()
                },
                &policy,
                Utc::now(),
            )
        };
        let accepted = submit(&["npm_token", "deploy", "npm_token"]).unwrap();
        assert_eq!(accepted.secrets, ["deploy", "npm_token"]);
        let err = submit(&["aws"]).unwrap_err();
        assert_eq!(err.field, "secrets");
        assert_eq!(
            err.message,
            "unknown secret 'aws'; this server defines: deploy, npm_token"
        );
        let err = job(JobRequest {
            secrets: vec!["npm_token".into()],
            ..request()
        })
        .unwrap_err();
        assert!(err.message.contains("defines no secrets"), "{err}");
        // A project's submission: its own secrets, named as its own.
        let own = SubmitPolicy {
            project: Some(std::sync::Arc::new(Project {
                secrets: ["deploy".to_string(), "undefined".to_string()].into(),
                ..Project::named("team-a")
            })),
            ..policy.clone()
        };
        let err = Job::from_request(
            JobRequest {
                secrets: vec!["npm_token".into()],
                ..request()
            },
            &own,
            Utc::now(),
        )
        .unwrap_err();
        assert_eq!(
            err.message,
            "unknown secret 'npm_token'; project team-a may use: deploy"
        );
        let accepted = Job::from_request(
            JobRequest {
                secrets: vec!["deploy".into()],
                ..request()
            },
            &own,
            Utc::now(),
        )
        .unwrap();
        assert_eq!(accepted.project.as_deref(), Some("team-a"));
    }

    #[test]
    fn protected_secrets_need_a_protected_ref() {
        let policy = SubmitPolicy {
            secrets: [
                "npm".to_string(),
                "deploy_key".to_string(),
                "other".to_string(),
            ]
            .into(),
            project: Some(std::sync::Arc::new(Project {
                secrets: ["npm".to_string()].into(),
                protected_secrets: ["deploy_key".to_string()].into(),
                protected_refs: vec!["refs/heads/main".into()],
                ..Project::named("team-a")
            })),
            ..SubmitPolicy::for_builders("simulated", ["simulated"])
        };
        let submit = |git_ref: &str, secret: &str| {
            Job::from_request(
                JobRequest {
                    git_ref: Some(git_ref.into()),
                    secrets: vec![secret.into()],
                    ..request()
                },
                &policy,
                Utc::now(),
            )
        };
        let release = submit("refs/heads/main", "deploy_key").unwrap();
        assert!(release.protected);
        assert_eq!(release.secrets, ["deploy_key"]);
        for git_ref in ["main", "refs/heads/feature", "0123456789abcdef"] {
            let err = submit(git_ref, "deploy_key").unwrap_err();
            assert_eq!(err.field, "secrets");
            assert_eq!(
                err.message,
                format!(
                    "secret 'deploy_key' is for protected refs only (refs/heads/main), and '{git_ref}' \
                     is not one (name the full ref, e.g. refs/heads/main); project team-a may use here: npm"
                )
            );
        }
        let feature = submit("refs/heads/feature", "npm").unwrap();
        assert!(!feature.protected);
        let err = submit("refs/heads/feature", "other").unwrap_err();
        assert_eq!(
            err.message,
            "unknown secret 'other'; project team-a may use: npm"
        );
    }

    #[test]
    fn credentials_in_repository_urls_are_refused_and_never_echoed() {
        for url in [
            "https://user:hunter2@git.example/team/app.git",
            "https://ghp_hunter2@git.example/team/app.git",
            "http://u:hunter2@git.example/app",
            "ssh://git:hunter2@git.example/app",
            "git://hunter2@git.example/app",
            "git:hunter2@git.example:team/app.git",
        ] {
            let err = job(JobRequest {
                repo_url: url.into(),
                ..request()
            })
            .unwrap_err();
            assert_eq!(err.field, "repo_url", "{url}");
            assert!(err.message.contains("project's secrets"), "{err}");
            assert!(!err.to_string().contains("hunter2"), "{err}");
        }
        for url in [
            "ssh://git@git.example/app",
            "git@git.example:team/app.git",
            "https://git.example/team/app@v2.git",
        ] {
            let accepted = job(JobRequest {
                repo_url: url.into(),
                ..request()
            });
            assert!(accepted.is_ok(), "{url}: {accepted:?}");
        }
    }

    #[test]
    fn a_real_builders_image_goes_to_a_configured_registry() {
        let policy = SubmitPolicy {
            builders: BTreeMap::from([
                ("podman".to_string(), Some(vec![Platform::default_target()])),
                ("simulated".to_string(), None),
            ]),
            registries: ["registry.example:5000".to_string()].into(),
            default_registry: Some("registry.example:5000/team".into()),
            ..SubmitPolicy::for_builders("podman", [])
        };
        let submit = |builder: &str, image: Option<&str>| {
            Job::from_request(
                JobRequest {
                    builder: Some(builder.into()),
                    image: image.map(String::from),
                    ..request()
                },
                &policy,
                Utc::now(),
            )
        };
        assert!(submit("podman", None).is_ok());
        assert!(submit("podman", Some("registry.example:5000/x/app:1")).is_ok());
        let err = submit("podman", Some("elsewhere.example/x/app:1")).unwrap_err();
        assert_eq!(err.field, "image");
        assert_eq!(
            err.message,
            "\"elsewhere.example/x/app:1\" is in registry elsewhere.example, which this server \
             does not push to; configured: registry.example:5000"
        );
        // A simulated builder pushes nothing.
        assert!(submit("simulated", Some("elsewhere.example/x/app:1")).is_ok());
        // A project's default image must be under its prefixes too.
        let project = SubmitPolicy {
            project: Some(std::sync::Arc::new(Project {
                images: Some(vec!["registry.example:5000/team-a".into()]),
                ..Project::named("team-a")
            })),
            ..policy.clone()
        };
        let err = Job::from_request(request(), &project, Utc::now()).unwrap_err();
        assert_eq!(err.field, "image");
        assert!(
            err.message
                .ends_with("project team-a may push to: registry.example:5000/team-a"),
            "{err}"
        );
    }

    #[test]
    fn repository_urls_are_parsed_as_git_reads_them() {
        let submit = |url: &str| {
            job(JobRequest {
                repo_url: url.into(),
                ..request()
            })
        };
        for (url, says) in [
            ("http:///x", "names no host"),
            ("http://127.0.0.1:99999/x", "invalid port number"),
            ("https://[::1/x", "invalid IPv6 address"),
            ("javascript:alert(1)", "is not a repository URL"),
            ("mailto:someone", "is not a repository URL"),
            (
                "HTTP://git.example/app.git",
                "must be written in lowercase (http://)",
            ),
            (
                "Https://git.example/app.git",
                "must be written in lowercase (https://)",
            ),
            (
                "https://git.example/app.git#main:docker",
                "name the branch, tag or commit in `ref` and the directory in `context`",
            ),
            ("git@git.example:app.git#v1", "docker's repo.git#ref:dir"),
        ] {
            let err = submit(url).unwrap_err();
            assert_eq!(err.field, "repo_url", "{url}");
            assert!(err.message.contains(says), "{url}: {err}");
        }
        for url in [
            "http://127.0.0.1:3000/x.git",
            "https://[::1]:8443/team/app.git",
            "ssh://git@git.example:2222/app.git",
            "git://git.example/app",
            "deploy@host:app.git",
            "git.example:team/app.git",
        ] {
            assert!(submit(url).is_ok(), "{url}: {:?}", submit(url));
        }
    }

    #[test]
    fn hidden_characters_are_refused_in_every_name_like_field() {
        for (c, kind) in [
            ('\u{202E}', "U+202E (a bidirectional control)"),
            ('\u{2066}', "U+2066 (a bidirectional control)"),
            ('\u{200B}', "U+200B (a zero-width character)"),
            ('\u{FEFF}', "U+FEFF (a zero-width character)"),
            ('\u{7}', "U+0007 (a control character)"),
        ] {
            let name = format!("main{c}x");
            let cases: Vec<(&str, JobRequest)> = vec![
                (
                    "repo_url",
                    JobRequest {
                        repo_url: format!("https://git.example/{name}.git"),
                        ..request()
                    },
                ),
                (
                    "ref",
                    JobRequest {
                        git_ref: Some(name.clone()),
                        ..request()
                    },
                ),
                (
                    "context",
                    JobRequest {
                        context: Some(name.clone()),
                        ..request()
                    },
                ),
                (
                    "dockerfile_path",
                    JobRequest {
                        dockerfile_path: Some(name.clone()),
                        ..request()
                    },
                ),
                (
                    "target",
                    JobRequest {
                        target: Some(name.clone()),
                        ..request()
                    },
                ),
                (
                    "image",
                    JobRequest {
                        image: Some(format!("registry.example/{name}")),
                        ..request()
                    },
                ),
                (
                    "group",
                    JobRequest {
                        group: Some(name.clone()),
                        ..request()
                    },
                ),
                (
                    "labels",
                    JobRequest {
                        labels: [(name.clone(), "v".into())].into(),
                        ..request()
                    },
                ),
                (
                    "build_args",
                    JobRequest {
                        build_args: [(name.clone(), "v".into())].into(),
                        ..request()
                    },
                ),
            ];
            for (field, submitted) in cases {
                let err = job(submitted).unwrap_err();
                assert_eq!(err.field, field, "{kind}");
                assert!(
                    err.message.starts_with(&format!("contains {kind}")),
                    "{field}: {err}"
                );
            }
        }
    }

    #[test]
    fn reserved_image_names_are_refused_for_real_builders() {
        let policy = SubmitPolicy {
            builders: BTreeMap::from([
                ("podman".to_string(), Some(vec![Platform::default_target()])),
                ("simulated".to_string(), None),
            ]),
            registries: [
                "simulated.invalid".to_string(),
                "registry.example".to_string(),
            ]
            .into(),
            ..SubmitPolicy::for_builders("podman", [])
        };
        let submit = |builder: &str, image: &str| {
            Job::from_request(
                JobRequest {
                    builder: Some(builder.into()),
                    image: Some(image.into()),
                    ..request()
                },
                &policy,
                Utc::now(),
            )
        };
        // Refused even where an operator configured the name.
        let err = submit("podman", "simulated.invalid/x:1").unwrap_err();
        assert_eq!(err.field, "image");
        assert!(
            err.message.contains("the .invalid domain is reserved"),
            "{err}"
        );
        assert!(submit("simulated", "simulated.invalid/x:1").is_ok());
        assert!(submit("podman", "registry.example/x:1").is_ok());
    }
}
