//! `myraft-tui --local N`: a throw-away cluster that lives as long as the console.

use std::future::Future;
use std::pin::Pin;

/// A running local cluster, as the console needs it: where to connect, and how to end it.
pub trait LocalHandle: Send {
    fn entrance_addr(&self) -> String;
    /// The cluster key the local cluster made, if it uses one.
    fn key_file(&self) -> Option<std::path::PathBuf>;
    /// Stops every node and the entrance and waits for them to exit.
    fn stop(self: Box<Self>) -> Pin<Box<dyn Future<Output = ()> + Send>>;
}

/// Starts an entrance with auto-approve and `nodes` nodes on loopback.
pub async fn start_local(nodes: usize) -> anyhow::Result<Box<dyn LocalHandle>> {
    // adapter: `crate::local::LocalCluster::start(opts)` with `nodes`, boxed; its
    // `entrance_addr()` and `stop(self)` implement `LocalHandle`.
    anyhow::bail!(
        "this build cannot start a local cluster of {nodes} nodes yet; run `myraft local` \
         in another terminal and pass its entrance with --entrance"
    )
}
