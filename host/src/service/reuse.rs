//! The run's reuse step: after the checkout, a job whose build inputs
//! equal an earlier successful build's gets that image under its own name
//! and a provenance statement saying so, instead of a build (see
//! [`crate::reuse`]). Anything that keeps it from being reused (an input
//! that cannot be named, no earlier build, an image gone, a registry
//! refusing the copy) makes it build as usual: reuse only ever saves work.

use std::sync::Arc;

use super::Inner;
use super::fault::Failure;
use crate::audit::AuditTrail;
use crate::cancel::CancelSignal;
use crate::job::{BuildResult, Job};
use crate::log::JobLog;
use crate::plugin::Builder;
use crate::provenance::BuildFacts;
use crate::registry::oci::RegistryClient;
use crate::registry::{Publisher, RegistrySettings};
use crate::reuse::BuildInputs;
use crate::rules::CheckedBuild;

/// What the reuse step is given of the run.
pub(super) struct ReuseStep<'a> {
    pub job: &'a Job,
    pub builder: &'a Builder,
    pub workspace: &'a std::path::Path,
    pub source: &'a CheckedBuild,
    pub commit: &'a str,
    pub image: &'a str,
    pub registries: &'a Arc<RegistrySettings>,
    pub log: &'a Arc<JobLog>,
    pub cancel: &'a CancelSignal,
    pub audit: &'a AuditTrail,
}

/// What the reuse step found.
pub(super) enum Reuse {
    /// The job has its image: no build.
    Reused(BuildResult),
    /// Build; on success, record these inputs as built by the job.
    Build(Option<Box<BuildInputs>>),
}

impl Inner {
    pub(super) async fn reuse(&self, step: ReuseStep<'_>) -> Result<Reuse, Failure> {
        let ReuseStep {
            job,
            builder,
            workspace,
            source,
            commit,
            image,
            registries,
            log,
            cancel,
            audit,
        } = step;
        let Some(key) = self.config.reuse.as_ref().filter(|_| !job.no_cache) else {
            return Ok(Reuse::Build(None));
        };
        let registry = RegistryClient::new(registries.clone());
        let tree = self
            .config
            .checkout
            .tree_of(workspace, &source.checkout.context, log, cancel)
            .await;
        let inputs = match tree {
            Ok(tree) => {
                BuildInputs::of(
                    job,
                    builder.info(),
                    source,
                    tree,
                    &registry,
                    &self.config.secrets,
                    key,
                )
                .await
            }
            Err(e) => {
                log.push(&format!("[helix] reuse: not looked for ({e})"));
                return Ok(Reuse::Build(None));
            }
        };
        let inputs = match inputs {
            Ok(inputs) => inputs,
            Err(e) => {
                log.push(&format!("[helix] reuse: not looked for ({e}); building"));
                return Ok(Reuse::Build(None));
            }
        };
        let store = self.config.store.as_ref();
        let Some(earlier) = inputs.earlier_build(job, store, &registry).await else {
            return Ok(Reuse::Build(Some(Box::new(inputs))));
        };
        log.push(&format!(
            "[helix] reuse: job {} built these inputs (its image {} is still in the registry); \
             giving it the name {image} instead of building",
            earlier.job, earlier.pinned
        ));
        let publisher = Publisher::new(registries.clone());
        let result = match publisher
            .publish_copy(&earlier.pinned, image, &job.platforms, log)
            .await
        {
            Ok(result) => result,
            Err(e) => {
                log.push(&format!("[helix] reuse: {e}; building instead"));
                return Ok(Reuse::Build(Some(Box::new(inputs))));
            }
        };
        if let Some(provenance) = &self.config.provenance {
            let (_, trail) = audit.stored();
            let facts = BuildFacts {
                job,
                commit,
                result: &result,
                builder: builder.info(),
                dockerfile_sha256: &source.dockerfile_sha256,
                base_images: provenance
                    .base_images(&registry, &source.external_images, &Default::default())
                    .await,
                audit: trail.as_bytes(),
                reused_from: Some(&earlier.job),
            };
            self.attest(provenance, &registry, &facts, log).await?;
        }
        let (name, body) = inputs.record(job);
        self.config.store.put_record(&job.id, &name, body);
        Ok(Reuse::Reused(result))
    }
}
