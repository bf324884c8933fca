//! `airlift package upload|list|show|delete|download`: packages on the
//! server. Package files are streamed both ways, never held in memory.

use super::parse_package_id;
use crate::client::{api_error, ApiError, Client, Resume};
use crate::output::{self, Table};
use airlift_package::{Limits, PackageReader};
use airlift_protocol::management::Package;
use airlift_protocol::state::DeploymentStatus;
use airlift_protocol::PackageId;
use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use futures::{StreamExt, TryStreamExt};
use reqwest::header::{CONTENT_RANGE, ETAG};
use reqwest::StatusCode;
use sha2::{Digest, Sha256};
use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};
use tokio::io::{AsyncSeekExt, AsyncWriteExt};
use tokio_util::io::ReaderStream;

/// Bytes read from disk per chunk of an upload.
const UPLOAD_CHUNK: usize = 256 * 1024;

/// The `airlift package` subcommands that talk to the server.
#[derive(Debug, Subcommand)]
pub enum PackageServerCommand {
    /// Upload a package file to the server.
    #[command(
        long_about = "Upload a package file to the server.\n\n\
            Streams the file to the server, which verifies its signatures against its trusted \
            keys and every payload digest before storing it; a package it cannot verify is \
            refused with the reason. Needs an operator or admin token.",
        after_help = "Examples:
  airlift package upload rootfs-1.2.0.airlift
  airlift package upload rootfs-1.2.0.airlift --json | jq -r .id"
    )]
    Upload(UploadArgs),

    /// List the packages on the server, newest first, a page at a time.
    #[command(after_help = "Examples:
  airlift package list
  airlift package list --page 2 --per-page 20
  airlift package list --json | jq -r '.items[] | select(.name == \"rootfs\") | .id'")]
    List(ListArgs),

    /// Show one package on the server.
    #[command(after_help = "Examples:
  airlift package show 0190d5e4-7c1b-7a4e-9f3a-2b8c1d0e4f56
  airlift package show 0190d5e4-7c1b-7a4e-9f3a-2b8c1d0e4f56 --json | jq .manifest")]
    Show(ShowArgs),

    /// Delete a package from the server.
    #[command(
        long_about = "Delete a package from the server.\n\n\
            Refused while an active deployment uses it: cancel the deployment first \
            (`airlift deployment cancel ID`). Needs an operator or admin token.",
        after_help = "Examples:
  airlift package delete 0190d5e4-7c1b-7a4e-9f3a-2b8c1d0e4f56"
    )]
    Delete(DeleteArgs),

    /// Download a package file from the server.
    #[command(
        long_about = "Download a package file from the server.\n\n\
            Writes to a hidden .part file next to --out and renames it into place once the \
            whole file is there and its SHA-256 matches the server's record. An interrupted \
            download resumes where it stopped when run again (the server sends the rest only \
            if the package is still the same, else the whole file).",
        after_help = "Examples:
  airlift package download 0190d5e4-7c1b-7a4e-9f3a-2b8c1d0e4f56 --out rootfs-1.2.0.airlift
  airlift package download 0190d5e4-7c1b-7a4e-9f3a-2b8c1d0e4f56 --out rootfs.airlift --force"
    )]
    Download(DownloadArgs),
}

