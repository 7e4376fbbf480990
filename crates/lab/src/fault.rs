//! The names of fault kinds, shared by live lab runs and the seeded simulator.
//!
//! A scenario file (`quorumdb lab run`) names the faults it injects, the report labels its fault
//! windows with a kind, and `quorumdb lab simulate` counts the faults it injected by kind. One
//! enum for all three means a "pause" or a "loss" is the same word, with the same meaning, in a
//! scenario file, in `report.json` and in the simulator's summary, so figures from the two can be
//! put side by side without a translation table.

use serde::Serialize;
use std::fmt;

/// A kind of fault, by the name scenario files, reports and the simulator use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum FaultKind {
    /// A node stops at once, losing what it had not fsynced (SIGKILL; a power loss).
    Crash,
    /// A node stops answering but keeps its state and sockets (SIGSTOP; a GC pause, a hung VM).
    Pause,
    /// Peer messages between two sides are cut, both ways.
    Partition,
    /// A node stops sending peer messages to the others while still receiving theirs.
    OneWayPartition,
    /// Peer messages are dropped at random.
    Loss,
    /// Peer messages arrive late.
    Delay,
    /// A node's fsyncs take longer.
    SlowDisk,
    /// A node's wall clock is off.
    Skew,
}

impl FaultKind {
    /// Every kind, in the order the docs list them.
    pub const ALL: [FaultKind; 8] = [
        FaultKind::Crash,
        FaultKind::Pause,
        FaultKind::Partition,
        FaultKind::OneWayPartition,
        FaultKind::Loss,
        FaultKind::Delay,
        FaultKind::SlowDisk,
        FaultKind::Skew,
    ];

    /// The kind's name (kebab-case, as in scenario files and `report.json`).
    pub fn name(self) -> &'static str {
        match self {
            FaultKind::Crash => "crash",
            FaultKind::Pause => "pause",
            FaultKind::Partition => "partition",
            FaultKind::OneWayPartition => "one-way-partition",
            FaultKind::Loss => "loss",
            FaultKind::Delay => "delay",
            FaultKind::SlowDisk => "slow-disk",
            FaultKind::Skew => "skew",
        }
    }

    /// The kind `name` names. `kill` is accepted for [`FaultKind::Crash`], because that is what
    /// the lab does to crash a process (SIGKILL) and what scenario files have always called it.
    pub fn from_name(name: &str) -> Option<FaultKind> {
        if name == "kill" {
            return Some(FaultKind::Crash);
        }
        FaultKind::ALL.into_iter().find(|k| k.name() == name)
    }
}

impl fmt::Display for FaultKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Proves every kind parses back from its own name and from its Display, `kill` is a
    /// synonym of `crash`, JSON uses the same names, and an unknown name is refused.
    #[test]
    fn names_round_trip() {
        for k in FaultKind::ALL {
            assert_eq!(FaultKind::from_name(k.name()), Some(k));
            assert_eq!(FaultKind::from_name(&k.to_string()), Some(k));
            assert_eq!(serde_json::to_value(k).unwrap(), k.name());
        }
        assert_eq!(FaultKind::from_name("kill"), Some(FaultKind::Crash));
        assert_eq!(FaultKind::from_name("melt"), None);
    }
}
