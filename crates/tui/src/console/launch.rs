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

impl LocalHandle for crate::local::LocalCluster {
    fn entrance_addr(&self) -> String {
        crate::local::LocalCluster::entrance_addr(self).to_string()
    }

    fn key_file(&self) -> Option<std::path::PathBuf> {
        None
    }

    fn stop(self: Box<Self>) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        Box::pin(async move {
            for (name, status) in (*self).stop().await {
                tracing::info!(%name, ?status, "local cluster process ended");
            }
        })
    }
}

/// Starts an entrance and `nodes` nodes on loopback; the cluster admits its own nodes.
pub async fn start_local(nodes: usize) -> anyhow::Result<Box<dyn LocalHandle>> {
    let opts = crate::local::LocalOptions {
        nodes,
        ..Default::default()
    };
    let cluster = crate::local::LocalCluster::start(&opts).map_err(|e| anyhow::anyhow!("{e}"))?;
    tracing::info!(dir = %cluster.dir().display(), "local cluster started");
    Ok(Box::new(cluster))
}
