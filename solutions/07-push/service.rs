//! What the push service knows: each device's token and callback, and the
//! notifications waiting for it, in order, in memory and, with `--data`,
//! on disk. The delivery threads (delivery.rs) take their work from here.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};

use crate::delivery;
use crate::disk::Disk;
use crate::token::{new_token, same_token};

/// At most this many notifications wait for one device; past it the
/// oldest go, and the device is told how many it lost (as FCM does).
pub const MAX_PENDING: usize = 100;
/// At most this many devices: each costs a delivery thread.
const MAX_DEVICES: usize = 1000;
/// With `--data`, ids are reserved on disk this many at a time (lesson 03).
const ID_BLOCK: u64 = 1000;
/// After a failed delivery, the next try waits this long, then twice as
/// long each time, up to `MAX_BACKOFF`. A registration tries again at once.
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// One notification, as it waits for its device.
#[derive(Debug, Clone)]
pub struct Notification {
    pub id: u64,
    pub from: String,
    pub body: Vec<u8>,
    /// When it expires, in milliseconds since 1970 (a time that means the
    /// same after a restart); `None`: it waits as long as it must.
    pub expires: Option<u64>,
    /// A newer notification with the same key replaces this one.
    pub collapse: Option<String>,
}

/// What the service keeps of a device across restarts.
#[derive(Debug, Clone)]
pub struct SavedDevice {
    pub token: String,
    /// Where the device listens; `None` for a device that polls.
    pub callback: Option<SocketAddr>,
    /// Notifications dropped since the device was last told.
    pub lost: u64,
}

struct Device {
    saved: SavedDevice,
    pending: VecDeque<Notification>,
    /// The last delivery failed: the device is unreachable.
    failed: bool,
    /// When a failed device is tried again, unless it registers first.
    retry_at: Option<Instant>,
    backoff: Duration,
    /// Counts registrations: a failure of an attempt begun before the last
    /// registration says nothing about the new callback.
    generation: u64,
    /// Wakes this device's delivery thread.
    wake: Arc<Condvar>,
}

struct State {
    devices: HashMap<String, Device>,
    next_id: u64,
    reserved_ids: u64,
}

/// A delivery to make: everything waiting, to one callback.
pub struct Work {
    pub callback: SocketAddr,
    pub token: String,
    pub lost: u64,
    pub notes: Vec<Notification>,
    pub generation: u64,
}

pub struct Service {
    state: Mutex<State>,
    keys: Vec<String>,
    disk: Option<Disk>,
    /// How long a device has to answer each step of a delivery.
    pub answer_time: Duration,
}

impl Service {
    /// An empty service, or, with a folder, the one saved there; each saved
    /// device's delivery thread starts at once.
    pub fn open(
        data: Option<&Path>,
        keys: Vec<String>,
        answer_time: Duration,
    ) -> Result<Arc<Service>> {
        let mut state = State {
            devices: HashMap::new(),
            next_id: 1,
            reserved_ids: 1,
        };
        let disk = data.map(Disk::open).transpose()?;
        if let Some(disk) = &disk {
            let folder = data.unwrap_or(Path::new("")).display().to_string();
            state.next_id = disk
                .next_id()
                .with_context(|| format!("cannot read {folder}"))?;
            for (name, saved, notes) in disk
                .load()
                .with_context(|| format!("cannot read {folder}"))?
            {
                let mut device = Device::new(saved);
                for note in notes {
                    state.next_id = state.next_id.max(note.id + 1);
                    device.pending.push_back(note);
                }
                state.devices.insert(name, device);
            }
            state.reserved_ids = state.next_id;
        }
        let names: Vec<String> = state.devices.keys().cloned().collect();
        let service = Arc::new(Service {
            state: Mutex::new(state),
            keys,
            disk,
            answer_time,
        });
        for name in names {
            service.start_delivery(name);
        }
        Ok(service)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A thread that panicked while holding the lock left the state as
        // it was between two statements: still better served than not.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn start_delivery(self: &Arc<Service>, name: String) {
        let service = Arc::clone(self);
        thread::spawn(move || delivery::deliver_for_ever(&service, &name));
    }

    /// Whether a sender's API key is one the service was given.
    pub fn knows_key(&self, key: &str) -> bool {
        self.keys.iter().any(|known| same_token(key, known))
    }

