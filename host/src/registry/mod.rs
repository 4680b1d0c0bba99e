//! Registries: one configuration for every way the host and its builds
//! reach them ([`RegistrySettings`]), and publishing a build ([`publish`]).

mod base;
pub mod oci;
mod publish;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub use base::BaseImageError;
pub use publish::{PublishError, Publisher, Pushed};

use crate::config::RegistryConfig;
use crate::reference::registry_of;

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
    /// job workspace): its `registries.conf` and, with credentials, a copy
    /// of the auth file (mode 0600) removed with the run, so no program
    /// of a job learns where the operator keeps the credentials. The
    /// variables that point a build tool at them.
    pub fn write_for_run(&self, state: &Path) -> std::io::Result<BTreeMap<String, String>> {
        let registries_conf = state.join("registries.conf");
        std::fs::write(&registries_conf, self.registries_conf())?;
        let mut env = BTreeMap::from([(
            "CONTAINERS_REGISTRIES_CONF".to_string(),
            registries_conf.display().to_string(),
        )]);
        if let Some(file) = &self.auth_file {
            use std::io::Write as _;
            use std::os::unix::fs::OpenOptionsExt as _;
            let copy = state.join(crate::workspace::RUN_AUTH_FILE);
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&copy)?
                .write_all(&std::fs::read(file)?)?;
            env.insert("REGISTRY_AUTH_FILE".into(), copy.display().to_string());
        }
        Ok(env)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
