//! The buildah builder: builds the source the host checked out with
//! `buildah build --isolation oci --runtime runc` (one platform, or a manifest
//! list for several) and leaves it as an OCI layout the host pushes. See
//! `helix-builder-kit`.

helix_builder_kit::real_builder!(
    Buildah,
    helix_builder_kit::Tool::Buildah,
    "Builds with buildah, each RUN step in its own OCI container; the host pushes"
);
