//! No work when nothing changed: real podman builds of a real repository
//! pushed to a real registry; a job of the same inputs gets the earlier
//! image under its own name (in another repository too), with provenance
//! saying so, and any changed input, `no_cache` or an image gone from the
//! registry makes it build.

use std::collections::BTreeMap;

use helix_build::config::ProjectConfig;
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
    // Another repository holds no SBOM of the image: attached anew there.
    let first_sboms = service.sbom(first.id.as_str()).await.unwrap().sboms;
    let second_sboms = service.sbom(second.id.as_str()).await.unwrap().sboms;
    assert_eq!(second_sboms.len(), first_sboms.len());
    assert!(
        second_sboms
            .iter()
            .all(|s| s.reference.starts_with(&at("other/app@"))),
        "{second_sboms:?}"
    );
    // The same repository already has them, attached by the first job.
    let (third, reused) = run(&service, request(&repo, "v1", at("team/app:three"))).await;
    assert!(reused);
    assert_eq!(
        service.sbom(third.id.as_str()).await.unwrap().sboms,
        first_sboms
    );
    let third_provenance = service.provenance(third.id.as_str()).await.unwrap();
    assert_ne!(third_provenance.reference, provenance.reference);
    assert_eq!(
        third_provenance
            .statement
            .predicate
            .build_definition
            .internal_parameters
            .reused_from
            .as_deref(),
        Some(first.id.as_str())
    );
    assert_eq!(
        common::phase_names(&second),
        [
            "queue_wait",
            "prepare",
            "checkout",
            "reuse",
            "attest",
            "clean_up"
        ],
        "a reused job builds and pushes nothing"
    );

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

/// Reuse keeps the layer cache's scopes: another project's build of the
/// same inputs is never given, nor is an unprotected ref's build to a
/// protected ref's job; an unprotected job may take a protected build.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reuse_stays_in_its_project_and_never_hands_an_unprotected_build_to_a_protected_ref() {
    let registry = Registry::start(false);
    let repo = Repo::new();
    let dir = tempfile::tempdir().unwrap();
    let mut config = common::real_config(&dir, &registry.address);
    config.projects = BTreeMap::from([
        (
            "team-a".to_string(),
            ProjectConfig {
                protected_refs: vec!["refs/heads/main".into()],
                ..ProjectConfig::default()
            },
        ),
        ("team-b".to_string(), ProjectConfig::default()),
    ]);
    let config = config.validated().unwrap();
    let access = config.access().unwrap();
    let service = start(&config).await;
    let run_as = async |project: &str, git_ref: &str, tag: &str| {
        let request = request(
            &repo,
            git_ref,
            format!("{}/{project}/app:{tag}", registry.address),
        );
        let job = service
            .submit_for(request, access.project(project))
            .await
            .unwrap();
        let job = common::finished(&service, &job.id).await;
        assert_eq!(job.state, State::Succeeded, "{:?}", job.error);
        let logs = common::LogText::texts(service.logs(job.id.as_str()).await.unwrap());
        eprintln!("--- {project} {git_ref}: {}\n{}", job.id, logs.join("\n"));
        let reused_from = logs
            .iter()
            .find_map(|l| l.strip_prefix(REUSED))
            .and_then(|rest| rest.split(' ').next())
            .map(String::from);
        (job, reused_from)
    };
    let (a_unprotected, from) = run_as("team-a", "main", "1").await;
    assert_eq!(from, None, "nothing was built before");
    assert!(!a_unprotected.protected);
    let (_, from) = run_as("team-b", "main", "1").await;
    assert_eq!(from, None, "team-b is given nothing team-a built");
    let (a_protected, from) = run_as("team-a", "refs/heads/main", "2").await;
    assert!(a_protected.protected);
    assert_eq!(from, None, "a protected ref is given no unprotected build");
    let (_, from) = run_as("team-a", "refs/heads/main", "3").await;
    assert_eq!(from.as_deref(), Some(a_protected.id.as_str()));
    let (_, from) = run_as("team-a", "main", "4").await;
    assert!(
        from.is_some(),
        "an unprotected ref takes its project's builds"
    );
}
