//! The bounds and shapes a submission's fields must meet: the one place
//! both the rules (`rules`) and the OpenAPI document's request schema read
//! them from, so the two cannot drift. A pattern here is what the rule
//! checks of a name's characters (ECMA-262, as JSON Schema reads it); the
//! rules check some fields further (a URL's parse, a ref's shape), which
//! each field's description in the document says.

/// Longest `repo_url`.
pub const MAX_REPO_URL: usize = 2048;
/// Longest `ref`.
pub const MAX_REF: usize = 255;
/// Longest `context` or `dockerfile_path`.
pub const MAX_PATH: usize = 1024;
/// Longest `group`.
pub const MAX_GROUP: usize = 200;
/// Longest `target`, a build stage's name.
pub const MAX_TARGET: usize = 128;
/// Most entries of `build_args`.
pub const MAX_BUILD_ARGS: usize = 256;
/// Longest build arg name.
pub const MAX_BUILD_ARG_NAME: usize = 128;
/// Longest build arg value, in bytes.
pub const MAX_BUILD_ARG_VALUE: usize = 64 * 1024;
/// Most `platforms`.
pub const MAX_PLATFORMS: usize = 16;
/// Most `labels`.
pub const MAX_LABELS: usize = 64;
/// Longest label key.
pub const MAX_LABEL_KEY: usize = 256;
/// Longest label value, in bytes.
pub const MAX_LABEL_VALUE: usize = 4 * 1024;
/// Most `secrets`.
pub const MAX_SECRETS: usize = 32;

/// A caller-given job id (see [`crate::job::JobId`]).
pub const ID_PATTERN: &str = "^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$";
/// A build stage, as `FROM … AS name` allows it.
pub const TARGET_PATTERN: &str = "^[A-Za-z][A-Za-z0-9._-]{0,127}$";
/// A build arg's name.
pub const BUILD_ARG_PATTERN: &str = "^[A-Za-z_][A-Za-z0-9_]{0,127}$";
/// A label's key, as the OCI image spec recommends them.
pub const LABEL_KEY_PATTERN: &str = "^[A-Za-z0-9][A-Za-z0-9._/-]{0,255}$";
/// A platform, `os/arch[/variant]` (any case; stored lowercase).
pub const PLATFORM_PATTERN: &str = "^[A-Za-z0-9._-]+/[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)?$";
/// A relative path that does not start an option.
pub const RELATIVE_PATH_PATTERN: &str = "^[^/\\-]";
/// A git ref that does not start an option, without the characters git
/// refuses in one.
pub const REF_PATTERN: &str = "^[^\\-\\s~^:?*\\[\\\\][^\\s~^:?*\\[\\\\]*$";
/// A pinned commit: a full commit id, SHA-1 or SHA-256.
pub const COMMIT_PATTERN: &str = "^([0-9a-fA-F]{40}|[0-9a-fA-F]{64})$";
/// An scp-like repository, `user@host:path` (the URL forms are `uri`s).
pub const SCP_REPO_PATTERN: &str =
    "^[A-Za-z0-9._-]+@[A-Za-z0-9.-]+\\.[A-Za-z0-9-]+:[^:\\s#][^\\s#]*$";
