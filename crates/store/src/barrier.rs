//! Read barriers: "make my view reflect every write acknowledged before now".
//!
//! A write acknowledged by one node has been applied by the leader, but another node's view may
//! still lag by a few milliseconds (a follower learns of commits with the next append; a
//! gateway's replica one hop later). Routing a message or answering an existence check from such
//! a view could miss a group join a client just made through another node. A barrier asks the
//! leader for the commit point it confirms with a quorum (every acknowledged write is at or
//! below it) and waits until the local view has applied as much. The leader itself shares its
//! quorum rounds through the same coalescing (`RaftStore::read_index`).
//!
//! Asking costs a round trip, so concurrent callers share one: a caller joins the round in
//! flight only if it started after the caller arrived, otherwise the next one, which starts when
//! the current one ends. Under load this is one request per round trip, whatever the call rate.
//! The Redis engine shares its "last entry of the stream" questions the same way.

use std::future::Future;

use futures::future::{BoxFuture, FutureExt, Shared};
use parking_lot::Mutex;

type Round = Shared<BoxFuture<'static, Result<u64, String>>>;

#[derive(Default)]
struct Rounds {
    /// The round in flight (it may have started before a given caller arrived).
    current: Option<Round>,
    /// The round that starts when `current` ends; everyone arriving meanwhile joins it.
    next: Option<Round>,
}

/// Coalesces concurrent "what is the leader's confirmed commit point?" questions; see the
/// module docs.
#[derive(Default)]
pub struct ReadBarrier {
    rounds: Mutex<Rounds>,
}

impl ReadBarrier {
    /// The index `ask` answers, from a round that started after this call.
    pub async fn leader_index<F, Fut>(&self, ask: F) -> Result<u64, String>
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = Result<u64, String>> + Send + 'static,
    {
        let round = {
            let mut rounds = self.rounds.lock();
            if rounds.current.as_ref().is_some_and(|r| r.peek().is_some()) {
                rounds.current = rounds.next.take();
            }
            match rounds.current.clone() {
                None => {
                    let round = ask().boxed().shared();
                    rounds.current = Some(round.clone());
                    round
                }
                Some(current) => rounds
                    .next
                    .get_or_insert_with(|| {
                        async move {
                            let _ = current.await;
                            ask().await
                        }
                        .boxed()
                        .shared()
                    })
                    .clone(),
            }
        };
        round.await
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn concurrent_callers_share_rounds_that_start_after_they_arrive() {
        let barrier = Arc::new(ReadBarrier::default());
        let asked = Arc::new(AtomicU64::new(0));
        let ask = |asked: Arc<AtomicU64>| {
            move || async move {
                tokio::time::sleep(Duration::from_millis(20)).await;
                Ok(asked.fetch_add(1, Ordering::SeqCst) + 1)
            }
        };
        // The first caller starts round 1.
        let first = {
            let (b, a) = (barrier.clone(), asked.clone());
            tokio::spawn(async move { b.leader_index(ask(a)).await })
        };
        tokio::time::sleep(Duration::from_millis(5)).await;
        // Fifty callers arrive while round 1 is in flight: they all share round 2.
        let mut later = Vec::new();
        for _ in 0..50 {
            let (b, a) = (barrier.clone(), asked.clone());
            later.push(tokio::spawn(async move { b.leader_index(ask(a)).await }));
        }
        assert_eq!(first.await.unwrap(), Ok(1));
        for handle in later {
            assert_eq!(handle.await.unwrap(), Ok(2));
        }
        assert_eq!(asked.load(Ordering::SeqCst), 2, "two rounds for 51 callers");
        // A caller arriving after both finished starts a fresh round.
        assert_eq!(barrier.leader_index(ask(asked.clone())).await, Ok(3));
    }
}
