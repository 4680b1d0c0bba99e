//! A plugin's own stdout and stderr: copied into the job log line by line as
//! they are written, with the last lines of stderr kept to explain a crash
//! (a Rust guest prints its panic message there just before it traps).

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use tokio::io::AsyncWrite;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamError};

use helix_core::log::JobLog;

/// Lines of stderr kept for a crash report.
const TAIL_LINES: usize = 20;
/// A partial line longer than this is logged without waiting for its end.
const MAX_PARTIAL: usize = 8 * 1024;
/// What one write may hand over; the guest splits larger writes.
const WRITE_BUDGET: usize = 64 * 1024;

/// One of a plugin's output streams. Clones write to the same log.
#[derive(Clone)]
pub(crate) struct PluginOutput {
    stream: &'static str,
    log: Arc<JobLog>,
    state: Arc<Mutex<OutputState>>,
}

#[derive(Default)]
struct OutputState {
    partial: Vec<u8>,
    tail: VecDeque<String>,
}

impl PluginOutput {
    pub(crate) fn new(stream: &'static str, log: Arc<JobLog>) -> Self {
        PluginOutput {
            stream,
            log,
            state: Arc::default(),
        }
    }

    fn write_bytes(&self, bytes: &[u8]) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.partial.extend_from_slice(bytes);
        while let Some(end) = state.partial.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = state.partial.drain(..=end).collect();
            self.emit(&mut state, &line[..end]);
        }
        if state.partial.len() > MAX_PARTIAL {
            let line = std::mem::take(&mut state.partial);
            self.emit(&mut state, &line);
        }
    }

    fn emit(&self, state: &mut OutputState, line: &[u8]) {
        let line = String::from_utf8_lossy(line)
            .trim_end_matches('\r')
            .to_string();
        self.log
            .push_output(&format!("[plugin {}] {line}", self.stream));
        if state.tail.len() == TAIL_LINES {
            state.tail.pop_front();
        }
        state.tail.push_back(line);
    }

    /// Logs a final unterminated line, if any, and returns the last lines
    /// written.
    pub(crate) fn finish(&self) -> Vec<String> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if !state.partial.is_empty() {
            let line = std::mem::take(&mut state.partial);
            self.emit(&mut state, &line);
        }
        state.tail.iter().cloned().collect()
    }
}

impl IsTerminal for PluginOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for PluginOutput {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

#[wasmtime_wasi::async_trait]
impl OutputStream for PluginOutput {
    fn write(&mut self, bytes: Bytes) -> Result<(), StreamError> {
        self.write_bytes(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> Result<(), StreamError> {
        Ok(())
    }

    fn check_write(&mut self) -> Result<usize, StreamError> {
        Ok(WRITE_BUDGET)
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for PluginOutput {
    async fn ready(&mut self) {}
}

impl AsyncWrite for PluginOutput {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.write_bytes(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_writes_into_prefixed_lines_and_keeps_a_tail() {
        let log = Arc::new(JobLog::new(100));
        let out = PluginOutput::new("stderr", log.clone());
        out.write_bytes(b"thread panicked at src/lib.rs:1:1:\nboo");
        out.write_bytes(b"m\nlast");
        assert_eq!(
            log.snapshot(),
            [
                "[plugin stderr] thread panicked at src/lib.rs:1:1:",
                "[plugin stderr] boom"
            ]
        );
        assert_eq!(
            out.finish(),
            ["thread panicked at src/lib.rs:1:1:", "boom", "last"]
        );
        assert_eq!(log.snapshot().len(), 3);
    }
}
