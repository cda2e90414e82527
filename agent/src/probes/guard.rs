//! The agent's handle on the in-kernel guard's maps: policy limits, protected
//! directories and devices, exemptions, and session marks.

use std::collections::HashSet;

use agent_common::guard::{
    DirKey, Exemption, GuardConfig, Mark, MarkCounter, ScriptPath, SessionId, EXEMPT_LIST_CGROUPS,
    EXEMPT_LIST_UIDS,
};
use aya::maps::{Array, HashMap, MapData, MapError};

use super::ProbeError;

/// `BPF_NOEXIST` from `<linux/bpf.h>`: insert only if the key is absent.
const BPF_NOEXIST: u64 = 1;

pub struct GuardMaps {
    config: Array<MapData, GuardConfig>,
    marked: HashMap<MapData, SessionId, Mark>,
    mark_counts: Array<MapData, u64>,
    /// What the agent last wrote to its slot of `mark_counts`: the marks it
    /// made less those it cleared.
    agent_marks: u64,
    dirs: HashMap<MapData, DirKey, u32>,
    dir_devs: HashMap<MapData, u32, u32>,
    devices: HashMap<MapData, u32, u32>,
    exempt_pids: HashMap<MapData, u32, u32>,
    exempt_uids: HashMap<MapData, u32, u32>,
    exempt_cgroups: HashMap<MapData, u64, u32>,
    exempt_exes: HashMap<MapData, DirKey, u32>,
    exempt_paths: HashMap<MapData, ScriptPath, u32>,
    /// The cgroups put in `exempt_cgroups`: each allowlisted event would
    /// otherwise cost a map write.
    exempted_cgroups: HashSet<u64>,
}

