//! The podman builder: builds the source the host checked out with
//! `podman build --isolation oci --runtime runc` (one platform, or a manifest
//! list for several) and leaves it as an OCI layout the host pushes. See
//! `helix-builder-kit`.

helix_builder_kit::real_builder!(
    Podman,
    helix_builder_kit::Tool::Podman,
    "Builds with podman, each RUN step in its own OCI container; the host pushes"
);
