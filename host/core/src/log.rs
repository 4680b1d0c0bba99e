//! Job logs: the lines a job's builder and its programs wrote, capped in
//! lines and in bytes.
//!
//! What a build prints is untrusted and unbounded (a `RUN` step can print
//! hundreds of megabytes without a newline), so output is bounded where it
//! is read: each program run may log at most [`OutputCaps::step_bytes`]
//! and the job's builder and programs together [`OutputCaps::job_bytes`];
//! past a cap, output is dropped before it reaches memory or the store,
//! with one marker line saying so. The host's own lines are always kept.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, SecondsFormat, SubsecRound as _, Utc};
use tokio::sync::watch;

use crate::job::{BuildSteps, JobId};

/// Where a job's log lines are also written, so they outlive this
/// process: the job store.
pub trait LogSink: Send + Sync {
    /// Appends one log line to job `id`, keeping at most about `cap` lines.
    /// Ordered with the sink's other writes; nobody waits for it.
    fn append_log(&self, id: &JobId, line: &LogLine, cap: usize);
}

/// Longest line kept; longer ones are cut with a marker, so one runaway
/// line cannot use the whole budget.
const MAX_LINE_BYTES: usize = 8 * 1024;

/// One line of a job's log and when the host took it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    /// `None` only for lines stored before the store kept times.
    pub at: Option<DateTime<Utc>>,
    pub text: String,
}

impl LogLine {
    /// `text`, taken now.
    pub fn new(text: impl Into<String>) -> Self {
        LogLine {
            at: Some(now()),
            text: text.into(),
        }
    }

    /// A line read back from a store, which keeps its time in microseconds
    /// since the Unix epoch.
    pub fn stored(text: String, at_micros: Option<i64>) -> Self {
        LogLine {
            at: at_micros.and_then(DateTime::from_timestamp_micros),
            text,
        }
    }

    pub fn at_micros(&self) -> Option<i64> {
        self.at.map(|at| at.timestamp_micros())
    }

    /// The line as `docker logs` prints it: with `timestamps`, its time
    /// (RFC 3339, UTC, microseconds) and a space before the text.
    pub fn render(&self, timestamps: bool) -> String {
        match (timestamps, self.at) {
            (true, Some(at)) => format!(
                "{} {}",
                at.to_rfc3339_opts(SecondsFormat::Micros, true),
                self.text
            ),
            _ => self.text.clone(),
        }
    }
}

/// Now, to the microsecond the stores keep, so a line reads back with the
/// time it had.
fn now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(6)
}

/// The log of one job. Keeps at most `cap` lines: when full, the oldest
/// line is dropped and the count of dropped lines is reported as the first
/// line of every snapshot, so readers know the log is incomplete. Every
/// line passes through the job's [`Redactor`] on the way in, so a secret
/// never reaches memory, storage or a reader.
pub struct JobLog {
    cap: usize,
    output_caps: OutputCaps,
    redactor: Redactor,
    inner: Mutex<Lines>,
    /// Where lines are also written, so they outlive this process.
    persist: Option<(JobId, Arc<dyn LogSink>)>,
    /// Publishes the number of lines ever pushed, for followers.
    pushed: watch::Sender<u64>,
}

impl std::fmt::Debug for JobLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JobLog")
            .field("cap", &self.cap)
            .finish_non_exhaustive()
    }
}

/// Replaces secret values by `***`.
#[derive(Debug, Clone, Default)]
pub struct Redactor {
    /// Longest first, so a secret containing another is hidden whole.
    secrets: Vec<String>,
}

impl Redactor {
    pub fn new(secrets: &[String]) -> Self {
        let mut secrets: Vec<String> = secrets.iter().filter(|s| !s.is_empty()).cloned().collect();
        secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        secrets.dedup();
        Redactor { secrets }
    }

    pub fn redact(&self, text: &str) -> String {
        self.secrets.iter().fold(text.to_string(), |text, secret| {
            text.replace(secret.as_str(), "***")
        })
    }
}

#[derive(Debug, Default)]
struct Lines {
    kept: VecDeque<LogLine>,
    dropped: u64,
    /// Bytes of output (not host lines) logged so far.
    output_bytes: usize,
    /// Set once output passed the job's cap.
    clipped: bool,
    steps: BuildSteps,
}

