//! One overview per instance, shared by every viewer, and kept current in
//! the background while someone looks.
//!
//! Reading the overview costs tens of milliseconds of database time at
//! 100 000 devices (devices per status, ~300 000 installed versions, open
//! deployments' counts …), so no viewer should wait for it after a change
//! and no two viewers should pay for it twice. [`Snapshots`] keeps the
//! latest reading; while it is *watched* (served in the last [`WATCH`]), a
//! refresher task reads it again as soon as the store's change feed
//! announces a change (at most once per [`SNAPSHOT_SPACING`]) or it grows
//! [`SNAPSHOT_TTL`] old, so the page a change's live event brings finds it
//! ready. A viewer is served a snapshot nothing has changed since (by the
//! feed) that is younger than the TTL; failing that — nobody looked for a
//! while, the feed is deaf, or a refresh failed — it reads one itself, and
//! viewers asking meanwhile share that one. Each instance hears every
//! instance's changes on its own feed, so each keeps its own snapshot true.

use super::{read, Overview, PastInstalls};
use crate::error::ApiError;
use crate::state::AppState;
use airlift_store::{SharedStore, StoreEvent};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};
use tokio::sync::Notify;

/// How long a snapshot serves viewers when nothing changed meanwhile (the
/// offline count and the charts move with time alone).
const SNAPSHOT_TTL: Duration = Duration::from_secs(5);
/// Least time between two readings under a stream of changes.
const SNAPSHOT_SPACING: Duration = Duration::from_millis(250);
/// How long after the last viewer the refresher keeps the snapshot current
/// (an open overview asks again at every change, so stays watched).
const WATCH: Duration = Duration::from_secs(60);

/// The latest overview of one store, shared by every viewer of this
/// instance.
pub(super) struct Snapshots {
    store: Weak<dyn airlift_store::Store>,
    /// Moves at every change the feed announces.
    changes: AtomicU64,
    /// Whether the feed hears changes (while deaf, no snapshot is reused).
    listening: AtomicBool,
    latest: tokio::sync::Mutex<Option<Snapshot>>,
    past_installs: PastInstalls,
    /// When a viewer last asked (milliseconds since `born`).
    last_asked: AtomicU64,
    born: Instant,
    /// Whether a refresher task runs.
    refreshing: AtomicBool,
    /// Wakes the refresher: a change was announced.
    changed: Notify,
}

struct Snapshot {
    began: Instant,
    changes: u64,
    overview: Arc<Overview>,
}

impl Snapshots {
    /// This store's snapshots, following its change feed from the first call.
    pub(super) fn of(store: SharedStore) -> Arc<Snapshots> {
        static ALL: OnceLock<Mutex<Vec<Arc<Snapshots>>>> = OnceLock::new();
        let mut all = ALL
            .get_or_init(Default::default)
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        all.retain(|s| s.store.strong_count() > 0);
        if let Some(found) = all
            .iter()
            .find(|s| s.store.upgrade().is_some_and(|s| Arc::ptr_eq(&s, &store)))
        {
            return found.clone();
        }
        let snapshots = Arc::new(Snapshots {
            store: Arc::downgrade(&store),
            changes: AtomicU64::new(0),
            listening: AtomicBool::new(false),
            latest: tokio::sync::Mutex::new(None),
            past_installs: Mutex::new(None),
            last_asked: AtomicU64::new(0),
            born: Instant::now(),
            refreshing: AtomicBool::new(false),
            changed: Notify::new(),
        });
        let mut feed = store.changes();
        let following = Arc::downgrade(&snapshots);
        tokio::spawn(async move {
            while let Some(event) = feed.recv().await {
                let Some(snapshots) = following.upgrade() else {
                    return;
                };
                match event {
                    StoreEvent::Listening => snapshots.listening.store(true, Ordering::SeqCst),
                    StoreEvent::Interrupted => snapshots.listening.store(false, Ordering::SeqCst),
                    // The overview shows nothing of shadows.
                    StoreEvent::ShadowChanged(_) | StoreEvent::GroupShadowsChanged => continue,
                    _ => {}
                }
                snapshots.changes.fetch_add(1, Ordering::SeqCst);
                snapshots.changed.notify_one();
            }
        });
        all.push(snapshots.clone());
        snapshots
    }

