//! Registries: one configuration for every way the host and its builds
//! reach them ([`RegistrySettings`]), and publishing a build ([`publish`]).

mod base;
mod copy;
pub mod oci;
mod publish;
mod size;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use base::BaseImageError;
pub use copy::CopyError;
pub use publish::{PublishError, Published, Publisher, Pushed};

use crate::config::RegistryConfig;
use crate::job::Job;
use crate::reference::registry_of;

/// Whose credentials a job's registry traffic carries — its base images'
/// pulls, its push, the host's check of the push and its provenance's
/// attachment: the operator's for a job of no project, its project's own
/// auth file for a project's, and none at all for a project without one
/// (or one this host does not know). Made here alone; every part of a
/// run takes its [`RegistrySettings`] from [`RegistryAccess::for_job`].
#[derive(Debug, Clone, Default)]
pub struct RegistryAccess {
    operator: Arc<RegistrySettings>,
    projects: BTreeMap<String, Arc<RegistrySettings>>,
    anonymous: Arc<RegistrySettings>,
}

impl RegistryAccess {
    /// The operator's settings, and each project's (the same registries,
    /// its own credentials).
    pub fn new(operator: RegistrySettings, projects: BTreeMap<String, RegistrySettings>) -> Self {
        RegistryAccess {
            anonymous: Arc::new(RegistrySettings::new(operator.registries.clone(), None)),
            operator: Arc::new(operator),
            projects: projects
                .into_iter()
                .map(|(name, settings)| (name, Arc::new(settings)))
                .collect(),
        }
    }

    /// The operator's settings: registries, TLS, the operator's
    /// credentials.
    pub fn operator(&self) -> &Arc<RegistrySettings> {
        &self.operator
    }

    /// What `job`'s registry traffic goes with.
    pub fn for_job(&self, job: &Job) -> Arc<RegistrySettings> {
        match &job.project {
            None => self.operator.clone(),
            Some(project) => self
                .projects
                .get(project)
                .unwrap_or(&self.anonymous)
                .clone(),
        }
    }
}

/// How to reach registries: TLS, mirrors and credentials, alike for the
/// base-image pulls of builds, the host's pushes and its registry checks.
/// Builds get it per job as a generated `registries.conf` and the auth
/// file, both outside the workspace, never by editing the host's global
/// files.
#[derive(Debug, Clone, Default)]
pub struct RegistrySettings {
    /// Per registry (`host[:port]`).
    registries: BTreeMap<String, RegistryConfig>,
    /// Credentials, as a containers auth file (`auth.json`).
    auth_file: Option<PathBuf>,
}

impl RegistrySettings {
    pub fn new(registries: BTreeMap<String, RegistryConfig>, auth_file: Option<PathBuf>) -> Self {
        RegistrySettings {
            registries,
            auth_file,
        }
    }

    /// Whether `image`'s registry is reached without TLS verification.
    pub fn is_insecure(&self, image: &str) -> bool {
        self.registries
            .get(registry_of(image))
            .is_some_and(|r| !r.tls_verify)
    }

    /// The registries (`host[:port]`) reached without TLS.
    pub fn insecure_registries(&self) -> Vec<String> {
        self.registries
            .iter()
            .filter(|(_, r)| !r.tls_verify)
            .map(|(location, _)| location.clone())
            .collect()
    }

    /// Where every configured registry and mirror is (`host[:port]`):
    /// what a run's jail reaches through the host.
    pub fn endpoints(&self) -> Vec<String> {
        let mut all: Vec<String> = self
            .registries
            .iter()
            .flat_map(|(location, registry)| std::iter::once(location).chain(&registry.mirrors))
            .map(|location| registry_of(location).to_string())
            .collect();
        all.sort();
        all.dedup();
        all
    }

    pub fn auth_file(&self) -> Option<&Path> {
        self.auth_file.as_deref()
    }

