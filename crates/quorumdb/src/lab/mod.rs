//! `quorumdb lab` (placeholder; being written).

use anyhow::Result;
use clap::{Args, Subcommand};

#[derive(Args, Debug)]
pub struct LabArgs {
    #[command(subcommand)]
    pub command: LabCommand,
}

#[derive(Subcommand, Debug)]
pub enum LabCommand {
    /// Run the seeded whole-cluster simulation.
    Simulate(crate::lab_sim::SimulateArgs),
}

pub async fn run(a: LabArgs) -> Result<i32> {
    match a.command {
        LabCommand::Simulate(s) => crate::lab_sim::run(s),
    }
}
