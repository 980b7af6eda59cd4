//! Presence across gateways: asking every other gateway about the connections it holds, and
//! changing them there (`Presence` in `proto/`).
//!
//! No gateway keeps a copy of another's connections (see `local`). What needs them cluster-wide
//! asks the gateways the store lists (each holds a live lease), in parallel, over the
//! authenticated cluster plane:
//!
//! - existence checks, the group page and the hub counts (`query_*`, `group_page`,
//!   `hub_counts`): the union of the answers; a gateway that does not answer in time counts as
//!   holding nothing (counted and logged: its connections cannot be reached either);
//! - the listings (`list`): the union too, with the number of gateways that did not answer, so
//!   the REST extensions can refuse a page that may be missing their part
//!   ([`Listing::complete`]);
//! - a change to one connection (`change_connection`): applied where the connection is; not
//!   found anywhere while a gateway did not answer is `503` (the change may belong there);
//! - a user-group change reaching the user's current connections (`change_user`), after its
//!   durable entry is written: sent to every gateway with the log index the writer has
//!   applied, so the holder applies it once its own view has that entry too (a connection
//!   opening meanwhile reads it there instead). A gateway that does not answer is retried in
//!   the background while the store still lists it and this gateway is not shutting down.
//! - a token's single use (`claim`): asked of the gateway that issued it, which remembers used
//!   tokens until they expire.
//!
//! The cost of a question is one call per gateway; nothing is stored per connection elsewhere,
//! so a gateway's memory follows its own connections, not the cluster's. This is the design's
//! trade: membership questions and connection changes cost O(gateways) calls, which is cheap for
//! the tens of gateways a Switchboard runs, and exact (no directory to keep in step).

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::admin::trace::Item as TraceItem;
use futures::stream::{FuturesUnordered, StreamExt};
use parking_lot::Mutex;
pub(crate) use switchboard_cluster::proto::listing::Kind as ListingKind;
use switchboard_cluster::proto::presence_client::PresenceClient;
use switchboard_cluster::proto::presence_query::What;
use switchboard_cluster::proto::presence_server::{Presence, PresenceServer};
use switchboard_cluster::proto::{
    Announced, GroupPage, HubCount, HubCountsRequest, HubSet, HubsRequest, Listing as ListingQuery,
    PresenceAnswer, PresenceApplied, PresenceChange, PresenceMember, PresenceQuery, TicketClaim,
    TicketClaimed, TraceEvent, TraceRequest,
};
use switchboard_core::{Error, NodeId};
use switchboard_membership::{Command, Name};
use switchboard_net::peer_identity;
use switchboard_net::ClusterChannel as Channel;
use tonic::{Request, Response, Status};

use crate::error::{ApiError, ApiResult};
use crate::local::is_local_change;
use crate::Shared;

/// How long one gateway has to answer a question.
const CALL_TIMEOUT: Duration = Duration::from_secs(3);
/// How long a holder waits for its view to apply a user-group change's entry.
const CATCH_UP_WAIT: Duration = Duration::from_secs(2);
/// Between background retries of a change a gateway did not take.
const RETRY_EVERY: Duration = Duration::from_millis(500);
/// Used tokens remembered at most (a token is remembered until it expires).
const MAX_CLAIMS: usize = 1 << 20;

/// Another gateway, as the store lists it.
#[derive(Debug, Clone)]
pub(crate) struct Peer {
    pub(crate) node: NodeId,
    pub(crate) incarnation: u64,
    pub(crate) address: String,
}

/// Every other gateway with a live lease in this node's view of the store that may hold a
/// connection of `hub` (see `interest`).
pub(crate) fn peers_for(shared: &Shared, hub: &str) -> Vec<Peer> {
    let mut peers = peers(shared);
    peers.retain(|p| shared.interest.may_hold(p.node, p.incarnation, hub));
    peers
}

/// Every other gateway with a live lease in this node's view of the store.
pub(crate) fn peers(shared: &Shared) -> Vec<Peer> {
    if shared.config.cluster.is_none() {
        return Vec::new();
    }
    let me = shared.config.node_id;
    let view = shared.store.view();
    let state = view.read();
    state
        .nodes()
        .filter(|n| n.node != me)
        .map(|n| Peer {
            node: n.node,
            incarnation: n.incarnation,
            address: n.address.clone(),
        })
        .collect()
}

fn client(shared: &Shared, address: &str) -> Result<PresenceClient<Channel>, Status> {
    let channels = shared
        .config
        .cluster
        .as_ref()
        .ok_or_else(|| Status::unavailable("no cluster"))?;
    let channel = channels
        .get(address)
        .map_err(|e| Status::unavailable(e.to_string()))?;
    let max = channels.max_message_bytes();
    Ok(PresenceClient::new(channel)
        .max_decoding_message_size(max)
        .max_encoding_message_size(max))
}

fn timed<T>(message: T) -> Request<T> {
    let mut request = Request::new(message);
    request.set_timeout(CALL_TIMEOUT);
    request
}

