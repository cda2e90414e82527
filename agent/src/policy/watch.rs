//! Reloading the policy when its file changes or on SIGHUP. A bad file keeps
//! the policy in force and says why; nothing the agent has learned is lost.

use std::{fs::Metadata, path::PathBuf, time::SystemTime};

use tracing::{error, info};

use super::Policy;

/// A policy file and what it last held.
pub struct PolicyWatch {
    path: Option<PathBuf>,
    seen: Option<(SystemTime, u64)>,
}

impl PolicyWatch {
    /// Loads `path` (or the shipped default when `None`).
    pub fn load(path: Option<PathBuf>) -> Result<(PolicyWatch, Policy), Box<super::PolicyError>> {
        let policy = match &path {
            Some(p) => Policy::load(p)?,
            None => Policy::default_policy(),
        };
        let seen = path
            .as_ref()
            .and_then(|p| std::fs::metadata(p).ok())
            .map(|m| stamp(&m));
        Ok((PolicyWatch { path, seen }, policy))
    }

    /// A new policy if the file changed since last time (or `force`, on
    /// SIGHUP) and is valid. An invalid file is logged and skipped until it
    /// changes again.
    pub fn poll(&mut self, force: bool) -> Option<Policy> {
        let path = self.path.as_ref()?;
        let now = std::fs::metadata(path).ok().map(|m| stamp(&m));
        if !force && now == self.seen {
            return None;
        }
        self.seen = now;
        match Policy::load(path) {
            Ok(policy) => {
                info!(path = %path.display(), "policy reloaded");
                Some(policy)
            }
            Err(e) => {
                error!(path = %path.display(), "policy not reloaded, the previous one stays in force:\n{}", e.render());
                None
            }
        }
    }
}

fn stamp(meta: &Metadata) -> (SystemTime, u64) {
    (meta.modified().unwrap_or(SystemTime::UNIX_EPOCH), meta.len())
}
