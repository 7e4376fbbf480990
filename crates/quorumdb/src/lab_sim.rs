//! `quorumdb lab simulate` (placeholder; being written).

use anyhow::Result;
use clap::Args;

#[derive(Args, Debug)]
pub struct SimulateArgs {
    /// Number of seeds to run.
    #[arg(long, default_value_t = 100)]
    pub seeds: u64,
    /// First seed.
    #[arg(long, default_value_t = 0)]
    pub start: u64,
}

pub fn run(_a: SimulateArgs) -> Result<i32> {
    anyhow::bail!("lab simulate is not built yet")
}