    fn since_born(&self) -> u64 {
        u64::try_from(self.born.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Whether a viewer asked within [`WATCH`].
    fn watched(&self) -> bool {
        let asked = Duration::from_millis(self.last_asked.load(Ordering::SeqCst));
        self.born.elapsed().saturating_sub(asked) < WATCH
    }

    /// Whether `snapshot` may serve a viewer: nothing the feed announced
    /// since its reading began, and younger than the TTL.
    fn current(&self, snapshot: &Snapshot) -> bool {
        self.listening.load(Ordering::SeqCst)
            && snapshot.changes == self.changes.load(Ordering::SeqCst)
            && snapshot.began.elapsed() < SNAPSHOT_TTL
    }

    /// The overview for a viewer asking now: a current snapshot, or a
    /// reading that began after it asked.
    pub(super) async fn get(self: &Arc<Self>, state: &AppState) -> Result<Arc<Overview>, ApiError> {
        let asked = Instant::now();
        self.last_asked.store(self.since_born(), Ordering::SeqCst);
        self.start_refresher(state);
        let mut latest = self.latest.lock().await;
        if let Some(snapshot) = latest.as_ref() {
            if snapshot.began >= asked || self.current(snapshot) {
                return Ok(snapshot.overview.clone());
            }
        }
        Ok(self.read_into(&mut latest, state).await?.clone())
    }

    /// Reads the overview into `latest` (no sooner than the spacing after
    /// the previous reading began).
    async fn read_into<'a>(
        &self,
        latest: &'a mut Option<Snapshot>,
        state: &AppState,
    ) -> Result<&'a Arc<Overview>, ApiError> {
        if let Some(previous) = latest.as_ref() {
            tokio::time::sleep_until((previous.began + SNAPSHOT_SPACING).into()).await;
        }
        let changes = self.changes.load(Ordering::SeqCst);
        let began = Instant::now();
        let overview = Arc::new(read(state, &self.past_installs).await?);
        let snapshot = latest.insert(Snapshot {
            began,
            changes,
            overview,
        });
        Ok(&snapshot.overview)
    }

    /// Starts the refresher unless it runs. It holds the server's state
    /// (and so its store) only while the overview is watched, then ends.
    fn start_refresher(self: &Arc<Self>, state: &AppState) {
        if self.refreshing.swap(true, Ordering::SeqCst) {
            return;
        }
        let snapshots = Arc::downgrade(self);
        let state = state.clone();
        tokio::spawn(async move {
            loop {
                let Some(this) = snapshots.upgrade() else {
                    return;
                };
                if !this.watched() {
                    this.refreshing.store(false, Ordering::SeqCst);
                    // A viewer who asked just now started no refresher
                    // (this one still ran): go on for it.
                    if this.watched() && !this.refreshing.swap(true, Ordering::SeqCst) {
                        continue;
                    }
                    return;
                }
                let wait = {
                    let latest = this.latest.lock().await;
                    match latest.as_ref() {
                        Some(s) if this.current(s) => {
                            Some(SNAPSHOT_TTL.saturating_sub(s.began.elapsed()))
                        }
                        _ => None,
                    }
                };
                if let Some(wait) = wait {
                    // Woken by a change, by age, or to look at the watch.
                    let _ = tokio::time::timeout(wait.min(WATCH), this.changed.notified()).await;
                    continue;
                }
                let mut latest = this.latest.lock().await;
                if latest.as_ref().is_some_and(|s| this.current(s)) {
                    continue;
                }
                if let Err(error) = this.read_into(&mut latest, &state).await {
                    tracing::debug!(error = %error, "refreshing the dashboard overview failed");
                    drop(latest);
                    // Try again at the next change, or a TTL later.
                    let _ = tokio::time::timeout(SNAPSHOT_TTL, this.changed.notified()).await;
                }
            }
        });
    }
}
