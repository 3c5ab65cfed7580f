//! What the service holds for each device: the notifications that wait,
//! app by app, and which of them went out on the device's connection.
//!
//! A notification waits here from the moment it is accepted until the
//! device's agent acknowledges it, expires (its TTL), or is replaced by a
//! newer one with the same collapse key. It goes out only to a registered
//! app; an app that is not running gets its notifications when it
//! registers. Each app's notifications carry increasing stream ids, and an
//! acknowledgement is a position: "everything up to id N is shown".

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::disk::Disk;

/// Notifications that may wait for one device, all its apps together. A
/// sender past it is refused: a service that took everything would run out
/// of memory for a phone that never comes back.
pub const MAX_WAITING: usize = 100;
/// Notifications that may wait in the whole service, every device together.
/// Without it, a sender that makes up a new device name for each
/// notification fills the memory (or the disk) 100 at a time.
pub const MAX_HELD: usize = 10_000;
/// At the limit, how often the whole store may be swept. A sweep walks
/// every device under the lock; done for every SEND while the store stays
/// full, a sender could keep the service doing nothing else.
const SWEEP_EVERY: Duration = Duration::from_secs(1);
/// Stream ids reserved on disk at a time: one write per this many
/// notifications, not one per notification.
const ID_BLOCK: u64 = 1000;

/// One notification that waits.
#[derive(Debug, Clone)]
pub struct Note {
    pub id: u64,
    /// When it stops being worth showing, in Unix milliseconds.
    pub expires: u64,
    pub collapse: Option<String>,
    pub text: String,
}

#[derive(Default)]
struct Device {
    /// By app, oldest first.
    waiting: BTreeMap<String, VecDeque<Note>>,
    /// The number of the device's current connection (0: none).
    connection: u64,
    /// The apps running on the device, and for each the last stream id sent
    /// to it on the current connection.
    sent: BTreeMap<String, u64>,
}

struct Store {
    devices: HashMap<String, Device>,
    next_id: u64,
    /// Ids below this are reserved on disk.
    reserved: u64,
    connections: u64,
    /// Notifications waiting, counted from above: one replaced by a newer
    /// with the same collapse key is not counted off. At `MAX_HELD` the
    /// service sweeps and counts exactly (once a second at most) before it
    /// refuses anyone.
    held: usize,
    /// When the store was last swept.
    swept: Instant,
    disk: Option<Disk>,
}

/// The service's memory, shared by every connection.
pub struct Service {
    store: Mutex<Store>,
    /// Rung whenever a device may have something to send, or a new
    /// connection replaced its old one.
    changed: Condvar,
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_millis() as u64)
}

