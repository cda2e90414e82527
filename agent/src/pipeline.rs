//! The agent's main loop, one stage after the other: drain the ring buffer →
//! decode → attribute (model) → score → respond → alert → output. Around it:
//! loss counters, policy reloads (file change or SIGHUP), periodic refresh of
//! what the kernel guard protects, and a clean stop.

use std::{
    future::Future,
    net::SocketAddr,
    os::unix::fs::MetadataExt,
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant},
};

use agent_common::Counter;
use anyhow::Context;
use tokio::{
    io::{unix::AsyncFd, Interest},
    signal::unix::{signal, SignalKind},
    sync::Notify,
};
use tracing::{debug, info, warn};

use crate::{
    alert::Alert,
    events::{decode, BootClock, EventBody},
    health::Health,
    model::{cgroup::find_v2_mount, Attributed, Model},
    output::{Losses, Output},
    policy::{Policy, PolicyWatch},
    probes::{LossCounters, Probes},
    response::{ActionReport, Responder},
    scoring::Scorer,
    ship::{sender, spool::Spool, wire},
};

/// How often the kernel loss counters, the policy file and the protected
/// paths are checked.
const TICK: Duration = Duration::from_secs(1);
/// How often block devices are rescanned for data worth protecting.
const DEVICE_REFRESH: Duration = Duration::from_secs(5);

/// What the loop needs besides the probes.
pub struct Settings {
    /// Policy file; `None` runs the shipped default.
    pub policy: Option<PathBuf>,
    /// Where alerts go besides the output: a collector, through a spool.
    pub ship: Option<ShipSettings>,
    /// Where to serve `/healthz`, `/readyz` and `/metrics`.
    pub metrics: Option<SocketAddr>,
}

pub struct ShipSettings {
    pub collector: sender::Config,
    pub spool: PathBuf,
    pub spool_capacity: u64,
    /// Where the agent runs (Kubernetes node and pod), carried into alerts.
    pub placement: wire::Placement,
}

/// The spool alerts are written to before they are sent, and the sender's wake-up.
struct Shipper {
    spool: Arc<Spool>,
    wake: Arc<Notify>,
    agent_id: String,
    placement: wire::Placement,
}

/// Everything between a decoded event and the output.
struct Stages {
    clock: BootClock,
    model: Model,
    scorer: Scorer,
    responder: Responder,
    policy: Policy,
    host: Arc<str>,
    shipper: Option<Shipper>,
    health: Arc<Health>,
}

impl Stages {
    /// Forgets the scores of sessions whose mark was cleared from outside, so
    /// that clearing a mark gives the session a fresh start.
    fn forget_cleared_marks(&mut self) {
        match self.responder.cleared_marks() {
            Ok(cleared) => {
                for key in cleared {
                    info!(session = %key, "mark cleared: the session's score starts afresh");
                    self.scorer.reset(&key);
                }
            }
            Err(e) => warn!(error = %format!("{e:#}"), "cannot read the kernel guard's marks"),
        }
    }

    /// A new policy takes over; what the model and scorer know is kept.
    fn reload(&mut self, policy: Policy) {
        if let Err(e) = self.responder.apply(&policy) {
            warn!(error = %format!("{e:#}"), "cannot apply the new policy to the kernel guard");
        }
        info!(mode = ?policy.mode, classes = policy.classes.len(), "policy in force");
        self.health.set_policy(&policy);
        self.policy = policy;
    }

