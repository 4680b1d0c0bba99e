//! End-to-end tests of the real `helix-build` binary, one test binary:
//! the server over HTTP and HTTPS, the CLI, `kill -9`, backups, the
//! systemd unit (`serve`), the dashboard in headless Chromium
//! (`dashboard`), `/metrics` (`metrics`), and the OpenAPI document
//! fuzzed by schemathesis (`openapi`).

mod common;

mod dashboard;
mod metrics;
mod openapi;
mod quickstart;
mod reload;
mod serve;
