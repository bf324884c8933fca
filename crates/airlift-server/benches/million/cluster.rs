//! What the benchmark runs: one PostgreSQL schema, one S3 server
//! (`s3s-fs`, the test kit's), and `airlift-server` instances on both —
//! two for the load, with download offload on, and a third started later
//! with offload off for the download figures. Plus the operator's side:
//! the management API through a pooled client.

use airlift_testkit::packages::Signer;
use airlift_testkit::postgres::FreshSchema;
use airlift_testkit::s3::S3Server;
use airlift_testkit::server::{Echo, ServerProcess, ADMIN_TOKEN};
use anyhow::Result;
use std::time::Duration;

/// The database, the object store and the instances' common settings.
pub struct Cluster {
    pub schema: FreshSchema,
    pub s3: S3Server,
    pub signer: Signer,
    echo: Echo,
    dir: tempfile::TempDir,
}

impl Cluster {
    /// A fresh schema in `base` (a PostgreSQL URL) and a fresh bucket.
    pub fn new(base: &str) -> Result<Self> {
        let echo = if std::env::var_os("AIRLIFT_BENCH_SERVER_LOG").is_some() {
            Echo::All
        } else {
            Echo::FirstWarnings(5)
        };
        Ok(Self {
            schema: FreshSchema::create_in(base, "millionbench")?,
            s3: S3Server::start(),
            signer: Signer::new(),
            echo,
            dir: tempfile::tempdir()?,
        })
    }

    /// An instance named `label` with a data directory of its own, download
    /// offload `on` or `off`.
    pub fn start(&self, label: &str, offload: &str) -> Result<ServerProcess> {
        let data = self.dir.path().join(label);
        let mut builder = ServerProcess::builder(airlift_testkit::server::binary(), data)
            .label(label)
            .trust(self.signer.public_key_file())
            .admin_token(ADMIN_TOKEN)
            .args(["--database-url", self.schema.url()])
            .args(["--blob-url", &self.s3.url("million"), "--blob-path-style"])
            .args(["--blob-offload", offload])
            // A million devices polling every 5 minutes.
            .args(["--poll-interval", "300", "--max-package-mib", "4096"])
            // An instance keys installed versions recorded without an order
            // key before it listens; the bench seeds the keys, but a
            // database of a million devices gets more than the default
            // minute should any be missing.
            .ready_timeout(Duration::from_secs(300))
            .echo(self.echo);
        for (name, value) in self.s3.env() {
            builder = builder.env(name, value);
        }
        Ok(builder.start()?)
    }
}
