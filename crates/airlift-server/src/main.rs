//! `airlift-server`: parse flags, set up logging, run until a signal.

use airlift_server::config::LogFormat;
use airlift_server::listen;
use airlift_server::startup::{self, AdminToken};
use airlift_server::{Args, Config};
use anyhow::Context;
use clap::Parser;
use tracing_subscriber::EnvFilter;

// Every request allocates and frees many small objects across the runtime's
// threads; glibc's malloc spent a sixth of a loaded server's time in
// allocation and consolidation (BENCHMARKS.md, session 5).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    // Before the configuration reads it: the default connection limit
    // follows from it.
    listen::raise_open_file_limit();
    let config = Config::from_args(args, std::env::var("AIRLIFT_ADMIN_TOKEN").ok())
        .context("invalid configuration")?;
    init_logging(config.log_format);
    let _ = rustls::crypto::ring::default_provider().install_default();

    let (state, admin) = startup::prepare(&config).await?;
    if let AdminToken::Revoked = &admin {
        tracing::warn!("AIRLIFT_ADMIN_TOKEN names a token that was revoked; it stays revoked (set a new secret to install a new admin token)");
    }
    if let AdminToken::Created(secret) = &admin {
        // Printed once, to the terminal, never to the log.
        println!("Created the first admin API token (shown only now; it is stored hashed):\n\n    {secret}\n");
        println!(
            "Log in with:  airlift server login http://{} --token {secret}\n",
            config.listen
        );
    }

    let tls = listen::acceptor_for(&config)?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("listening on {}", config.listen))?;
    let limits = state.settings().connections;
    tracing::info!(
        listen = %listener.local_addr()?,
        tls = tls.is_some(),
        max_connections = limits.max_connections,
        "airlift-server ready"
    );
    airlift_server::serve(listener, tls, state, shutdown_signal()).await?;
    tracing::info!("stopped");
    Ok(())
}

fn init_logging(format: LogFormat) {
    let filter = EnvFilter::try_from_env("AIRLIFT_LOG")
        .unwrap_or_else(|_| EnvFilter::new("info,tower_http=warn,sqlx=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
    tracing::info!("shutting down: finishing requests in flight");
}
