//! Measures the memory the membership state costs per connection, as resident set growth.
//!
//! Run with `cargo run -p switchboard-membership --example memory [connections]`. The commands
//! are applied in batches of 1,000 built from fresh strings (as if decoded from the Raft log) and
//! dropped after each apply, so what remains resident is the state.

use std::fs;

use switchboard_membership::{Batch, Command, Membership, Name};

fn rss_bytes() -> u64 {
    // Field 2 of /proc/self/statm is the resident set in pages (4 KiB on the machines we use).
    fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| {
            s.split_whitespace()
                .nth(1)
                .and_then(|p| p.parse::<u64>().ok())
        })
        .map_or(0, |pages| pages * 4096)
}

fn connection_id(i: u64) -> String {
    // The shape of real ids: 22 base64url characters, '.', the node.
    format!(
        "{:022x}.{}",
        i.wrapping_mul(0x9E37_79B9_7F4A_7C15),
        1 + i % 2
    )
}

fn measure(label: &str, count: u64, command: impl Fn(u64) -> Vec<Command>) {
    let mut m = Membership::new();
    let nodes = (1..=2)
        .map(|node| Command::NodeHeartbeat {
            node,
            incarnation: 1,
            address: format!("10.0.0.{node}:7000"),
            lease_ms: u64::MAX / 4,
        })
        .collect();
    m.apply(&Batch {
        time_ms: 1,
        commands: nodes,
    });
    let before = rss_bytes();
    let mut i = 0;
    while i < count {
        let end = (i + 1_000).min(count);
        let commands = (i..end).flat_map(&command).collect();
        m.apply(&Batch {
            time_ms: 1,
            commands,
        });
        i = end;
    }
    let after = rss_bytes();
    println!(
        "{label}: {count} connections, {} bytes each ({:?})",
        after.saturating_sub(before) / count.max(1),
        m.stats()
    );
}

fn main() {
    let count: u64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(200_000);
    let open = |i: u64, user: Option<String>| Command::ConnectionOpened {
        hub: Name::from("chat"),
        connection: Name::from(connection_id(i)),
        user: user.map(Name::from),
        node: 1 + i % 2,
        incarnation: 1,
    };
    let arg = std::env::args().nth(2).unwrap_or_default();
    match arg.as_str() {
        "anonymous" => measure("anonymous, no groups", count, |i| vec![open(i, None)]),
        "group" => measure("own user, one shared group", count, |i| {
            vec![
                open(i, Some(format!("user-{i:08}"))),
                Command::AddConnectionToGroup {
                    hub: Name::from("chat"),
                    group: Name::from("room"),
                    connection: Name::from(connection_id(i)),
                },
            ]
        }),
        _ => measure("own user, no groups", count, |i| {
            vec![open(i, Some(format!("user-{i:08}")))]
        }),
    }
}