    fn handle(&mut self, record: &[u8], output: &mut Output, losses: &mut Losses) -> anyhow::Result<()> {
        let event = match decode(record, &self.clock) {
            Ok(event) => event,
            Err(error) => {
                losses.undecodable += 1;
                warn!(%error, len = record.len(), "undecodable record");
                return Ok(());
            }
        };
        self.health.event(event.body.kind());
        let mut event = self.model.observe(event);
        if matches!(event.event.body, EventBody::Guard(_)) {
            self.responder.kernel_marked(&event);
        }
        if output.shows_events() {
            self.model.with_ancestry(&mut event);
            output.event(&event).context("writing an event")?;
        }
        if !scored(&event) || self.responder.is_allowed(&event, &self.policy) {
            return Ok(());
        }
        let Some(verdict) = self.scorer.observe(&event, &self.policy) else {
            return Ok(());
        };
        self.model.with_ancestry(&mut event);
        // Read before any kill: the login shell holds it.
        let origin = crate::model::origin::origin(event.ancestry.iter().map(|a| a.pid));
        let action = self.responder.respond(&event, &verdict, &self.policy);
        let alert = Alert::new(
            self.host.clone(),
            self.policy.mode,
            &event,
            origin,
            verdict,
            action,
        );
        let killed = match &alert.action {
            Some(ActionReport::Killed { kill, .. }) => kill.killed.len() as u64,
            _ => 0,
        };
        self.health.alert(alert.severity.name(), killed);
        output.alert(&alert).context("writing an alert")?;
        if let Some(shipper) = &self.shipper {
            let wire = wire::alert(&alert, &shipper.agent_id, &shipper.placement);
            match shipper.spool.append(&prost::Message::encode_to_vec(&wire)) {
                Ok(_) => shipper.wake.notify_one(),
                // The alert is in the output; the spool's failure is loud.
                Err(e) => warn!(error = %e, alert = %alert.id, "cannot spool an alert for the collector"),
            }
        }
        Ok(())
    }
}

/// Events that can change a session's score.
fn scored(event: &Attributed) -> bool {
    !matches!(
        event.event.body,
        EventBody::Fork { .. } | EventBody::Exit { .. } | EventBody::BlockOpen { .. }
    )
}