    /// The user and password for `registry` (`host[:port]`) in the auth
    /// file, if it has them.
    pub fn credentials(&self, registry: &str) -> Option<(String, String)> {
        use base64::Engine as _;
        let text = std::fs::read_to_string(self.auth_file.as_ref()?).ok()?;
        let doc: serde_json::Value = serde_json::from_str(&text).ok()?;
        let encoded = doc["auths"][registry]["auth"].as_str()?;
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .ok()?;
        let decoded = String::from_utf8(decoded).ok()?;
        let (user, password) = decoded.split_once(':')?;
        Some((user.to_string(), password.to_string()))
    }

    /// `registries.conf` (containers-registries.conf(5), version 2) for a
    /// job's build tools: each configured registry with its TLS setting and
    /// mirrors; short names resolve on Docker Hub, as `docker build` does.
    pub fn registries_conf(&self) -> String {
        // TOML basic strings: Debug quoting escapes what they need.
        let mut text = String::from("unqualified-search-registries = [\"docker.io\"]\n");
        for (location, registry) in &self.registries {
            text.push_str(&format!(
                "\n[[registry]]\nlocation = {location:?}\ninsecure = {}\n",
                !registry.tls_verify
            ));
            for mirror in &registry.mirrors {
                text.push_str(&format!(
                    "[[registry.mirror]]\nlocation = {mirror:?}\ninsecure = {}\n",
                    self.registries
                        .get(registry_of(&format!("{mirror}/x")))
                        .is_some_and(|m| !m.tls_verify)
                ));
            }
        }
        text
    }

