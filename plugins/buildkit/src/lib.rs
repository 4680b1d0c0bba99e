//! The BuildKit builder: builds the source the host checked out with
//! BuildKit inside the Docker Engine the operator names (`docker build`,
//! one platform at a time, every `RUN` step in its own container with no
//! network) and leaves each platform's image in the engine for the host to
//! push and assemble. See `helix-builder-kit`.

helix_builder_kit::real_builder!(
    BuildKit,
    helix_builder_kit::Tool::BuildKit,
    "Builds with BuildKit in the host's Docker Engine, each RUN step in its own container; the host pushes"
);