/// How much output a job may log, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutputCaps {
    /// Per program run (a build tool's whole run, both streams): what
    /// BuildKit allows one build step by default.
    pub step_bytes: usize,
    /// Per job, everything its builder and programs print: GitLab's job
    /// log limit.
    pub job_bytes: usize,
}

impl Default for OutputCaps {
    fn default() -> Self {
        OutputCaps {
            step_bytes: 2 * 1024 * 1024,
            job_bytes: 4 * 1024 * 1024,
        }
    }
}

impl Lines {
    /// Lines ever pushed (kept plus dropped).
    fn total(&self) -> u64 {
        self.dropped + self.kept.len() as u64
    }
}

impl JobLog {
    pub fn new(cap: usize) -> Self {
        Self::with_redactor(cap, Redactor::default())
    }

    pub fn with_redactor(cap: usize, redactor: Redactor) -> Self {
        JobLog {
            cap: cap.max(1),
            output_caps: OutputCaps::default(),
            redactor,
            inner: Mutex::new(Lines::default()),
            persist: None,
            pushed: watch::Sender::new(0),
        }
    }

    /// A log continuing the `earlier` lines (read back from the store).
    pub fn restored(cap: usize, redactor: Redactor, earlier: Vec<LogLine>) -> Self {
        let mut log = Self::with_redactor(cap, redactor);
        let lines = log.inner.get_mut().unwrap_or_else(|e| e.into_inner());
        let skip = earlier.len().saturating_sub(log.cap);
        lines.dropped = skip as u64;
        lines.kept.extend(earlier.into_iter().skip(skip));
        let total = lines.total();
        log.pushed.send_replace(total);
        log
    }

    /// A log that also writes every line to `store` under job `id`,
    /// starting from the `earlier` lines read back from it.
    pub fn persistent(
        cap: usize,
        redactor: Redactor,
        id: JobId,
        store: Arc<dyn LogSink>,
        earlier: Vec<LogLine>,
    ) -> Self {
        let mut log = Self::restored(cap, redactor, earlier);
        log.persist = Some((id, store));
        log
    }

    /// The same log, bounding output by `caps`.
    pub fn with_output_caps(mut self, caps: OutputCaps) -> Self {
        self.output_caps = caps;
        self
    }

    pub fn output_caps(&self) -> OutputCaps {
        self.output_caps
    }

    /// `text` with this job's secrets hidden, for messages that leave the
    /// job by another way than its log (its `error`).
    pub fn redact(&self, text: &str) -> String {
        self.redactor.redact(text)
    }

    /// Appends the host's own `text`, one entry per line it contains.
    pub fn push(&self, text: &str) {
        let mut lines = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        self.append(&mut lines, text);
    }

    /// Appends a line copied from another log, keeping its time.
    pub fn push_line(&self, line: LogLine) {
        let mut lines = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        self.keep(&mut lines, line);
        self.pushed.send_replace(lines.total());
    }

    /// Appends `text` a builder or a program printed, unless the job's
    /// output has passed [`OutputCaps::job_bytes`]; the first line past it
    /// is replaced by a marker, and later ones are dropped.
    pub fn push_output(&self, text: &str) {
        let mut lines = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if lines.clipped {
            return;
        }
        if lines.output_bytes + text.len() > self.output_caps.job_bytes {
            lines.clipped = true;
            let marker = format!(
                "[helix] log clipped: the job's output passed {} (log_cap_bytes); later output is not kept",
                human_bytes(self.output_caps.job_bytes)
            );
            self.append(&mut lines, &marker);
            return;
        }
        lines.output_bytes += text.len();
        self.append(&mut lines, text);
    }

    fn append(&self, lines: &mut Lines, text: &str) {
        let at = Some(now());
        let text = self.redactor.redact(text);
        for line in text.lines() {
            let text = truncate(line.trim_end_matches('\r'));
            self.keep(lines, LogLine { at, text });
        }
        self.pushed.send_replace(lines.total());
    }

    fn keep(&self, lines: &mut Lines, line: LogLine) {
        if lines.kept.len() == self.cap {
            lines.kept.pop_front();
            lines.dropped += 1;
        }
        if let Some((id, store)) = &self.persist {
            store.append_log(id, &line, self.cap);
        }
        lines.kept.push_back(line);
    }

