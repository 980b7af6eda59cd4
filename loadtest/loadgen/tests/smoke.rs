//! A smoke run of the generator against a real `switchboard serve` and the baseline server: a
//! few seconds, 50 connections, every scenario and both protocols once. It proves that the
//! generator and the servers agree (deliveries happen, nothing fails); it measures nothing, so
//! it asserts no timings.
//!
//! The `switchboard` binary comes from another package, so it is looked up next to this test's
//! executable (`target/<profile>/switchboard`, built by `cargo build --workspace`) unless
//! `SWITCHBOARD_BIN` names it.

#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::process::Stdio;

use switchboard_loadgen::report::Report;
use switchboard_testkit::{Server, ServerOptions, TEST_KEY};
use tokio::io::{AsyncBufReadExt, BufReader};

const LOADGEN: &str = env!("CARGO_BIN_EXE_switchboard-loadgen");
const BASELINE: &str = env!("CARGO_BIN_EXE_baseline-server");

fn switchboard_bin() -> PathBuf {
    if let Some(path) = std::env::var_os("SWITCHBOARD_BIN") {
        return path.into();
    }
    let exe = std::env::current_exe().unwrap();
    // target/<profile>/deps/smoke-<hash> -> target/<profile>/switchboard
    let bin = exe
        .parent()
        .and_then(|deps| deps.parent())
        .unwrap()
        .join("switchboard");
    assert!(
        bin.exists(),
        "{} is missing: build it first (cargo build -p switchboard) or set SWITCHBOARD_BIN",
        bin.display()
    );
    bin
}

/// Runs the generator with `args` and returns its report.
async fn loadgen(args: &[&str]) -> Report {
    let out = tokio::process::Command::new(LOADGEN)
        .args(args)
        // Connections open all at once: the run stays short, and so does the window in which
        // the gateway's reconciliation can mistake a just-registered connection for an orphan
        // (see docs/benchmarks.md).
        .args(["--json", "--settle", "0", "--drain", "5"])
        .args(["--connect-rate", "0"])
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "loadgen {args:?} failed:\n{stderr}");
    let stdout = String::from_utf8(out.stdout).unwrap();
    let line = stdout.lines().last().unwrap_or_default();
    let report: Report =
        serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {stdout}\n{stderr}"));
    eprintln!("{stderr}");
    report
}

fn assert_delivered_without_errors(r: &Report) {
    assert_eq!(r.opened, r.connections as u64, "{}", r.table());
    assert!(r.received > 0, "nothing delivered:\n{}", r.table());
    assert_eq!(r.error_count(), 0, "errors:\n{}", r.table());
    assert!(r.errors.is_empty(), "errors:\n{}", r.table());
}

#[tokio::test]
async fn generator_drives_switchboard_in_every_scenario() {
    let server = Server::start(switchboard_bin(), ServerOptions::default())
        .await
        .unwrap();
    let url = server.url("");
    let pid = server.pid().unwrap().to_string();
    let common = [
        "--target",
        "switchboard",
        "--url",
        &url,
        "--access-key",
        TEST_KEY,
        "--connections",
        "50",
    ];
    let runs: [&[&str]; 4] = [
        &[
            "--scenario",
            "broadcast",
            "--rate",
            "20",
            "--duration",
            "2",
            "--server-pid",
            &pid,
        ],
        &[
            "--scenario",
            "group",
            "--groups",
            "5",
            "--burst",
            "20",
            "--protocol",
            "messagepack",
        ],
        &["--scenario", "user", "--users", "10", "--burst", "20"],
        &[
            "--scenario",
            "connection",
            "--burst",
            "50",
            "--protocol",
            "messagepack",
        ],
    ];
    for run in runs {
        let args: Vec<&str> = common.iter().chain(run.iter()).copied().collect();
        let report = loadgen(&args).await;
        assert_delivered_without_errors(&report);
    }
    // The HTTP transports: every message once, through a group (the join needs the connection
    // id) and to every connection.
    let runs: [&[&str]; 3] = [
        &[
            "--transport",
            "sse",
            "--scenario",
            "group",
            "--groups",
            "5",
            "--burst",
            "20",
        ],
        &[
            "--transport",
            "longpolling",
            "--scenario",
            "broadcast",
            "--burst",
            "100",
        ],
        &[
            "--transport",
            "longpolling",
            "--scenario",
            "connection",
            "--rate",
            "50",
            "--duration",
            "1",
        ],
    ];
    for run in runs {
        let args: Vec<&str> = common.iter().chain(run.iter()).copied().collect();
        let report = loadgen(&args).await;
        assert_delivered_without_errors(&report);
        assert_eq!(report.transport, run[1]);
        assert_eq!((report.drops, report.extra), (0, 0), "{}", report.table());
    }
}

#[tokio::test]
async fn generator_drives_the_baseline_with_worker_processes() {
    let mut child = tokio::process::Command::new(BASELINE)
        .args(["--listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let line = lines.next_line().await.unwrap().unwrap();
    let url = line.strip_prefix("listening on ").unwrap().to_owned();
    let pid = child.id().unwrap().to_string();
    for protocol in ["json", "messagepack"] {
        let report = loadgen(&[
            "--target",
            "baseline",
            "--url",
            &url,
            "--connections",
            "50",
            "--processes",
            "2",
            "--scenario",
            "broadcast",
            "--burst",
            "20",
            "--protocol",
            protocol,
            "--server-pid",
            &pid,
        ])
        .await;
        assert_delivered_without_errors(&report);
        assert!(report.kib_per_connection.is_some());
    }
    child.kill().await.unwrap();
}