/// Runs until `shutdown` completes, then drains what the kernel already
/// produced and reports final loss totals.
pub async fn run(
    mut probes: Probes,
    mut output: Output,
    settings: Settings,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<Losses> {
    let (mut watch, policy) = PolicyWatch::load(settings.policy).map_err(|e| anyhow::anyhow!(e.render()))?;
    let counters = probes.take_counters()?;
    let mut responder = Responder::new(probes.take_guard()?, root_cgroup_id());
    responder
        .apply(&policy)
        .context("applying the policy to the kernel guard")?;
    info!(mode = ?policy.mode, classes = policy.classes.len(), "policy in force");
    let health = Arc::new(Health::default());
    health.set_policy(&policy);
    if let Some(listen) = settings.metrics {
        let probe: Arc<dyn telemetry::Probe> = health.clone();
        tokio::spawn(async move {
            if let Err(e) = telemetry::serve(listen, probe).await {
                warn!(error = %format!("{e:#}"), "health and metrics endpoint stopped");
            }
        });
    }
    let shipper = match settings.ship {
        Some(ship) => {
            let spool = Arc::new(
                Spool::open(&ship.spool, ship.spool_capacity)
                    .with_context(|| format!("opening the alert spool {}", ship.spool.display()))?,
            );
            let wake = Arc::new(Notify::new());
            let agent_id = ship.collector.agent_id.clone();
            tokio::spawn(sender::run(
                ship.collector,
                spool.clone(),
                wake.clone(),
                health.clone(),
            ));
            Some(Shipper {
                spool,
                wake,
                agent_id,
                placement: ship.placement,
            })
        }
        None => None,
    };
    let mut stages = Stages {
        clock: BootClock::now().context("reading CLOCK_BOOTTIME")?,
        model: Model::new(),
        scorer: Scorer::default(),
        responder,
        policy,
        shipper,
        health: health.clone(),
        host: crate::alert::host_name().into(),
    };
    // SAFETY: the ring buffer owns its map fd, which stays open and unchanged
    // for as long as the AsyncFd holds the ring buffer.
    let mut ring = unsafe { AsyncFd::register_with_interest(probes.take_events()?, Interest::READABLE) }
        .map_err(|e| e.into_parts().1)
        .context("registering the ring buffer with tokio")?;
    let mut hangup = signal(SignalKind::hangup()).context("installing the SIGHUP handler")?;
    let mut losses = Losses::default();
    let mut tick = tokio::time::interval(TICK);
    // Batched wake-ups leave records unread until enough pile up: read them
    // at the poll's pace too.
    let wakeup = probes.wakeup();
    let mut poll_every = wakeup.next_poll(1, Duration::ZERO);
    let poll = tokio::time::sleep(poll_every);
    let mut last_refresh = Instant::now();
    tokio::pin!(shutdown, poll);
    // Start-up (parsing the kernel's BTF, loading the probe object, scanning
    // /proc) leaves tens of MB of freed heap behind: hand it back.
    // SAFETY: malloc_trim only releases free memory.
    unsafe { libc::malloc_trim(0) };
    stages.health.set_ready();

    loop {
        tokio::select! {
            ready = ring.readable_mut() => {
                let mut guard = ready.context("waiting on the ring buffer")?;
                drain(guard.get_inner_mut(), &mut stages, &mut output, &mut losses)?;
                guard.clear_ready();
                // Records are coming: back to the short pace.
                poll_every = wakeup.next_poll(1, poll_every);
                poll.as_mut().reset(tokio::time::Instant::now() + poll_every);
            }
            () = &mut poll => {
                let records = drain(ring.get_mut(), &mut stages, &mut output, &mut losses)?;
                poll_every = wakeup.next_poll(records, poll_every);
                poll.as_mut().reset(tokio::time::Instant::now() + poll_every);
            }
            _ = tick.tick() => {
                stages.health.tick();
                if refresh_losses(&counters, &mut losses)? {
                    output.losses(&losses)?;
                    output.flush()?;
                }
                // Every tick, so the drop series exist (at 0) from the start.
                health.set_losses(&losses);
                if let Some(policy) = watch.poll(false) {
                    stages.reload(policy);
                }
                stages.forget_cleared_marks();
                let updated = if last_refresh.elapsed() >= DEVICE_REFRESH {
                    last_refresh = Instant::now();
                    stages.responder.refresh_devices()
                } else {
                    stages.responder.refresh_paths(&stages.policy)
                };
                if let Err(e) = updated {
                    warn!(error = %format!("{e:#}"), "cannot update the kernel guard");
                }
            }
            _ = hangup.recv() => {
                info!("SIGHUP: reloading the policy");
                if let Some(policy) = watch.poll(true) {
                    stages.reload(policy);
                }
            }
            () = &mut shutdown => break,
        }
    }

    drain(ring.get_mut(), &mut stages, &mut output, &mut losses)?;
    refresh_losses(&counters, &mut losses)?;
    output.losses(&losses)?;
    output.flush()?;
    Ok(losses)
}

/// Handles every record waiting in the ring buffer; returns how many.
fn drain(
    ring: &mut aya::maps::RingBuf<aya::maps::MapData>,
    stages: &mut Stages,
    output: &mut Output,
    losses: &mut Losses,
) -> anyhow::Result<usize> {
    let mut n = 0usize;
    while let Some(record) = ring.next() {
        n += 1;
        stages.handle(&record, output, losses)?;
    }
    if n > 0 {
        debug!(records = n, "drained ring buffer");
        output.flush().context("flushing output")?;
    }
    Ok(n)
}

/// Reads the kernel counters into `losses`; true if they grew.
fn refresh_losses(counters: &LossCounters, losses: &mut Losses) -> anyhow::Result<bool> {
    let before = losses.clone();
    for (counter, total) in counters.read().context("reading the probes' loss counters")? {
        match counter {
            Counter::RingBufferFull => losses.ring_buffer_full = total,
            Counter::PendingTableFull => losses.pending_table_full = total,
        }
    }
    Ok(*losses != before)
}

/// The id of the host's cgroup v2 root (its directory's inode), 1 when unknown.
fn root_cgroup_id() -> u64 {
    crate::host::mountinfo()
        .ok()
        .and_then(|m| find_v2_mount(&m))
        .and_then(|p| std::fs::metadata(crate::host::path(&p)).ok())
        .map_or(1, |m| m.ino())
}