    /// Register `name` at `callback` (`None`: it polls). A name that is
    /// taken needs its token; a new name gets a new token. Returns the token.
    pub fn register(
        self: &Arc<Service>,
        name: &str,
        callback: Option<SocketAddr>,
        token: Option<&str>,
    ) -> Result<String, String> {
        let mut state = self.lock();
        let is_new = !state.devices.contains_key(name);
        if is_new && state.devices.len() >= MAX_DEVICES {
            return Err("the service holds as many devices as it may".into());
        }
        if let Some(device) = state.devices.get(name) {
            if !token.is_some_and(|token| same_token(token, &device.saved.token)) {
                return Err(format!("the name {name} belongs to another device"));
            }
        }
        let token = match state.devices.get(name) {
            Some(device) => device.saved.token.clone(),
            None => new_token().map_err(|error| error.to_string())?,
        };
        let saved = SavedDevice {
            token: token.clone(),
            callback,
            lost: state
                .devices
                .get(name)
                .map_or(0, |device| device.saved.lost),
        };
        if let Some(disk) = &self.disk {
            disk.save_device(name, &saved).map_err(|error| {
                eprintln!("could not save device {name}: {error}");
                "the registration could not be saved".to_string()
            })?;
        }
        let device = state
            .devices
            .entry(name.to_string())
            .or_insert_with(|| Device::new(saved.clone()));
        device.saved = saved;
        // Registering again is the device saying "I am back": try now.
        device.retry_at = None;
        device.backoff = FIRST_BACKOFF;
        device.generation += 1;
        device.wake.notify_all();
        drop(state);
        if is_new {
            self.start_delivery(name.to_string());
        }
        Ok(token)
    }

    /// Check that `token` is `name`'s.
    pub fn check_token(&self, name: &str, token: &str) -> Result<(), String> {
        match self.lock().devices.get(name) {
            Some(device) if same_token(token, &device.saved.token) => Ok(()),
            _ => Err(format!("wrong token for {name}")),
        }
    }

    /// Take a notification for `to`, give it an id, and return that id.
    /// With `--data`, it is on disk when this returns.
    pub fn accept(
        &self,
        from: &str,
        to: &str,
        body: Vec<u8>,
        ttl: Option<u64>,
        collapse: Option<String>,
    ) -> Result<u64, String> {
        let mut state = self.lock();
        if !state.devices.contains_key(to) {
            return Err(format!("no device is called {to}"));
        }
        let id = state.next_id;
        if let Some(disk) = &self.disk {
            if id >= state.reserved_ids {
                let end = id + ID_BLOCK;
                disk.reserve_ids(end).map_err(|error| not_saved(&error))?;
                state.reserved_ids = end;
            }
        }
        let note = Notification {
            id,
            from: from.to_string(),
            body,
            expires: ttl.map(|seconds| now_millis() + seconds * 1000),
            collapse,
        };
        if let Some(disk) = &self.disk {
            disk.save(to, &note).map_err(|error| not_saved(&error))?;
        }
        state.next_id += 1;
        let device = state.devices.get_mut(to).expect("checked above");
        let mut dropped = Vec::new();
        if let Some(key) = &note.collapse {
            // A mail count, not a history: the newer one replaces the older.
            device.pending.retain(|waiting| {
                let replaced = waiting.collapse.as_ref() == Some(key);
                if replaced {
                    dropped.push(waiting.id);
                }
                !replaced
            });
        }
        device.pending.push_back(note);
        let mut lost = 0;
        while device.pending.len() > MAX_PENDING {
            let oldest = device.pending.pop_front().expect("over the bound");
            dropped.push(oldest.id);
            lost += 1;
        }
        device.saved.lost += lost;
        device.wake.notify_all();
        let saved = device.saved.clone();
        if let Some(disk) = &self.disk {
            if lost > 0 {
                report(disk.save_device(to, &saved), "save a lost count");
            }
            report(disk.remove(to, &dropped), "remove replaced notifications");
        }
        Ok(id)
    }

    /// A polling device's turn: forget what it acknowledged (every id up to
    /// `acked`), and return how many it lost and what still waits.
    pub fn poll(
        &self,
        name: &str,
        token: &str,
        acked: u64,
    ) -> Result<(u64, Vec<Notification>), String> {
        self.check_token(name, token)?;
        let mut state = self.lock();
        let device = state.devices.get_mut(name).expect("its token was checked");
        let mut done = Vec::new();
        device.pending.retain(|note| {
            let delivered = note.id <= acked;
            if delivered {
                done.push(note.id);
            }
            !delivered
        });
        let lost = std::mem::take(&mut device.saved.lost);
        let saved = device.saved.clone();
        let notes = device.pending.iter().cloned().collect();
        if let Some(disk) = &self.disk {
            report(disk.remove(name, &done), "remove delivered notifications");
            if lost > 0 {
                report(disk.save_device(name, &saved), "save a lost count");
            }
        }
        Ok((lost, notes))
    }