impl GuardMaps {
    pub(super) fn take(ebpf: &mut aya::Ebpf) -> Result<GuardMaps, ProbeError> {
        fn map<T>(ebpf: &mut aya::Ebpf, name: &'static str) -> Result<T, ProbeError>
        where
            T: TryFrom<aya::maps::Map, Error = MapError>,
        {
            let raw = ebpf.take_map(name).ok_or(ProbeError::MissingMap(name))?;
            T::try_from(raw).map_err(|source| ProbeError::Map { name, source })
        }
        Ok(GuardMaps {
            config: map(ebpf, "GUARD")?,
            marked: map(ebpf, "MARKED")?,
            mark_counts: map(ebpf, "MARK_COUNTS")?,
            agent_marks: 0,
            dirs: map(ebpf, "PROTECTED_DIRS")?,
            dir_devs: map(ebpf, "PROTECTED_DIR_DEVS")?,
            devices: map(ebpf, "PROTECTED_DEVICES")?,
            exempt_pids: map(ebpf, "EXEMPT_PIDS")?,
            exempt_uids: map(ebpf, "EXEMPT_UIDS")?,
            exempt_cgroups: map(ebpf, "EXEMPT_CGROUPS")?,
            exempt_exes: map(ebpf, "EXEMPT_EXES")?,
            exempt_paths: map(ebpf, "EXEMPT_PATHS")?,
            exempted_cgroups: HashSet::new(),
        })
    }

    /// Sets the global settings, keeping which exemption maps hold entries
    /// and the protected directories' epoch.
    pub fn set_config(&mut self, config: GuardConfig) -> Result<(), MapError> {
        self.update_config(|c| {
            let (lists, epoch) = (c.exempt_lists, c.dirs_epoch);
            *c = config;
            c.exempt_lists = lists;
            c.dirs_epoch = epoch;
        })
    }

    /// Changes the global settings in place. The probes only read them.
    fn update_config(&mut self, change: impl FnOnce(&mut GuardConfig)) -> Result<(), MapError> {
        let mut config = self.config.get(&0, 0)?;
        change(&mut config);
        self.config.set(0, config, 0)
    }

    /// Tells the probes whether exemption map `list` (an `EXEMPT_LIST_*` bit)
    /// holds entries: before the first goes in, after the last is gone.
    fn set_listed(&mut self, list: u32, listed: bool) -> Result<(), MapError> {
        let lists = self.config.get(&0, 0)?.exempt_lists;
        let want = if listed { lists | list } else { lists & !list };
        if want == lists {
            return Ok(());
        }
        self.update_config(|c| c.exempt_lists = want)
    }

    /// Replaces the protected directories (inode → class), and the devices
    /// they are on. A device is listed before its directories and dropped
    /// after them: the probes look a directory up only on a listed device.
    pub fn set_dirs(&mut self, dirs: &std::collections::HashMap<DirKey, u32>) -> Result<(), MapError> {
        let written = self.write_dirs(dirs);
        // After the maps, even if they changed only in part: a walk kept
        // while they changed is not replayed.
        self.update_config(|c| c.dirs_epoch = c.dirs_epoch.wrapping_add(1))?;
        written
    }

    fn write_dirs(&mut self, dirs: &std::collections::HashMap<DirKey, u32>) -> Result<(), MapError> {
        let devs: std::collections::HashMap<u32, u32> = dirs.keys().map(|k| (k.dev, 1)).collect();
        for dev in devs.keys() {
            self.dir_devs.insert(dev, 1, 0)?;
        }
        replace(&mut self.dirs, dirs)?;
        replace(&mut self.dir_devs, &devs)
    }

    /// Replaces the protected devices (kernel `dev_t` values).
    pub fn set_devices(&mut self, devices: &HashSet<u32>) -> Result<(), MapError> {
        replace(&mut self.devices, &devices.iter().map(|&d| (d, 1)).collect())
    }

    /// Replaces the programs the guard treats apart (by inode) and the
    /// allowlisted scripts (by the path they are run by).
    pub fn set_exempt_exes(
        &mut self,
        exes: &std::collections::HashMap<DirKey, Exemption>,
        paths: &HashSet<ScriptPath>,
    ) -> Result<(), MapError> {
        replace(
            &mut self.exempt_exes,
            &exes.iter().map(|(&k, &e)| (k, e as u32)).collect(),
        )?;
        replace(&mut self.exempt_paths, &paths.iter().map(|&k| (k, 1)).collect())
    }

    /// Whether the probes exempted `pid` (an allowlisted program or its child).
    pub fn is_exempt_pid(&self, pid: u32) -> bool {
        matches!(self.exempt_pids.get(&pid, 0), Ok(e) if e == Exemption::Allowlisted as u32)
    }

    pub fn set_exempt_uids(&mut self, uids: &HashSet<u32>) -> Result<(), MapError> {
        if !uids.is_empty() {
            self.set_listed(EXEMPT_LIST_UIDS, true)?;
        }
        replace(&mut self.exempt_uids, &uids.iter().map(|&u| (u, 1)).collect())?;
        if uids.is_empty() {
            self.set_listed(EXEMPT_LIST_UIDS, false)?;
        }
        Ok(())
    }

    pub fn exempt_cgroup(&mut self, id: u64) -> Result<(), MapError> {
        if self.exempted_cgroups.contains(&id) {
            return Ok(());
        }
        self.set_listed(EXEMPT_LIST_CGROUPS, true)?;
        self.exempt_cgroups.insert(id, 1, 0)?;
        self.exempted_cgroups.insert(id);
        Ok(())
    }

    pub fn clear_exempt_cgroups(&mut self) -> Result<(), MapError> {
        // First: should a removal fail, later events put their cgroup back.
        self.exempted_cgroups.clear();
        let all: Vec<u64> = self.exempt_cgroups.keys().filter_map(Result::ok).collect();
        for id in all {
            self.exempt_cgroups.remove(&id)?;
        }
        self.set_listed(EXEMPT_LIST_CGROUPS, false)
    }

    /// Marks a session: its processes are killed at their next destructive
    /// call (and exec, if the policy says so). A session already marked
    /// keeps its mark, and the reason the first marker gave. Counted before
    /// the mark exists, so the count is never short of the marks.
    pub fn mark(&mut self, session: SessionId, mark: Mark) -> Result<(), MapError> {
        self.count_agent_marks(1)?;
        match self.marked.insert(session, mark, BPF_NOEXIST) {
            Ok(()) => Ok(()),
            Err(MapError::SyscallError(e)) if e.io_error.raw_os_error() == Some(libc::EEXIST) => {
                self.count_agent_marks(u64::MAX)
            }
            Err(e) => {
                self.count_agent_marks(u64::MAX)?;
                Err(e)
            }
        }
    }

    /// Clears a session's mark; true if it was marked. Uncounted after it
    /// is gone.
    pub fn clear_mark(&mut self, session: SessionId) -> Result<bool, MapError> {
        let was = self.marked.remove(&session).is_ok();
        if was {
            self.count_agent_marks(u64::MAX)?;
        }
        Ok(was)
    }

    /// Adds `delta` (wrapping) to the agent's count of marks.
    fn count_agent_marks(&mut self, delta: u64) -> Result<(), MapError> {
        self.agent_marks = self.agent_marks.wrapping_add(delta);
        self.mark_counts
            .set(MarkCounter::Agent as u32, self.agent_marks, 0)
    }

    pub fn marks(&self) -> Result<Vec<(SessionId, Mark)>, MapError> {
        self.marked.iter().collect()
    }
}

/// Makes `map` hold exactly `want`.
fn replace<K, V>(
    map: &mut HashMap<MapData, K, V>,
    want: &std::collections::HashMap<K, V>,
) -> Result<(), MapError>
where
    K: aya::Pod + Eq + std::hash::Hash,
    V: aya::Pod,
{
    let stale: Vec<K> = map
        .keys()
        .filter_map(Result::ok)
        .filter(|k| !want.contains_key(k))
        .collect();
    for key in stale {
        map.remove(&key)?;
    }
    for (key, value) in want {
        map.insert(key, value, 0)?;
    }
    Ok(())
}
