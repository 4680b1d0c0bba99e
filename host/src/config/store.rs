//! Where jobs are stored and how a shared queue's leases behave (`store_url`, `host_id`, `lease_secs`, `max_attempts`).

use std::path::PathBuf;

use super::{Config, ConfigError};

/// Where jobs are stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreLocation {
    /// One host's SQLite file.
    Sqlite(PathBuf),
    /// A PostgreSQL database several hosts share (its URL).
    Postgres(String),
}

impl Config {
    /// Checks the store URL and the lease and attempt settings.
    pub(super) fn validate_queue(&self) -> Result<(), ConfigError> {
        if self.max_attempts == 0 {
            return Err(ConfigError::Invalid(
                "max_attempts must be at least 1".into(),
            ));
        }
        self.store()?;
        if self.lease_secs < 3 {
            return Err(ConfigError::Invalid(format!(
                "lease_secs must be at least 3 (a heartbeat renews leases every third of it), got {}",
                self.lease_secs
            )));
        }
        Ok(())
    }

    /// The store `store_url` names.
    pub fn store(&self) -> Result<StoreLocation, ConfigError> {
        let Some(url) = &self.store_url else {
            return Ok(StoreLocation::Sqlite(self.data_dir.join("helix.db")));
        };
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            return Ok(StoreLocation::Postgres(url.clone()));
        }
        let path = url
            .strip_prefix("sqlite://")
            .or_else(|| url.strip_prefix("sqlite:"))
            .filter(|p| !p.is_empty())
            .ok_or_else(|| {
                ConfigError::Invalid(format!(
                    "store_url {url:?} is not supported; use sqlite://PATH or postgres://user:password@host:port/database"
                ))
            })?;
        Ok(StoreLocation::Sqlite(PathBuf::from(path)))
    }

    /// This host's name in a shared queue's leases.
    pub fn host_id(&self) -> String {
        self.host_id.clone().unwrap_or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|name| name.trim().to_string())
                .ok()
                .filter(|name| !name.is_empty())
                .unwrap_or_else(|| "helix-host".into())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tests::parse;

    #[test]
    fn store_url_selects_sqlite_or_postgres() {
        let config = parse("data_dir = '/srv/helix'").unwrap();
        assert_eq!(
            config.store().unwrap(),
            StoreLocation::Sqlite(PathBuf::from("/srv/helix/helix.db"))
        );
        let config = parse("store_url = 'sqlite:///var/lib/h.db'").unwrap();
        assert_eq!(
            config.store().unwrap(),
            StoreLocation::Sqlite(PathBuf::from("/var/lib/h.db"))
        );
        let config = parse("store_url = 'postgres://helix@db:5432/helix'").unwrap();
        assert_eq!(
            config.store().unwrap(),
            StoreLocation::Postgres("postgres://helix@db:5432/helix".into())
        );
        let err = parse("store_url = 'mysql://db/helix'").unwrap_err();
        assert!(
            err.contains("store_url") && err.contains("postgres://"),
            "{err}"
        );
        assert!(parse("lease_secs = 1").unwrap_err().contains("lease_secs"));
        assert!(
            parse("max_attempts = 0")
                .unwrap_err()
                .contains("max_attempts")
        );
    }
}
