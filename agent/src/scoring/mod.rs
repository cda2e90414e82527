//! Scoring sessions for mass deletion and disk wiping: streaming, per session,
//! and explainable. Every verdict lists the features that drove it, each with
//! its value and the points it contributed.
//!
//! Points are capped per feature so that what ordinary work does a lot of
//! (deleting many files fast, outside protected paths) reaches at most
//! "medium"; "high" and "critical" need protected paths, destructive commands,
//! raw device writes or the kernel guard.

pub mod commands;

use std::{
    collections::{BTreeMap, HashMap, VecDeque},
    fmt,
    hash::{Hash, Hasher},
    time::UNIX_EPOCH,
};

use agent_common::guard::GuardReason;
use serde::Serialize;

pub use commands::Destructive;

use crate::{
    events::{EventBody, GuardAction},
    model::{Attributed, SessionKey},
    policy::{Policy, Severity},
};

/// Points that make each severity.
const LOW: f64 = 15.0;
const MEDIUM: f64 = 40.0;
const HIGH: f64 = 70.0;
const CRITICAL: f64 = 100.0;

/// Most points each feature can contribute.
const MASS_POINTS: f64 = 30.0;
const RATE_POINTS: f64 = 15.0;
const DIRS_POINTS: f64 = 5.0;
const PROTECTED_POINTS: f64 = 70.0;
const BYTES_POINTS: f64 = 10.0;
const GUARD_POINTS: f64 = 100.0;
/// Bytes destroyed (truncated) that count fully.
const BYTES_FULL: f64 = (1u64 << 30) as f64;
/// The deletion rate is measured over the last seconds of the window.
const RATE_SECS: u64 = 10;
/// Most distinct directories and sample paths remembered per session.
const DIRS_CAP: usize = 4096;
const SAMPLES_CAP: usize = 20;
/// Sessions idle longer than the window are forgotten; at most this many are kept.
const SESSIONS_CAP: usize = 16 * 1024;
/// A session at the same severity is alerted again after this long.
const REALERT_SECS: u64 = 60;

pub fn severity_of(score: f64) -> Severity {
    match score {
        s if s >= CRITICAL => Severity::Critical,
        s if s >= HIGH => Severity::High,
        s if s >= MEDIUM => Severity::Medium,
        s if s >= LOW => Severity::Low,
        _ => Severity::Info,
    }
}

/// One feature: what was measured and what it contributed.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Feature {
    pub name: String,
    pub value: f64,
    pub contribution: f64,
}

/// What a session did in the window, for the alert.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Evidence {
    pub deletions: u64,
    /// Destructive events (deletions, renames onto, truncations) per protected class.
    pub protected: BTreeMap<String, u64>,
    pub distinct_dirs: u64,
    pub bytes_destroyed: u64,
    pub raw_device_bytes: u64,
    pub commands: Vec<Destructive>,
    /// The most recent paths destroyed (escaped), at most 20.
    pub sample_paths: Vec<String>,
}

/// A session's score crossed into a severity worth reporting.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Verdict {
    pub severity: Severity,
    pub score: f64,
    pub features: Vec<Feature>,
    pub evidence: Evidence,
    /// The kernel guard's action that drove it, if any.
    pub guard: Option<GuardAction>,
}

#[derive(Default)]
struct Bucket {
    sec: u64,
    deletions: u64,
    protected: [u64; agent_common::guard::CLASS_COUNT],
    bytes: u64,
    raw_device_bytes: u64,
}

#[derive(Default)]
struct SessionState {
    buckets: VecDeque<Bucket>,
    dirs: HashMap<u64, u64>,
    commands: Vec<(u64, Destructive)>,
    samples: VecDeque<Vec<u8>>,
    guard: Option<(u64, GuardAction)>,
    alerted: Option<(Severity, u64)>,
    last_sec: u64,
}

/// Scores every session.
#[derive(Default)]
pub struct Scorer {
    sessions: HashMap<SessionKey, SessionState>,
}