/// Counts a call's outcome and logs a failure at a limited rate.
fn record(rpc: &'static str, peer: &Peer, started: Instant, result: &Result<(), Status>) {
    let outcome = if result.is_ok() { "ok" } else { "failed" };
    metrics::counter!("switchboard_presence_calls_total", "rpc" => rpc, "outcome" => outcome)
        .increment(1);
    metrics::histogram!("switchboard_presence_call_seconds", "rpc" => rpc)
        .record(started.elapsed().as_secs_f64());
    if let Err(status) = result {
        static LAST: Mutex<Option<Instant>> = Mutex::new(None);
        let mut last = LAST.lock();
        if last.is_none_or(|t| t.elapsed() >= Duration::from_secs(10)) {
            *last = Some(Instant::now());
            tracing::warn!(rpc, peer = peer.node, address = %peer.address, %status, "a gateway did not answer a presence call");
        }
    }
}

/// Calls `f` on every peer at once; the answers as they come, paired with their peer.
fn call_all<T, F, Fut>(
    shared: &Shared,
    rpc: &'static str,
    peers: Vec<Peer>,
    f: F,
) -> FuturesUnordered<impl Future<Output = (Peer, Result<T, Status>)>>
where
    F: Fn(PresenceClient<Channel>) -> Fut,
    Fut: Future<Output = Result<T, Status>>,
{
    peers
        .into_iter()
        .map(|peer| {
            let call = client(shared, &peer.address).map(&f);
            async move {
                let started = Instant::now();
                let result = match call {
                    Ok(call) => call.await,
                    Err(status) => Err(status),
                };
                record(
                    rpc,
                    &peer,
                    started,
                    &result.as_ref().map(|_| ()).map_err(Clone::clone),
                );
                (peer, result)
            }
        })
        .collect()
}

/// `query` to every other gateway serving `hub`, at once; the answers as they come.
fn ask_all(
    shared: &Shared,
    hub: &str,
    query: PresenceQuery,
) -> FuturesUnordered<impl Future<Output = (Peer, Result<PresenceAnswer, Status>)>> {
    call_all(shared, "query", peers_for(shared, hub), move |mut c| {
        let query = query.clone();
        async move { c.query(timed(query)).await.map(Response::into_inner) }
    })
}

/// An answer from the incarnation the store lists or a newer one (the view has not caught up
/// with a restart yet); an older process's is ignored.
fn current(peer: &Peer, incarnation: u64) -> bool {
    incarnation >= peer.incarnation
}

/// Whether any other gateway answers `what` with found.
async fn found_anywhere(shared: &Shared, hub: &str, what: What) -> bool {
    let query = PresenceQuery {
        hub: hub.to_owned(),
        what: Some(what),
    };
    let mut calls = ask_all(shared, hub, query);
    while let Some((peer, answer)) = calls.next().await {
        if let Ok(answer) = answer {
            if answer.found && current(&peer, answer.incarnation) {
                return true;
            }
        }
    }
    false
}

/// Whether the connection is open on any gateway.
pub(crate) async fn connection_exists(shared: &Shared, hub: &str, connection: &str) -> bool {
    if shared.local.read().connection(hub, connection).is_some() {
        return true;
    }
    found_anywhere(shared, hub, What::Connection(connection.to_owned())).await
}

/// The gateway holding the connection, when it is another one.
pub(crate) async fn holder(shared: &Shared, hub: &str, connection: &str) -> Option<Peer> {
    if shared.local.read().connection(hub, connection).is_some() {
        return None;
    }
    let query = PresenceQuery {
        hub: hub.to_owned(),
        what: Some(What::Connection(connection.to_owned())),
    };
    let mut calls = ask_all(shared, hub, query);
    while let Some((peer, answer)) = calls.next().await {
        if answer.is_ok_and(|a| a.found && current(&peer, a.incarnation)) {
            return Some(peer);
        }
    }
    None
}

/// Whether the user has a connection on any gateway.
pub(crate) async fn user_exists(shared: &Shared, hub: &str, user: &str) -> bool {
    if shared.local.read().user_has_connections(hub, user) {
        return true;
    }
    found_anywhere(shared, hub, What::User(user.to_owned())).await
}

/// Whether the group has a connection on any gateway.
pub(crate) async fn group_exists(shared: &Shared, hub: &str, group: &str) -> bool {
    if shared.local.read().group_has_connections(hub, group) {
        return true;
    }
    found_anywhere(shared, hub, What::Group(group.to_owned())).await
}

/// One entry of a cluster-wide listing ([`list`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Listed {
    /// The connection id or the group name: what the listing is ordered by.
    pub(crate) key: Name,
    /// A connection's user (connection listings).
    pub(crate) user: Option<Name>,
    /// A group's members (hub group listings), summed over the gateways.
    pub(crate) count: u64,
    /// The gateway holding the connection (connection listings).
    pub(crate) node: Option<NodeId>,
}

impl Listing {
    /// The listing, or 503 when a gateway serving the hub did not answer: a page without its
    /// part would look complete, and the next page would skip that part for good.
    pub(crate) fn complete(self) -> ApiResult<Listing> {
        if self.missing > 0 {
            return Err(ApiError::new(
                switchboard_core::ErrorCode::Unavailable,
                format!(
                    "{} gateway(s) serving the hub did not answer in time; retry.",
                    self.missing
                ),
            ));
        }
        Ok(self)
    }

    /// A connection's groups: complete once a gateway said it holds the connection (the
    /// others hold nothing of it), else as [`Listing::complete`].
    pub(crate) fn connection_found(self) -> ApiResult<Listing> {
        if self.found {
            Ok(self)
        } else {
            self.complete()
        }
    }
}

