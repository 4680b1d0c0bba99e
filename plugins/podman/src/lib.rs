//! The podman builder: checks out the job's repository, builds it with
//! `podman build --isolation chroot` (one platform, or a manifest list for
//! several), and pushes it to the registry. See `helix-builder-kit`.

helix_builder_kit::real_builder!(
    Podman,
    helix_builder_kit::Tool::Podman,
    "Builds with podman (chroot isolation) and pushes to a registry"
);