    /// `reachable`, `unreachable`, `polling` or `unknown`, and how many
    /// notifications wait.
    pub fn status(&self, name: &str) -> (&'static str, usize) {
        match self.lock().devices.get(name) {
            None => ("unknown", 0),
            Some(device) if device.saved.callback.is_none() => ("polling", device.pending.len()),
            Some(device) if device.failed => ("unreachable", device.pending.len()),
            Some(device) => ("reachable", device.pending.len()),
        }
    }

    /// Wait until there is something to deliver to `name`'s callback, and
    /// the device is not waiting out a failure.
    pub fn next_work(&self, name: &str) -> Work {
        let mut state = self.lock();
        loop {
            let device = state
                .devices
                .get_mut(name)
                .expect("devices are never removed");
            let wake = Arc::clone(&device.wake);
            let now = Instant::now();
            if let Some(retry_at) = device.retry_at.filter(|at| *at > now) {
                state = wake
                    .wait_timeout(state, retry_at - now)
                    .unwrap_or_else(|poisoned| poisoned.into_inner())
                    .0;
                continue;
            }
            device.retry_at = None;
            if device.failed {
                // Sent again after a failure: what expired meanwhile goes.
                // The first attempt sends even a TTL of 0: "now", if the
                // device can be reached now.
                let expired = device.drop_expired();
                if let Some(disk) = &self.disk {
                    report(disk.remove(name, &expired), "remove expired notifications");
                }
            }
            let has_news = !device.pending.is_empty() || device.saved.lost > 0;
            if let (Some(callback), true) = (device.saved.callback, has_news) {
                return Work {
                    callback,
                    token: device.saved.token.clone(),
                    lost: device.saved.lost,
                    notes: device.pending.iter().cloned().collect(),
                    generation: device.generation,
                };
            }
            state = wake
                .wait(state)
                .unwrap_or_else(|poisoned| poisoned.into_inner());
        }
    }

    /// The device acknowledged notification `id`: forget it.
    pub fn delivered(&self, name: &str, id: u64) {
        let mut state = self.lock();
        let device = state
            .devices
            .get_mut(name)
            .expect("devices are never removed");
        device.pending.retain(|note| note.id != id);
        if let Some(disk) = &self.disk {
            report(disk.remove(name, &[id]), "remove a delivered notification");
        }
    }

    /// The device acknowledged that it lost `count` notifications.
    pub fn lost_told(&self, name: &str, count: u64) {
        let mut state = self.lock();
        let device = state
            .devices
            .get_mut(name)
            .expect("devices are never removed");
        device.saved.lost = device.saved.lost.saturating_sub(count);
        if let Some(disk) = &self.disk {
            report(disk.save_device(name, &device.saved), "save a lost count");
        }
    }

    /// A delivery attempt ended: reachable, or not (and when to try again).
    pub fn attempt_ended(&self, name: &str, generation: u64, reached: bool) {
        let mut state = self.lock();
        let device = state
            .devices
            .get_mut(name)
            .expect("devices are never removed");
        if device.generation != generation {
            // The device registered again meanwhile: try its new callback.
            return;
        }
        device.failed = !reached;
        if reached {
            device.backoff = FIRST_BACKOFF;
            return;
        }
        let expired = device.drop_expired();
        device.retry_at = Some(Instant::now() + device.backoff);
        device.backoff = (device.backoff * 2).min(MAX_BACKOFF);
        if let Some(disk) = &self.disk {
            report(disk.remove(name, &expired), "remove expired notifications");
        }
    }
}

impl Device {
    fn new(saved: SavedDevice) -> Device {
        Device {
            saved,
            pending: VecDeque::new(),
            failed: false,
            retry_at: None,
            backoff: FIRST_BACKOFF,
            generation: 0,
            wake: Arc::new(Condvar::new()),
        }
    }

    /// Drop the notifications past their time to live; return their ids.
    fn drop_expired(&mut self) -> Vec<u64> {
        let now = now_millis();
        let mut expired = Vec::new();
        self.pending.retain(|note| {
            let past = note.expires.is_some_and(|at| at <= now);
            if past {
                expired.push(note.id);
            }
            !past
        });
        expired
    }
}

fn now_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_millis() as u64)
}

fn not_saved(error: &std::io::Error) -> String {
    eprintln!("could not save a notification: {error}");
    "the notification could not be saved".to_string()
}

/// Log a disk error that no one is waiting to hear about.
fn report(result: std::io::Result<()>, doing: &str) {
    if let Err(error) = result {
        eprintln!("could not {doing}: {error}");
    }
}
