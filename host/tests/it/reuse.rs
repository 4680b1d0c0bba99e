//! No work when nothing changed: real podman builds of a real repository
//! pushed to a real registry; a job of the same inputs gets the earlier
//! image under its own name (in another repository too), with provenance
//! saying so, and any changed input, `no_cache` or an image gone from the
//! registry makes it build.

use std::collections::BTreeMap;

use helix_build::job::{Job, JobRequest, State};
use helix_build::service::Service;
use helix_fixtures::{Registry, Repo};

use crate::common::{self, image_name, pull, start};

fn request(repo: &Repo, git_ref: &str, image: String) -> JobRequest {
    JobRequest {
        repo_url: repo.url(),
        git_ref: Some(git_ref.into()),
        builder: Some("podman".into()),
        build_args: BTreeMap::from([("GREETING".to_string(), "hello".to_string())]),
        image: Some(image),
        ..JobRequest::default()
    }
}

const REUSED: &str = "[helix] reuse: job ";

/// Runs `request`; the job and whether it was given an earlier image
/// instead of a build.
async fn run(service: &Service, request: JobRequest) -> (Job, bool) {
    let (job, logs) = common::run_logged(service, request).await;
    assert_eq!(job.state, State::Succeeded, "{:?}", job.error);
    let reused = logs.iter().any(|l| l.starts_with(REUSED));
    let built = logs
        .iter()
        .any(|l| l.starts_with("[helix] pushing the built image"));
    assert_ne!(reused, built, "either reused or built: {logs:?}");
    (job, reused)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_of_the_same_inputs_gets_the_earlier_image_and_any_change_builds() {
    let registry = Registry::start(false);
    let repo = Repo::new();
    let dir = tempfile::tempdir().unwrap();
    let service = start(&common::real_config(&dir, &registry.address)).await;
    let at = |path: &str| format!("{}/{path}", registry.address);

    let (first, reused) = run(&service, request(&repo, "v1", at("team/app:one"))).await;
    assert!(!reused, "nothing was built before");
    let digest = first.digest.clone().unwrap();

    // The same inputs under another name, in another repository.
    let (second, reused) = run(&service, request(&repo, "v1", at("other/app:two"))).await;
    assert!(reused, "the same inputs are not built again");
    assert_eq!(second.digest, Some(digest.clone()));
    assert_eq!(
        second.image_tag.as_deref(),
        Some(at("other/app:two").as_str())
    );
    let (hello, _) = pull(&at("other/app:two"), "hello");
    assert_eq!(hello, "hello-amd64\n");
    let logs = common::LogText::texts(service.logs(second.id.as_str()).await.unwrap());
    assert!(
        logs.iter()
            .any(|l| l.starts_with(&format!("{REUSED}{} built these inputs", first.id))),
        "{logs:?}"
    );
    let provenance = service.provenance(second.id.as_str()).await.unwrap();
    let internal = &provenance
        .statement
        .predicate
        .build_definition
        .internal_parameters;
    assert_eq!(internal.reused_from.as_deref(), Some(first.id.as_str()));
    assert!(provenance.reference.starts_with(&at("other/app@")));

    // Each changed input builds: a build arg, the context's tree (main
    // adds files to it), a label, no_cache.
    let mut changed_arg = request(&repo, "v1", at("team/app:arg"));
    changed_arg
        .build_args
        .insert("GREETING".into(), "bonjour".into());
    let mut labelled = request(&repo, "v1", at("team/app:label"));
    labelled.labels.insert("team".into(), "a".into());
    let no_cache = JobRequest {
        no_cache: true,
        ..request(&repo, "v1", at("team/app:nocache"))
    };
    for changed in [
        changed_arg,
        request(&repo, "main", at("team/app:main")),
        labelled,
        no_cache,
    ] {
        let (job, reused) = run(&service, changed).await;
        assert!(!reused, "{} changed an input and was not built", job.id);
    }

    // Once the earlier images have left the registry, the job builds.
    for repository in ["team/app", "other/app"] {
        registry.forget_manifest(repository, digest.as_str());
    }
    let (gone, reused) = run(&service, request(&repo, "v1", at("team/app:three"))).await;
    assert!(!reused, "the earlier images are gone");
    assert_eq!(
        image_name(gone.image_tag.as_deref().unwrap()),
        at("team/app")
    );
}
