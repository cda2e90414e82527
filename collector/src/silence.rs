//! Agents that stop reporting: an `agent-silent` alert, once, until the
//! agent's next heartbeat.

use std::time::{Duration, SystemTime};

use proto::v1::{Alert, Severity};
use tracing::warn;

use crate::Hub;

/// Checks every `every` for agents silent longer than `after`.
pub async fn watch(hub: Hub, after: Duration, every: Duration) {
    let mut tick = tokio::time::interval(every);
    loop {
        tick.tick().await;
        let store = hub.store.clone();
        let Some(before) = SystemTime::now().checked_sub(after) else {
            continue;
        };
        let silent = match tokio::task::spawn_blocking(move || store.newly_silent(before)).await {
            Ok(Ok(silent)) => silent,
            Ok(Err(e)) => {
                warn!(error = %e, "cannot check for silent agents");
                continue;
            }
            Err(e) => {
                warn!(error = %e, "silent-agent check failed");
                continue;
            }
        };
        for (agent_id, host, last_ms) in silent {
            let last = SystemTime::UNIX_EPOCH + Duration::from_millis(last_ms.max(0) as u64);
            warn!(%agent_id, %host, "agent silent");
            let alert = Alert {
                id: uuid::Uuid::new_v4().to_string(),
                time: Some(SystemTime::now().into()),
                host: host.clone(),
                agent_id: agent_id.clone(),
                severity: Severity::High as i32,
                summary: format!(
                    "agent-silent: {agent_id} on {host} has not reported for {}s",
                    SystemTime::now().duration_since(last).map_or(0, |d| d.as_secs())
                ),
                source: "collector".into(),
                mitre: vec!["T1562.001".into()],
                ..Default::default()
            };
            if let Err(e) = hub.publish(alert).await {
                warn!(error = %e, "cannot store an agent-silent alert");
            }
        }
    }
}
