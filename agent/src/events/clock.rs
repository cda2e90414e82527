//! Turning the probes' boot-time stamps into wall-clock time.

use std::time::{Duration, SystemTime};

use nix::time::{clock_gettime, ClockId};

/// Wall-clock time of boot, sampled once: the probes stamp events with
/// `bpf_ktime_get_boot_ns`, which keeps counting across suspend.
#[derive(Debug, Clone, Copy)]
pub struct BootClock {
    boot: SystemTime,
}

impl BootClock {
    pub fn now() -> nix::Result<Self> {
        let since_boot = Duration::from(clock_gettime(ClockId::CLOCK_BOOTTIME)?);
        let wall = SystemTime::now();
        Ok(Self {
            boot: wall - since_boot,
        })
    }

    pub fn wall_time(&self, boot_ns: u64) -> SystemTime {
        self.boot + Duration::from_nanos(boot_ns)
    }
}
