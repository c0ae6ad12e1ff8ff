//! The driver: one task owns the [`Engine`] and everything it must not touch itself — the
//! socket ([`crate::net`]), the clock, the data dir ([`crate::store`]) and the tasks of
//! [`crate::ops`]. It feeds the engine a datagram, a probe tick or a task's completion at a
//! time, then carries out the effects in order: the state is saved before anything that
//! follows it is sent.

use crate::engine::{Completion, Effect, Engine, EntranceEvent, Input, LeaderAddr, Now, SendTo};
use crate::net::{Inbound, Net};
use crate::ops::{self, Caller};
use crate::store::{PersistedState, Store};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{broadcast, mpsc, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{error, info};

/// What the driver owns besides the engine.
pub(crate) struct Driver {
    pub engine: Engine,
    pub net: Arc<Net>,
    pub store: Arc<Store>,
    pub events: broadcast::Sender<EntranceEvent>,
    pub leader_tx: watch::Sender<Option<LeaderAddr>>,
    pub completions: mpsc::UnboundedSender<Completion>,
    pub tracker: TaskTracker,
    pub shutdown: CancellationToken,
    pub request_timeout: Duration,
}

/// ±20 %, so probes of several entrances (or restarts) do not fall into lockstep.
fn jittered(interval: Duration) -> Duration {
    myraft_wire::util::jittered(interval, 0.8, 1.2)
}

impl Driver {
    /// Runs the engine until `shutdown` (or until the engine asks to stop).
    pub(crate) async fn serve(
        mut self,
        mut inbound: mpsc::Receiver<Inbound>,
        mut completions: mpsc::UnboundedReceiver<Completion>,
    ) {
        let shutdown = self.shutdown.clone();
        let started = self.engine.take_effects();
        self.carry_out(started).await;
        let mut next_tick = tokio::time::Instant::now();
        loop {
            let input = tokio::select! {
                () = shutdown.cancelled() => break,
                Some(datagram) = inbound.recv() => {
                    let Inbound { envelope, src } = datagram;
                    Input::Datagram { from: envelope.from, src, body: envelope.body }
                }
                Some(done) = completions.recv() => Input::Completed(done),
                () = tokio::time::sleep_until(next_tick) => {
                    next_tick = tokio::time::Instant::now() + jittered(self.engine.probe_interval());
                    Input::Tick
                }
            };
            let effects = self.engine.handle(Now::system(), input);
            if self.carry_out(effects).await {
                shutdown.cancel();
            }
        }
        let effects = self.engine.take_effects();
        self.carry_out(effects).await;
        info!("entrance stopped");
    }

    /// Carries out `effects` in order; `true` if the engine asked to stop.
    async fn carry_out(&mut self, effects: Vec<Effect>) -> bool {
        let mut stop = false;
        for effect in effects {
            match effect {
                Effect::Persist(state) => self.save(*state).await,
                Effect::Send { to, body } => match to {
                    SendTo::Socket(to) => self.net.send(to, &body),
                    SendTo::Addr(addr) => self.net.send_to_addr(&addr, &body),
                },
                Effect::Start(task) => ops::start(self.caller(), task),
                Effect::Leader(leader) => {
                    self.leader_tx.send_replace(leader);
                }
                Effect::Event(event) => {
                    // Nobody listening is the normal case outside tests.
                    let _ = self.events.send(event);
                }
                Effect::Dropped(reason) => self.net.count_drop(reason),
                Effect::Stop => stop = true,
            }
        }
        stop
    }

    async fn save(&self, state: PersistedState) {
        let store = Arc::clone(&self.store);
        match tokio::task::spawn_blocking(move || store.save(&state)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => error!("cannot save the entrance state: {e}"),
            Err(e) => error!("cannot save the entrance state: {e}"),
        }
    }

    fn caller(&self) -> Caller {
        Caller {
            net: Arc::clone(&self.net),
            leader: self.leader_tx.subscribe(),
            done: self.completions.clone(),
            shutdown: self.shutdown.clone(),
            tracker: self.tracker.clone(),
            timeout: self.request_timeout,
        }
    }
}
