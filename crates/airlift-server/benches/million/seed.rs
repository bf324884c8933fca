//! The million: accepted devices with their inventories and tags, written
//! with PostgreSQL's `COPY` into the fresh schema after the server's
//! migrations made its tables.
//!
//! This is the one place the bench knows the store's schema (the columns
//! of `devices`, `device_tags`, `device_installed` and
//! `device_attributes` in `crates/airlift-store/migrations/postgres/`):
//! enrolling a million devices through the HTTP APIs would take hours (the
//! server bench enrols 100 000 in about five minutes), and the store's own
//! calls write one device per transaction. What is written is what the
//! store writes for an accepted device that has checked in: its row with
//! the SHA-256 of its inventory ([`airlift_store::inventory_digest`], the
//! digest a check-in compares, so an unchanged inventory costs the server
//! what it costs in the field), its installed software and attributes as
//! rows, its tags. The devices that will authenticate get real Ed25519
//! keys, derived from their index ([`signing_key`]); the others a public
//! key in the same PEM form made from a hash (unique, held by nobody),
//! which saves deriving a million keys.

use crate::params::Params;
use airlift_protocol::device::Inventory;
use airlift_protocol::DeviceId;
use anyhow::{Context, Result};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use ed25519_dalek::SigningKey;
use sha2::{Digest, Sha256};
use sqlx::{Connection, PgConnection};
use std::collections::{BTreeMap, HashSet};
use std::fmt::Write as _;
use std::time::{Duration, Instant};

/// Every device's type (the packages are built for it).
pub const DEVICE_TYPE: &str = "bench-board";
/// The tag the staged rollout targets.
pub const ROLLOUT_TAG: &str = "rollout-wave";
/// The `os` version every device runs before the rollout.
const OLD_OS: &str = "1.4.2";
const REGIONS: [&str; 8] = [
    "eu-west", "eu-north", "us-east", "us-west", "ap-south", "ap-east", "sa-east", "af-south",
];
/// The tables seeded, vacuumed and analysed afterwards.
pub const TABLES: [&str; 5] = [
    "devices",
    "device_presence",
    "device_tags",
    "device_installed",
    "device_attributes",
];
/// Rows per `COPY` message sent.
const ROWS_PER_CHUNK: usize = 4096;

/// The seeded fleet: device `index`'s id is `ids[index]`.
pub struct Fleet {
    pub ids: Vec<DeviceId>,
    pub seeding: Duration,
}

/// Device `index`'s serial (its identity, and an attribute).
pub fn serial(index: usize) -> String {
    format!("SN-{index:08}")
}

/// What device `index` reports at every check-in, unchanged since it was
/// seeded: about 300 bytes of JSON.
pub fn inventory(index: usize) -> Inventory {
    let map = |pairs: &[(&str, String)]| -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect()
    };
    Inventory {
        device_type: DEVICE_TYPE.to_owned(),
        hardware_revision: Some(["rev-a", "rev-b", "rev-c"][index % 3].to_owned()),
        installed: map(&[
            ("bootloader", "2024.01.3".to_owned()),
            ("os", OLD_OS.to_owned()),
            ("fleet-agent", "3.2.1".to_owned()),
        ]),
        security_version: 3,
        attributes: map(&[
            ("region", REGIONS[index % REGIONS.len()].to_owned()),
            ("site", format!("site-{:03}", index % 400)),
            ("serial", serial(index)),
            ("kernel", "6.6.31-bench".to_owned()),
        ]),
    }
}

/// Device `index`'s key, the same on every call.
pub fn signing_key(index: usize) -> SigningKey {
    let seed: [u8; 32] = Sha256::digest(format!("airlift-million-bench/key/{index}")).into();
    SigningKey::from_bytes(&seed)
}

/// A public key in PEM, as `airlift_protocol::auth::public_key_pem` writes
/// one (SubjectPublicKeyInfo of Ed25519), of 32 bytes from a hash: unique
/// per device, its private half known to nobody.
fn placeholder_public_key(index: usize) -> String {
    const SPKI_PREFIX: [u8; 12] = [
        0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
    ];
    let mut der = SPKI_PREFIX.to_vec();
    der.extend_from_slice(&Sha256::digest(format!(
        "airlift-million-bench/none/{index}"
    )));
    format!(
        "-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n",
        STANDARD.encode(der)
    )
}

