//! The buildah builder: checks out the job's repository, builds it with
//! `buildah build --isolation chroot` (one platform, or a manifest list for
//! several), and pushes it to the registry. See `helix-builder-kit`.

helix_builder_kit::real_builder!(
    Buildah,
    helix_builder_kit::Tool::Buildah,
    "Builds with buildah (chroot isolation) and pushes to a registry"
);
