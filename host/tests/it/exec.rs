//! The command runner with real processes: grants, environment, working
//! directories, live output, caps, redaction, and killing process groups.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use crate::common::{program, survivors};
use helix_build::audit::AuditTrail;
use helix_build::cancel::CancelSignal;
use helix_build::exec::{
    CommandOutput, CommandRunner, CommandSpec, Grants, JobValues, OUTPUT_TAIL_BYTES, ProgramGrant,
    RunError,
};
use helix_build::log::JobLog;
use helix_build::secrets::{BuildSecrets, SecretSource};

/// A runner over a fresh workspace, with the host's PATH.
struct Fixture {
    workspace: tempfile::TempDir,
    _state: tempfile::TempDir,
    log: Arc<JobLog>,
    cancel: CancelSignal,
    audit: Arc<AuditTrail>,
    runner: CommandRunner,
}

fn fixture(grants: Grants) -> Fixture {
    fixture_with(grants, |_| None, std::env::var_os("PATH"))
}

fn fixture_with(
    grants: Grants,
    host_env: impl Fn(&str) -> Option<String>,
    search_path: Option<std::ffi::OsString>,
) -> Fixture {
    with_secrets(grants, host_env, search_path, &BuildSecrets::default(), &[])
}

/// A fixture whose job has the build secrets `names` of `secrets`.
fn with_secrets(
    grants: Grants,
    host_env: impl Fn(&str) -> Option<String>,
    search_path: Option<std::ffi::OsString>,
    secrets: &BuildSecrets,
    names: &[String],
) -> Fixture {
    let workspace = tempfile::tempdir().unwrap();
    let policy = grants.resolve(host_env);
    let log = Arc::new(JobLog::with_redactor(10_000, secrets.redactor(names)));
    let cancel = CancelSignal::new();
    // Outside the workspace, as the host keeps them.
    let state = tempfile::tempdir().unwrap();
    let files = secrets.write(names, &state.path().join("secrets")).unwrap();
    let runner = CommandRunner::new(
        "test".into(),
        Arc::new(policy),
        workspace.path().to_path_buf(),
        log.clone(),
        cancel.clone(),
        search_path,
    )
    .with_values(JobValues {
        secrets: files,
        ..JobValues::default()
    });
    let audit = Arc::new(AuditTrail::new(1));
    let runner = runner.with_audit(audit.clone());
    Fixture {
        workspace,
        _state: state,
        log,
        cancel,
        audit,
        runner,
    }
}

fn grants(programs: Vec<ProgramGrant>) -> Grants {
    Grants {
        programs,
        ..Grants::default()
    }
}

fn call(program: &str, args: &[&str]) -> CommandSpec {
    CommandSpec {
        program: program.into(),
        args: args.iter().map(|a| a.to_string()).collect(),
        ..CommandSpec::default()
    }
}

fn sh(script: &str) -> CommandSpec {
    call("sh", &["-c", script])
}

fn sh_grants() -> Grants {
    grants(vec![program("sh", &["-c", "*"])])
}

/// Pids a script printed, one per line, prefixed `pid `.
fn pids_in(lines: &[String]) -> Vec<u32> {
    lines
        .iter()
        .filter_map(|l| {
            l.split_once("pid ")
                .and_then(|(_, p)| p.trim().parse().ok())
        })
        .collect()
}

#[tokio::test]
async fn ungranted_calls_are_denied_and_logged() {
    let f = fixture(grants(vec![program("echo", &["hello"])]));
    let ok = f.runner.run(call("echo", &["hello"])).await.unwrap();
    assert_eq!(ok.stdout, "hello\n");
    for spec in [
        call("echo", &["bye"]),
        call("echo", &[]),
        call("cat", &["/etc/passwd"]),
        sh("echo hello"),
    ] {
        match f.runner.run(spec.clone()).await {
            Err(RunError::Denied(reason)) => assert!(reason.contains(&spec.program), "{reason}"),
            other => panic!("{spec:?} was not denied: {other:?}"),
        }
    }
    let denials = f
        .log
        .snapshot()
        .iter()
        .filter(|l| l.starts_with("[helix] denied:"))
        .count();
    assert_eq!(denials, 4);
}

