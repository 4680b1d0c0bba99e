//! End-to-end tests of the real `helix-build` binary, one test binary:
//! the server over HTTP and HTTPS, the CLI, `kill -9`, backups, the
//! systemd unit (`serve`), and the dashboard in headless Chromium
//! (`dashboard`).

mod common;

mod dashboard;
mod quickstart;
mod reload;
mod serve;
