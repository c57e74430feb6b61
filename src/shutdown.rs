//! Graceful shutdown: the first SIGINT or SIGTERM asks every role to stop
//! (stop taking work, drain); a second one exits at once.

use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::watch;

/// A handle resolved when shutdown is asked.
#[derive(Clone)]
pub struct Shutdown(watch::Receiver<bool>);

impl Shutdown {
    /// Waits until shutdown is asked.
    pub async fn wait(mut self) {
        let _ = self.0.wait_for(|stop| *stop).await;
    }

    /// Whether shutdown has been asked.
    pub fn is_set(&self) -> bool {
        *self.0.borrow()
    }
}

/// Installs the signal handlers.
pub fn on_signals() -> std::io::Result<Shutdown> {
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let (tx, rx) = watch::channel(false);
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        tracing::info!("shutting down (a second signal exits at once)");
        let _ = tx.send(true);
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        eprintln!("lb: second signal, exiting now");
        std::process::exit(130);
    });
    Ok(Shutdown(rx))
}
