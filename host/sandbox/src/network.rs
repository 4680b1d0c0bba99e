//! The network a builder's `RUN` steps get.
//!
//! `private` (the default) lets a build step reach the world but no address
//! of the host itself: the steps join the CNI bridge network
//! [`PRIVATE_NETWORK`] (bridge `helix0`, its own subnet, NAT to the
//! outside), which the build tool makes inside the run's jail, whose only
//! way out is its uplink (see [`crate::jail`]).

use serde::{Deserialize, Serialize};

/// The CNI network `private` build steps join.
pub const PRIVATE_NETWORK: &str = "helix-private";
/// Its config, which a jail shows in `/etc/cni/net.d`.
pub(crate) const CNI_CONFIG: &str = r#"{
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
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, utoipa::ToSchema)]
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
}
