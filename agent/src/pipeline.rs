//! The agent's main loop: drain the ring buffer, decode, emit; watch the loss
//! counters; stop cleanly on request.

use std::{future::Future, time::Duration};

use agent_common::Counter;
use anyhow::Context;
use tokio::io::{unix::AsyncFd, Interest};
use tracing::{debug, warn};

use crate::{
    events::{decode, BootClock},
    model::Model,
    output::{Losses, Output},
    probes::{LossCounters, Probes},
};

/// How often the kernel loss counters are read.
const LOSS_POLL: Duration = Duration::from_secs(1);

/// Runs until `shutdown` completes, then drains what the kernel already
/// produced and reports final loss totals.
pub async fn run(
    mut probes: Probes,
    mut output: Output,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<Losses> {
    let clock = BootClock::now().context("reading CLOCK_BOOTTIME")?;
    let counters = probes.take_counters()?;
    // SAFETY: the ring buffer owns its map fd, which stays open and unchanged
    // for as long as the AsyncFd holds the ring buffer.
    let mut ring = unsafe { AsyncFd::register_with_interest(probes.take_events()?, Interest::READABLE) }
        .map_err(|e| e.into_parts().1)
        .context("registering the ring buffer with tokio")?;
    let mut losses = Losses::default();
    let mut model = Model::new();
    let mut poll = tokio::time::interval(LOSS_POLL);
    tokio::pin!(shutdown);

    loop {
        tokio::select! {
            ready = ring.readable_mut() => {
                let mut guard = ready.context("waiting on the ring buffer")?;
                drain(guard.get_inner_mut(), &clock, &mut model, &mut output, &mut losses)?;
                guard.clear_ready();
            }
            _ = poll.tick() => {
                if refresh(&counters, &mut losses)? {
                    output.losses(&losses)?;
                    output.flush()?;
                }
            }
            () = &mut shutdown => break,
        }
    }

    drain(ring.get_mut(), &clock, &mut model, &mut output, &mut losses)?;
    refresh(&counters, &mut losses)?;
    output.losses(&losses)?;
    output.flush()?;
    Ok(losses)
}

/// Emits every record waiting in the ring buffer.
fn drain(
    ring: &mut aya::maps::RingBuf<aya::maps::MapData>,
    clock: &BootClock,
    model: &mut Model,
    output: &mut Output,
    losses: &mut Losses,
) -> anyhow::Result<()> {
    let mut n = 0usize;
    while let Some(record) = ring.next() {
        n += 1;
        match decode(&record, clock) {
            Ok(event) => output.event(&model.observe(event)).context("writing an event")?,
            Err(error) => {
                losses.undecodable += 1;
                warn!(%error, len = record.len(), "undecodable record");
            }
        }
    }
    if n > 0 {
        debug!(records = n, "drained ring buffer");
        output.flush().context("flushing output")?;
    }
    Ok(())
}

/// Reads the kernel counters into `losses`; true if they grew.
fn refresh(counters: &LossCounters, losses: &mut Losses) -> anyhow::Result<bool> {
    let before = losses.clone();
    for (counter, total) in counters.read().context("reading the probes' loss counters")? {
        match counter {
            Counter::RingBufferFull => losses.ring_buffer_full = total,
            Counter::PendingTableFull => losses.pending_table_full = total,
        }
    }
    Ok(*losses != before)
}