    /// Lines pushed after the first `seen` ones, and the new count to pass
    /// next time. Lines dropped by the cap in between are reported as one
    /// marker line.
    pub fn since(&self, seen: u64) -> (Vec<LogLine>, u64) {
        let lines = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let total = lines.total();
        let mut out = Vec::new();
        if seen < lines.dropped {
            out.push(LogLine::new(format!(
                "[helix] {} log lines dropped (log cap {})",
                lines.dropped - seen,
                self.cap
            )));
        }
        let skip = seen.saturating_sub(lines.dropped) as usize;
        out.extend(lines.kept.iter().skip(skip).cloned());
        (out, total)
    }

    /// Counts a line a build tool printed on its standard output.
    pub fn count_step(&self, line: &str) {
        let mut lines = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        count_step(&mut lines.steps, line);
    }

    /// The build steps counted so far.
    pub fn steps(&self) -> BuildSteps {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).steps
    }

    /// Changes whenever a line is pushed.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.pushed.subscribe()
    }

    /// The kept lines, oldest first, preceded by a marker when some were
    /// dropped.
    pub fn lines(&self) -> Vec<LogLine> {
        let lines = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let marker = (lines.dropped > 0).then(|| {
            LogLine::new(format!(
                "[helix] {} earlier log lines dropped (log cap {})",
                lines.dropped, self.cap
            ))
        });
        marker
            .into_iter()
            .chain(lines.kept.iter().cloned())
            .collect()
    }

    /// The text of [`JobLog::lines`].
    pub fn snapshot(&self) -> Vec<String> {
        self.lines().into_iter().map(|line| line.text).collect()
    }
}

/// `bytes` for a person: `4 MiB`, `512 KiB`, `100 bytes`.
pub fn human_bytes(bytes: usize) -> String {
    match bytes {
        b if b >= 1024 * 1024 && b % (1024 * 1024) == 0 => format!("{} MiB", b / (1024 * 1024)),
        b if b >= 1024 && b % 1024 == 0 => format!("{} KiB", b / 1024),
        b => format!("{b} bytes"),
    }
}

/// Counts `line` of a build tool's output: podman and buildah print
/// `STEP n/m: …` as each step starts and `--> Using cache <id>` when
/// it came from the cache.
fn count_step(steps: &mut BuildSteps, line: &str) {
    let step = line
        .split_once("STEP ")
        .and_then(|(before, rest)| {
            let platform_prefix = before.is_empty() || before.ends_with("] ");
            platform_prefix.then_some(rest)
        })
        .and_then(|rest| rest.split_once(':'))
        .and_then(|(counter, _)| counter.split_once('/'))
        .is_some_and(|(n, m)| {
            n.bytes().all(|b| b.is_ascii_digit()) && m.bytes().all(|b| b.is_ascii_digit())
        });
    if step {
        steps.total += 1;
    } else if line.starts_with("--> Using cache ") {
        steps.cached += 1;
    }
}

