//! `switchboard-loadgen`: see the crate docs and `--help`.

use std::process::ExitCode;

use clap::Parser;
use switchboard_loadgen::cli::{Cli, Command};
use switchboard_loadgen::{invoke as invoke_run, report, run};

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(Command::Invoke(args)) = &cli.command {
        return invoke(args);
    }
    if let Some(Command::Compare { results }) = cli.command {
        return match std::fs::read_to_string(&results) {
            Ok(text) => {
                print!("{}", report::compare(&text));
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("switchboard-loadgen: {}: {e}", results.display());
                ExitCode::from(2)
            }
        };
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("switchboard-loadgen: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let args = cli.run;
    if args.worker_index.is_some() {
        return match runtime.block_on(run::worker(&args)) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("switchboard-loadgen worker: {e}");
                ExitCode::FAILURE
            }
        };
    }
    match runtime.block_on(run::run(&args)) {
        Ok(report) => {
            if args.json {
                eprint!("{}", report.table());
                match serde_json::to_string(&report) {
                    Ok(line) => println!("{line}"),
                    Err(e) => {
                        eprintln!("switchboard-loadgen: {e}");
                        return ExitCode::FAILURE;
                    }
                }
            } else {
                print!("{}", report.table());
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("switchboard-loadgen: {e}");
            ExitCode::from(if matches!(e, switchboard_loadgen::Error::Config(_)) {
                64
            } else {
                1
            })
        }
    }
}

fn invoke(args: &switchboard_loadgen::cli::InvokeArgs) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("switchboard-loadgen: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(invoke_run::run(args)) {
        Ok(report) => {
            if args.json {
                eprint!("{}", report.table());
                match serde_json::to_string(&report) {
                    Ok(line) => println!("{line}"),
                    Err(e) => {
                        eprintln!("switchboard-loadgen: {e}");
                        return ExitCode::FAILURE;
                    }
                }
            } else {
                print!("{}", report.table());
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("switchboard-loadgen: {e}");
            ExitCode::from(if matches!(e, switchboard_loadgen::Error::Config(_)) {
                64
            } else {
                1
            })
        }
    }
}