    /// Writes a run's copy of these settings into `state` (outside the
    /// job workspace): its `registries.conf`, with credentials a copy of
    /// the auth file (mode 0600), and a Docker client directory holding
    /// the same credentials (or none) as its `config.json` — all removed
    /// with the run, so no program of a job learns where the credentials
    /// are kept, and a `docker` of the run gets the job's credentials,
    /// not the engine's. The variables that point the build tools at them.
    pub fn write_for_run(&self, state: &Path) -> std::io::Result<BTreeMap<String, String>> {
        use std::io::Write as _;
        use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
        let private = |path: &Path, bytes: &[u8]| {
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)?
                .write_all(bytes)
        };
        let registries_conf = state.join("registries.conf");
        std::fs::write(&registries_conf, self.registries_conf())?;
        let credentials = self.auth_file.as_ref().map(std::fs::read).transpose()?;
        let docker = state.join(crate::workspace::RUN_DOCKER_CONFIG);
        std::fs::DirBuilder::new().mode(0o700).create(&docker)?;
        private(
            &docker.join("config.json"),
            credentials.as_deref().unwrap_or(b"{}"),
        )?;
        let mut env = BTreeMap::from([
            (
                "CONTAINERS_REGISTRIES_CONF".to_string(),
                registries_conf.display().to_string(),
            ),
            ("DOCKER_CONFIG".to_string(), docker.display().to_string()),
        ]);
        if let Some(credentials) = &credentials {
            let copy = state.join(crate::workspace::RUN_AUTH_FILE);
            private(&copy, credentials)?;
            env.insert("REGISTRY_AUTH_FILE".into(), copy.display().to_string());
        }
        Ok(env)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_projects_job_never_gets_the_operators_credentials() {
        let dir = tempfile::tempdir().unwrap();
        let auth = |name: &str| {
            let path = dir.path().join(name);
            std::fs::write(&path, r#"{"auths": {}}"#).unwrap();
            Some(path)
        };
        let registries = BTreeMap::from([("r.example".to_string(), RegistryConfig::default())]);
        let access = RegistryAccess::new(
            RegistrySettings::new(registries.clone(), auth("operator.json")),
            BTreeMap::from([
                (
                    "team-a".to_string(),
                    RegistrySettings::new(registries.clone(), None),
                ),
                (
                    "team-b".to_string(),
                    RegistrySettings::new(registries, auth("team-b.json")),
                ),
            ]),
        );
        let job = |project: Option<&str>| Job {
            project: project.map(String::from),
            ..crate::job::Job::from_request(
                crate::job::JobRequest {
                    repo_url: "https://git.example/app.git".into(),
                    ..Default::default()
                },
                &crate::job::SubmitPolicy::for_builders("simulated", ["simulated"]),
                chrono::Utc::now(),
            )
            .unwrap()
        };
        let auth_of = |project: Option<&str>| {
            access
                .for_job(&job(project))
                .auth_file()
                .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        };
        assert_eq!(auth_of(None).as_deref(), Some("operator.json"));
        assert_eq!(auth_of(Some("team-a")), None);
        assert_eq!(auth_of(Some("team-b")).as_deref(), Some("team-b.json"));
        assert_eq!(auth_of(Some("unknown-here")), None);
        // Without credentials, the same registries all the same.
        assert_eq!(
            access.for_job(&job(Some("unknown-here"))).endpoints(),
            ["r.example"]
        );
    }

    #[test]
    fn registries_conf_carries_tls_and_mirrors() {
        let registries = BTreeMap::from([
            (
                "127.0.0.1:5000".to_string(),
                RegistryConfig {
                    tls_verify: false,
                    mirrors: vec!["127.0.0.1:5001/cache".into()],
                },
            ),
            (
                "127.0.0.1:5001".to_string(),
                RegistryConfig {
                    tls_verify: false,
                    mirrors: Vec::new(),
                },
            ),
            ("registry.example".to_string(), RegistryConfig::default()),
        ]);
        let dir = tempfile::tempdir().unwrap();
        let auth = dir.path().join("operator-auth.json");
        std::fs::write(&auth, r#"{"auths": {}}"#).unwrap();
        let settings = RegistrySettings::new(registries, Some(auth.clone()));
        let conf = settings.registries_conf();
        let parsed: toml::Value = toml::from_str(&conf).unwrap();
        let entries = parsed["registry"].as_array().unwrap();
        assert_eq!(entries[0]["location"].as_str(), Some("127.0.0.1:5000"));
        assert_eq!(entries[0]["insecure"].as_bool(), Some(true));
        let mirror = &entries[0]["mirror"][0];
        assert_eq!(mirror["location"].as_str(), Some("127.0.0.1:5001/cache"));
        assert_eq!(mirror["insecure"].as_bool(), Some(true));
        assert_eq!(entries[2]["insecure"].as_bool(), Some(false));
        assert!(settings.is_insecure("127.0.0.1:5000/team/app:1"));
        assert!(!settings.is_insecure("registry.example/team/app:1"));
        let state = dir.path().join("state");
        std::fs::create_dir(&state).unwrap();
        let env = settings.write_for_run(&state).unwrap();
        let copy = state.join("auth.json");
        assert_eq!(env["REGISTRY_AUTH_FILE"], copy.display().to_string());
        assert_eq!(std::fs::read(&copy).unwrap(), std::fs::read(&auth).unwrap());
        use std::os::unix::fs::PermissionsExt as _;
        assert_eq!(copy.metadata().unwrap().permissions().mode() & 0o777, 0o600);
        assert!(
            !env.values().any(|v| v.contains("operator-auth")),
            "{env:?}"
        );
        let docker = std::fs::read(state.join("docker/config.json")).unwrap();
        assert_eq!(docker, std::fs::read(&auth).unwrap());
        assert_eq!(
            env["DOCKER_CONFIG"],
            state.join("docker").display().to_string()
        );
        let conf = state.join("registries.conf");
        assert_eq!(
            env["CONTAINERS_REGISTRIES_CONF"],
            conf.display().to_string()
        );
        assert_eq!(
            std::fs::read_to_string(conf).unwrap(),
            settings.registries_conf()
        );
    }
}
