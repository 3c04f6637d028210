//! The replica's one PostgreSQL `LISTEN` connection, shared by every consumer of notifications
//! (the tier cache, the grant cache, the Add-On bridge).
//!
//! A consumer subscribes to its channels and receives, in order, [`Event`]s:
//! - [`Event::Resynced`] once every channel of the subscription is listened on (first connect,
//!   every reconnect): notifications sent before may have been missed, so a cache starts empty
//!   here ([`NotifiedMap::reset`]`(true)`) and pending work is re-checked;
//! - [`Event::Notification`] for each notification on one of its channels, and only those;
//! - [`Event::Lost`] when the connection drops, or when this subscriber fell behind and a
//!   notification for it had to be dropped: a cache is bypassed from here
//!   ([`NotifiedMap::reset`]`(false)`) until the next `Resynced`, which follows as soon as the
//!   connection is back (at once after a drop for lag).
//!
//! A subscriber never blocks the hub or the others: each has its own bounded queue, and a full
//! queue turns into `Lost` + `Resynced` for that subscriber alone, never a silently skipped
//! notification. Reconnects follow one policy: after [`RECONNECT_FIRST`], doubling up to
//! [`RECONNECT_MAX`], started over after every successful connect.
//!
//! [`NotifiedMap::reset`]: crate::notified::NotifiedMap::reset

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use sqlx::PgPool;
use sqlx::postgres::PgListener;
use tokio::sync::{Notify, mpsc, watch};

use crate::tasks::{Backoff, Shutdown, Supervisor};

pub const RECONNECT_FIRST: Duration = Duration::from_millis(250);
pub const RECONNECT_MAX: Duration = Duration::from_secs(2);
/// Notifications queued per subscriber before it counts as lagging.
const QUEUE: usize = 1024;

/// What a subscriber receives; see the module documentation for the order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Resynced,
    Lost,
    Notification(Notice),
}

/// One notification: its channel and its payload (an id, by convention).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    pub channel: String,
    pub payload: String,
}

/// The notification hub. Cheap to clone; every clone is the same hub.
#[derive(Clone)]
pub struct Hub {
    inner: Arc<Inner>,
}

struct Inner {
    /// Subscribers by channel; a channel once subscribed stays listened on.
    subscribers: Mutex<HashMap<String, Vec<Arc<Subscriber>>>>,
    /// A channel was added: the connection loop listens on it.
    added: Notify,
    link: watch::Sender<Link>,
}

struct Subscriber {
    tx: mpsc::Sender<Notice>,
    lagged: Arc<AtomicBool>,
}

/// The connection as subscribers see it.
#[derive(Debug, Clone, Default)]
struct Link {
    /// Bumped by every connect.
    generation: u64,
    up: bool,
    /// Channels listened on in this generation.
    channels: Arc<HashSet<String>>,
}

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hub")
            .field("up", &self.inner.link.borrow().up)
            .finish_non_exhaustive()
    }
}

impl Hub {
    /// A hub on `db`, its connection loop run by `supervisor` until shutdown.
    pub fn start(db: &PgPool, supervisor: &Supervisor) -> Self {
        let hub = Self {
            inner: Arc::new(Inner {
                subscribers: Mutex::new(HashMap::new()),
                added: Notify::new(),
                link: watch::channel(Link::default()).0,
            }),
        };
        let (running, db) = (hub.clone(), db.clone());
        supervisor.spawn("notification hub", move |shutdown| {
            running.clone().run(db.clone(), shutdown)
        });
        hub
    }

    /// Receives the notifications of `channels` from now on (listening on any that are new).
    pub fn subscribe(&self, channels: &[&str]) -> Subscription {
        let mut channels: Vec<String> = channels.iter().map(|c| (*c).to_owned()).collect();
        channels.sort_unstable();
        channels.dedup();
        let (tx, rx) = mpsc::channel(QUEUE);
        let lagged = Arc::new(AtomicBool::new(false));
        let subscriber = Arc::new(Subscriber {
            tx,
            lagged: Arc::clone(&lagged),
        });
        let mut added = false;
        {
            let mut subscribers = self.subscribers();
            for channel in &channels {
                let entry = subscribers.entry(channel.clone()).or_insert_with(|| {
                    added = true;
                    Vec::new()
                });
                entry.push(Arc::clone(&subscriber));
            }
        }
        if added {
            self.inner.added.notify_one();
        }
        Subscription {
            channels,
            rx,
            rx_open: true,
            lagged,
            link: self.inner.link.subscribe(),
            hub_open: true,
            live: None,
        }
    }

    /// Whether the connection is up.
    pub fn is_connected(&self) -> bool {
        self.inner.link.borrow().up
    }

    fn subscribers(&self) -> std::sync::MutexGuard<'_, HashMap<String, Vec<Arc<Subscriber>>>> {
        self.inner
            .subscribers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    async fn run(self, db: PgPool, mut shutdown: Shutdown) {
        // However this loop ends (shutdown, panic), subscribers are told the connection is gone.
        let _down = DownOnDrop(&self);
        let mut backoff = Backoff::new(RECONNECT_FIRST, RECONNECT_MAX);
        loop {
            let outcome = tokio::select! {
                outcome = self.listen(&db, &mut backoff) => outcome,
                () = shutdown.requested() => return,
            };
            self.set_down();
            match outcome {
                Err(sqlx::Error::PoolClosed) => {
                    tracing::info!("the database pool is closed; notifications stop");
                    shutdown.requested().await;
                    return;
                }
                Err(err) => {
                    tracing::warn!(error = %err, "notification listener lost; reconnecting");
                }
                Ok(()) => tracing::warn!("notification listener lost; reconnecting"),
            }
            tokio::select! {
                () = tokio::time::sleep(backoff.next_delay()) => {}
                () = shutdown.requested() => return,
            }
        }
    }

