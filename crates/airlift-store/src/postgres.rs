//! The PostgreSQL backend, for fleets and several server instances.
//!
//! Its change feed is `LISTEN`/`NOTIFY` on a channel named after the schema
//! (`airlift_changes.<schema>`): each change is announced with
//! `pg_notify` inside the transaction that makes it, so it goes out exactly
//! when that commits, to every instance listening (this one too). A task
//! holds a listening connection of its own; when it drops, or stays silent
//! past [`SILENCE_LIMIT`] although every instance sends a heartbeat each
//! [`HEARTBEAT`], the feed says [`StoreEvent::Interrupted`], connects and
//! listens again, and then says [`StoreEvent::Listening`].

use crate::feed::Hub;
use crate::sql::impl_store;
use crate::SharedStore;
use sqlx::postgres::{PgConnectOptions, PgListener, PgPoolOptions};
use sqlx::PgPool;
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinHandle;

/// How long a request waits for a free connection.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(10);
/// How often each instance sends an empty notification on the channel.
const HEARTBEAT: Duration = Duration::from_secs(5);
/// Silence on the listening connection after which it is taken for dead.
const SILENCE_LIMIT: Duration = Duration::from_secs(15);
/// Longest wait between attempts to listen again.
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// PostgreSQL's limit on identifiers, channel names included (bytes).
const MAX_CHANNEL: usize = 63;
/// A pooled connection idle this long is pinged before a statement uses it;
/// one idle for less is not (see [`ping_if_idle`]).
const TRUSTED_IDLE: Duration = Duration::from_secs(1);

/// The store on a PostgreSQL database.
#[derive(Debug)]
pub(crate) struct PgStore {
    pool: PgPool,
    hub: Arc<Hub>,
    channel: String,
    _tasks: Tasks,
}

/// The listener and heartbeat tasks, stopped with the store.
#[derive(Debug)]
struct Tasks(Vec<JoinHandle<()>>);

impl Drop for Tasks {
    fn drop(&mut self) {
        for task in &self.0 {
            task.abort();
        }
    }
}

/// Connects to and migrates the database `options` point to, and starts
/// listening for changes.
pub(crate) async fn open(
    options: PgConnectOptions,
    open: crate::OpenOptions,
) -> crate::StoreResult<SharedStore> {
    // Migrations run without the statement timeout: on a large database
    // one may rightly take longer than any request should.
    let migrator = PgPoolOptions::new()
        .max_connections(1)
        .acquire_timeout(ACQUIRE_TIMEOUT)
        .connect_with(options.clone())
        .await
        .map_err(|e| crate::StoreError::Setup(format!("connecting to PostgreSQL: {e}")))?;
    sqlx::migrate!("./migrations/postgres")
        .run(&migrator)
        .await
        .map_err(|e| crate::StoreError::Setup(format!("migrating PostgreSQL database: {e}")))?;
    migrator.close().await;
    // Every statement of a request is bounded, so one that runs away (a
    // client's filter, a missing index) gives its connection back instead
    // of holding it while the pool runs dry.
    let timeout_ms = open.statement_timeout.as_millis().max(1).to_string();
    let pool = PgPoolOptions::new()
        .max_connections(open.max_connections.max(1))
        .acquire_timeout(ACQUIRE_TIMEOUT)
        .test_before_acquire(false)
        .before_acquire(ping_if_idle)
        .connect_with(
            options
                .clone()
                .options([("statement_timeout", timeout_ms.as_str())]),
        )
        .await
        .map_err(|e| crate::StoreError::Setup(format!("connecting to PostgreSQL: {e}")))?;
    let schema: String = sqlx::query_scalar("SELECT COALESCE(current_schema(), 'public')")
        .fetch_one(&pool)
        .await
        .map_err(|e| crate::StoreError::Setup(format!("reading the current schema: {e}")))?;
    let channel = channel_name(&schema);
    let listener = listen(&options, &channel).await.map_err(|e| {
        crate::StoreError::Setup(format!("listening on PostgreSQL channel {channel}: {e}"))
    })?;
    let hub = Hub::new(true);
    let tasks = Tasks(vec![
        tokio::spawn(follow(listener, options, channel.clone(), Arc::clone(&hub))),
        tokio::spawn(heartbeat(pool.clone(), channel.clone())),
    ]);
    Ok(Arc::new(PgStore {
        pool,
        hub,
        channel,
        _tasks: tasks,
    }))
}

