//! End-to-end tests: the real `airlift-server` binary on a loopback port,
//! driven over HTTP like an operator and a device would. Every scenario runs
//! on SQLite, and on PostgreSQL when `AIRLIFT_TEST_POSTGRES_URL` is set;
//! the SQLite servers keep package files on local disk, the PostgreSQL
//! ones in S3 (`s3s-fs`, from `.ci/install-packages`), and
//! `AIRLIFT_TEST_BLOBS=s3` or `=disk` puts every server on one (`support`).

mod connections;
mod dashboard_admin;
mod dashboard_deployments;
mod dashboard_devices;
mod dashboard_packages;
mod dashboard_support;
mod dynamic;
mod expressions;
mod hostile;
mod instances;
mod lifecycle;
mod local_disk;
mod mtls;
mod offload;
mod openapi;
mod operations;
mod release_role;
mod rollouts;
mod s3;
mod security;
mod shadow_instances;
mod shadows;
mod soft;
mod support;