    /// One connection, from connect to loss.
    async fn listen(&self, db: &PgPool, backoff: &mut Backoff) -> Result<(), sqlx::Error> {
        let mut listener = PgListener::connect_with(db).await?;
        // A loss must end this connection, never be papered over by a silent reconnect.
        listener.eager_reconnect(false);
        let mut channels = HashSet::new();
        self.listen_new(&mut listener, &mut channels).await?;
        let listened = Arc::new(channels.clone());
        self.inner.link.send_modify(|link| {
            link.generation += 1;
            link.up = true;
            link.channels = listened;
        });
        backoff.reset();
        tracing::info!("notification listener connected");
        loop {
            tokio::select! {
                biased;
                () = self.inner.added.notified() => {
                    if self.listen_new(&mut listener, &mut channels).await? {
                        let listened = Arc::new(channels.clone());
                        self.inner.link.send_modify(|link| link.channels = listened);
                    }
                }
                // Cancel-safe: nothing is consumed unless a whole message was read.
                received = listener.try_recv() => match received? {
                    Some(notification) => {
                        self.dispatch(notification.channel(), notification.payload());
                    }
                    // The connection dropped; notifications sent meanwhile are lost.
                    None => return Ok(()),
                },
            }
        }
    }

    /// Listens on the subscribed channels not yet in `channels`; true if there were any.
    async fn listen_new(
        &self,
        listener: &mut PgListener,
        channels: &mut HashSet<String>,
    ) -> Result<bool, sqlx::Error> {
        let new: Vec<String> = self
            .subscribers()
            .keys()
            .filter(|channel| !channels.contains(*channel))
            .cloned()
            .collect();
        if new.is_empty() {
            return Ok(false);
        }
        listener.listen_all(new.iter().map(String::as_str)).await?;
        channels.extend(new);
        Ok(true)
    }

    fn set_down(&self) {
        self.inner.link.send_if_modified(|link| {
            let was_up = link.up;
            link.up = false;
            was_up
        });
    }

    /// Hands a notification to every subscriber of its channel without waiting for any.
    fn dispatch(&self, channel: &str, payload: &str) {
        let mut subscribers = self.subscribers();
        let Some(list) = subscribers.get_mut(channel) else {
            return;
        };
        list.retain(|subscriber| {
            let notice = Notice {
                channel: channel.to_owned(),
                payload: payload.to_owned(),
            };
            match subscriber.tx.try_send(notice) {
                Ok(()) => true,
                Err(mpsc::error::TrySendError::Full(_)) => {
                    subscriber.lagged.store(true, Ordering::SeqCst);
                    true
                }
                Err(mpsc::error::TrySendError::Closed(_)) => false,
            }
        });
    }
}

struct DownOnDrop<'a>(&'a Hub);

impl Drop for DownOnDrop<'_> {
    fn drop(&mut self) {
        self.0.set_down();
    }
}

/// One consumer's view of the hub. Dropping it unsubscribes.
#[derive(Debug)]
pub struct Subscription {
    channels: Vec<String>,
    rx: mpsc::Receiver<Notice>,
    rx_open: bool,
    lagged: Arc<AtomicBool>,
    link: watch::Receiver<Link>,
    hub_open: bool,
    /// The connection generation this subscriber is resynced with, if live.
    live: Option<u64>,
}

impl Subscription {
    /// The next event. Cancel-safe: an event is consumed only when returned.
    pub async fn recv(&mut self) -> Event {
        loop {
            if let Some(event) = self.transition() {
                return event;
            }
            tokio::select! {
                // A change of the connection comes before any notification received after it.
                biased;
                changed = self.link.changed(), if self.hub_open => {
                    if changed.is_err() {
                        self.hub_open = false;
                    }
                }
                notice = self.rx.recv(), if self.rx_open => match notice {
                    Some(notice) => return Event::Notification(notice),
                    None => self.rx_open = false,
                },
                // The hub is gone: nothing more will come.
                else => std::future::pending::<()>().await,
            }
        }
    }

    /// `Lost` or `Resynced` when this subscriber's state has to change.
    fn transition(&mut self) -> Option<Event> {
        let target = if self.hub_open && self.rx_open {
            let link = self.link.borrow_and_update();
            (link.up && self.channels.iter().all(|c| link.channels.contains(c)))
                .then_some(link.generation)
        } else {
            None
        };
        // Falling behind lost a notification: as good as a lost connection.
        if self.lagged.swap(false, Ordering::SeqCst) && self.live.is_some() {
            self.live = None;
            return Some(Event::Lost);
        }
        match (self.live, target) {
            (Some(live), Some(now)) if live == now => None,
            (Some(_), _) => {
                self.live = None;
                Some(Event::Lost)
            }
            (None, Some(now)) => {
                self.live = Some(now);
                Some(Event::Resynced)
            }
            (None, None) => None,
        }
    }
}
