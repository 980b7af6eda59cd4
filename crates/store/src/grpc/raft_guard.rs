//! What a voter checks in a Raft RPC before openraft sees it. Pure.
//!
//! openraft trusts its peers: a vote with term 2^64−1 is persisted, and the next election's
//! `term + 1` overflows. Credentials keep outsiders away; these checks keep a buggy or hostile
//! *authenticated* peer from poisoning the state:
//! - the sender must be the node the RPC speaks for (the candidate of a vote, the leader of an
//!   append or a snapshot);
//! - terms and log indexes must be plausible: at most [`MAX_TERM`] / [`MAX_INDEX`] (so nothing
//!   ever wraps), and a term at most [`MAX_TERM_JUMP`] ahead of this node's (one request cannot
//!   drag the cluster to the edge);
//! - an append's entries must be consecutive after its `prev_log_id`, with terms that never go
//!   down and never exceed the leader's.

use openraft::raft::{AppendEntriesRequest, InstallSnapshotRequest, VoteRequest};
use openraft::{LogId, Vote};

use crate::TypeConfig;

/// No term above this is accepted (2^62: at one election a millisecond, 146 million years).
pub(crate) const MAX_TERM: u64 = 1 << 62;
/// No log index above this is accepted.
pub(crate) const MAX_INDEX: u64 = 1 << 62;
/// How far ahead of this node's term a request's term may be (2^32: a voter cut off and
/// campaigning twice a second needs 68 years to get that far).
pub(crate) const MAX_TERM_JUMP: u64 = 1 << 32;

/// Why an RPC was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// The authenticated sender speaks for another node.
    Impersonation(String),
    /// A value no real cluster produces.
    Implausible(String),
}

fn check_term(term: u64, my_term: u64, what: &str) -> Result<(), Refusal> {
    if term > MAX_TERM {
        return Err(Refusal::Implausible(format!(
            "{what} term {term} exceeds the largest accepted term {MAX_TERM}"
        )));
    }
    if term > my_term.saturating_add(MAX_TERM_JUMP) {
        return Err(Refusal::Implausible(format!(
            "{what} term {term} is more than {MAX_TERM_JUMP} ahead of this node's term {my_term}"
        )));
    }
    Ok(())
}

fn check_vote(vote: &Vote<u64>, sender: u64, my_term: u64, role: &str) -> Result<(), Refusal> {
    if vote.leader_id.node_id != sender {
        return Err(Refusal::Impersonation(format!(
            "speak as the {role} node {}",
            vote.leader_id.node_id
        )));
    }
    check_term(vote.leader_id.term, my_term, role)
}

/// A log id no later than the sender's own term.
fn check_log_id(log_id: Option<&LogId<u64>>, max_term: u64, what: &str) -> Result<(), Refusal> {
    let Some(log_id) = log_id else {
        return Ok(());
    };
    if log_id.index > MAX_INDEX {
        return Err(Refusal::Implausible(format!(
            "{what} index {} exceeds the largest accepted index {MAX_INDEX}",
            log_id.index
        )));
    }
    if log_id.leader_id.term > max_term {
        return Err(Refusal::Implausible(format!(
            "{what} has term {}, later than the sender's term {max_term}",
            log_id.leader_id.term
        )));
    }
    Ok(())
}

pub(crate) fn check_vote_request(
    rpc: &VoteRequest<u64>,
    sender: u64,
    my_term: u64,
) -> Result<(), Refusal> {
    check_vote(&rpc.vote, sender, my_term, "candidate")?;
    check_log_id(
        rpc.last_log_id.as_ref(),
        rpc.vote.leader_id.term,
        "the last log id",
    )
}

pub(crate) fn check_append(
    rpc: &AppendEntriesRequest<TypeConfig>,
    sender: u64,
    my_term: u64,
) -> Result<(), Refusal> {
    check_vote(&rpc.vote, sender, my_term, "leader")?;
    let term = rpc.vote.leader_id.term;
    check_log_id(rpc.prev_log_id.as_ref(), term, "prev_log_id")?;
    check_log_id(rpc.leader_commit.as_ref(), term, "leader_commit")?;
    let mut previous = rpc.prev_log_id;
    for entry in &rpc.entries {
        check_log_id(Some(&entry.log_id), term, "an entry")?;
        let expected = previous.map_or(Some(0), |p| p.index.checked_add(1));
        // openraft's first real entry is index 0 when there is no prev_log_id; consecutive after.
        if previous.is_some() && Some(entry.log_id.index) != expected
            || previous.is_none() && entry.log_id.index != 0
        {
            return Err(Refusal::Implausible(format!(
                "entry {} does not follow {}",
                entry.log_id.index,
                previous.map_or("the start of the log".to_owned(), |p| p.index.to_string())
            )));
        }
        if previous.is_some_and(|p| entry.log_id.leader_id.term < p.leader_id.term) {
            return Err(Refusal::Implausible(format!(
                "entry {} has a lower term than the entry before it",
                entry.log_id.index
            )));
        }
        previous = Some(entry.log_id);
    }
    Ok(())
}