/// Arguments of `airlift package upload`.
#[derive(Debug, Args)]
pub struct UploadArgs {
    /// The package file (made by `airlift package build`).
    pub file: PathBuf,
    /// Print the stored package as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `airlift package list`.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// Which page, from 1.
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    pub page: u32,
    /// Packages per page, 1 to 1000.
    #[arg(long, value_name = "N", default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub per_page: u32,
    /// Print the page ({items, total, page, per_page}) as JSON, as `device list --json` does.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `airlift package show`.
#[derive(Debug, Args)]
pub struct ShowArgs {
    /// The package's id (`airlift package list` shows them).
    #[arg(value_parser = parse_package_id)]
    pub id: PackageId,
    /// Print the package, manifest included, as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `airlift package delete`.
#[derive(Debug, Args)]
pub struct DeleteArgs {
    /// The package's id.
    #[arg(value_parser = parse_package_id)]
    pub id: PackageId,
}

/// Arguments of `airlift package download`.
#[derive(Debug, Args)]
pub struct DownloadArgs {
    /// The package's id.
    #[arg(value_parser = parse_package_id)]
    pub id: PackageId,
    /// Where to write the package file.
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
    /// Replace --out if it exists (and is not already this package).
    #[arg(long)]
    pub force: bool,
}

/// Runs one `airlift package` subcommand against the server.
pub async fn run(command: &PackageServerCommand, client: &Client, quiet: bool) -> Result<()> {
    match command {
        PackageServerCommand::Upload(args) => upload(args, client, quiet).await,
        PackageServerCommand::List(args) => list(args, client).await,
        PackageServerCommand::Show(args) => show(args, client).await,
        PackageServerCommand::Delete(args) => delete(args, client).await,
        PackageServerCommand::Download(args) => download(args, client, quiet).await,
    }
}

async fn upload(args: &UploadArgs, client: &Client, quiet: bool) -> Result<()> {
    let path = &args.file;
    // Refuse a file that is not a package before sending gigabytes of it.
    let label = local_label(path)?;
    let file = tokio::fs::File::open(path)
        .await
        .with_context(|| format!("opening {}", path.display()))?;
    let len = file
        .metadata()
        .await
        .with_context(|| format!("reading {}", path.display()))?
        .len();

    let bar = output::byte_progress(len, quiet, format!("uploading {label}"));
    let counter = bar.clone();
    let stream = ReaderStream::with_capacity(file, UPLOAD_CHUNK).inspect_ok(move |chunk| {
        counter.inc(chunk.len() as u64);
        if counter.position() >= len {
            counter.set_message("the server is verifying");
        }
    });
    let result = client
        .upload_package(reqwest::Body::wrap_stream(stream), len)
        .await;
    bar.finish_and_clear();
    let package = match result {
        Ok(package) => package,
        Err(error) => {
            let error = explain_lost_answer(client, error).await;
            return Err(error.context(format!("uploading {}", path.display())));
        }
    };

    if args.json {
        return output::print_json(&package);
    }
    println!(
        "uploaded {} {} as {}",
        package.name, package.version, package.id
    );
    print_package(&package);
    Ok(())
}

/// The server checks the token before it reads an upload, and answers a
/// refusal at once; if it then closes the connection while the package is
/// still being sent, the answer is lost and only "broken pipe" remains. An
/// empty upload goes through the same checks without the bytes: when it is
/// refused for the token, that refusal is the real reason.
async fn explain_lost_answer(client: &Client, error: anyhow::Error) -> anyhow::Error {
    let lost_mid_request = error
        .chain()
        .find_map(|cause| cause.downcast_ref::<reqwest::Error>())
        .is_some_and(|e| !e.is_connect() && !e.is_timeout());
    if !lost_mid_request {
        return error;
    }
    match client
        .upload_package(reqwest::Body::from(Vec::new()), 0)
        .await
    {
        Err(refusal)
            if matches!(
                api_error(&refusal),
                Some(ApiError::Unauthorized { .. } | ApiError::Forbidden { .. })
            ) =>
        {
            refusal
        }
        _ => error.context(
            "the connection broke during the upload; the server also closes it early when a \
             package is larger than its limit (max_package_mib)",
        ),
    }
}

/// `rootfs 1.2.0`, from the manifest (unverified: only for the progress bar).
fn local_label(path: &Path) -> Result<String> {
    let context = || {
        format!(
            "{} is not a readable Airlift package (make one with `airlift package build`)",
            path.display()
        )
    };
    let file = File::open(path).with_context(context)?;
    let reader =
        PackageReader::open(BufReader::new(file), Limits::default()).with_context(context)?;
    let manifest = reader.manifest_unverified().with_context(context)?;
    Ok(format!("{} {}", manifest.name, manifest.version))
}

async fn list(args: &ListArgs, client: &Client) -> Result<()> {
    let page = client
        .packages_page(args.page, args.per_page)
        .await
        .context("listing packages")?;
    if args.json {
        return output::print_json(&page);
    }
    if page.items.is_empty() {
        let none = "no packages; upload one with `airlift package upload FILE`";
        println!("{}", output::empty_page(&page, none, "packages"));
        return Ok(());
    }
    let mut table = Table::new(&["ID", "NAME", "VERSION", "DEVICE TYPES", "SIZE", "UPLOADED"]);
    for package in &page.items {
        table.row(vec![
            package.id.to_string(),
            package.name.clone(),
            package.version.clone(),
            package.device_types.join(","),
            indicatif::BinaryBytes(package.size).to_string(),
            output::time(&package.created_at),
        ]);
    }
    table.print();
    println!("{}", output::page_footer(&page, "packages"));
    Ok(())
}

async fn show(args: &ShowArgs, client: &Client) -> Result<()> {
    let package = client
        .package(args.id)
        .await
        .with_context(|| format!("reading package {}", args.id))?;
    if args.json {
        return output::print_json(&package);
    }
    print_package(&package);
    Ok(())
}

fn print_package(package: &Package) {
    output::field("id", package.id);
    output::field("name", &package.name);
    output::field("version", &package.version);
    if let Some(description) = &package.description {
        output::field("description", description);
    }
    output::field("device types", package.device_types.join(", "));
    output::field("security version", package.security_version);
    output::field("size", output::size(package.size));
    output::field("sha256", &package.sha256);
    output::field("signed by", output::list(&package.signed_by, "nobody"));
    output::field("uploaded", output::time(&package.created_at));
}

async fn delete(args: &DeleteArgs, client: &Client) -> Result<()> {
    if let Err(error) = client.delete_package(args.id).await {
        let error = match api_error(&error) {
            Some(refusal @ ApiError::Status { code, .. }) if code == "in_use" => {
                // The server does not say which deployments: name them.
                match active_deployments_of(client, args.id).await {
                    Some(users) => anyhow::anyhow!("{refusal}; active: {users}"),
                    None => error,
                }
            }
            _ => error,
        };
        return Err(error.context(format!("deleting package {}", args.id)));
    }
    println!("deleted package {}", args.id);
    Ok(())
}

/// `ID (name), …` of the active deployments of `package`, if any can be found.
async fn active_deployments_of(client: &Client, package: PackageId) -> Option<String> {
    let users: Vec<String> = client
        .list_deployments()
        .await
        .ok()?
        .into_iter()
        .filter(|d| d.package_id == package && d.status == DeploymentStatus::Active)
        .map(|d| format!("{} ({})", d.id, d.name))
        .collect();
    (!users.is_empty()).then(|| users.join(", "))
}

async fn download(args: &DownloadArgs, client: &Client, quiet: bool) -> Result<()> {
    let package = client
        .package(args.id)
        .await
        .with_context(|| format!("reading package {}", args.id))?;
    let out = &args.out;
    if let Ok(metadata) = std::fs::metadata(out) {
        let same = metadata.len() == package.size
            && sha256_of_file(out).ok().as_deref() == Some(package.sha256.as_str());
        if same {
            println!("{} is already package {}", out.display(), package.id);
            return Ok(());
        }
        if !args.force {
            bail!(
                "{} exists and is not this package; pass --force to replace it",
                out.display()
            );
        }
    }
    let part = part_path(out, &package.sha256)?;
    let resumed = download_to(client, &package, &part, quiet)
        .await
        .with_context(|| format!("downloading package {} to {}", package.id, part.display()))?;
    std::fs::rename(&part, out)
        .with_context(|| format!("moving {} to {}", part.display(), out.display()))?;
    println!(
        "downloaded {} {} to {} ({}, sha256 {})",
        package.name,
        package.version,
        out.display(),
        output::size(package.size),
        package.sha256
    );
    if resumed > 0 {
        println!("resumed an earlier download after {resumed} bytes");
    }
    Ok(())
}

/// `dir/.name.<first 16 hex of the sha256>.part`: tied to the package's
/// content, so a partial file is only ever resumed with the same bytes.
fn part_path(out: &Path, sha256: &str) -> Result<PathBuf> {
    let name = out
        .file_name()
        .with_context(|| format!("{} names no file", out.display()))?
        .to_string_lossy();
    let tag: String = sha256.chars().take(16).collect();
    Ok(out.with_file_name(format!(".{name}.{tag}.part")))
}

/// The strong entity tag the server gives a package's file.
fn entity_tag(package: &Package) -> String {
    format!("\"{}\"", package.sha256)
}

/// Downloads `package` into `part`, resuming from what `part` holds, and
/// checks the whole file's size and SHA-256. A bad file is deleted. Returns
/// how many bytes were already there and kept.
async fn download_to(client: &Client, package: &Package, part: &Path, quiet: bool) -> Result<u64> {
    let mut part = Part::open(part, package.size).await?;
    let mut kept = part.len;
    if kept < package.size {
        let resume = (kept > 0).then(|| Resume {
            offset: kept,
            if_range: entity_tag(package),
        });
        let response = client.download_package(package.id, resume.as_ref()).await?;
        if !sends_the_rest(&response, package, part.path, kept)? {
            // The whole file: the package changed, or the server ignores ranges.
            part.restart().await?;
            kept = 0;
        }
        part = part.receive(response, package, quiet).await?;
    }
    part.finish(package).await?;
    Ok(kept)
}

/// Whether the server's answer to a download from `offset` is the rest of
/// the same file (206), rather than the whole file (200). Anything else,
/// or a range or entity tag that does not continue the partial file, is an
/// error.
fn sends_the_rest(
    response: &reqwest::Response,
    package: &Package,
    part: &Path,
    offset: u64,
) -> Result<bool> {
    match response.status() {
        StatusCode::PARTIAL_CONTENT => {
            check_content_range(response, offset, package.size)?;
            let etag = response.headers().get(ETAG).and_then(|v| v.to_str().ok());
            if etag != Some(entity_tag(package).as_str()) {
                bail!(
                    "the server sent part of a different file (ETag {etag:?}); delete {} and run again",
                    part.display()
                );
            }
            Ok(true)
        }
        StatusCode::OK => Ok(false),
        other => bail!("the server answered {other} to a download"),
    }
}

/// The partial file of a download: what it holds, and the hash of that.
#[derive(Debug)]
struct Part<'a> {
    path: &'a Path,
    file: tokio::fs::File,
    /// Bytes it holds.
    len: u64,
    /// SHA-256 of those bytes.
    hasher: Sha256,
}

impl<'a> Part<'a> {
    /// Opens (or creates) the partial file and hashes what it holds of a
    /// file of `size` bytes; if it holds more, or cannot be read, it starts
    /// over empty.
    async fn open(path: &'a Path, size: u64) -> Result<Part<'a>> {
        let mut hasher = Sha256::new();
        let mut len = match std::fs::metadata(path) {
            Ok(metadata) if metadata.len() <= size => metadata.len(),
            _ => 0,
        };
        if len > 0 {
            // Hash what is there already; if that fails, start over.
            match hash_prefix(path, len, &mut hasher) {
                Ok(()) => {}
                Err(_) => {
                    len = 0;
                    hasher = Sha256::new();
                }
            }
        }
        let file = tokio::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(false)
            .open(path)
            .await
            .with_context(|| format!("opening {}", path.display()))?;
        file.set_len(len).await?;
        Ok(Part {
            path,
            file,
            len,
            hasher,
        })
    }

    /// Empties the partial file, for a download of the whole file.
    async fn restart(&mut self) -> Result<()> {
        self.len = 0;
        self.hasher = Sha256::new();
        self.file.set_len(0).await?;
        Ok(())
    }

    /// Appends the response's body, with a progress bar, up to the
    /// package's size. What arrived before the body broke off is kept, for
    /// the next run to resume; a body longer than the package deletes the
    /// file.
    async fn receive(
        mut self,
        response: reqwest::Response,
        package: &Package,
        quiet: bool,
    ) -> Result<Part<'a>> {
        let size = package.size;
        self.file.seek(std::io::SeekFrom::Start(self.len)).await?;
        let bar = output::byte_progress(
            size,
            quiet,
            format!("downloading {} {}", package.name, package.version),
        );
        bar.set_position(self.len);
        let mut body = response.bytes_stream();
        while let Some(chunk) = body.next().await {
            let chunk = match chunk {
                Ok(chunk) => chunk,
                Err(error) => {
                    // Keep what arrived: the next run resumes from there.
                    let _ = self.file.flush().await;
                    return Err(error)
                        .context("the download broke off; run the command again to resume it");
                }
            };
            self.len += chunk.len() as u64;
            if self.len > size {
                let path = self.path;
                drop(self);
                let _ = std::fs::remove_file(path);
                bail!("the server sent more than the package's {size} bytes");
            }
            self.hasher.update(&chunk);
            self.file
                .write_all(&chunk)
                .await
                .with_context(|| format!("writing {}", self.path.display()))?;
            bar.inc(chunk.len() as u64);
        }
        bar.finish_and_clear();
        if self.len < size {
            bail!(
                "the download stopped after {} of {size} bytes; run the command again to resume",
                self.len
            );
        }
        Ok(self)
    }

