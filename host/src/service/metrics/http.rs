//! HTTP requests this server answered, by method, route template (axum's
//! matched route, never the raw path, so the labels stay bounded) and
//! status: counted by the API's one middleware layer.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::Duration;

use super::{Histogram, label_set, write_histogram};

/// Upper bounds of the request-latency buckets, in seconds.
const LATENCY_BUCKETS: [f64; 12] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// The route label of a request that matched no route: every such path
/// counts as one.
pub const UNMATCHED: &str = "unmatched";

/// Requests answered so far; shared by every clone of the service.
#[derive(Debug, Default)]
pub struct HttpCounts {
    seen: Mutex<Requests>,
}

/// A snapshot of [`HttpCounts`].
#[derive(Debug, Clone, Default)]
pub struct Requests {
    /// By method, route and status code.
    total: BTreeMap<(String, String, u16), u64>,
    /// Time to the response's head, by method, route and status class.
    latency: BTreeMap<(String, String, &'static str), Histogram>,
}

impl HttpCounts {
    /// Counts one answered request; `route` is its matched template or
    /// [`UNMATCHED`].
    pub fn observe(&self, method: &str, route: &str, status: u16, took: Duration) {
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        let key = (method.to_string(), route.to_string());
        *seen
            .total
            .entry((key.0.clone(), key.1.clone(), status))
            .or_default() += 1;
        seen.latency
            .entry((key.0, key.1, class(status)))
            .or_insert_with(|| Histogram::new(&LATENCY_BUCKETS))
            .record(took.as_secs_f64());
    }

    pub fn snapshot(&self) -> Requests {
        self.seen.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl Requests {
    pub fn write(&self, text: &mut String) -> std::fmt::Result {
        writeln!(
            text,
            "# HELP helix_http_requests_total HTTP requests answered, by method, route template and status code."
        )?;
        writeln!(text, "# TYPE helix_http_requests_total counter")?;
        for ((method, route, code), count) in &self.total {
            let code = code.to_string();
            let labels = label_set(&[("method", method), ("route", route), ("code", &code)]);
            writeln!(text, "helix_http_requests_total{{{labels}}} {count}")?;
        }
        let name = "helix_http_request_duration_seconds";
        writeln!(
            text,
            "# HELP {name} Time from a request to its response's head (a stream's body not included), by method, route template and status class."
        )?;
        writeln!(text, "# TYPE {name} histogram")?;
        for ((method, route, status), histogram) in &self.latency {
            let labels = [
                ("method", method.as_str()),
                ("route", route),
                ("status", status),
            ];
            write_histogram(text, name, &labels, histogram)?;
        }
        Ok(())
    }
}

/// `2xx`, `4xx`…: a status code's class.
fn class(status: u16) -> &'static str {
    match status / 100 {
        1 => "1xx",
        2 => "2xx",
        3 => "3xx",
        4 => "4xx",
        _ => "5xx",
    }
}
