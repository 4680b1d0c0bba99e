//! Helpers shared by the benches.

#![allow(dead_code)] // each bench uses a different subset

use std::time::Duration;

/// The median of `samples` (sorts them).
pub fn median(samples: &mut [Duration]) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

/// Runs `body` on a multi-threaded tokio runtime, as the server does.
pub fn block_on<F: std::future::Future>(body: F) -> F::Output {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime")
        .block_on(body)
}