impl Scorer {
    /// Takes one attributed event; returns a verdict when its session reaches
    /// a severity at or above `policy.scoring.alert_at` that it had not been
    /// alerted at (or not for a while).
    pub fn observe(&mut self, event: &Attributed, policy: &Policy) -> Option<Verdict> {
        let sec = event
            .event
            .time
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let window = policy.scoring.window_secs;
        if self.sessions.len() >= SESSIONS_CAP && !self.sessions.contains_key(&event.session.key) {
            self.sessions
                .retain(|_, s| sec.saturating_sub(s.last_sec) <= window);
        }
        let state = self.sessions.entry(event.session.key.clone()).or_default();
        state.last_sec = sec;
        while state
            .buckets
            .front()
            .is_some_and(|b| sec.saturating_sub(b.sec) >= window)
        {
            state.buckets.pop_front();
        }
        if state.buckets.back().is_none_or(|b| b.sec != sec) {
            state.buckets.push_back(Bucket {
                sec,
                ..Default::default()
            });
            // Everything is stamped in whole seconds: nothing more can
            // expire until the next second begins.
            state.expire(sec, window);
        }
        if !state.record(event, sec, policy) {
            return None;
        }

        // Numbers only here, at every event; the explanation is built below
        // only when an alert is raised.
        let score = state.score(sec, policy);
        let severity = severity_of(score);
        if severity < policy.scoring.alert_at {
            return None;
        }
        // The kernel acting on its own is always worth an alert.
        let kernel_acted =
            matches!(&event.event.body, EventBody::Guard(g) if g.reason != GuardReason::MarkedSession);
        let fresh = kernel_acted
            || match state.alerted {
                None => true,
                Some((was, when)) => severity > was || sec.saturating_sub(when) >= REALERT_SECS,
            };
        if !fresh {
            return None;
        }
        state.alerted = Some((severity, sec));
        let (features, evidence) = state.explain(sec, policy);
        Some(Verdict {
            severity,
            score,
            features,
            evidence,
            guard: state.guard.as_ref().map(|(_, g)| g.clone()),
        })
    }

    /// Forgets a session's guard action and alert level (its mark was cleared).
    pub fn reset(&mut self, key: &SessionKey) {
        self.sessions.remove(key);
    }
}

impl SessionState {
    /// Forgets directories, commands and a guard action older than the window.
    fn expire(&mut self, sec: u64, window: u64) {
        self.dirs.retain(|_, seen| sec.saturating_sub(*seen) < window);
        self.commands
            .retain(|(seen, _)| sec.saturating_sub(*seen) < window);
        if self
            .guard
            .as_ref()
            .is_some_and(|(seen, _)| sec.saturating_sub(*seen) >= window)
        {
            self.guard = None;
        }
    }

    /// Adds the event; false if it cannot change the score.
    fn record(&mut self, event: &Attributed, sec: u64, policy: &Policy) -> bool {
        let bucket = self.buckets.back_mut().expect("a bucket for now");
        let sample = |samples: &mut VecDeque<Vec<u8>>, path: &[u8]| {
            // The oldest sample's buffer is reused: no allocation per event.
            let mut buf = if samples.len() == SAMPLES_CAP {
                samples.pop_front().unwrap_or_default()
            } else {
                Vec::new()
            };
            buf.clear();
            buf.extend_from_slice(path);
            samples.push_back(buf);
        };
        match &event.event.body {
            EventBody::Deletion {
                path,
                kernel_class,
                outcome,
                ..
            } if outcome.may_have_happened() => {
                bucket.deletions += 1;
                let class = if *kernel_class != 0 {
                    *kernel_class
                } else {
                    policy.class_of(path)
                };
                bucket.protected[class as usize % bucket.protected.len()] += u64::from(class != 0);
                if self.dirs.len() < DIRS_CAP {
                    self.dirs.insert(hash(parent(path)), sec);
                }
                sample(&mut self.samples, path);
            }
            EventBody::Rename { to, outcome, .. } if outcome.may_have_happened() => {
                let class = policy.class_of(to);
                if class == 0 {
                    return false;
                }
                bucket.protected[class as usize] += 1;
                sample(&mut self.samples, to);
            }
            EventBody::Truncate {
                path,
                size_before,
                outcome,
                ..
            } if outcome.may_have_happened() => {
                bucket.bytes += size_before.unwrap_or(0);
                let class = policy.class_of(path);
                bucket.protected[class as usize] += u64::from(class != 0);
                sample(&mut self.samples, path);
            }
            EventBody::Exec { exe, argv, .. } => {
                let destructive = commands::classify(exe, &argv.argv, |p| policy.class_of(p) != 0);
                let Some(found) = destructive else { return false };
                self.commands.push((sec, found));
            }
            EventBody::BlockWrite { bytes, .. } => bucket.raw_device_bytes += bytes,
            EventBody::Guard(action) => self.guard = Some((sec, action.clone())),
            _ => return false,
        }
        true
    }