impl Listed {
    fn connection(key: Name, user: Option<Name>, node: NodeId) -> Listed {
        Listed {
            key,
            user,
            count: 0,
            node: Some(node),
        }
    }

    fn group(key: Name, count: u64) -> Listed {
        Listed {
            key,
            user: None,
            count,
            node: None,
        }
    }
}

/// A cluster-wide listing's page.
#[derive(Debug, Default)]
pub(crate) struct Listing {
    /// A connection's groups: whether any gateway holds the connection. Otherwise whether
    /// anything was listed.
    pub(crate) found: bool,
    pub(crate) items: Vec<Listed>,
    /// Gateways serving the hub that did not answer in time: the page may lack what they hold.
    pub(crate) missing: usize,
}

/// What this gateway holds of a listing (the same answer for itself and for a peer's query).
fn list_here(
    local: &switchboard_membership::Membership,
    node: NodeId,
    hub: &str,
    kind: ListingKind,
    subject: &str,
    after: Option<&str>,
    limit: usize,
) -> Listing {
    let connection = |(key, user): (Name, Option<Name>)| Listed::connection(key, user, node);
    let group = Listed::group;
    let items: Vec<Listed> = match kind {
        ListingKind::Unspecified => Vec::new(),
        ListingKind::HubConnections => local
            .hub_connections_page(hub, after, limit)
            .into_iter()
            .map(connection)
            .collect(),
        ListingKind::UserConnections => local
            .user_connections_page(hub, subject, after, limit)
            .into_iter()
            .map(|c| connection((c, Some(Name::from(subject)))))
            .collect(),
        ListingKind::ConnectionGroups => {
            let found = local.connection(hub, subject).is_some();
            let items = local
                .connection_groups_page(hub, subject, after, limit)
                .into_iter()
                .map(|g| group(g, 0))
                .collect();
            return Listing {
                found,
                items,
                missing: 0,
            };
        }
        ListingKind::HubGroups => local
            .hub_groups_page(hub, after, limit)
            .into_iter()
            .map(|(g, n)| group(g, n as u64))
            .collect(),
    };
    Listing {
        found: !items.is_empty(),
        items,
        missing: 0,
    }
}

/// The group's members on every gateway, by connection id, after `after`, at most `limit`.
pub(crate) async fn group_page(
    shared: &Shared,
    hub: &str,
    group: &str,
    after: Option<&str>,
    limit: usize,
) -> Vec<(Name, Option<Name>)> {
    let node = shared.config.node_id;
    let items = shared
        .local
        .read()
        .group_connections_page(hub, group, after, limit)
        .into_iter()
        .map(|(key, user)| Listed::connection(key, user, node))
        .collect();
    let here = Listing {
        found: false,
        items,
        missing: 0,
    };
    let query = PresenceQuery {
        hub: hub.to_owned(),
        what: Some(What::GroupPage(GroupPage {
            group: group.to_owned(),
            after: after.unwrap_or_default().to_owned(),
            limit: u32::try_from(limit).unwrap_or(u32::MAX),
        })),
    };
    gather(shared, hub, query, here, after, limit)
        .await
        .items
        .into_iter()
        .map(|l| (l.key, l.user))
        .collect()
}

/// A listing across every gateway serving `hub`: each one's first `limit` after `after`,
/// merged in key order and cut at `limit` (what lies beyond cannot be on this page). Gateways
/// that do not answer in time are counted in [`Listing::missing`].
pub(crate) async fn list(
    shared: &Shared,
    hub: &str,
    kind: ListingKind,
    subject: &str,
    after: Option<&str>,
    limit: usize,
) -> Listing {
    let here = list_here(
        &shared.local.read(),
        shared.config.node_id,
        hub,
        kind,
        subject,
        after,
        limit,
    );
    let query = PresenceQuery {
        hub: hub.to_owned(),
        what: Some(What::Listing(ListingQuery {
            kind: kind as i32,
            subject: subject.to_owned(),
            after: after.unwrap_or_default().to_owned(),
            limit: u32::try_from(limit).unwrap_or(u32::MAX),
        })),
    };
    gather(shared, hub, query, here, after, limit).await
}

/// Asks `query` of every gateway serving `hub` and merges their answers with `here` (this
/// gateway's) in key order, cut at `limit`: what lies beyond cannot be on this page.
async fn gather(
    shared: &Shared,
    hub: &str,
    query: PresenceQuery,
    here: Listing,
    after: Option<&str>,
    limit: usize,
) -> Listing {
    let mut found = here.found;
    let mut missing = 0;
    let mut merged: BTreeMap<Name, Listed> =
        here.items.into_iter().map(|l| (l.key.clone(), l)).collect();
    let mut calls = ask_all(shared, hub, query);
    while let Some((peer, answer)) = calls.next().await {
        let Ok(answer) = answer else {
            missing += 1;
            continue;
        };
        if !current(&peer, answer.incarnation) {
            continue;
        }
        found |= answer.found;
        let members = answer.members.into_iter().take(limit).map(|m| {
            let user = (!m.user.is_empty()).then(|| Name::from(m.user));
            Listed::connection(m.connection.into(), user, peer.node)
        });
        let counts = answer.counts.into_iter().chain(std::iter::repeat(0));
        let names = answer
            .names
            .into_iter()
            .take(limit)
            .zip(counts)
            .map(|(n, c)| Listed::group(n.into(), c));
        for listed in members.chain(names) {
            if after.is_some_and(|a| &*listed.key <= a) {
                continue;
            }
            match merged.entry(listed.key.clone()) {
                std::collections::btree_map::Entry::Occupied(mut e) => {
                    e.get_mut().count += listed.count;
                }
                std::collections::btree_map::Entry::Vacant(e) => {
                    e.insert(listed);
                }
            }
        }
        while merged.len() > limit {
            merged.pop_last();
        }
    }
    Listing {
        found: found || !merged.is_empty(),
        items: merged.into_values().collect(),
        missing,
    }
}

