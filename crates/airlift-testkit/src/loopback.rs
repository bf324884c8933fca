//! A TCP service of the kit's (the flaky proxy, the load balancer) on a
//! loopback port, run by a tokio runtime on a thread of its own so that
//! the caller needs no runtime, and stopped — the port closed and every
//! connection with it — by [`Service::stop`] or on drop.

use std::future::Future;
use std::thread::JoinHandle;
use tokio::net::TcpListener;
use tokio::sync::oneshot;

/// A running service.
#[derive(Debug)]
pub(crate) struct Service {
    url: String,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Service {
    /// Binds `127.0.0.1:0` and runs `serve(listener)` on a thread named
    /// `name` until stopped.
    pub(crate) fn start<S, F>(name: &str, serve: S) -> std::io::Result<Self>
    where
        S: FnOnce(TcpListener) -> F + Send + 'static,
        F: Future<Output = ()>,
    {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let listener = runtime.block_on(TcpListener::bind("127.0.0.1:0"))?;
        let url = format!("http://{}", listener.local_addr()?);
        let (stop, stopped) = oneshot::channel();
        let thread = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || {
                runtime.block_on(async move {
                    tokio::select! {
                        () = serve(listener) => {},
                        _ = stopped => {},
                    }
                });
                // Dropping the runtime here ends every connection.
            })?;
        Ok(Self {
            url,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// `http://127.0.0.1:PORT`.
    pub(crate) fn url(&self) -> &str {
        &self.url
    }

    /// Closes the port and every connection.
    pub(crate) fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        self.stop();
    }
}