fn truncate(line: &str) -> String {
    if line.len() <= MAX_LINE_BYTES {
        return line.to_string();
    }
    let mut end = MAX_LINE_BYTES;
    while !line.is_char_boundary(end) {
        end -= 1;
    }
    format!(
        "{} [helix] line cut at {MAX_LINE_BYTES} bytes",
        &line[..end]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_order_and_splits_lines() {
        let log = JobLog::new(10);
        log.push("one\ntwo\r\n");
        log.push("three");
        assert_eq!(log.snapshot(), ["one", "two", "three"]);
    }

    #[test]
    fn drops_oldest_over_cap_with_marker() {
        let log = JobLog::new(3);
        for i in 0..10 {
            log.push(&format!("line {i}"));
        }
        let lines = log.snapshot();
        assert_eq!(lines.len(), 4);
        assert!(
            lines[0].contains("7 earlier log lines dropped"),
            "{}",
            lines[0]
        );
        assert_eq!(&lines[1..], ["line 7", "line 8", "line 9"]);
    }

    fn texts(lines: Vec<LogLine>) -> Vec<String> {
        lines.into_iter().map(|line| line.text).collect()
    }

    #[test]
    fn followers_get_the_lines_they_have_not_seen() {
        let log = JobLog::new(3);
        log.push("a\nb");
        let (lines, seen) = log.since(0);
        assert_eq!(
            (texts(lines), seen),
            (vec!["a".to_string(), "b".to_string()], 2)
        );
        log.push("c\nd\ne");
        let (lines, seen) = log.since(seen);
        assert_eq!(
            texts(lines),
            ["c", "d", "e"],
            "a and b were seen before the cap dropped them"
        );
        let (late, _) = log.since(1);
        assert_eq!(
            texts(late),
            ["[helix] 1 log lines dropped (log cap 3)", "c", "d", "e"]
        );
        assert_eq!(log.since(seen), (vec![], 5));
        assert_eq!(*log.subscribe().borrow(), 5);
    }

    #[test]
    fn each_line_keeps_the_time_it_was_taken_and_copies_keep_it_too() {
        let before = now();
        let log = JobLog::new(10);
        log.push("first");
        std::thread::sleep(std::time::Duration::from_millis(5));
        log.push("second");
        let lines = log.lines();
        let (first, second) = (lines[0].at.unwrap(), lines[1].at.unwrap());
        assert!(before <= first && first < second && second <= Utc::now());

        let copy = JobLog::new(10);
        for line in lines.clone() {
            copy.push_line(line);
        }
        assert_eq!(copy.lines(), lines);

        let rendered = lines[0].render(true);
        let (time, text) = rendered.split_once(' ').unwrap();
        assert_eq!(text, "first");
        assert_eq!(DateTime::parse_from_rfc3339(time).unwrap(), first);
        assert!(time.ends_with('Z') && time.len() == "2026-11-30T03:44:46.123456Z".len());
        assert_eq!(lines[0].render(false), "first");
        let untimed = LogLine::stored("old".into(), None);
        assert_eq!(untimed.render(true), "old");
        assert_eq!(
            LogLine::stored("x".into(), lines[0].at_micros()).at,
            Some(first)
        );
    }

    #[test]
    fn secrets_never_reach_the_log() {
        let redactor = Redactor::new(&["hunter22".into(), "hunter2".into(), String::new()]);
        let log = JobLog::with_redactor(10, redactor);
        log.push("login with hunter22 and hunter2, twice: hunter22");
        assert_eq!(log.snapshot(), ["login with *** and ***, twice: ***"]);
        assert_eq!(log.redact("e: hunter2"), "e: ***");
    }

    #[test]
    fn output_past_the_job_cap_is_dropped_with_one_marker_and_host_lines_kept() {
        let log = JobLog::new(1000).with_output_caps(OutputCaps {
            step_bytes: 100,
            job_bytes: 20,
        });
        log.push_output("0123456789");
        log.push_output("0123456789");
        log.push_output("past the cap");
        log.push_output("and more");
        log.push("[helix] job failed: RUN false");
        assert_eq!(
            log.snapshot(),
            [
                "0123456789",
                "0123456789",
                "[helix] log clipped: the job's output passed 20 bytes (log_cap_bytes); later output is not kept",
                "[helix] job failed: RUN false",
            ]
        );
    }

    #[test]
    fn build_steps_and_cache_hits_are_counted_from_the_tools_output() {
        let log = JobLog::new(10);
        for line in [
            "[linux/amd64] STEP 1/3: FROM scratch",
            "STEP 2/3: COPY busybox /bin/busybox",
            "--> Using cache 41df357d299e0329c20d666c7cd05e13631b97b73a18ab541a0714957f1e1aba",
            "STEP 3/3: RUN [\"/bin/busybox\", \"true\"]",
            "echo STEP 9/9: is not a step",
            "COMMIT localhost/helix-image",
        ] {
            log.count_step(line);
        }
        assert_eq!(
            log.steps(),
            BuildSteps {
                total: 3,
                cached: 1
            }
        );
    }

    #[test]
    fn cuts_long_lines_on_a_char_boundary() {
        let log = JobLog::new(2);
        log.push(&"é".repeat(MAX_LINE_BYTES));
        let line = &log.snapshot()[0];
        assert!(line.ends_with("line cut at 8192 bytes"));
        assert!(line.len() < MAX_LINE_BYTES + 64);
    }
}
