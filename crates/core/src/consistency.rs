//! Per-request consistency levels: `r` and `w` as a number or `one | quorum | all`.

use std::fmt;
use std::str::FromStr;
use thiserror::Error;

/// A requested number of replicas, before it is resolved against a table's replication factor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Level {
    One,
    #[default]
    Quorum,
    All,
    Count(usize),
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum LevelError {
    #[error("{name} must be a number or one|quorum|all, got {got:?}")]
    Parse { name: &'static str, got: String },
    #[error("{name}={got} is invalid: must be between 1 and the replication factor N={n}")]
    OutOfRange { name: &'static str, got: usize, n: usize },
}

impl Level {
    /// Parses `one`, `quorum`, `all` or a decimal count. `name` ("r" or "w") goes into the error.
    pub fn parse(name: &'static str, s: &str) -> Result<Self, LevelError> {
        match s.trim().to_ascii_lowercase().as_str() {
            "one" => Ok(Level::One),
            "quorum" => Ok(Level::Quorum),
            "all" => Ok(Level::All),
            other => other
                .parse::<usize>()
                .map(Level::Count)
                .map_err(|_| LevelError::Parse { name, got: s.chars().take(32).collect() }),
        }
    }

    /// The number of replicas this level needs when a table has `n` replicas.
    pub fn resolve(self, name: &'static str, n: usize) -> Result<usize, LevelError> {
        assert!(n >= 1, "replication factor must be at least 1");
        let count = match self {
            Level::One => 1,
            Level::Quorum => n / 2 + 1,
            Level::All => n,
            Level::Count(c) => c,
        };
        if count == 0 || count > n {
            return Err(LevelError::OutOfRange { name, got: count, n });
        }
        Ok(count)
    }
}

impl FromStr for Level {
    type Err = LevelError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Level::parse("level", s)
    }
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Level::One => f.write_str("one"),
            Level::Quorum => f.write_str("quorum"),
            Level::All => f.write_str("all"),
            Level::Count(c) => write!(f, "{c}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Proves named levels resolve to the Dynamo counts and out-of-range counts are refused.
    #[test]
    fn resolve_levels() {
        assert_eq!(Level::Quorum.resolve("r", 3), Ok(2));
        assert_eq!(Level::Quorum.resolve("r", 5), Ok(3));
        assert_eq!(Level::One.resolve("r", 3), Ok(1));
        assert_eq!(Level::All.resolve("w", 3), Ok(3));
        assert!(Level::Count(0).resolve("w", 3).is_err());
        assert!(Level::Count(4).resolve("w", 3).is_err());
        assert_eq!(Level::parse("w", "QUORUM"), Ok(Level::Quorum));
        assert!(Level::parse("w", "most").is_err());
        assert!(Level::parse("w", "-1").is_err());
    }
}
