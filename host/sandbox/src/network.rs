//! The network a builder's `RUN` steps get, and the host's private build
//! network.
//!
//! `private` (the default) lets a build step reach the world but no address
//! of the host itself: the steps join the CNI bridge network
//! [`PRIVATE_NETWORK`] (bridge `helix0`, its own subnet, NAT to the
//! outside), and the host rejects every packet arriving from that bridge
//! (`iptables`/`ip6tables -I INPUT -i helix0 -j REJECT`) — its loopback
//! is the container's own, and its other addresses and the bridge gateway
//! are refused. Traffic routed through the host to other networks is not
//! filtered. The host writes the network's config and the rules the first
//! time a job needs them; both survive the host and are idempotent.

use std::path::Path;

use serde::{Deserialize, Serialize};
use tokio::sync::OnceCell;

/// The CNI network `private` build steps join.
pub const PRIVATE_NETWORK: &str = "helix-private";
/// Its bridge interface on the host.
const BRIDGE: &str = "helix0";
/// Where rootful podman and buildah read CNI network configs.
const CNI_CONFIG_DIR: &str = "/etc/cni/net.d";
const CNI_CONFIG: &str = r#"{
  "cniVersion": "0.4.0",
  "name": "helix-private",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "helix0",
      "isGateway": true,
      "ipMasq": true,
      "ipam": {
        "type": "host-local",
        "routes": [{ "dst": "0.0.0.0/0" }],
        "ranges": [[{ "subnet": "10.213.77.0/24", "gateway": "10.213.77.1" }]]
      }
    },
    { "type": "firewall" }
  ]
}
"#;

/// What a builder's build steps may reach over the network.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BuildNetwork {
    /// No network at all: only the step's own loopback.
    None,
    /// The outside world, but no address of the host.
    #[default]
    Private,
    /// The host's own network stack: everything the host reaches,
    /// including its loopback services. Only when the operator says so.
    Host,
}

impl BuildNetwork {
    /// The `--network` value podman and buildah take for it.
    pub fn flag_value(self) -> &'static str {
        match self {
            BuildNetwork::None => "none",
            BuildNetwork::Private => PRIVATE_NETWORK,
            BuildNetwork::Host => "host",
        }
    }

    /// Makes sure the network exists before a job uses it (only `private`
    /// needs anything). The error says what failed.
    pub async fn prepare(self) -> Result<(), String> {
        static PRIVATE_READY: OnceCell<()> = OnceCell::const_new();
        if self != BuildNetwork::Private {
            return Ok(());
        }
        PRIVATE_READY
            .get_or_try_init(prepare_private)
            .await
            .map(|_| ())
    }
}

async fn prepare_private() -> Result<(), String> {
    let failed = |what: String| format!("cannot prepare the private build network: {what}");
    let config = Path::new(CNI_CONFIG_DIR).join(format!("{PRIVATE_NETWORK}.conflist"));
    if std::fs::read_to_string(&config).ok().as_deref() != Some(CNI_CONFIG) {
        std::fs::create_dir_all(CNI_CONFIG_DIR)
            .and_then(|()| {
                // Written whole under a temporary name, so a concurrent
                // reader never sees half a config.
                let partial = config.with_extension("partial");
                std::fs::write(&partial, CNI_CONFIG)?;
                std::fs::rename(&partial, &config)
            })
            .map_err(|e| failed(format!("writing {}: {e}", config.display())))?;
    }
    for program in ["iptables", "ip6tables"] {
        let rule = ["INPUT", "-i", BRIDGE, "-j", "REJECT"];
        if run(program, "-C", &rule).await.is_ok() {
            continue;
        }
        run(program, "-I", &rule).await.map_err(failed)?;
    }
    Ok(())
}

async fn run(program: &str, action: &str, rule: &[&str]) -> Result<(), String> {
    let output = tokio::process::Command::new(program)
        .arg("-w")
        .arg(action)
        .args(rule)
        .output()
        .await
        .map_err(|e| format!("cannot run {program}: {e}; install iptables on the build host"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{program} {action} {}: {}",
            rule.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}
