//! The run's reuse step: after the checkout, a job whose build inputs
//! equal an earlier successful build's gets that image under its own name
//! and a provenance statement saying so, instead of a build (see
//! [`crate::reuse`]). Anything that keeps it from being reused (an input
//! that cannot be named, no earlier build, an image gone, a registry
//! refusing the copy) makes it build as usual: reuse only ever saves work.

use super::Run;
use super::steps::Checked;
use crate::job::BuildResult;
use crate::registry::Publisher;
use crate::reuse::{BuildInputs, EarlierBuild};

/// What the reuse step found.
pub(super) enum Reuse {
    /// An earlier build's image, now under the job's name: no build.
    Reused(BuildResult, EarlierBuild),
    /// Build; on success, record these inputs as built by the job.
    Build(Option<Box<BuildInputs>>),
}

impl Run<'_> {
    pub(super) async fn reuse(&self, checked: &Checked) -> Reuse {
        let (job, log) = (self.job, self.log);
        let Some(key) = self.inner.config.reuse.as_ref().filter(|_| !job.no_cache) else {
            return Reuse::Build(None);
        };
        let registry = &self.registry;
        let workspace = self.dirs.workspace();
        let context = &checked.source.checkout.context;
        let checkout = &self.inner.config.checkout;
        let inputs = match checkout
            .tree_of(&workspace, context, log, self.cancel)
            .await
        {
            Ok(tree) => BuildInputs::of(
                job,
                self.builder.info(),
                &checked.source,
                tree,
                registry,
                &self.inner.config.secrets,
                key,
            )
            .await
            .map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        let inputs = match inputs {
            Ok(inputs) => inputs,
            Err(e) => {
                log.push(&format!("[helix] reuse: not looked for ({e}); building"));
                return Reuse::Build(None);
            }
        };
        let store = self.inner.config.store.as_ref();
        let Some(earlier) = inputs
            .earlier_build(job, &checked.image, store, registry)
            .await
        else {
            return Reuse::Build(Some(Box::new(inputs)));
        };
        log.push(&format!(
            "[helix] reuse: job {} built these inputs (its image {} is still in the registry); \
             giving it the name {} instead of building",
            earlier.job, earlier.pinned, checked.image
        ));
        match Publisher::publish_copy(
            registry,
            &earlier.pinned,
            &checked.image,
            &job.platforms,
            log,
        )
        .await
        {
            Ok(result) => {
                self.record_inputs(&inputs);
                Reuse::Reused(result, earlier)
            }
            Err(e) => {
                log.push(&format!("[helix] reuse: {e}; building instead"));
                Reuse::Build(Some(Box::new(inputs)))
            }
        }
    }

    /// Keeps `inputs` as built by this job, for later jobs to reuse. It
    /// is written before the job's end: an end other than success leaves
    /// it unused ([`BuildInputs::earlier_build`] takes successful jobs only).
    pub(super) fn record_inputs(&self, inputs: &BuildInputs) {
        let (name, body) = inputs.record(self.job);
        self.inner
            .config
            .store
            .put_record(&self.job.id, &name, body);
    }
}