    /// Calls `add(name, value, contribution)` for every feature with a value.
    fn features(&self, sec: u64, policy: &Policy, mut add: impl FnMut(FeatureName<'_>, f64, f64)) {
        let mut add = |name: FeatureName<'_>, value: f64, contribution: f64| {
            if value > 0.0 {
                add(name, value, contribution);
            }
        };
        let s = &policy.scoring;
        let deletions: u64 = self.buckets.iter().map(|b| b.deletions).sum();
        let recent: u64 = self
            .buckets
            .iter()
            .filter(|b| sec.saturating_sub(b.sec) < RATE_SECS)
            .map(|b| b.deletions)
            .sum();
        let rate = recent as f64 / RATE_SECS as f64;
        let bytes: u64 = self.buckets.iter().map(|b| b.bytes).sum();
        let ratio = |v: f64, full: f64| (v / full.max(1.0)).min(1.0);
        add(
            FeatureName::MassDeletion,
            deletions as f64,
            MASS_POINTS * ratio(deletions as f64, s.mass_deletion.into()),
        );
        add(
            FeatureName::DeletionRate,
            rate,
            RATE_POINTS * ratio(rate, s.deletion_rate.into()),
        );
        add(
            FeatureName::DistinctDirs,
            self.dirs.len() as f64,
            DIRS_POINTS * ratio(self.dirs.len() as f64, s.distinct_dirs.into()),
        );
        add(
            FeatureName::BytesDestroyed,
            bytes as f64,
            BYTES_POINTS * ratio(bytes as f64, BYTES_FULL),
        );
        for (i, class) in policy.classes.iter().enumerate() {
            let hits: u64 = self.buckets.iter().map(|b| b.protected[i + 1]).sum();
            add(
                FeatureName::ProtectedPath(&class.name),
                hits as f64,
                PROTECTED_POINTS * ratio(hits as f64, class.limit.into()),
            );
            // The class limit, enforced here for what the kernel could not
            // classify (names like `dir/file` relative to the cwd, whose
            // directory the probe does not walk).
            if hits >= u64::from(class.limit) {
                add(FeatureName::LimitReached(&class.name), hits as f64, GUARD_POINTS);
            }
        }
        if let Some(worst) = self
            .commands
            .iter()
            .map(|(_, c)| *c)
            .max_by(|a, b| a.weight().total_cmp(&b.weight()))
        {
            add(FeatureName::DestructiveCommand(worst), 1.0, worst.weight());
        }
        if let Some((_, action)) = &self.guard {
            let reason = match action.reason {
                GuardReason::ProtectedDevice => "raw_write_to_protected_device",
                _ => "kernel_limit_crossed",
            };
            add(FeatureName::Guard(reason), 1.0, GUARD_POINTS);
        }
    }

    /// The session's score now: the sum of its features' contributions.
    fn score(&self, sec: u64, policy: &Policy) -> f64 {
        let mut score = 0.0;
        self.features(sec, policy, |_, _, contribution| score += contribution);
        score
    }

    /// The features behind the score and the evidence, for an alert.
    fn explain(&self, sec: u64, policy: &Policy) -> (Vec<Feature>, Evidence) {
        let mut evidence = Evidence {
            deletions: self.buckets.iter().map(|b| b.deletions).sum(),
            distinct_dirs: self.dirs.len() as u64,
            bytes_destroyed: self.buckets.iter().map(|b| b.bytes).sum(),
            raw_device_bytes: self.buckets.iter().map(|b| b.raw_device_bytes).sum(),
            commands: self.commands.iter().map(|(_, c)| *c).collect(),
            sample_paths: self.samples.iter().map(|p| crate::escape::escape(p)).collect(),
            ..Default::default()
        };
        let mut features = Vec::new();
        self.features(sec, policy, |name, value, contribution| {
            if let FeatureName::ProtectedPath(class) = name {
                evidence.protected.insert(class.to_owned(), value as u64);
            }
            features.push(Feature {
                name: name.to_string(),
                value,
                contribution,
            });
        });
        (features, evidence)
    }
}

