//! A TCP proxy that can cut a link, for partition tests: traffic between two nodes goes
//! through it, and [`Proxy::cut`] drops every open connection and refuses new ones until
//! [`Proxy::heal`]. [`Proxy::cut_and_hold`] drops the open connections but holds new ones
//! until the heal (a network blip a client's reconnect attempt survives).

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// See the module docs. Dropping it stops it.
pub struct Proxy {
    pub addr: SocketAddr,
    /// New connections are refused.
    refuse: Arc<watch::Sender<bool>>,
    /// New connections wait.
    hold: Arc<watch::Sender<bool>>,
    /// Bumped to drop every open connection.
    drops: Arc<watch::Sender<u64>>,
    /// Where new connections go.
    target: Arc<watch::Sender<SocketAddr>>,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    /// Listens on `listen` (port 0 for any) and forwards every connection to `target`.
    pub async fn start(listen: SocketAddr, target: SocketAddr) -> anyhow::Result<Proxy> {
        let listener = TcpListener::bind(listen).await?;
        let addr = listener.local_addr()?;
        let refuse = Arc::new(watch::Sender::new(false));
        let hold = Arc::new(watch::Sender::new(false));
        let drops = Arc::new(watch::Sender::new(0u64));
        let targets = Arc::new(watch::Sender::new(target));
        let (refusing, holding, dropping) = (refuse.clone(), hold.clone(), drops.clone());
        let aiming = targets.clone();
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                if *refusing.borrow() {
                    continue; // dropped: the connection is refused by closing it
                }
                let mut hold_rx = holding.subscribe();
                let dropping = dropping.clone();
                let aiming = aiming.clone();
                tokio::spawn(async move {
                    // While held, a new connection waits instead of being refused.
                    let _ = hold_rx.wait_for(|held| !*held).await;
                    let target = *aiming.borrow();
                    let mut drops_rx = dropping.subscribe();
                    drops_rx.mark_unchanged();
                    let Ok(mut server) = TcpStream::connect(target).await else {
                        return;
                    };
                    let mut client = client;
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = drops_rx.changed() => {}
                    }
                });
            }
        });
        Ok(Proxy {
            addr,
            refuse,
            hold,
            drops,
            target: targets,
            task,
        })
    }

    /// Drops every connection through the proxy and refuses new ones.
    pub fn cut(&self) {
        self.refuse.send_replace(true);
        self.drops.send_modify(|n| *n += 1);
    }

    /// Drops every open connection; new ones are accepted but wait, unforwarded, until
    /// [`Proxy::heal`].
    pub fn cut_and_hold(&self) {
        self.hold.send_replace(true);
        self.drops.send_modify(|n| *n += 1);
    }

    /// Sends new connections (held ones too) to `target` from now on.
    pub fn retarget(&self, target: SocketAddr) {
        self.target.send_replace(target);
    }

    /// Lets connections through again (held ones too).
    pub fn heal(&self) {
        self.refuse.send_replace(false);
        self.hold.send_replace(false);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A TCP proxy in front of several servers, sending each new connection to the next one in
/// turn: a load balancer without sticky sessions.
pub struct RoundRobin {
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl RoundRobin {
    pub async fn start(listen: SocketAddr, targets: Vec<SocketAddr>) -> anyhow::Result<RoundRobin> {
        anyhow::ensure!(!targets.is_empty(), "a round robin needs a target");
        let listener = TcpListener::bind(listen).await?;
        let addr = listener.local_addr()?;
        let task = tokio::spawn(async move {
            let mut next = 0usize;
            while let Ok((mut client, _)) = listener.accept().await {
                let target = targets[next % targets.len()];
                next += 1;
                tokio::spawn(async move {
                    if let Ok(mut server) = TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
            }
        });
        Ok(RoundRobin { addr, task })
    }
}

impl Drop for RoundRobin {
    fn drop(&mut self) {
        self.task.abort();
    }
}
