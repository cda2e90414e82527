//! Where decoded events and loss reports go: JSON lines on stdout, or
//! structured `tracing` logs on stderr.

use std::io::{self, BufWriter, Stdout, Write};

use serde::Serialize;
use tracing::{debug, warn};

use crate::{alert::Alert, escape::escape, model::Attributed};

/// Totals of everything the agent knows it lost.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Losses {
    /// Records the probes could not put in the full ring buffer.
    pub ring_buffer_full: u64,
    /// Syscalls whose arguments the probes could not keep until exit.
    pub pending_table_full: u64,
    /// Records the agent received but could not decode.
    pub undecodable: u64,
}

impl Losses {
    pub fn total(&self) -> u64 {
        self.ring_buffer_full + self.pending_table_full + self.undecodable
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// One JSON object per line on stdout.
    Json,
    /// Human-readable log lines on stderr.
    Log,
}

pub struct Output {
    format: Format,
    stdout: BufWriter<Stdout>,
}

/// The JSON form of an alert.
#[derive(Serialize)]
#[serde(tag = "type", rename = "alert")]
struct AlertRecord<'a> {
    #[serde(flatten)]
    alert: &'a Alert,
}

/// The JSON form of a loss report.
#[derive(Serialize)]
#[serde(tag = "type", rename = "losses")]
struct LossRecord<'a> {
    #[serde(flatten)]
    losses: &'a Losses,
}

impl Output {
    pub fn new(format: Format) -> Self {
        Self {
            format,
            stdout: BufWriter::new(io::stdout()),
        }
    }

    /// Whether events are shown at all (they are logged at debug level).
    pub fn shows_events(&self) -> bool {
        self.format == Format::Json || tracing::enabled!(tracing::Level::DEBUG)
    }

    pub fn event(&mut self, event: &Attributed) -> io::Result<()> {
        match self.format {
            Format::Json => self.json_line(event),
            Format::Log => {
                // The JSON body without the envelope fields logged separately.
                let mut body = serde_json::to_value(&event.event.body).unwrap_or_default();
                let kind = body
                    .as_object_mut()
                    .and_then(|o| o.remove("type"))
                    .unwrap_or_default();
                let p = &event.event.process;
                debug!(
                    session = %event.session.key,
                    pid = p.pid,
                    comm = %escape(&p.comm),
                    uid = p.uid,
                    %body,
                    "{}",
                    kind.as_str().unwrap_or("event")
                );
                Ok(())
            }
        }
    }

    pub fn alert(&mut self, alert: &Alert) -> io::Result<()> {
        match self.format {
            Format::Json => self.json_line(&AlertRecord { alert }),
            Format::Log => {
                let action = serde_json::to_value(&alert.action).unwrap_or_default();
                warn!(
                    severity = ?alert.severity,
                    session = %alert.session.key,
                    pid = alert.process.pid,
                    score = alert.score,
                    %action,
                    "ALERT {}",
                    alert.summary
                );
                Ok(())
            }
        }
    }

    /// Reports loss totals; called whenever they grow, and at shutdown.
    pub fn losses(&mut self, losses: &Losses) -> io::Result<()> {
        if losses.total() > 0 {
            warn!(
                ring_buffer_full = losses.ring_buffer_full,
                pending_table_full = losses.pending_table_full,
                undecodable = losses.undecodable,
                "events lost"
            );
        }
        match self.format {
            Format::Json => self.json_line(&LossRecord { losses }),
            Format::Log => Ok(()),
        }
    }

    pub fn flush(&mut self) -> io::Result<()> {
        self.stdout.flush()
    }

    fn json_line(&mut self, value: &impl Serialize) -> io::Result<()> {
        serde_json::to_writer(&mut self.stdout, value)?;
        self.stdout.write_all(b"\n")
    }
}
