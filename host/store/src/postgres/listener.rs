//! The listener: relays the database's notifications (jobs queued, cancel
//! requests, changed jobs) to the store's subscribers.

use std::time::Duration;

use tokio::sync::{broadcast, mpsc};

use super::conn::connect;
use super::{CANCEL_CHANNEL, CHANGED_CHANNEL, PostgresStore, QUEUED_CHANNEL};
use crate::queue::Notice;
use crate::{StoreError, db_error};

/// How long to wait before reconnecting the listener after it lost the
/// database.
const RECONNECT_DELAY: Duration = Duration::from_millis(500);

/// Relays the database's notifications to `notices` until the store is
/// gone, reconnecting after the database went away. After a reconnect it
/// announces `Queued`, since notifications sent meanwhile were lost.
pub(super) async fn listen_loop(url: String, store: std::sync::Weak<PostgresStore>) {
    loop {
        let Some(notices) = store.upgrade().map(|s| s.notices.clone()) else {
            return;
        };
        if let Err(e) = listen_once(&url, &notices, &store).await {
            tracing::warn!("PostgreSQL notifications interrupted: {e}");
        }
        tokio::time::sleep(RECONNECT_DELAY).await;
        let _ = notices.send(Notice::Queued);
    }
}

/// Listens on one connection until it breaks or the store is gone.
async fn listen_once(
    url: &str,
    notices: &broadcast::Sender<Notice>,
    store: &std::sync::Weak<PostgresStore>,
) -> Result<(), StoreError> {
    use futures_util::StreamExt as _;
    let (client, mut connection) = connect(url).await?;
    let (relay, mut received) = mpsc::unbounded_channel();
    // The connection has to be polled for anything to happen on it,
    // including the LISTEN below.
    let driver = tokio::spawn(async move {
        let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(message) = messages.next().await {
            match message {
                Ok(tokio_postgres::AsyncMessage::Notification(n)) => {
                    let notice = match n.channel() {
                        // `id` and the reason, a line apart (ask_cancel).
                        CANCEL_CHANNEL => {
                            let (id, reason) = n
                                .payload()
                                .split_once('\n')
                                .unwrap_or((n.payload(), "cancelled by request"));
                            Notice::Cancel {
                                id: id.to_string(),
                                reason: reason.to_string(),
                            }
                        }
                        CHANGED_CHANNEL => {
                            for id in n.payload().split(' ') {
                                if relay.send(Notice::Changed(id.to_string())).is_err() {
                                    return;
                                }
                            }
                            continue;
                        }
                        _ => Notice::Queued,
                    };
                    if relay.send(notice).is_err() {
                        return;
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!("PostgreSQL notification connection: {e}");
                    return;
                }
            }
        }
    });
    client
        .batch_execute(&format!(
            "LISTEN {QUEUED_CHANNEL}; LISTEN {CANCEL_CHANNEL}; LISTEN {CHANGED_CHANNEL}"
        ))
        .await
        .map_err(db_error)?;
    while let Some(notice) = received.recv().await {
        if store.strong_count() == 0 {
            driver.abort();
            return Ok(());
        }
        let _ = notices.send(notice);
    }
    Err(db_error("the notification connection closed"))
}