/// Hubs a gateway reports at most (its largest by connections): an answer stays far below the
/// cluster's message size whatever the number of hubs.
const MAX_HUB_COUNTS: usize = 1000;

/// This gateway's [`MAX_HUB_COUNTS`] largest hubs, by name.
fn largest_hubs(local: &switchboard_membership::Membership) -> Vec<HubCount> {
    let mut hubs = local.hub_counts();
    if hubs.len() > MAX_HUB_COUNTS {
        hubs.sort_unstable_by_key(|h| std::cmp::Reverse(h.connections));
        hubs.truncate(MAX_HUB_COUNTS);
        hubs.sort_unstable_by(|a, b| a.hub.cmp(&b.hub));
    }
    hubs.into_iter().map(hub_count).collect()
}

/// The sizes of the hubs (the largest [`MAX_HUB_COUNTS`]) on every gateway, by gateway id. A
/// gateway that does not answer in time is left out.
pub(crate) async fn hub_counts(shared: &Shared) -> Vec<(NodeId, Vec<HubCount>)> {
    let mine = largest_hubs(&shared.local.read());
    let mut out = vec![(shared.config.node_id, mine)];
    let query = PresenceQuery {
        hub: String::new(),
        what: Some(What::HubCounts(HubCountsRequest {})),
    };
    let mut calls = call_all(shared, "query", peers(shared), move |mut c| {
        let query = query.clone();
        async move { c.query(timed(query)).await.map(Response::into_inner) }
    });
    while let Some((peer, answer)) = calls.next().await {
        if let Ok(answer) = answer {
            if current(&peer, answer.incarnation) {
                out.push((peer.node, answer.hubs));
            }
        }
    }
    out.sort_by_key(|(node, _)| *node);
    out
}

/// Events buffered from one other gateway's trace for one viewer.
const TRACE_BUFFER: usize = 256;

/// The live trace of every other gateway, one stream each. Each is read by a task of its own
/// into a small bounded queue: a viewer that stops reading loses events (counted, and told as
/// `lagged`), and the gateway's cluster channel, shared with presence and fan-out, is always
/// read. A gateway that cannot be followed (no `--admin`, too many streams, gone) says so in
/// one `untraced` event.
pub(crate) fn follow_traces(
    shared: &Shared,
) -> Vec<futures::stream::BoxStream<'static, TraceItem>> {
    peers(shared)
        .into_iter()
        .filter_map(|peer| {
            let mut c = client(shared, &peer.address).ok()?;
            let closed = shared.trace.closed.clone();
            let (tx, rx) = tokio::sync::mpsc::channel::<TraceItem>(TRACE_BUFFER);
            tokio::spawn(async move {
                let untraced = |reason: String| {
                    TraceItem::Event(Arc::from(
                        serde_json::json!({
                            "type": "untraced",
                            "node": peer.node,
                            "time": crate::now_ms(),
                            "reason": reason,
                        })
                        .to_string(),
                    ))
                };
                let opened = tokio::select! {
                    _ = closed.cancelled() => return,
                    _ = tx.closed() => return,
                    opened = c.trace(Request::new(TraceRequest {})) => opened,
                };
                let mut stream = match opened {
                    Ok(stream) => stream.into_inner(),
                    Err(status) => {
                        let _ = tx.try_send(untraced(status.message().to_owned()));
                        return;
                    }
                };
                let mut missed = 0u64;
                loop {
                    let next = tokio::select! {
                        _ = closed.cancelled() => return,
                        _ = tx.closed() => return,
                        next = stream.message() => next,
                    };
                    let item = match next {
                        Ok(Some(e)) if e.lagged => TraceItem::Lagged(
                            serde_json::from_str::<serde_json::Value>(&e.json)
                                .ok()
                                .and_then(|v| v["missed"].as_u64())
                                .unwrap_or(0),
                        ),
                        Ok(Some(e)) => TraceItem::Event(Arc::from(e.json)),
                        Ok(None) => {
                            let _ = tx.try_send(untraced("its trace ended".to_owned()));
                            return;
                        }
                        Err(status) => {
                            let _ = tx.try_send(untraced(status.message().to_owned()));
                            return;
                        }
                    };
                    if missed > 0 && tx.try_send(TraceItem::Lagged(missed)).is_ok() {
                        missed = 0;
                    }
                    if tx.try_send(item).is_err() {
                        missed += 1;
                        metrics::counter!("switchboard_admin_trace_dropped_total").increment(1);
                    }
                }
            });
            Some(tokio_stream::wrappers::ReceiverStream::new(rx).boxed())
        })
        .collect()
}

fn hub_count(c: switchboard_membership::HubCounts) -> HubCount {
    HubCount {
        hub: c.hub.to_string(),
        connections: c.connections as u64,
        users: c.users as u64,
        groups: c.groups as u64,
    }
}

