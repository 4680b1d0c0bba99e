//! The registry settings (`[registries.*]`, `default_registry`, `registry_auth_file`, each project's `registry_auth`): where images go, with whose credentials, and which registries grant values and registry caches may name.

use std::collections::BTreeSet;
use std::path::PathBuf;

use serde::Deserialize;

use super::{Config, ConfigError};
use crate::exec::ValuePolicy;
use crate::registry::{RegistryAccess, RegistrySettings};

/// How to talk to one registry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RegistryConfig {
    /// `false` for a registry served over plain HTTP or with a certificate
    /// that cannot be verified.
    pub tls_verify: bool,
    /// Registries (`host[:port][/path]`) base images of this one are
    /// pulled from first, in order, falling back to this one.
    pub mirrors: Vec<String>,
}

impl Default for RegistryConfig {
    fn default() -> Self {
        RegistryConfig {
            tls_verify: true,
            mirrors: Vec::new(),
        }
    }
}

impl Config {
    /// Checks each registry's name and mirrors, the default registry and
    /// the auth file.
    pub(super) fn validate_registries(&self) -> Result<(), ConfigError> {
        let invalid = |m: String| Err(ConfigError::Invalid(m));
        for (host, registry) in &self.registries {
            let probe = |location: &str| {
                crate::reference::validate_image_ref(&format!("{location}/probe")).is_ok()
            };
            if host.contains('/') || !probe(host) {
                return invalid(format!(
                    "registries.\"{host}\" must be a registry's host[:port], e.g. registry.example.com:5000"
                ));
            }
            if let Some(mirror) = registry.mirrors.iter().find(|m| !probe(m)) {
                return invalid(format!(
                    "registries.\"{host}\".mirrors: {mirror:?} must be host[:port][/path]"
                ));
            }
        }
        if let Some(registry) = &self.default_registry {
            let probe = format!("{registry}/probe");
            if registry.is_empty() || crate::reference::validate_image_ref(&probe).is_err() {
                return invalid(format!(
                    "default_registry {registry:?} must be host[:port][/namespace], e.g. registry.example.com/team"
                ));
            }
        }
        if let Some(file) = &self.registry_auth_file
            && !file.is_file()
        {
            return invalid(format!(
                "registry_auth_file {} is not a readable file",
                file.display()
            ));
        }
        Ok(())
    }

    /// A registry cache must be a plain repository (no tag or digest:
    /// podman's cache keys are its tags) in a registry the operator
    /// configured, whose settings and credentials then apply to it.
    pub(super) fn validate_registry_cache(
        &self,
        name: &str,
        prefix: &str,
    ) -> Result<(), ConfigError> {
        let last = prefix.rsplit('/').next().unwrap_or_default();
        let plain = prefix.contains('/') && !last.contains(':') && !prefix.contains('@');
        if !plain || crate::reference::validate_image_ref(prefix).is_err() {
            return Err(ConfigError::Invalid(format!(
                "builders.{name}.registry_cache {prefix:?} must be host[:port]/path, a repository without tag or digest"
            )));
        }
        let registry = crate::reference::registry_of(prefix);
        if !self.value_policy().registries.contains(registry) {
            return Err(ConfigError::Invalid(format!(
                "builders.{name}.registry_cache: registry {registry} is not configured; add [registries.\"{registry}\"] or make it the default_registry"
            )));
        }
        Ok(())
    }

    /// The registries (`host[:port]`) the operator configured, the
    /// default one's included: the only ones real builds push to.
    pub fn push_registries(&self) -> BTreeSet<String> {
        let mut registries: BTreeSet<String> = self.registries.keys().cloned().collect();
        if let Some(default) = &self.default_registry {
            registries.insert(crate::reference::registry_of(default).to_string());
        }
        registries
    }

    /// What typed grant values are checked against: the configured
    /// registries (and the default one's) and the repository policy.
    pub(super) fn value_policy(&self) -> ValuePolicy {
        ValuePolicy {
            registries: self.push_registries(),
            allow_file_repos: self.allow_file_repos,
        }
    }

    /// How the host and its builds reach registries: with the operator's
    /// credentials for jobs of no project, each project's own (or none)
    /// for its jobs.
    pub fn registry_access(&self) -> RegistryAccess {
        let settings = |auth: Option<PathBuf>| RegistrySettings::new(self.registries.clone(), auth);
        RegistryAccess::new(
            settings(self.registry_auth_file.clone()),
            self.projects
                .iter()
                .map(|(name, project)| (name.clone(), settings(project.registry_auth.clone())))
                .collect(),
        )
    }
}

#[cfg(test)]
mod tests {
    use crate::config::tests::parse;

    #[test]
    fn registry_auth_file_reaches_no_builders_programs() {
        let file = tempfile::NamedTempFile::new().unwrap();
        let text = format!(
            "registry_auth_file = {:?}",
            file.path().display().to_string()
        );
        let config = parse(&text).unwrap();
        for source in config.builder_sources().unwrap() {
            assert!(
                !source
                    .grants
                    .env_names()
                    .contains(&"REGISTRY_AUTH_FILE".to_string()),
                "{}",
                source.name
            );
            assert!(
                !source
                    .settings
                    .values()
                    .any(|v| v.contains(&file.path().display().to_string())),
                "{}",
                source.name
            );
        }
        let err = parse("registry_auth_file = '/nonexistent/auth.json'").unwrap_err();
        assert!(err.contains("registry_auth_file"), "{err}");
    }
}