/// Seeds `params.devices` accepted devices; those in `authenticating`
/// get real keys. Then `VACUUM (ANALYZE)`, as autovacuum would have done
/// in a database that grew over months.
pub async fn seed(url: &str, params: &Params, authenticating: &HashSet<usize>) -> Result<Fleet> {
    let started = Instant::now();
    let ids: Vec<DeviceId> = (0..params.devices).map(|_| DeviceId::new()).collect();
    let now = chrono::Utc::now().timestamp_millis();
    let mut connection = PgConnection::connect(url).await?;
    copy(
        &mut connection,
        "devices (id, status, identity, public_key, device_type, hardware_revision, \
         security_version, created_at, inventory_sha256)",
        params.devices,
        |index, out| device_row(index, &ids, authenticating, now, out),
    )
    .await?;
    eprintln!(
        "  {} devices in {:.1} s",
        params.devices,
        started.elapsed().as_secs_f64()
    );
    let (mut presence, mut tags, mut installed, mut attributes) = (
        PgConnection::connect(url).await?,
        PgConnection::connect(url).await?,
        PgConnection::connect(url).await?,
        PgConnection::connect(url).await?,
    );
    let ids = &ids;
    futures::try_join!(
        copy(
            &mut presence,
            "device_presence (id, status, created_at, last_check_in)",
            params.devices,
            |i, out| {
                let (created, last) = times(i, now);
                let _ = writeln!(out, "{}\taccepted\t{created}\t{last}", ids[i]);
            }
        ),
        copy(
            &mut tags,
            "device_tags (device_id, tag)",
            params.devices,
            |i, out| {
                let _ = writeln!(out, "{}\tbatch-{}", ids[i], i % 20);
                if params.is_tagged(i) {
                    let _ = writeln!(out, "{}\t{ROLLOUT_TAG}", ids[i]);
                }
            }
        ),
        copy(
            &mut installed,
            "device_installed (device_id, name, version, version_key)",
            params.devices,
            |i, out| installed_rows(ids[i], &inventory(i).installed, out),
        ),
        copy(
            &mut attributes,
            "device_attributes (device_id, key, value)",
            params.devices,
            |i, out| map_rows(ids[i], &inventory(i).attributes, out),
        ),
    )?;
    eprintln!(
        "  tags, installed software and attributes by {:.1} s; vacuuming",
        started.elapsed().as_secs_f64()
    );
    sqlx::raw_sql(&format!("VACUUM (ANALYZE) {}", TABLES.join(", ")))
        .execute(&mut connection)
        .await
        .context("vacuuming the seeded tables")?;
    Ok(Fleet {
        ids: ids.clone(),
        seeding: started.elapsed(),
    })
}

/// One `devices` row in `COPY`'s text format: accepted, heard from within
/// the last poll interval, its inventory's digest stored.
fn device_row(
    index: usize,
    ids: &[DeviceId],
    authenticating: &HashSet<usize>,
    now: i64,
    out: &mut String,
) {
    let inventory = inventory(index);
    let digest = airlift_store::inventory_digest(&inventory).unwrap_or_default();
    let public_key = if authenticating.contains(&index) {
        airlift_protocol::auth::public_key_pem(&signing_key(index).verifying_key())
    } else {
        placeholder_public_key(index)
    };
    let identity = format!("{{\"serial\":\"{}\"}}", serial(index));
    let (created, _) = times(index, now);
    let _ = writeln!(
        out,
        "{}\taccepted\t{}\t{}\t{DEVICE_TYPE}\t{}\t3\t{created}\t\\\\x{}",
        ids[index],
        escape(&identity),
        escape(&public_key),
        inventory.hardware_revision.as_deref().unwrap_or_default(),
        hex::encode(digest),
    );
}

/// Device `index`'s creation and last check-in times: created over the
/// last year, last heard of within 5 minutes.
fn times(index: usize, now: i64) -> (i64, i64) {
    let created = now - 31_536_000_000 + (index as i64 % 31_536_000) * 1000;
    let last = now - (index as i64 * 7919 % 300_000);
    (created, last)
}

fn map_rows(id: DeviceId, map: &BTreeMap<String, String>, out: &mut String) {
    for (key, value) in map {
        let _ = writeln!(out, "{id}\t{}\t{}", escape(key), escape(value));
    }
}

/// `device_installed` rows with each version's order key, as the store
/// writes them (a row without one is keyed when an instance starts).
fn installed_rows(id: DeviceId, installed: &BTreeMap<String, String>, out: &mut String) {
    for (name, version) in installed {
        let key = airlift_protocol::target_expr::version_key(version).unwrap_or_default();
        let _ = writeln!(
            out,
            "{id}\t{}\t{}\t{}",
            escape(name),
            escape(version),
            escape(&key)
        );
    }
}

/// A value in `COPY`'s text format: backslash, tab, newline and carriage
/// return escaped.
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('\t', "\\t")
        .replace('\n', "\\n")
        .replace('\r', "\\r")
}

/// `COPY table FROM STDIN` of `count` devices' rows, each written by `row`,
/// sent in chunks.
async fn copy(
    connection: &mut PgConnection,
    table: &str,
    count: usize,
    row: impl Fn(usize, &mut String),
) -> Result<()> {
    let mut copy = connection
        .copy_in_raw(&format!("COPY {table} FROM STDIN"))
        .await
        .with_context(|| format!("COPY {table}"))?;
    let mut chunk = String::with_capacity(1 << 20);
    for index in 0..count {
        row(index, &mut chunk);
        if (index + 1) % ROWS_PER_CHUNK == 0 || index + 1 == count {
            copy.send(std::mem::take(&mut chunk).into_bytes()).await?;
            chunk.reserve(1 << 20);
        }
    }
    copy.finish()
        .await
        .with_context(|| format!("COPY {table}"))?;
    Ok(())
}

/// Each seeded table's size with its indexes and TOAST
/// (`pg_total_relation_size`), in bytes, largest first.
pub async fn table_sizes(url: &str) -> Result<Vec<(String, i64)>> {
    let mut connection = PgConnection::connect(url).await?;
    let mut sizes: Vec<(String, i64)> = sqlx::query_as(
        "SELECT c.relname::text, pg_total_relation_size(c.oid) \
         FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
         WHERE n.nspname = current_schema() AND c.relkind = 'r'",
    )
    .fetch_all(&mut connection)
    .await
    .context("table sizes")?;
    sizes.sort_by_key(|(_, bytes)| std::cmp::Reverse(*bytes));
    Ok(sizes)
}