fn encode(command: &Command) -> ApiResult<Vec<u8>> {
    rmp_serde::to_vec(command)
        .map_err(|e| ApiError(Error::internal(format!("cannot encode a change: {e}"))))
}

/// Applies a change to one connection (`AddConnectionToGroup` and the like) where it is held;
/// whether it was found. `503` when it was not found while a gateway did not answer.
pub(crate) async fn change_connection(
    shared: &Shared,
    hub: &str,
    connection: &str,
    command: Command,
) -> ApiResult<bool> {
    if shared.local.read().connection(hub, connection).is_some() {
        return Ok(shared.local.apply(command));
    }
    let change = PresenceChange {
        command: encode(&command)?,
        min_applied_index: 0,
    };
    let mut calls = call_all(shared, "apply", peers_for(shared, hub), |mut c| {
        let change = change.clone();
        async move { c.apply(timed(change)).await.map(Response::into_inner) }
    });
    let mut silent = 0usize;
    while let Some((peer, answer)) = calls.next().await {
        match answer {
            Ok(a) if a.found && current(&peer, a.incarnation) => return Ok(true),
            Ok(_) => {}
            Err(_) => silent += 1,
        }
    }
    // It may have opened here meanwhile.
    if shared.local.read().connection(hub, connection).is_some() {
        return Ok(shared.local.apply(command));
    }
    if silent > 0 {
        return Err(ApiError(Error::unavailable(
            "A gateway that may hold this connection did not answer; try again.",
        )));
    }
    Ok(false)
}

/// Applies a user-group change to the user's current connections on every gateway, after its
/// entry was written to the store (see the module docs). Gateways that do not answer get it
/// again in the background while the store lists them.
pub(crate) async fn change_user(
    shared: &Arc<Shared>,
    hub: &str,
    command: Command,
    index: u64,
) -> ApiResult<()> {
    shared.local.apply_user_change(command.clone(), index);
    let change = PresenceChange {
        command: encode(&command)?,
        min_applied_index: index,
    };
    let mut calls = call_all(shared, "apply", peers_for(shared, hub), |mut c| {
        let change = change.clone();
        async move { c.apply(timed(change)).await.map(Response::into_inner) }
    });
    let mut missed = Vec::new();
    while let Some((peer, answer)) = calls.next().await {
        if answer.is_err() {
            missed.push(peer);
        }
    }
    drop(calls);
    for peer in missed {
        let change = change.clone();
        spawn_retry(shared, peer, "apply", move |mut c| {
            let change = change.clone();
            async move { c.apply(timed(change)).await.map(drop) }
        });
    }
    Ok(())
}

/// How long a gateway has to record an announcement (a listed gateway that is gone costs an
/// opener this much, once per hub).
const ANNOUNCE_TIMEOUT: Duration = Duration::from_secs(1);

/// Opens a connection in this gateway's presence, joined to the groups `groups` reads from the
/// store's view; false if its id is here already. The first connection of a hub announces the
/// hub to every other gateway first (see `interest`).
pub(crate) async fn open(
    shared: &Arc<Shared>,
    hub: &Name,
    connection: &Name,
    user: Option<&Name>,
    groups: impl Fn() -> (Vec<Name>, u64),
) -> bool {
    use crate::interest::Admission;
    loop {
        let admission = shared
            .interest
            .admit(hub, || shared.local.open(hub, connection, user, &groups));
        match admission {
            Admission::Opened(opened) => return opened,
            Admission::Wait(rx) => crate::interest::wait(rx).await,
            Admission::Announce(done, generation) => {
                // Abandoned if this future is dropped before the announcement finishes.
                let guard = AnnounceGuard {
                    shared,
                    hub,
                    done: Some(done),
                };
                let index = announce(shared, hub, generation).await;
                let view = shared.store.view();
                if view.applied_index() < index && !view.wait_applied(index, CATCH_UP_WAIT).await {
                    tracing::warn!(
                        index,
                        applied = view.applied_index(),
                        "opening a hub's first connection before this gateway's view caught up with the others"
                    );
                }
                guard.finish();
            }
        }
    }
}

struct AnnounceGuard<'a> {
    shared: &'a Shared,
    hub: &'a Name,
    done: Option<tokio::sync::watch::Sender<bool>>,
}

impl AnnounceGuard<'_> {
    fn finish(mut self) {
        if let Some(done) = self.done.take() {
            self.shared.interest.announced(self.hub, done);
        }
    }
}

impl Drop for AnnounceGuard<'_> {
    fn drop(&mut self) {
        if let Some(done) = self.done.take() {
            self.shared.interest.abandon(self.hub, done);
        }
    }
}

/// Tells every other gateway that this one serves `hub`; the highest applied store index
/// among their answers. A gateway that does not answer is told again every 500 ms while the
/// store lists it, and learns it on its next pull at the latest.
async fn announce(shared: &Arc<Shared>, hub: &Name, generation: u64) -> u64 {
    let set = HubSet {
        generation,
        hubs: vec![hub.to_string()],
        incarnation: shared.config.incarnation,
        applied_index: shared.store.view().applied_index(),
    };
    let mut calls = call_all(shared, "announce", peers(shared), |mut c| {
        let set = set.clone();
        async move {
            let mut request = Request::new(set);
            request.set_timeout(ANNOUNCE_TIMEOUT);
            c.announce(request).await.map(Response::into_inner)
        }
    });
    let mut index = 0;
    let mut missed = Vec::new();
    while let Some((peer, answer)) = calls.next().await {
        match answer {
            Ok(answer) => index = index.max(answer.applied_index),
            Err(_) => missed.push(peer),
        }
    }
    drop(calls);
    for peer in missed {
        let set = set.clone();
        spawn_retry(shared, peer, "announce", move |mut c| {
            let set = set.clone();
            async move { c.announce(timed(set)).await.map(drop) }
        });
    }
    index
}