impl Service {
    /// A service, with what `disk` holds if there is one.
    pub fn open(disk: Option<Disk>) -> std::io::Result<Service> {
        // Stream ids never go back, even when a service without a disk
        // restarts: an agent skips an id it has handed out already. So they
        // start no lower than the clock, in microseconds since 1970.
        let clock = now().saturating_mul(1000);
        let mut store = Store {
            devices: HashMap::new(),
            next_id: clock,
            reserved: clock,
            connections: 0,
            held: 0,
            swept: Instant::now(),
            disk: None,
        };
        if let Some(disk) = &disk {
            store.next_id = clock.max(disk.next_id()?);
            store.reserved = store.next_id;
            for (device, app, note) in disk.load()? {
                store.next_id = store.next_id.max(note.id + 1);
                let device = store.devices.entry(device).or_default();
                device.waiting.entry(app).or_default().push_back(note);
                store.held += 1;
            }
        }
        store.disk = disk;
        Ok(Service {
            store: Mutex::new(store),
            changed: Condvar::new(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Store> {
        self.store
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Take a notification for `device/app`; its stream id once it is safe
    /// (on disk, with `--data`), or why it was refused.
    pub fn accept(
        &self,
        device: &str,
        app: &str,
        ttl: Duration,
        collapse: Option<String>,
        text: String,
    ) -> Result<u64, String> {
        let mut store = self.lock();
        let store = &mut *store;
        if store.held >= MAX_HELD && store.swept.elapsed() >= SWEEP_EVERY {
            store.sweep();
        }
        if store.held >= MAX_HELD {
            return Err(format!(
                "the service holds {MAX_HELD} notifications already; try again later"
            ));
        }
        let waiting = &mut store.devices.entry(device.to_string()).or_default().waiting;
        store.held -= drop_expired(store.disk.as_ref(), device, waiting);
        // A newer notification with the same key replaces the one that
        // waits: a phone back online shows the latest score, not ten.
        if let Some(key) = &collapse {
            let queue = waiting.entry(app.to_string()).or_default();
            let replaced: Vec<u64> = queue
                .iter()
                .filter(|note| note.collapse.as_ref() == Some(key))
                .map(|note| note.id)
                .collect();
            queue.retain(|note| note.collapse.as_ref() != Some(key));
            remove_saved(store.disk.as_ref(), device, app, &replaced);
        }
        let count: usize = waiting.values().map(VecDeque::len).sum();
        if count >= MAX_WAITING {
            return Err(format!(
                "{MAX_WAITING} notifications already wait for {device}; try again later"
            ));
        }
        if store.next_id >= store.reserved {
            let end = store.next_id + ID_BLOCK;
            if let Some(disk) = &store.disk {
                disk.reserve_ids(end)
                    .map_err(|error| format!("cannot save: {error}"))?;
            }
            store.reserved = end;
        }
        let note = Note {
            id: store.next_id,
            expires: now().saturating_add(ttl.as_millis() as u64),
            collapse,
            text,
        };
        if let Some(disk) = &store.disk {
            disk.save(device, app, &note)
                .map_err(|error| format!("cannot save: {error}"))?;
        }
        store.next_id += 1;
        store.held += 1;
        let id = note.id;
        waiting.entry(app.to_string()).or_default().push_back(note);
        self.changed.notify_all();
        Ok(id)
    }

    /// A new connection for `device`: it replaces any older one, whose
    /// writer stops. Returns the connection's number.
    pub fn connect(&self, device: &str) -> u64 {
        let mut store = self.lock();
        store.connections += 1;
        let number = store.connections;
        let device = store.devices.entry(device.to_string()).or_default();
        device.connection = number;
        device.sent.clear();
        self.changed.notify_all();
        number
    }

    /// The connection ended; unless a newer one has replaced it already.
    pub fn disconnect(&self, device: &str, connection: u64) {
        let mut store = self.lock();
        if let Some(state) = store.devices.get_mut(device) {
            if state.connection == connection {
                state.connection = 0;
                state.sent.clear();
                // A device that holds nothing is forgotten: devices that
                // come once, with names of every kind, cost nothing after.
                if state.holds_nothing() {
                    store.devices.remove(device);
                }
            }
        }
        self.changed.notify_all();
    }

    /// `app` runs on the device, and has been shown everything up to
    /// `last`: drop those, and send it everything after.
    pub fn register(&self, device: &str, connection: u64, app: &str, last: u64) {
        self.ack(device, app, last);
        let mut store = self.lock();
        if let Some(device) = store.devices.get_mut(device) {
            if device.connection == connection {
                device.sent.insert(app.to_string(), last);
            }
        }
        self.changed.notify_all();
    }

    /// `app` stopped: what comes for it waits again.
    pub fn unregister(&self, device: &str, connection: u64, app: &str) {
        let mut store = self.lock();
        if let Some(device) = store.devices.get_mut(device) {
            if device.connection == connection {
                device.sent.remove(app);
            }
        }
    }

    /// Everything for `device/app` up to stream id `id` has been shown.
    pub fn ack(&self, device: &str, app: &str, id: u64) {
        let mut store = self.lock();
        let store = &mut *store;
        let Some(queue) = store
            .devices
            .get_mut(device)
            .and_then(|device| device.waiting.get_mut(app))
        else {
            return;
        };
        let mut shown = Vec::new();
        while queue.front().is_some_and(|note| note.id <= id) {
            shown.extend(queue.pop_front().map(|note| note.id));
        }
        store.held -= shown.len();
        remove_saved(store.disk.as_ref(), device, app, &shown);
    }

    /// Wait until `connection` has notifications to send, and mark them
    /// sent: (app, note) in stream order for each app. `None` once the
    /// connection is no longer the device's (it ended, or a newer one
    /// replaced it).
    pub fn next_to_send(&self, device: &str, connection: u64) -> Option<Vec<(String, Note)>> {
        let mut store = self.lock();
        loop {
            let store_ref = &mut *store;
            let device_state = store_ref.devices.get_mut(device)?;
            if device_state.connection != connection {
                return None;
            }
            store_ref.held -=
                drop_expired(store_ref.disk.as_ref(), device, &mut device_state.waiting);
            let mut batch = Vec::new();
            for (app, last_sent) in device_state.sent.iter_mut() {
                let Some(queue) = device_state.waiting.get(app) else {
                    continue;
                };
                let after = *last_sent;
                for note in queue.iter().filter(|note| note.id > after) {
                    batch.push((app.clone(), note.clone()));
                    *last_sent = note.id;
                }
            }
            if !batch.is_empty() {
                return Some(batch);
            }
            // Woken by a new notification, a registration, or a newer
            // connection; the timeout lets an expiry be noticed too.
            store = self
                .changed
                .wait_timeout(store, Duration::from_secs(1))
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .0;
        }
    }
}

impl Device {
    fn holds_nothing(&self) -> bool {
        self.connection == 0 && self.waiting.values().all(VecDeque::is_empty)
    }
}

impl Store {
    /// Forget, in every device, what has outlived its TTL, and the devices
    /// left holding nothing; then count exactly what is held.
    fn sweep(&mut self) {
        self.swept = Instant::now();
        let disk = self.disk.as_ref();
        for (device, state) in self.devices.iter_mut() {
            drop_expired(disk, device, &mut state.waiting);
        }
        self.devices.retain(|_, state| !state.holds_nothing());
        self.held = self
            .devices
            .values()
            .flat_map(|state| state.waiting.values())
            .map(VecDeque::len)
            .sum();
    }
}

/// Forget what has outlived its TTL; how many notifications that was.
fn drop_expired(
    disk: Option<&Disk>,
    device: &str,
    waiting: &mut BTreeMap<String, VecDeque<Note>>,
) -> usize {
    let now = now();
    let mut dropped = 0;
    for (app, queue) in waiting.iter_mut() {
        let expired: Vec<u64> = queue
            .iter()
            .filter(|note| note.expires <= now)
            .map(|note| note.id)
            .collect();
        queue.retain(|note| note.expires > now);
        remove_saved(disk, device, app, &expired);
        dropped += expired.len();
    }
    dropped
}

/// Delete from the disk; a failure is told, and the notification may come
/// back after a restart (its stream id keeps it from being shown twice).
fn remove_saved(disk: Option<&Disk>, device: &str, app: &str, ids: &[u64]) {
    if let Some(disk) = disk {
        if let Err(error) = disk.remove(device, app, ids) {
            eprintln!("{device}/{app}: cannot delete from disk: {error}");
        }
    }
}