pub(crate) fn check_snapshot(
    rpc: &InstallSnapshotRequest<TypeConfig>,
    sender: u64,
    my_term: u64,
) -> Result<(), Refusal> {
    check_vote(&rpc.vote, sender, my_term, "leader")?;
    check_log_id(
        rpc.meta.last_log_id.as_ref(),
        rpc.vote.leader_id.term,
        "the snapshot's last log id",
    )
}

#[cfg(test)]
mod tests {
    use openraft::{CommittedLeaderId, Entry, EntryPayload, LeaderId};
    use proptest::prelude::*;

    use super::*;

    fn vote(term: u64, node: u64) -> Vote<u64> {
        Vote {
            leader_id: LeaderId::new(term, node),
            committed: false,
        }
    }

    fn log_id(term: u64, index: u64) -> LogId<u64> {
        LogId::new(CommittedLeaderId::new(term, 1), index)
    }

    fn entry(term: u64, index: u64) -> Entry<TypeConfig> {
        Entry {
            log_id: log_id(term, index),
            payload: EntryPayload::Blank,
        }
    }

    fn append(
        term: u64,
        prev: Option<LogId<u64>>,
        entries: Vec<Entry<TypeConfig>>,
    ) -> AppendEntriesRequest<TypeConfig> {
        AppendEntriesRequest {
            vote: vote(term, 1),
            prev_log_id: prev,
            entries,
            leader_commit: None,
        }
    }

    #[test]
    fn a_real_vote_passes_and_the_poisoned_one_does_not() {
        let ok = VoteRequest::new(vote(8, 2), Some(log_id(7, 100)));
        assert_eq!(check_vote_request(&ok, 2, 7), Ok(()));
        let poisoned = VoteRequest::new(vote(u64::MAX, 2), Some(log_id(7, 100)));
        assert!(matches!(
            check_vote_request(&poisoned, 2, 7),
            Err(Refusal::Implausible(_))
        ));
        let jump = VoteRequest::new(vote(7 + MAX_TERM_JUMP + 1, 2), None);
        assert!(matches!(
            check_vote_request(&jump, 2, 7),
            Err(Refusal::Implausible(_))
        ));
        let far_log = VoteRequest::new(vote(8, 2), Some(log_id(7, u64::MAX)));
        assert!(matches!(
            check_vote_request(&far_log, 2, 7),
            Err(Refusal::Implausible(_))
        ));
        let future_log = VoteRequest::new(vote(8, 2), Some(log_id(9, 1)));
        assert!(matches!(
            check_vote_request(&future_log, 2, 7),
            Err(Refusal::Implausible(_))
        ));
    }

    #[test]
    fn only_the_candidate_itself_may_ask_for_votes() {
        let rpc = VoteRequest::new(vote(8, 2), None);
        assert!(matches!(
            check_vote_request(&rpc, 3, 7),
            Err(Refusal::Impersonation(_))
        ));
        assert!(matches!(
            check_append(&append(8, None, vec![]), 2, 7),
            Err(Refusal::Impersonation(_))
        ));
    }

    #[test]
    fn appends_must_be_consecutive_and_monotonic() {
        let prev = Some(log_id(3, 10));
        assert_eq!(
            check_append(&append(5, prev, vec![entry(3, 11), entry(5, 12)]), 1, 5),
            Ok(())
        );
        assert_eq!(
            check_append(&append(5, None, vec![entry(0, 0), entry(1, 1)]), 1, 5),
            Ok(())
        );
        assert_eq!(check_append(&append(5, prev, vec![]), 1, 5), Ok(()));
        for bad in [
            vec![entry(3, 12)],
            vec![entry(3, 11), entry(3, 11)],
            vec![entry(2, 11)],
            vec![entry(3, 11), entry(6, 12)],
            vec![entry(4, 11), entry(3, 12)],
        ] {
            assert!(
                matches!(
                    check_append(&append(5, prev, bad.clone()), 1, 5),
                    Err(Refusal::Implausible(_))
                ),
                "{bad:?}"
            );
        }
        assert!(check_append(&append(5, None, vec![entry(1, 5)]), 1, 5).is_err());
        let wrap = append(5, Some(log_id(3, u64::MAX)), vec![entry(3, 0)]);
        assert!(check_append(&wrap, 1, 5).is_err());
    }

    proptest! {
        #[test]
        fn a_term_that_passes_can_always_be_incremented(term in any::<u64>(), mine in 0u64..MAX_TERM) {
            let rpc = VoteRequest::new(vote(term, 2), None);
            if check_vote_request(&rpc, 2, mine).is_ok() {
                prop_assert!(term.checked_add(1 << 61).is_some());
                prop_assert!(term <= mine + MAX_TERM_JUMP);
            }
        }

        #[test]
        fn consecutive_appends_pass(start in 0u64..1_000_000, terms in proptest::collection::vec(0u64..3, 0..20)) {
            let prev = log_id(10, start);
            let mut term = 10;
            let entries: Vec<_> = terms.iter().enumerate().map(|(i, step)| {
                term += step;
                entry(term, start + 1 + i as u64)
            }).collect();
            let rpc = append(term.max(10), Some(prev), entries);
            prop_assert_eq!(check_append(&rpc, 1, 10), Ok(()));
        }
    }
}