/// Retry tasks at most (each one a call every 500 ms to a listed gateway that does not answer).
const MAX_RETRIES: usize = 1024;
static RETRIES: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Calls `f` on `peer` every [`RETRY_EVERY`] until it answers, the store stops listing it (its
/// connections are then gone), or this gateway shuts down. Bounded by [`MAX_RETRIES`]: beyond,
/// the call is given up (counted, logged), as a gateway that keeps its lease but answers nothing
/// would otherwise collect one task per change.
fn spawn_retry<F, Fut>(shared: &Arc<Shared>, peer: Peer, rpc: &'static str, f: F)
where
    F: Fn(PresenceClient<Channel>) -> Fut + Send + 'static,
    Fut: Future<Output = Result<(), Status>> + Send,
{
    use std::sync::atomic::Ordering;
    if RETRIES.fetch_add(1, Ordering::AcqRel) >= MAX_RETRIES {
        RETRIES.fetch_sub(1, Ordering::AcqRel);
        metrics::counter!("switchboard_presence_calls_total", "rpc" => rpc, "outcome" => "given_up")
            .increment(1);
        tracing::warn!(
            rpc,
            peer = peer.node,
            "too many presence retries in flight; giving this one up"
        );
        return;
    }
    let shared = shared.clone();
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(RETRY_EVERY).await;
            let listed = peers(&shared)
                .into_iter()
                .any(|p| p.node == peer.node && p.incarnation == peer.incarnation);
            if !listed || shared.is_draining() {
                break;
            }
            let started = Instant::now();
            let result = match client(&shared, &peer.address) {
                Ok(c) => f(c).await,
                Err(status) => Err(status),
            };
            record(rpc, &peer, started, &result);
            if result.is_ok() {
                break;
            }
        }
        RETRIES.fetch_sub(1, Ordering::AcqRel);
    });
}

/// Asks every other gateway for the hubs it serves, and records the answers (a gateway that
/// does not answer is sent everything until it does).
pub(crate) async fn pull_hubs(shared: &Shared) {
    let listed = peers(shared);
    let nodes: HashSet<NodeId> = listed.iter().map(|p| p.node).collect();
    shared.interest.retain(&nodes);
    let mut calls = call_all(shared, "hubs", listed, |mut c| async move {
        c.hubs(timed(HubsRequest {}))
            .await
            .map(Response::into_inner)
    });
    while let Some((peer, answer)) = calls.next().await {
        match answer {
            Ok(set) if current(&peer, set.incarnation) => shared.interest.replace(
                peer.node,
                set.incarnation,
                set.generation,
                set.hubs.into_iter().map(Name::from).collect(),
            ),
            _ => shared.interest.forget(peer.node),
        }
    }
}

/// Why a connection token cannot open a connection here.
#[derive(Debug)]
pub(crate) enum ClaimRefused {
    /// It opened one already.
    Used,
    /// Its issuer could not be asked.
    Unavailable(ApiError),
}

/// Records the single use of a connection token: with the gateway that issued it (named in
/// the connection id), which remembers used tokens until they expire.
pub(crate) async fn claim(
    shared: &Shared,
    connection: &str,
    expires_at: u64,
) -> Result<(), ClaimRefused> {
    let me = shared.config.node_id;
    let issuer = switchboard_core::node_of_connection_id(connection);
    let remote = match issuer {
        Some(node) if node != me && shared.config.cluster.is_some() => Some(node),
        _ => None,
    };
    let Some(node) = remote else {
        return match claim_here(shared, connection, expires_at) {
            Claim::Claimed => Ok(()),
            Claim::Used => Err(ClaimRefused::Used),
            Claim::Unknown(why) => Err(ClaimRefused::Unavailable(ApiError(Error::unavailable(
                format!("{why}; negotiate again."),
            )))),
        };
    };
    let gone = || {
        ClaimRefused::Unavailable(ApiError(Error::unavailable(
            "The gateway that issued this connection token is not reachable; negotiate again.",
        )))
    };
    let Some(peer) = peers(shared).into_iter().find(|p| p.node == node) else {
        return Err(gone());
    };
    let started = Instant::now();
    let result = match client(shared, &peer.address) {
        Ok(mut c) => c
            .claim(timed(TicketClaim {
                connection: connection.to_owned(),
                expires_at,
            }))
            .await
            .map(Response::into_inner),
        Err(status) => Err(status),
    };
    record(
        "claim",
        &peer,
        started,
        &result.as_ref().map(|_| ()).map_err(Clone::clone),
    );
    match result {
        Ok(TicketClaimed { claimed: true }) => Ok(()),
        Ok(TicketClaimed { claimed: false }) => Err(ClaimRefused::Used),
        Err(_) => Err(gone()),
    }
}

