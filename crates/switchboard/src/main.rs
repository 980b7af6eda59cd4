//! `switchboard`: a self-hostable, wire-compatible Azure SignalR Service.
//!
//! This binary only parses the command line, sets up logging and metrics, binds listeners and
//! hands them to the library crates. Subcommands:
//! - `serve`: gateway + Raft store voter in one process (with no flags: the embedded default).
//! - `gateway`: a stateless gateway in front of a store cluster.
//! - `store`: a Raft store voter only.
//! - `token`: mint client or REST tokens from a connection string.
//! - `cluster`: operate the store (status, add and remove voters).

mod cli;
mod cluster;
mod keys;
mod security;
mod serve;
mod telemetry;
mod token;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    // Bad flags exit 64 (EX_USAGE) like every other configuration error; --help and
    // --version print and exit 0.
    let cli = match cli::Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if e.use_stderr() => {
            let _ = e.print();
            return ExitCode::from(64);
        }
        Err(e) => {
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
    };
    match cli.command {
        cli::Command::Token(args) => token::run(args),
        cli::Command::Cluster(args) => cluster::run(args),
        cli::Command::Serve(args) => {
            let common = args.common.clone();
            serve::main(
                &common,
                || serve::validate_serve(&args),
                |secrets, stop| serve::serve(args.clone(), secrets, stop),
            )
        }
        cli::Command::Gateway(args) => {
            let common = args.common.clone();
            serve::main(
                &common,
                || serve::validate_gateway_role(&args),
                |secrets, stop| serve::gateway(args.clone(), secrets, stop),
            )
        }
        cli::Command::Store(args) => {
            let common = args.common.clone();
            serve::main(
                &common,
                || serve::validate_store(&args),
                |secrets, stop| serve::store(args.clone(), secrets, stop),
            )
        }
    }
}
