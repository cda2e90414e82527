//! Session marks of a running agent, from outside it: `levee-agent marks`.
//!
//! The agent's guard maps are found among the maps the agent process holds
//! (`/proc/PID/fdinfo` names their ids), by name. Clearing a mark also clears
//! the session's in-kernel counters, so it is not marked again at its next
//! deletion.

use agent_common::guard::{Mark, MarkCounter, SessionCounts, SessionId, SessionKind};
use aya::maps::{Array, HashMap, Map, MapData, MapError, MapInfo};

#[derive(Debug, thiserror::Error)]
pub enum MarksError {
    #[error("levee-agent {pid} holds no map named {name}; is it a levee-agent, and are you root?")]
    NoMap { pid: u32, name: &'static str },
    #[error("no running levee-agent found")]
    NoAgent,
    #[error("several levee-agents run ({0:?}): name one with --agent-pid")]
    SeveralAgents(Vec<u32>),
    #[error("kernel map access failed: {0}")]
    Map(#[from] MapError),
    #[error("{0:?} is not a session key (login:<id>, sid:<id> or cgroup-id:<id>)")]
    BadKey(String),
}

/// A mark as shown to people.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct MarkView {
    /// `login:<audit id>`, `sid:<sid>` or `cgroup-id:<id>`.
    pub session: String,
    pub reason: String,
    /// Protected class index (0: any path).
    pub class: u32,
    pub marked_at_boot_ns: u64,
}

/// The running agent: `pid` if given, else the only `levee-agent` process.
pub fn find_agent(pid: Option<u32>) -> Result<u32, MarksError> {
    if let Some(pid) = pid {
        return Ok(pid);
    }
    let me = std::process::id();
    let agents: Vec<u32> = std::fs::read_dir("/proc")
        .map_err(|_| MarksError::NoAgent)?
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| pid != me)
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == "levee-agent")
        })
        .collect();
    match agents.as_slice() {
        [] => Err(MarksError::NoAgent),
        [one] => Ok(*one),
        several => Err(MarksError::SeveralAgents(several.to_vec())),
    }
}

/// The map called `name` among those process `agent` holds open.
fn agent_map(agent: u32, name: &'static str) -> Result<Map, MarksError> {
    let ids = std::fs::read_dir(format!("/proc/{agent}/fdinfo"))
        .map_err(|_| MarksError::NoMap { pid: agent, name })?
        .filter_map(Result::ok)
        .filter_map(|e| std::fs::read_to_string(e.path()).ok())
        .filter_map(|info| {
            info.lines()
                .find_map(|l| l.strip_prefix("map_id:")?.trim().parse::<u32>().ok())
        });
    for id in ids {
        if MapInfo::from_id(id).is_ok_and(|info| info.name_as_str() == Some(name)) {
            return Ok(Map::from_map_data(MapData::from_id(id)?)?);
        }
    }
    Err(MarksError::NoMap { pid: agent, name })
}

fn marked(agent: u32) -> Result<HashMap<MapData, SessionId, Mark>, MarksError> {
    Ok(HashMap::try_from(agent_map(agent, "MARKED")?)?)
}

pub fn list(agent: u32) -> Result<Vec<MarkView>, MarksError> {
    let marks = marked(agent)?;
    let mut views = Vec::new();
    for entry in marks.iter() {
        let (session, mark) = entry?;
        views.push(MarkView {
            session: key_text(session),
            reason: agent_common::guard::GuardReason::from_u32(mark.reason)
                .map_or_else(|| format!("unknown ({})", mark.reason), |r| format!("{r:?}")),
            class: mark.class,
            marked_at_boot_ns: mark.boot_ns,
        });
    }
    Ok(views)
}

/// Clears the mark of `session` (as `list` prints it); true if it was marked.
pub fn clear(agent: u32, session: &str) -> Result<bool, MarksError> {
    let id = parse_key(session)?;
    let mut marks = marked(agent)?;
    let was = marks.remove(&id).is_ok();
    // An LRU hash map reads and writes like a hash map from userspace.
    let mut counts: HashMap<MapData, SessionId, SessionCounts> =
        HashMap::try_from(agent_map(agent, "SESSIONS")?)?;
    let _ = counts.remove(&id);
    if was {
        // Uncounted after it is gone: the count is never short of the marks.
        // Left too high, it only costs the probes a lookup per destructive call.
        if let Err(error) = uncount_mark(agent) {
            tracing::warn!(%error, "mark cleared, but the probes' count of marks stays one too high");
        }
    }
    Ok(was)
}

fn uncount_mark(agent: u32) -> Result<(), MarksError> {
    let mut mark_counts: Array<MapData, u64> = Array::try_from(agent_map(agent, "MARK_COUNTS")?)?;
    let slot = MarkCounter::MarksCommand as u32;
    Ok(mark_counts.set(slot, mark_counts.get(&slot, 0)?.wrapping_sub(1), 0)?)
}

fn key_text(id: SessionId) -> String {
    match SessionKind::from_u32(id.kind) {
        Some(SessionKind::Login) => format!("login:{}", id.id),
        Some(SessionKind::Posix) => format!("sid:{}", id.id),
        Some(SessionKind::Cgroup) => format!("cgroup-id:{}", id.id),
        None => format!("unknown-{}:{}", id.kind, id.id),
    }
}

fn parse_key(text: &str) -> Result<SessionId, MarksError> {
    let bad = || MarksError::BadKey(text.to_owned());
    let (kind, id) = text.split_once(':').ok_or_else(bad)?;
    let kind = match kind {
        "login" => SessionKind::Login,
        "sid" => SessionKind::Posix,
        "cgroup-id" => SessionKind::Cgroup,
        _ => return Err(bad()),
    };
    Ok(SessionId {
        kind: kind as u32,
        _pad: 0,
        id: id.parse().map_err(|_| bad())?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_keys_round_trip() {
        for text in ["login:12", "sid:4242", "cgroup-id:77"] {
            assert_eq!(key_text(parse_key(text).unwrap()), text);
        }
        assert!(parse_key("login:x").is_err());
        assert!(parse_key("container:abc").is_err());
    }
}