/// What the issuer of a token says about its use.
pub(crate) enum Claim {
    /// Now recorded as used.
    Claimed,
    /// It opened a connection already.
    Used,
    /// This process cannot tell.
    Unknown(&'static str),
}

/// Claims a token this gateway issued (`expires_at` as the token says, the leeway added
/// here). A token issued before this process started is unknown: its use, if any, was
/// recorded by the process before.
pub(crate) fn claim_here(shared: &Shared, connection: &str, expires_at: u64) -> Claim {
    if !issued_by_this_process(shared, expires_at) {
        return Claim::Unknown("this connection token was issued before its gateway restarted");
    }
    let until = expires_at.saturating_add(switchboard_auth::TICKET_LEEWAY_SECS);
    shared.claims.claim(connection, until, crate::now_secs())
}

/// Whether a token of this gateway expiring at `expires_at` was issued by this process (it
/// started at its incarnation, in ms since the epoch; a second of slack for rounding).
pub(crate) fn issued_by_this_process(shared: &Shared, expires_at: u64) -> bool {
    let started = shared.config.incarnation / 1000;
    let lifetime = shared.config.connection_token_lifetime.as_secs();
    expires_at.saturating_add(1) >= started.saturating_add(lifetime)
}

/// Connection tokens that opened a connection, kept until they expire (a token opens one
/// connection; after it expires it opens none anyway). Bounded: beyond [`MAX_CLAIMS`] live
/// entries a claim is refused.
#[derive(Default)]
pub(crate) struct Claims {
    inner: Mutex<ClaimTable>,
}

#[derive(Default)]
struct ClaimTable {
    used: HashMap<Box<str>, u64>,
    /// `(expires_at, connection)` in the order claims arrive; expiries are nearly ordered
    /// (every token lives as long), so the front is what expires first.
    order: VecDeque<(u64, Box<str>)>,
}

impl Claims {
    /// Whether `connection`'s token opened a connection (and has not expired since).
    pub(crate) fn is_claimed(&self, connection: &str, now: u64) -> bool {
        self.inner
            .lock()
            .used
            .get(connection)
            .is_some_and(|until| *until >= now)
    }

    /// Records `connection`'s token as used until `expires_at` (Unix seconds).
    pub(crate) fn claim(&self, connection: &str, expires_at: u64, now: u64) -> Claim {
        let mut table = self.inner.lock();
        while let Some((at, _)) = table.order.front() {
            // Pop when expired; a later-expiring entry behind an earlier one waits its turn.
            if *at >= now {
                break;
            }
            if let Some((at, id)) = table.order.pop_front() {
                if table.used.get(&id).is_some_and(|t| *t == at) {
                    table.used.remove(&id);
                }
            }
        }
        if let Some(until) = table.used.get(connection) {
            if *until >= now {
                return Claim::Used;
            }
        }
        if table.used.len() >= MAX_CLAIMS {
            return Claim::Unknown("too many connection tokens are being used at once");
        }
        table.used.insert(connection.into(), expires_at);
        table.order.push_back((expires_at, connection.into()));
        Claim::Claimed
    }
}

/// The `Presence` service on the cluster listener: answers for this gateway's connections.
pub struct PresenceService {
    shared: Arc<Shared>,
}

impl PresenceService {
    pub(crate) fn server(shared: Arc<Shared>, max: usize) -> PresenceServer<PresenceService> {
        PresenceServer::new(PresenceService { shared })
            .max_decoding_message_size(max)
            .max_encoding_message_size(max)
    }
}

/// Largest group page a caller may ask for.
const MAX_PAGE: usize = 1000;

#[tonic::async_trait]
impl Presence for PresenceService {
    async fn apply(
        &self,
        request: Request<PresenceChange>,
    ) -> Result<Response<PresenceApplied>, Status> {
        let change = request.into_inner();
        let command: Command = rmp_serde::from_slice(&change.command)
            .map_err(|_| Status::invalid_argument("the change is not a membership command"))?;
        if !is_local_change(&command) {
            return Err(Status::invalid_argument(
                "only connection and user-group changes apply to a gateway's connections",
            ));
        }
        let view = self.shared.store.view();
        if view.applied_index() < change.min_applied_index
            && !view
                .wait_applied(change.min_applied_index, CATCH_UP_WAIT)
                .await
        {
            tracing::warn!(
                min_index = change.min_applied_index,
                applied = view.applied_index(),
                "applying a user-group change before this gateway's view caught up with it"
            );
        }
        let user_change = matches!(
            command,
            Command::AddUserToGroup { .. }
                | Command::RemoveUserFromGroup { .. }
                | Command::RemoveUserFromAllGroups { .. }
        );
        let found = if user_change {
            self.shared
                .local
                .apply_user_change(command, change.min_applied_index)
        } else {
            self.shared.local.apply(command)
        };
        Ok(Response::new(PresenceApplied {
            found,
            incarnation: self.shared.config.incarnation,
        }))
    }

