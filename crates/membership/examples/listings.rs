//! Measures what one page of each membership listing costs a gateway, against the paged group
//! listing (the 2024-12-01 operation) of the same connections in the same run.
//!
//! Run with `cargo run --release -p switchboard-membership --example listings [connections]`.
//! One hub holds `connections` connections (default 100,000) of `connections / 2` users, every
//! connection in the group `all` and in 3 of 100 other groups. Each listing asks for a page of
//! 200 from the start and from the middle; the figure is the median of 21 runs.
//!
//! The group listing merges the members per node, already in id order: its cost follows the
//! page. A hub's connections are kept by hash (a connect or a disconnect must stay O(1)), so
//! the hub listing scans them keeping the 200 smallest: its cost follows the hub. The user and
//! connection listings scan one user's connections or one connection's groups.

use std::time::{Duration, Instant};

use switchboard_membership::{Batch, Command, Membership, Name};

fn id(i: u64) -> String {
    format!("{:022x}.1", i.wrapping_mul(0x9E37_79B9_7F4A_7C15))
}

fn median(mut runs: Vec<Duration>) -> Duration {
    runs.sort();
    runs[runs.len() / 2]
}

fn time(f: impl Fn() -> usize) -> Duration {
    median(
        (0..21)
            .map(|_| {
                let start = Instant::now();
                std::hint::black_box(f());
                start.elapsed()
            })
            .collect(),
    )
}

fn main() {
    let n: u64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(100_000);
    let hub = Name::from("chat");
    let mut m = Membership::new();
    m.apply(&Batch {
        time_ms: 1,
        commands: vec![Command::NodeHeartbeat {
            node: 1,
            incarnation: 1,
            address: "10.0.0.1:7000".into(),
            lease_ms: u64::MAX / 4,
        }],
    });
    for chunk in (0..n).collect::<Vec<_>>().chunks(1000) {
        let mut commands = Vec::new();
        for &i in chunk {
            let connection = Name::from(id(i));
            commands.push(Command::ConnectionOpened {
                hub: hub.clone(),
                connection: connection.clone(),
                user: Some(Name::from(format!("user{}", i / 2))),
                node: 1,
                incarnation: 1,
            });
            for group in [
                "all".to_owned(),
                format!("g{}", i % 100),
                format!("g{}", (i * 7) % 100),
                format!("g{}", (i * 13) % 100),
            ] {
                commands.push(Command::AddConnectionToGroup {
                    hub: hub.clone(),
                    group: Name::from(group),
                    connection: connection.clone(),
                });
            }
        }
        m.apply(&Batch {
            time_ms: 2,
            commands,
        });
    }
    let middle = {
        let mut ids: Vec<String> = (0..n).map(id).collect();
        ids.sort();
        ids[ids.len() / 2].clone()
    };
    let some = id(n / 3);
    let page = 200;
    println!("{n} connections in one hub, pages of {page}, median of 21 runs");
    println!("{:<44} {:>12} {:>10}", "listing", "time", "vs group");
    for (label, after) in [
        ("from the start", None),
        ("from the middle", Some(middle.as_str())),
    ] {
        let group = time(|| m.group_connections_page("chat", "all", after, page).len());
        let rows = [
            ("group connections (baseline)", group),
            (
                "hub connections",
                time(|| m.hub_connections_page("chat", after, page).len()),
            ),
            (
                "hub groups (101 groups)",
                time(|| m.hub_groups_page("chat", after, page).len()),
            ),
            (
                "user connections (2)",
                time(|| m.user_connections_page("chat", "user7", after, page).len()),
            ),
            (
                "connection groups (4)",
                time(|| m.connection_groups_page("chat", &some, after, page).len()),
            ),
            ("hub counts (the admin page)", time(|| m.hub_counts().len())),
        ];
        println!("-- {label}");
        for (name, t) in rows {
            println!(
                "{:<44} {:>9.1} µs {:>9.2}x",
                name,
                t.as_secs_f64() * 1e6,
                t.as_secs_f64() / group.as_secs_f64()
            );
        }
    }
}
