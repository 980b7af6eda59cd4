//! The REST senders: which message goes where, when, and how many deliveries it owes.
//!
//! Message `seq` is addressed by the scenario ([`Plan::addressee`]) and owes one delivery to
//! every open connection it matches, counted only once the server accepted it (2xx). A `--rate`
//! run sends message `seq` at `start + seq / rate` (open loop: a slow answer does not delay the
//! next send unless `--send-concurrency` requests are already in flight, which is counted as
//! late); a `--burst` run sends K messages back to back. The timestamp in each message is taken
//! just before its request is written.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio_util::task::TaskTracker;

use crate::cli::Scenario;
use crate::client::{group_name, user_name};
use crate::frames::{self, Stamp};
use crate::rest::{Addressee, RestClient};
use crate::stats::{now_us, ErrorSample, OpenConnection};

/// A send counts as late when it leaves more than this after its scheduled time.
const LATE: Duration = Duration::from_millis(5);

/// Who gets message `seq`, and how many deliveries each addressee owes.
pub struct Plan {
    scenario: Scenario,
    users: usize,
    groups: usize,
    /// Open connections per user / group index.
    per_user: HashMap<usize, u64>,
    per_group: HashMap<usize, u64>,
    /// Open connections with their ids (send to connection).
    connections: Vec<String>,
    open: u64,
}

impl Plan {
    pub fn new(scenario: Scenario, users: usize, groups: usize, open: &[OpenConnection]) -> Plan {
        let mut per_user = HashMap::new();
        let mut per_group = HashMap::new();
        for c in open {
            *per_user.entry(c.index % users.max(1)).or_insert(0) += 1;
            *per_group.entry(c.index % groups.max(1)).or_insert(0) += 1;
        }
        Plan {
            scenario,
            users: users.max(1),
            groups: groups.max(1),
            per_user,
            per_group,
            connections: open
                .iter()
                .filter_map(|c| c.connection_id.clone())
                .collect(),
            open: open.len() as u64,
        }
    }

    /// The addressee of message `seq` and the deliveries it owes.
    pub fn addressee(&self, seq: u64) -> (Addressee, u64) {
        let seq = usize::try_from(seq).unwrap_or(usize::MAX);
        match self.scenario {
            Scenario::Idle | Scenario::Broadcast => (Addressee::All, self.open),
            Scenario::User => {
                let u = seq % self.users;
                (
                    Addressee::User(user_name(u, self.users)),
                    self.per_user.get(&u).copied().unwrap_or(0),
                )
            }
            Scenario::Group => {
                let g = seq % self.groups;
                (
                    Addressee::Group(group_name(g, self.groups)),
                    self.per_group.get(&g).copied().unwrap_or(0),
                )
            }
            Scenario::Connection => match self.connections.len() {
                0 => (Addressee::Connection("none".into()), 0),
                n => (Addressee::Connection(self.connections[seq % n].clone()), 1),
            },
        }
    }
}

/// How fast to send.
#[derive(Debug, Clone, Copy)]
pub enum Pace {
    Rate { per_second: f64, total: u64 },
    Burst(u64),
}

/// What the senders did.
#[derive(Debug, Clone, Default)]
pub struct SendStats {
    pub requested: u64,
    pub ok: u64,
    /// Deliveries owed by the accepted sends.
    pub expected: u64,
    pub late: u64,
    pub first_send_us: Option<u64>,
    pub last_answer_us: Option<u64>,
    pub errors: ErrorSample,
}

impl SendStats {
    /// Accepted sends per second, first send to last answer.
    pub fn per_second(&self) -> Option<f64> {
        let (a, b) = (self.first_send_us?, self.last_answer_us?);
        (b > a).then(|| self.ok as f64 / ((b - a) as f64 / 1e6))
    }
}

/// Sends every message of `pace` with at most `concurrency` requests in flight.
pub async fn drive(
    rest: Arc<RestClient>,
    plan: Arc<Plan>,
    pace: Pace,
    concurrency: usize,
    payload_bytes: usize,
) -> SendStats {
    let padding: Arc<str> = frames::padding(payload_bytes).into();
    let tally = Arc::new(Mutex::new(SendStats::default()));
    let permits = Arc::new(Semaphore::new(concurrency.max(1)));
    let tasks = TaskTracker::new();
    let (total, rate) = match pace {
        Pace::Rate { per_second, total } => (total, Some(per_second)),
        Pace::Burst(k) => (k, None),
    };
    let start = Instant::now();
    for seq in 0..total {
        let due = rate.map(|r| start + Duration::from_secs_f64(seq as f64 / r));
        if let Some(due) = due {
            tokio::time::sleep_until(due).await;
        }
        let Ok(permit) = permits.clone().acquire_owned().await else {
            break;
        };
        let late = due.is_some_and(|d| Instant::now() > d + LATE);
        let (rest, plan, padding, tally) =
            (rest.clone(), plan.clone(), padding.clone(), tally.clone());
        tasks.spawn(async move {
            let (to, owed) = plan.addressee(seq);
            let sent_at_us = now_us();
            let body = frames::rest_body(Stamp { seq, sent_at_us }, &padding);
            let result = rest.send(&to, body).await;
            let answered = now_us();
            drop(permit);
            let mut t = tally.lock();
            t.requested += 1;
            t.late += u64::from(late);
            t.first_send_us = Some(t.first_send_us.map_or(sent_at_us, |f| f.min(sent_at_us)));
            t.last_answer_us = t.last_answer_us.max(Some(answered));
            match result {
                Ok(()) => {
                    t.ok += 1;
                    t.expected += owed;
                }
                Err(e) => t.errors.add(e.kind(), 1),
            }
        });
    }
    tasks.close();
    tasks.wait().await;
    let stats = tally.lock().clone();
    stats
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open(n: usize) -> Vec<OpenConnection> {
        (0..n)
            .map(|index| OpenConnection {
                index,
                connection_id: Some(format!("c{index}")),
            })
            .collect()
    }

    #[test]
    fn broadcast_owes_every_open_connection() {
        let plan = Plan::new(Scenario::Broadcast, 1, 1, &open(7));
        assert_eq!(plan.addressee(3), (Addressee::All, 7));
    }

    #[test]
    fn users_groups_and_connections_round_robin() {
        let mut conns = open(10);
        conns.remove(4); // connection 4 failed to open: user4 and group0 owe one less
        let plan = Plan::new(Scenario::User, 5, 1, &conns);
        assert_eq!(plan.addressee(0), (Addressee::User("user0".into()), 2));
        assert_eq!(plan.addressee(9), (Addressee::User("user4".into()), 1));
        let plan = Plan::new(Scenario::Group, 1, 2, &conns);
        assert_eq!(plan.addressee(2), (Addressee::Group("group0".into()), 4));
        assert_eq!(plan.addressee(3), (Addressee::Group("group1".into()), 5));
        let plan = Plan::new(Scenario::Connection, 1, 1, &conns);
        assert_eq!(plan.addressee(4), (Addressee::Connection("c5".into()), 1));
        assert_eq!(Plan::new(Scenario::Connection, 1, 1, &[]).addressee(0).1, 0);
    }
}