/// Whether a pooled connection may be used, pinging it only when it was
/// idle for [`TRUSTED_IDLE`] or longer.
///
/// sqlx pings a connection when it goes back to the pool, and by default
/// again when it is taken out: two round trips around every statement, a
/// third of an instance's CPU and more of PostgreSQL's under load
/// (BENCHMARKS.md, session 15). The ping on release already proved a
/// connection alive; the one on acquire only matters for a connection that
/// died while it sat idle (a failover, a restart, a firewall's idle cut),
/// and those sat idle for longer than a second. Under load connections are
/// idle for microseconds and are used at once, as HikariCP does within its
/// bypass window. A dead one found by the ping is closed and another
/// taken, as before.
fn ping_if_idle(
    connection: &mut sqlx::PgConnection,
    metadata: sqlx::pool::PoolConnectionMetadata,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<bool, sqlx::Error>> + Send + '_>> {
    Box::pin(async move {
        if metadata.idle_for < TRUSTED_IDLE {
            return Ok(true);
        }
        sqlx::Connection::ping(connection).await.map(|()| true)
    })
}

/// `airlift_changes.<schema>`, cut to PostgreSQL's identifier length.
fn channel_name(schema: &str) -> String {
    let mut channel = format!("airlift_changes.{schema}");
    let mut end = channel.len().min(MAX_CHANNEL);
    while !channel.is_char_boundary(end) {
        end -= 1;
    }
    channel.truncate(end);
    channel
}

/// A listening connection of its own (not one of the pool's).
async fn listen(options: &PgConnectOptions, channel: &str) -> Result<PgListener, sqlx::Error> {
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .max_lifetime(None)
        .idle_timeout(None)
        .acquire_timeout(ACQUIRE_TIMEOUT)
        .connect_with(options.clone())
        .await?;
    let mut listener = PgListener::connect_with(&pool).await?;
    // A lost connection is ours to notice (and announce), not re-made quietly.
    listener.eager_reconnect(false);
    listener.listen(channel).await?;
    Ok(listener)
}

/// Passes notifications on to the hub for the life of the store; on a lost
/// or silent connection, says so and listens again.
async fn follow(
    mut listener: PgListener,
    options: PgConnectOptions,
    channel: String,
    hub: Arc<Hub>,
) {
    loop {
        loop {
            match tokio::time::timeout(SILENCE_LIMIT, listener.try_recv()).await {
                Ok(Ok(Some(notification))) => {
                    let heard = crate::StoreEvent::from_payload(notification.payload());
                    if let Some((event, origin)) = heard {
                        hub.publish(event, origin == hub.origin);
                    }
                }
                Ok(Ok(None)) => {
                    tracing::warn!(%channel, "change feed: lost the listening connection");
                    break;
                }
                Ok(Err(error)) => {
                    tracing::warn!(%channel, %error, "change feed: listening failed");
                    break;
                }
                Err(_) => {
                    tracing::warn!(
                        %channel,
                        silence_secs = SILENCE_LIMIT.as_secs(),
                        "change feed: no heartbeat; taking the listening connection for dead"
                    );
                    break;
                }
            }
        }
        hub.set_live(false);
        drop(listener);
        let mut backoff = Duration::from_millis(100);
        listener = loop {
            match listen(&options, &channel).await {
                Ok(listener) => break listener,
                Err(error) => {
                    tracing::warn!(%channel, %error, "change feed: cannot listen yet");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        };
        tracing::info!(%channel, "change feed: listening again");
        hub.set_live(true);
    }
}

/// Proves to every listener of the channel, this one included, that its
/// connection still delivers.
async fn heartbeat(pool: PgPool, channel: String) {
    let mut tick = tokio::time::interval(HEARTBEAT);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if let Err(error) = sqlx::query("SELECT pg_notify($1, '')")
            .bind(channel.as_str())
            .execute(&pool)
            .await
        {
            tracing::debug!(%channel, %error, "change feed heartbeat not sent");
        }
    }
}

impl PgStore {
    /// Queues the notification in the transaction: PostgreSQL sends it when
    /// (and only if) the transaction commits.
    async fn stage(
        &self,
        conn: &mut sqlx::PgConnection,
        event: &StoreEvent,
    ) -> Result<(), sqlx::Error> {
        if let Some(payload) = event.payload(&self.hub.origin) {
            sqlx::query("SELECT pg_notify($1, $2)")
                .bind(self.channel.as_str())
                .bind(payload)
                .execute(conn)
                .await?;
        }
        Ok(())
    }

    /// Nothing to do: the listener hears this instance's changes too.
    fn committed(&self, _event: StoreEvent) {}
}

impl_store!(PgStore, sqlx::Postgres, "BEGIN");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_names_fit_an_identifier() {
        assert_eq!(channel_name("public"), "airlift_changes.public");
        let long = channel_name(&"é".repeat(40));
        assert!(long.len() <= MAX_CHANNEL);
        assert!(long.starts_with("airlift_changes.é"));
    }
}
