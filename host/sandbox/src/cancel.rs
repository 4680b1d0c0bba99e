//! Cancelling a running job, and saying why.

use std::sync::{Arc, OnceLock};

use tokio_util::sync::CancellationToken;

/// A job's cancellation signal. Clones share one signal; the first reason
/// given wins, so a user's cancel racing a shutdown reports one cause.
#[derive(Debug, Clone, Default)]
pub struct CancelSignal {
    token: CancellationToken,
    reason: Arc<OnceLock<String>>,
}

impl CancelSignal {
    pub fn new() -> Self {
        Self::default()
    }

    /// Signals cancellation; later calls keep the first reason.
    pub fn cancel(&self, reason: impl Into<String>) {
        let _ = self.reason.set(reason.into());
        self.token.cancel();
    }

    pub fn is_cancelled(&self) -> bool {
        self.token.is_cancelled()
    }

    /// Resolves once cancelled, with the reason.
    pub async fn cancelled(&self) -> String {
        self.token.cancelled().await;
        self.reason()
    }

    /// Why the job was cancelled (empty before it is).
    pub fn reason(&self) -> String {
        self.reason.get().cloned().unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn first_reason_wins_and_clones_share_the_signal() {
        let signal = CancelSignal::new();
        let clone = signal.clone();
        assert!(!clone.is_cancelled());
        signal.cancel("user asked");
        clone.cancel("shutdown");
        assert!(clone.is_cancelled());
        assert_eq!(clone.cancelled().await, "user asked");
    }
}