    async fn query(
        &self,
        request: Request<PresenceQuery>,
    ) -> Result<Response<PresenceAnswer>, Status> {
        let query = request.into_inner();
        let hub = query.hub.as_str();
        let local = self.shared.local.read();
        let mut answer = PresenceAnswer {
            incarnation: self.shared.config.incarnation,
            ..PresenceAnswer::default()
        };
        match query.what {
            None => return Err(Status::invalid_argument("the query asks nothing")),
            Some(What::Connection(c)) => answer.found = local.connection(hub, &c).is_some(),
            Some(What::User(u)) => answer.found = local.user_has_connections(hub, &u),
            Some(What::Group(g)) => answer.found = local.group_has_connections(hub, &g),
            Some(What::GroupPage(page)) => {
                let after = (!page.after.is_empty()).then_some(page.after.as_str());
                let limit = (page.limit as usize).min(MAX_PAGE);
                answer.members = local
                    .group_connections_page(hub, &page.group, after, limit)
                    .into_iter()
                    .map(|(connection, user)| PresenceMember {
                        connection: connection.to_string(),
                        user: user.map(|u| u.to_string()).unwrap_or_default(),
                    })
                    .collect();
                answer.found = !answer.members.is_empty();
            }
            Some(What::Listing(listing)) => {
                let kind = ListingKind::try_from(listing.kind)
                    .map_err(|_| Status::invalid_argument("unknown listing kind"))?;
                let after = (!listing.after.is_empty()).then_some(listing.after.as_str());
                let limit = (listing.limit as usize).min(MAX_PAGE);
                let here = list_here(
                    &local,
                    self.shared.config.node_id,
                    hub,
                    kind,
                    &listing.subject,
                    after,
                    limit,
                );
                answer.found = here.found;
                for listed in here.items {
                    match kind {
                        ListingKind::ConnectionGroups | ListingKind::HubGroups => {
                            answer.names.push(listed.key.to_string());
                            answer.counts.push(listed.count);
                        }
                        _ => answer.members.push(PresenceMember {
                            connection: listed.key.to_string(),
                            user: listed.user.map(|u| u.to_string()).unwrap_or_default(),
                        }),
                    }
                }
            }
            Some(What::HubCounts(_)) => {
                answer.hubs = largest_hubs(&local);
                answer.found = !answer.hubs.is_empty();
            }
        }
        Ok(Response::new(answer))
    }

    async fn announce(&self, request: Request<HubSet>) -> Result<Response<Announced>, Status> {
        let caller = peer_identity(&request)?;
        let set = request.into_inner();
        self.shared.interest.add(
            caller.node,
            caller.incarnation,
            set.generation,
            set.hubs.into_iter().map(Name::from).collect(),
        );
        // Answer once this view lists the caller (its lease is at or below its applied index),
        // so a send routed here after the answer goes to it.
        let view = self.shared.store.view();
        if view.applied_index() < set.applied_index {
            view.wait_applied(set.applied_index, CATCH_UP_WAIT).await;
        }
        Ok(Response::new(Announced {
            applied_index: self.shared.store.view().applied_index(),
        }))
    }

    async fn hubs(&self, _request: Request<HubsRequest>) -> Result<Response<HubSet>, Status> {
        let (generation, hubs) = self.shared.interest.announced_hubs();
        Ok(Response::new(HubSet {
            generation,
            hubs: hubs.iter().map(|h| h.to_string()).collect(),
            incarnation: self.shared.config.incarnation,
            applied_index: 0,
        }))
    }

    type TraceStream = futures::stream::BoxStream<'static, Result<TraceEvent, Status>>;

    async fn trace(
        &self,
        _request: Request<TraceRequest>,
    ) -> Result<Response<Self::TraceStream>, Status> {
        if !self.shared.trace.enabled() {
            return Err(Status::failed_precondition(
                "this gateway was started without --admin: it traces nothing",
            ));
        }
        let events = self
            .shared
            .trace
            .follow(true)
            .ok_or_else(|| Status::resource_exhausted("too many trace streams are open"))?;
        let events = events.map(|item| {
            Ok(match item {
                TraceItem::Event(text) => TraceEvent {
                    json: text.to_string(),
                    lagged: false,
                },
                TraceItem::Lagged(missed) => TraceEvent {
                    json: serde_json::json!({ "missed": missed }).to_string(),
                    lagged: true,
                },
            })
        });
        Ok(Response::new(Box::pin(events)))
    }

    async fn claim(
        &self,
        request: Request<TicketClaim>,
    ) -> Result<Response<TicketClaimed>, Status> {
        let claim = request.into_inner();
        let mine = switchboard_core::node_of_connection_id(&claim.connection)
            == Some(self.shared.config.node_id);
        if !mine {
            return Err(Status::invalid_argument(
                "this gateway did not issue that connection id",
            ));
        }
        match claim_here(&self.shared, &claim.connection, claim.expires_at) {
            Claim::Claimed => Ok(Response::new(TicketClaimed { claimed: true })),
            Claim::Used => Ok(Response::new(TicketClaimed { claimed: false })),
            Claim::Unknown(why) => Err(Status::unavailable(why)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_is_claimed_once_until_it_expires() {
        let claims = Claims::default();
        let claimed = |c: Claim| matches!(c, Claim::Claimed);
        assert!(!claims.is_claimed("a.1", 90));
        assert!(claimed(claims.claim("a.1", 100, 90)));
        assert!(claims.is_claimed("a.1", 95));
        assert!(matches!(claims.claim("a.1", 100, 95), Claim::Used));
        assert!(claimed(claims.claim("b.1", 101, 95)));
        // Expired entries are dropped as time passes; an expired token can be claimed again
        // (its connect is refused by its expiry before it gets here).
        assert!(claimed(claims.claim("a.1", 200, 150)));
        assert!(matches!(claims.claim("a.1", 200, 160), Claim::Used));
        assert_eq!(claims.inner.lock().used.len(), 1);
    }
}