#[tokio::test]
async fn look_alike_programs_in_the_workspace_are_never_run() {
    // A fake `true` in the workspace that would leave a marker if run.
    let f = fixture_with(
        grants(vec![program("true", &[])]),
        |_| None,
        Some(".:relative/bin:/usr/bin:/bin".into()),
    );
    let fake = f.workspace.path().join("true");
    std::fs::write(&fake, "#!/bin/sh\ntouch \"$(dirname \"$0\")/ran\"\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();

    let output = f.runner.run(call("true", &[])).await.unwrap();
    assert_eq!(output.exit_code, 0);
    assert!(
        !f.workspace.path().join("ran").exists(),
        "the workspace's `true` ran"
    );
    for program in ["./true", fake.to_str().unwrap(), "/workspace/true"] {
        assert!(
            matches!(
                f.runner.run(call(program, &[])).await,
                Err(RunError::Denied(_))
            ),
            "{program}"
        );
    }
    assert!(!f.workspace.path().join("ran").exists());
}

#[tokio::test]
async fn an_absolute_grant_runs_exactly_that_file() {
    let f = fixture(grants(vec![program("/bin/echo", &["*"])]));
    assert_eq!(
        f.runner
            .run(call("/bin/echo", &["x"]))
            .await
            .unwrap()
            .stdout,
        "x\n"
    );
    assert!(matches!(
        f.runner.run(call("echo", &["x"])).await,
        Err(RunError::Denied(_))
    ));
}

#[tokio::test]
async fn a_granted_program_that_is_not_installed_is_not_found() {
    let f = fixture(grants(vec![program("helix-no-such-program", &[])]));
    let err = f
        .runner
        .run(call("helix-no-such-program", &[]))
        .await
        .unwrap_err();
    assert!(
        matches!(err, RunError::NotFound(ref m) if m.contains("helix-no-such-program")),
        "{err:?}"
    );
}

#[tokio::test]
async fn the_environment_holds_only_granted_variables() {
    let host_env = |name: &str| match name {
        "HELIX_PASSED" => Some("from-host".to_string()),
        "HOME" => Some("/root".to_string()),
        _ => None,
    };
    let grants = Grants {
        programs: vec![program("env", &[])],
        env: BTreeMap::from([("LANG".to_string(), "C".to_string())]),
        pass_env: vec!["HELIX_PASSED".into()],
        builder_env: vec!["GIT_TERMINAL_PROMPT".into()],
        ..Grants::default()
    };
    let f = fixture_with(grants, host_env, std::env::var_os("PATH"));
    let mut spec = call("env", &[]);
    spec.env = vec![("GIT_TERMINAL_PROMPT".into(), "0".into())];
    let output = f.runner.run(spec).await.unwrap();
    let mut lines: Vec<&str> = output.stdout.lines().collect();
    lines.sort();
    assert_eq!(
        lines,
        ["GIT_TERMINAL_PROMPT=0", "HELIX_PASSED=from-host", "LANG=C"]
    );

    let mut spec = call("env", &[]);
    spec.env = vec![("LD_PRELOAD".into(), "/tmp/evil.so".into())];
    let err = f.runner.run(spec).await.unwrap_err();
    assert!(
        matches!(err, RunError::Denied(ref m) if m.contains("LD_PRELOAD")),
        "{err:?}"
    );
}

#[tokio::test]
async fn working_directories_cannot_leave_the_workspace() {
    let f = fixture(grants(vec![program("pwd", &["-P"])]));
    std::fs::create_dir(f.workspace.path().join("sub")).unwrap();
    std::os::unix::fs::symlink("/tmp", f.workspace.path().join("out")).unwrap();
    let root = f.workspace.path().canonicalize().unwrap();
    let pwd = |dir: &str| {
        let mut spec = call("pwd", &["-P"]);
        spec.working_dir = Some(dir.into());
        f.runner.run(spec)
    };
    assert_eq!(
        pwd("sub").await.unwrap().stdout.trim(),
        root.join("sub").to_str().unwrap()
    );
    assert_eq!(
        pwd("/workspace/sub").await.unwrap().stdout.trim(),
        root.join("sub").to_str().unwrap()
    );
    assert_eq!(pwd("").await.unwrap().stdout.trim(), root.to_str().unwrap());
    for escape in [
        "..",
        "sub/../..",
        "/etc",
        "/workspace/../etc",
        "out",
        "out/",
    ] {
        assert!(
            matches!(pwd(escape).await, Err(RunError::Denied(_))),
            "{escape}"
        );
    }
    assert!(matches!(
        pwd("missing").await,
        Err(RunError::FailedToStart(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_lines_reach_the_log_before_the_program_exits() {
    let f = fixture(sh_grants());
    let log = f.log.clone();
    let run =
        tokio::spawn(async move { f.runner.run(sh("echo first; sleep 2; echo second")).await });
    let mut seen_first = false;
    for _ in 0..150 {
        let lines = log.snapshot();
        if lines.iter().any(|l| l == "[sh stdout] first") {
            seen_first = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        seen_first,
        "first line not logged while running: {:?}",
        log.snapshot()
    );
    assert!(!run.is_finished(), "the program had already exited");
    assert!(!log.snapshot().iter().any(|l| l == "[sh stdout] second"));
    let output = run.await.unwrap().unwrap();
    assert_eq!(output.stdout, "first\nsecond\n");
    let lines = log.snapshot();
    let first = lines.iter().position(|l| l == "[sh stdout] first").unwrap();
    let second = lines
        .iter()
        .position(|l| l == "[sh stdout] second")
        .unwrap();
    assert!(first < second);
}

#[tokio::test]
async fn stderr_is_logged_and_exit_codes_are_reported() {
    let f = fixture(sh_grants());
    let output = f.runner.run(sh("echo oops >&2; exit 3")).await.unwrap();
    assert_eq!((output.exit_code, output.stderr.as_str()), (3, "oops\n"));
    assert!(f.log.snapshot().contains(&"[sh stderr] oops".to_string()));
    let killed = f.runner.run(sh("kill -9 $$")).await.unwrap();
    assert_eq!(killed.exit_code, 128 + 9);
}

#[tokio::test]
async fn kept_output_is_capped() {
    let f = fixture(sh_grants());
    let output: CommandOutput = f
        .runner
        .run(sh(
            "i=0; while [ $i -lt 20000 ]; do echo line-$i; i=$((i+1)); done",
        ))
        .await
        .unwrap();
    assert!(
        output.stdout.len() <= OUTPUT_TAIL_BYTES,
        "{}",
        output.stdout.len()
    );
    assert!(output.stdout.ends_with("line-19999\n"));
    assert_eq!(
        f.log.snapshot().len(),
        10_000 + 1,
        "log keeps its cap plus the marker"
    );
    assert!(f.log.snapshot()[0].contains("earlier log lines dropped"));
}

#[tokio::test]
async fn build_secrets_reach_only_their_program_and_are_redacted_everywhere() {
    let secrets = BuildSecrets::load(
        &[(
            "token".to_string(),
            SecretSource {
                env: Some("HELIX_TEST_TOKEN".into()),
                file: None,
            },
        )]
        .into(),
        |_| Some("s3cr3t-t0ken".to_string()),
    )
    .unwrap();
    let grants = Grants {
        programs: vec![program("sh", &["-c", "*", "sh", "{secret}"])],
        ..Grants::default()
    };
    let f = with_secrets(
        grants,
        |_| None,
        std::env::var_os("PATH"),
        &secrets,
        &["token".to_string()],
    );
    // The program gets `id=token,src=FILE` and prints the value.
    let script = r#"v=$(cat "${1#*src=}"); echo "token=$v"; echo "again $v" >&2"#;
    let output = f
        .runner
        .run(call("sh", &["-c", script, "sh", "id=token"]))
        .await
        .unwrap();
    assert_eq!(output.exit_code, 0, "{}", output.stderr);
    assert_eq!(
        (output.stdout.as_str(), output.stderr.as_str()),
        ("token=***\n", "again ***\n"),
        "the builder gets the output with the value redacted"
    );
    let log = f.log.snapshot().join("\n");
    assert!(!log.contains("s3cr3t-t0ken"), "{log}");
    assert!(
        log.contains("[sh stdout] token=***") && log.contains("[sh stderr] again ***"),
        "{log}"
    );
    // A denial echoing the secret in its arguments is redacted too, in
    // the log and in the audit trail.
    let _ = f.runner.run(call("curl", &["-u", "s3cr3t-t0ken"])).await;
    assert!(!f.log.snapshot().join("\n").contains("s3cr3t-t0ken"));
    let (calls, _) = f.audit.entries();
    let denied = calls.last().unwrap();
    assert_eq!((denied.program.as_str(), denied.allowed), ("curl", false));
    assert_eq!(denied.args, ["-u", "***"]);
    assert!(
        !serde_json::to_string(&calls)
            .unwrap()
            .contains("s3cr3t-t0ken"),
        "{calls:?}"
    );
    // The builder cannot name a file of its own, or a secret the job lacks.
    for bad in ["id=token,src=/etc/shadow", "id=other"] {
        let err = f
            .runner
            .run(call("sh", &["-c", script, "sh", bad]))
            .await
            .unwrap_err();
        assert!(matches!(err, RunError::Denied(_)), "{bad}: {err}");
    }
}

const FAMILY: &str =
    "sleep 300 & echo pid $!; (sleep 300 & echo pid $!; wait) & echo pid $!; echo pid $$; wait";

async fn started_family(log: &JobLog) -> Vec<u32> {
    for _ in 0..500 {
        let pids = pids_in(&log.snapshot());
        if pids.len() == 4 {
            return pids;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the script did not start: {:?}", log.snapshot());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_kills_the_program_and_its_grandchildren() {
    let f = fixture(sh_grants());
    let (log, cancel) = (f.log.clone(), f.cancel.clone());
    let run = tokio::spawn(async move { f.runner.run(sh(FAMILY)).await });
    let pids = started_family(&log).await;
    cancel.cancel("test");
    // Bounded: a surviving grandchild holding the output pipe would hang it.
    let result = tokio::time::timeout(Duration::from_secs(10), run).await;
    assert_eq!(
        result.expect("cancel returns promptly").unwrap(),
        Err(RunError::Cancelled)
    );
    assert_eq!(
        survivors(&pids, Duration::from_secs(5)).await,
        Vec::<u32>::new()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_timeout_kills_the_whole_group() {
    let f = fixture(sh_grants());
    let log = f.log.clone();
    let mut spec = sh(FAMILY);
    spec.timeout = Some(Duration::from_millis(500));
    let result = tokio::time::timeout(Duration::from_secs(10), f.runner.run(spec)).await;
    assert_eq!(
        result.expect("the timeout returns promptly"),
        Err(RunError::TimedOut)
    );
    let pids = pids_in(&log.snapshot());
    assert_eq!(pids.len(), 4, "{:?}", log.snapshot());
    assert_eq!(
        survivors(&pids, Duration::from_secs(5)).await,
        Vec::<u32>::new()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_call_kills_the_whole_group() {
    let f = fixture(sh_grants());
    let log = f.log.clone();
    let run = tokio::spawn(async move { f.runner.run(sh(FAMILY)).await });
    let pids = started_family(&log).await;
    run.abort();
    assert!(run.await.unwrap_err().is_cancelled());
    // SIGTERM at once; SIGKILL after the grace period for anything left.
    assert_eq!(
        survivors(&pids, Duration::from_secs(5)).await,
        Vec::<u32>::new()
    );
}

#[tokio::test]
async fn leftover_background_processes_die_with_their_program() {
    let f = fixture(sh_grants());
    let output = f
        .runner
        .run(sh("sleep 300 > /dev/null 2>&1 & echo pid $!"))
        .await
        .unwrap();
    let pid: u32 = output
        .stdout
        .trim()
        .trim_start_matches("pid ")
        .parse()
        .unwrap();
    assert_eq!(
        survivors(&[pid], Duration::from_secs(5)).await,
        Vec::<u32>::new()
    );
}