/// A feature's name, formatted only for alerts.
#[derive(Clone, Copy)]
enum FeatureName<'p> {
    MassDeletion,
    DeletionRate,
    DistinctDirs,
    BytesDestroyed,
    ProtectedPath(&'p str),
    LimitReached(&'p str),
    DestructiveCommand(Destructive),
    Guard(&'static str),
}

impl fmt::Display for FeatureName<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FeatureName::MassDeletion => f.write_str("mass_deletion"),
            FeatureName::DeletionRate => f.write_str("deletion_rate"),
            FeatureName::DistinctDirs => f.write_str("distinct_dirs"),
            FeatureName::BytesDestroyed => f.write_str("bytes_destroyed"),
            FeatureName::ProtectedPath(class) => write!(f, "protected_path:{class}"),
            FeatureName::LimitReached(class) => write!(f, "limit_reached:{class}"),
            FeatureName::DestructiveCommand(command) => {
                let name = serde_json::to_value(command).unwrap_or_default();
                write!(f, "destructive_command:{}", name.as_str().unwrap_or(""))
            }
            FeatureName::Guard(reason) => write!(f, "guard:{reason}"),
        }
    }
}

fn parent(path: &[u8]) -> &[u8] {
    path.iter().rposition(|&b| b == b'/').map_or(path, |i| &path[..i])
}

fn hash(bytes: &[u8]) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    bytes.hash(&mut h);
    h.finish()
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use agent_common::fs::DeleteOp;

    use super::*;
    use crate::{
        events::{Event, Outcome, Task},
        model::Session,
    };

    fn policy() -> Policy {
        let text =
            crate::policy::DEFAULT_POLICY.replace("\"/backup\", ", "\"/srv/prod-backups\", \"/backup\", ");
        Policy::parse("t.toml", &text).unwrap()
    }

    fn deletion(path: &str, n: u64) -> Attributed {
        let task = Task {
            pid: 1000 + n as u32,
            tid: 1000 + n as u32,
            ppid: 99,
            uid: 0,
            gid: 0,
            comm: b"rm".to_vec(),
            cgroup_id: 1,
            start_ns: 0,
            login_uid: Some(1000),
            audit_session: Some(7),
            pgid: 99,
            sid: 99,
            kernel_thread: false,
            allowlisted: false,
        };
        let session = Session::new(&task, None, None);
        let body = EventBody::Deletion {
            op: DeleteOp::Unlinkat,
            path: path.as_bytes().to_vec(),
            path_complete: true,
            kernel_class: 0,
            outcome: Outcome::Success,
        };
        let time = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000) + Duration::from_millis(n);
        Attributed {
            event: Event {
                time,
                body,
                process: task,
            },
            session,
            ancestry: vec![],
        }
    }

    #[test]
    fn reaching_a_class_limit_is_critical_and_explained() {
        let policy = policy();
        let limit = policy.classes.iter().find(|c| c.name == "backup").unwrap().limit as u64;
        let mut scorer = Scorer::default();
        let mut verdicts = Vec::new();
        for n in 0..limit + 5 {
            if let Some(v) = scorer.observe(&deletion(&format!("/srv/prod-backups/f{n}"), n), &policy) {
                verdicts.push((n, v));
            }
        }
        let (at, critical) = verdicts
            .iter()
            .find(|(_, v)| v.severity == Severity::Critical)
            .expect("critical");
        assert_eq!(*at, limit - 1, "critical at the limit-th deletion");
        assert!(critical
            .features
            .iter()
            .any(|f| f.name == "limit_reached:backup" && f.contribution == GUARD_POINTS));
        assert_eq!(critical.evidence.protected["backup"], limit);
        assert!(
            verdicts.iter().map(|(_, v)| v.severity).is_sorted(),
            "severity only rises"
        );
    }

    #[test]
    fn directories_age_out_of_the_window() {
        let policy = policy();
        let mut scorer = Scorer::default();
        for n in 0..10 {
            scorer.observe(&deletion(&format!("/home/dev/d{n}/f"), n), &policy);
        }
        let key = deletion("/x", 0).session.key;
        assert_eq!(scorer.sessions[&key].dirs.len(), 10);
        let later = policy.scoring.window_secs * 1000 + 1000;
        scorer.observe(&deletion("/home/dev/other/f", later), &policy);
        assert_eq!(
            scorer.sessions[&key].dirs.len(),
            1,
            "only the directory seen in the window"
        );
    }

    #[test]
    fn mass_deletion_outside_protected_paths_stays_below_high() {
        let policy = policy();
        let mut scorer = Scorer::default();
        let worst = (0..20_000u64)
            .filter_map(|n| {
                scorer.observe(
                    &deletion(&format!("/home/dev/proj/target/d{}/f{n}", n % 900), n),
                    &policy,
                )
            })
            .map(|v| v.severity)
            .max();
        assert_eq!(worst, Some(Severity::Medium));
    }
}