    /// Syncs the file and checks its SHA-256 against the package's; a file
    /// that does not match is deleted.
    async fn finish(self, package: &Package) -> Result<()> {
        let Part {
            path, file, hasher, ..
        } = self;
        file.sync_all().await?;
        drop(file);
        let digest = hex::encode(hasher.finalize());
        if digest != package.sha256 {
            let _ = std::fs::remove_file(path);
            bail!(
                "the downloaded file's SHA-256 is {digest}, not the server's {}; it was deleted, run the command again",
                package.sha256
            );
        }
        Ok(())
    }
}

/// A 206 must continue exactly where the partial file ends.
fn check_content_range(response: &reqwest::Response, offset: u64, size: u64) -> Result<()> {
    let value = response
        .headers()
        .get(CONTENT_RANGE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let expected = format!("bytes {offset}-{}/{size}", size - 1);
    if value != expected {
        bail!("the server sent range {value:?}, expected {expected:?}; delete the .part file and run again");
    }
    Ok(())
}

fn hash_prefix(path: &Path, len: u64, hasher: &mut Sha256) -> std::io::Result<()> {
    let mut reader = BufReader::with_capacity(1 << 20, File::open(path)?).take(len);
    let mut buf = vec![0u8; 1 << 20];
    let mut seen = 0;
    loop {
        let n = reader.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        seen += n as u64;
    }
    if seen != len {
        return Err(std::io::Error::other("the partial file shrank"));
    }
    Ok(())
}

fn sha256_of_file(path: &Path) -> std::io::Result<String> {
    let len = std::fs::metadata(path)?.len();
    let mut hasher = Sha256::new();
    hash_prefix(path, len, &mut hasher)?;
    Ok(hex::encode(hasher.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partial_files_are_hidden_and_named_after_the_content() {
        let part =
            part_path(Path::new("out/rootfs.airlift"), "0123456789abcdef0123").expect("path");
        assert_eq!(
            part,
            PathBuf::from("out/.rootfs.airlift.0123456789abcdef.part")
        );
        assert!(part_path(Path::new("/"), "00").is_err());
    }
}
