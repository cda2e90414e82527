//! Attribution: who did it. Every decoded event leaves here with its session
//! (the unit a person would name: a login, a container, a service, a shell
//! session) and its process ancestry.

pub mod cgroup;
pub mod origin;
pub mod processes;
mod session;

use std::{collections::HashMap, sync::Arc, time::Instant};

use serde::Serialize;

pub use cgroup::{CgroupInfo, CgroupResolver};
pub use origin::Origin;
pub use processes::{Ancestor, ProcessTable};
pub use session::{Session, SessionKey};

use crate::events::{Device, Event, EventBody};

/// An event with everything attribution adds.
#[derive(Debug, Clone, Serialize)]
pub struct Attributed {
    #[serde(flatten)]
    pub event: Event,
    pub session: Session,
    /// The process itself, then its ancestors up to the session leader.
    pub ancestry: Vec<Ancestor>,
}

/// Most entries the name caches keep before starting over.
const NAME_CACHE_CAP: usize = 4096;

/// The process/session model: the only stage that keeps state about processes.
pub struct Model {
    processes: ProcessTable,
    cgroups: CgroupResolver,
    users: HashMap<u32, Option<Arc<str>>>,
    devices: HashMap<(u32, u32), Option<String>>,
    last_sweep: Instant,
}

impl Model {
    /// A model seeded with the processes running now.
    pub fn new() -> Model {
        let mut processes = ProcessTable::default();
        for proc in processes::scan_proc() {
            processes.seed(proc);
        }
        tracing::debug!(processes = processes.len(), "seeded process table from /proc");
        Model {
            processes,
            cgroups: CgroupResolver::new(),
            users: HashMap::new(),
            devices: HashMap::new(),
            last_sweep: Instant::now(),
        }
    }

    /// Updates the model with `event` and attributes it.
    pub fn observe(&mut self, mut event: Event) -> Attributed {
        let now = Instant::now();
        let task = &event.process;
        match &mut event.body {
            EventBody::Fork {
                child_pid,
                child_start_ns,
            } => self.processes.fork(task, *child_pid, *child_start_ns),
            EventBody::Exec { exe, argv, .. } => {
                self.processes.exec(task, exe.as_slice(), argv.argv.as_slice())
            }
            EventBody::Exit { .. } => self.processes.exit(task, now),
            EventBody::BlockOpen { device, .. } | EventBody::BlockWrite { device, .. } => {
                self.name_device(device);
                self.processes.touch(task);
            }
            EventBody::Guard(action) => {
                if let Some(device) = &mut action.device {
                    self.name_device(device);
                }
                self.processes.touch(task);
            }
            _ => {
                self.processes.touch(task);
            }
        }
        if now.duration_since(self.last_sweep) >= std::time::Duration::from_secs(1) {
            self.processes.sweep(now);
            self.last_sweep = now;
        }
        let cgroup = self.cgroups.resolve(task.cgroup_id);
        let login_user = task.login_uid.and_then(|uid| self.user_name(uid));
        let session = Session::new(task, cgroup, login_user);
        // Ancestry is built on demand (`with_ancestry`): most events need none.
        let ancestry = Vec::new();
        Attributed {
            event,
            session,
            ancestry,
        }
    }

    /// Fills in `event`'s ancestry, once: for output that shows it and for alerts.
    pub fn with_ancestry(&self, event: &mut Attributed) {
        if event.ancestry.is_empty() {
            event.ancestry = self
                .processes
                .ancestry(event.event.process.pid, event.event.process.sid);
        }
    }

    fn user_name(&mut self, uid: u32) -> Option<Arc<str>> {
        if self.users.len() >= NAME_CACHE_CAP {
            self.users.clear();
        }
        self.users
            .entry(uid)
            .or_insert_with(|| crate::host::user_name(uid).map(Arc::from))
            .clone()
    }

    fn name_device(&mut self, device: &mut Device) {
        if self.devices.len() >= NAME_CACHE_CAP {
            self.devices.clear();
        }
        device.name = self
            .devices
            .entry((device.major, device.minor))
            .or_insert_with(|| block_device_name(device.major, device.minor))
            .clone();
    }
}

impl Default for Model {
    fn default() -> Self {
        Self::new()
    }
}

/// `DEVNAME` from `/sys/dev/block/MAJOR:MINOR/uevent` (`loop0`, `sda1`).
fn block_device_name(major: u32, minor: u32) -> Option<String> {
    let uevent = std::fs::read_to_string(format!("/sys/dev/block/{major}:{minor}/uevent")).ok()?;
    uevent
        .lines()
        .find_map(|l| l.strip_prefix("DEVNAME="))
        .map(str::to_owned)
}
