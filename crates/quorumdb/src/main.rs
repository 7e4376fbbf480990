//! The `quorumdb` binary: `server`, `demo`, client commands and `bench`.

mod auth_cli;
mod bench;
mod certs_cli;
mod cli;
mod cluster_cli;
mod crdt_cli;
mod demo;
mod group_cli;
mod lab;
mod lab_sim;
mod lease_cli;
mod nemesis;
mod sink_cli;
mod topic_cli;

use clap::Parser;

/// mimalloc instead of glibc malloc: profiles of a 3-node cluster under YCSB-A showed ~15% of
/// server CPU in glibc's malloc/free (many small, short-lived buffers per request).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let args = cli::Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            std::process::exit(2);
        }
    };
    let code = match runtime.block_on(cli::dispatch(args)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {}", one_line(&e));
            1
        }
    };
    // Dropping the runtime could wait on blocking tasks (stdin readers); exit directly.
    std::process::exit(code);
}

/// Renders an error chain as one line: "outer: inner: root".
pub fn one_line(e: &anyhow::Error) -> String {
    e.chain().map(ToString::to_string).collect::<Vec<_>>().join(": ")
}
