//! Streaming a package into the installers, resumably, with no copy of it
//! on the device.
//!
//! The package head (header, manifest, signatures) came with the offer and
//! is saved on its own; it is verified against the trusted keys before a
//! byte of payload is read. Then the payloads flow from the download through
//! the package reader (stored size and digest), the decoder (decryption,
//! decompression, installed size and digest) and into the installers:
//! images into the inactive slot, files and modules through their journals.
//!
//! # Resuming
//!
//! While streaming, the driver saves a *checkpoint*: the package offset up to
//! which everything is durably done. A restart goes on from there, so it is
//! only taken where going on from it is sound:
//!
//! - inside a raw image payload (neither compressed nor encrypted, so stored
//!   bytes are installed bytes), at the installed byte the slot has synced: a
//!   restart reads those bytes back from the slot — to hash them with the
//!   rest — and fetches only what follows;
//! - at the end of an image payload, once it is synced;
//! - only while every earlier payload is an image too. Installers that change
//!   things in place are rolled back at every (re)start of a stream, so a
//!   restart after one of them ran starts over from the first payload.
//!
//! A compressed or encrypted payload cannot be resumed in its middle (the
//! decoder's state is not saved), so an interrupted one starts again at its
//! first byte. Within one run a broken connection costs nothing: the
//! download reconnects with `Range` and the decoder never notices.
//!
//! # Damaged blocks
//!
//! In a format 2 package the reader checks every block against the signed
//! block index before handing any of it on. A block from the server that
//! does not match (a byte flipped in transit, a bad cache) is fetched again
//! with `Range` from its first byte, up to [`REFETCHES_PER_BLOCK`] times,
//! and the stream goes on as if nothing happened: nothing of a damaged
//! block ever reaches a decoder or a slot. A block still damaged after
//! that, or more than [`MAX_DAMAGED_BLOCKS`] damaged blocks in one stream,
//! fail the update with the block named ([`Damage::Refetched`]). Blocks read
//! back from the slot (a resumed write's first bytes) and local package
//! files are not fetched again: they would only read the same bytes.

use crate::download::{Refetch, RefetchRequests, ResumableDownload};
use crate::install::{InstallError, Installer, Installers, PayloadRef, SlotWrite};
use airlift_package::encryption::IdentityTrait;
use airlift_package::{
    Compression, Encryption, Limits, Manifest, PackageReader, PayloadEntry, PayloadType, TrustSet,
    Verified,
};
use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, Read, Seek};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// How many times one damaged block is fetched again before the update
/// fails: a flipped byte in transit is gone on the next try; damage that
/// survives three fresh requests (the later ones past the store URL's
/// cache, see `download`) is in the source or in something that alters
/// every answer, and trying on would only cost bandwidth.
pub const REFETCHES_PER_BLOCK: u32 = 3;

/// Distinct damaged blocks one stream fetches again at most: a link that
/// damages more is not fit to update over, and the bound keeps what is
/// downloaded in all below the package's size plus this many blocks
/// (times [`REFETCHES_PER_BLOCK`]).
pub const MAX_DAMAGED_BLOCKS: usize = 64;

/// Where a stream starts: a payload, and installed bytes of it already in
/// its slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResumePoint {
    /// The first payload to read (the payload count: only the check for
    /// trailing data is left).
    pub payload: usize,
    /// Installed bytes of that payload already durably in its slot.
    pub already: u64,
}

/// Where a stream checkpointed at package offset `offset` goes on, given
/// the payloads' file ranges. Falls back to the start of a payload, or of
/// the package, wherever the checkpoint cannot be trusted as it is.
pub fn resume_point(manifest: &Manifest, ranges: &[Range<u64>], offset: u64) -> ResumePoint {
    let start = ResumePoint {
        payload: 0,
        already: 0,
    };
    for (index, (entry, range)) in manifest.payloads.iter().zip(ranges).enumerate() {
        if offset < range.end || (offset == range.end && range.is_empty()) {
            let already = if resumable_inside(entry) {
                offset.saturating_sub(range.start)
            } else {
                0
            };
            return ResumePoint {
                payload: index,
                already,
            };
        }
        if entry.kind != PayloadType::Image {
            // Checkpoints never pass an in-place payload: distrust this one.
            return start;
        }
    }
    ResumePoint {
        payload: manifest.payloads.len(),
        already: 0,
    }
}

/// Whether a payload can be resumed in its middle: a raw image.
fn resumable_inside(entry: &PayloadEntry) -> bool {
    entry.kind == PayloadType::Image
        && entry.compression == Compression::None
        && entry.encryption == Encryption::None
}

/// The package offset to checkpoint once payload `index` is written up to
/// `installed` bytes (synced), or `None` if a restart could not go on from
/// there.
fn checkpoint_at(
    manifest: &Manifest,
    ranges: &[Range<u64>],
    index: usize,
    installed: u64,
) -> Option<u64> {
    let entry = manifest.payloads.get(index)?;
    let range = ranges.get(index)?;
    let only_images_before = manifest.payloads[..index]
        .iter()
        .all(|e| e.kind == PayloadType::Image);
    if !only_images_before || entry.kind != PayloadType::Image {
        return None;
    }
    if installed == entry.installed.size {
        return Some(range.end);
    }
    resumable_inside(entry).then(|| range.start + installed)
}

/// Where the package's bytes after the head come from.
pub enum Source<'a> {
    /// The server, for an offer.
    Server(Box<ResumableDownload<'a>>),
    /// A local package file (`airlift-agent install FILE`).
    File(PathBuf),
}

impl std::fmt::Debug for Source<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::Server(download) => f.debug_tuple("Server").field(download).finish(),
            Source::File(path) => f.debug_tuple("File").field(path).finish(),
        }
    }
}

/// What a stream needs besides its source.
pub struct Stream<'a> {
    /// The package head: header, manifest and signatures.
    pub head: &'a [u8],
    /// The keys a package must be signed with.
    pub trust: &'a TrustSet,
    /// Keys for encrypted payloads.
    pub identities: &'a [&'a dyn IdentityTrait],
    /// The installers to stream into.
    pub installers: &'a mut Installers,
    /// The checkpoint the stream starts from (0: the beginning).
    pub from_offset: u64,
    /// How often (in installed bytes) an image slot is synced and
    /// checkpointed.
    pub sync_every: u64,
    /// Saves a checkpoint: the package offset durably reached.
    pub checkpoint: &'a mut (dyn FnMut(u64) -> io::Result<()> + Send),
}

impl std::fmt::Debug for Stream<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stream")
            .field("head_len", &self.head.len())
            .field("from_offset", &self.from_offset)
            .field("sync_every", &self.sync_every)
            .finish_non_exhaustive()
    }
}

/// Why a stream ended early.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    /// The download broke off or was refused; the download's own error
    /// says whether trying again may help.
    #[error("download: {0}")]
    Download(#[source] crate::client::ClientError),
    /// The package is not what was signed, or not for this device.
    #[error("the package is damaged or does not verify: {0}")]
    Damaged(Damage),
    /// An installer failed for reasons of its own (a slot that cannot be
    /// written, a module that exited with an error).
    #[error("install failed: {0}")]
    Install(String),
}

/// What is wrong with the package's bytes.
#[derive(Debug, thiserror::Error)]
pub enum Damage {
    /// The package reader's verdict: a signature, a block, a digest or a
    /// size that does not match, a payload that does not decode.
    #[error("{0}")]
    Package(airlift_package::Error),
    /// A block that arrived damaged every time it was fetched.
    #[error("{error}; fetched {fetches} times, damaged every time: something between the device and the server (a proxy, a cache, the link) alters these bytes, or the package stored on the server is damaged")]
    Refetched {
        /// The last [`airlift_package::Error::BlockMismatch`].
        error: airlift_package::Error,
        /// How many times the block was fetched in all.
        fetches: u32,
    },
    /// The package disagrees with its own manifest.
    #[error("{0}")]
    Inconsistent(String),
}

impl Damage {
    /// The file bytes found damaged, when known.
    pub fn damaged_range(&self) -> Option<Range<u64>> {
        match self {
            Damage::Package(error) | Damage::Refetched { error, .. } => error.damaged_range(),
            Damage::Inconsistent(_) => None,
        }
    }
}

fn damaged(error: airlift_package::Error) -> StreamError {
    StreamError::Damaged(Damage::Package(error))
}

/// The damaged blocks of one stream fetched again, by the file offset of
/// their first byte: how many times each was asked for.
#[derive(Debug, Default)]
struct Refetched(BTreeMap<u64, u32>);

/// Fetches damaged blocks from the server again, within the bounds.
#[derive(Debug, Clone)]
struct BlockRefetch {
    requests: RefetchRequests,
    /// The first package offset the download serves: bytes before it came
    /// from the slot (a resumed write), and fetching them would not help.
    fetch_from: u64,
    asked: Arc<Mutex<Refetched>>,
}

impl BlockRefetch {
    /// The package reader's hook: asks the download for a damaged block
    /// again and answers whether it did.
    fn ask(&self, error: &airlift_package::Error) -> bool {
        let Some(range) = error.damaged_range() else {
            return false;
        };
        if range.end <= self.fetch_from
            || !matches!(error, airlift_package::Error::BlockMismatch { .. })
        {
            return false;
        }
        let Ok(mut asked) = self.asked.lock() else {
            return false;
        };
        let known = asked.0.len();
        let attempts = asked.0.entry(range.start).or_default();
        if *attempts >= REFETCHES_PER_BLOCK || (*attempts == 0 && known >= MAX_DAMAGED_BLOCKS) {
            return false;
        }
        *attempts += 1;
        tracing::warn!(
            %error,
            attempt = *attempts,
            of = REFETCHES_PER_BLOCK,
            "a block arrived damaged; fetching it again"
        );
        self.requests.ask(Refetch {
            from: range.start,
            attempt: *attempts,
        });
        true
    }

    /// The stream's error for the reader's `error`: a block that was
    /// fetched again and is still damaged says so.
    fn explain(&self, error: airlift_package::Error) -> Damage {
        let refetches = error.damaged_range().and_then(|range| {
            let asked = self.asked.lock().ok()?;
            asked.0.get(&range.start).copied()
        });
        match refetches {
            Some(refetches) => Damage::Refetched {
                error,
                fetches: refetches + 1,
            },
            None => Damage::Package(error),
        }
    }
}

/// Streams the package into the installers from `stream.from_offset`, up
/// to the check that nothing follows the last payload.
pub fn run(stream: Stream<'_>, source: Source<'_>) -> Result<(), StreamError> {
    let Stream {
        head,
        trust,
        identities,
        installers,
        from_offset,
        sync_every,
        checkpoint,
    } = stream;
    let verified = PackageReader::open(head, Limits::default())
        .and_then(|reader| reader.verify(trust))
        .map_err(damaged)?;
    let manifest = verified.manifest().clone();
    let ranges = verified.payload_ranges();
    let package_end = ranges.last().map_or(head.len() as u64, |r| r.end);
    let resume = resume_point(&manifest, &ranges, from_offset);
    let fetch_from = ranges
        .get(resume.payload)
        .map_or(package_end, |r| r.start + resume.already);

    // Bytes already in the slot, read back to be hashed with the rest.
    let prefix: Box<dyn Read> = if resume.already > 0 {
        let payload = PayloadRef::new(&manifest, resume.payload).ok_or_else(|| {
            StreamError::Damaged(Damage::Inconsistent(
                "resume point outside the package".into(),
            ))
        })?;
        let path = installers
            .image
            .slot_path(payload)
            .map_err(|e| StreamError::Install(e.to_string()))?;
        let slot = File::open(path).map_err(|e| local(path, e))?;
        Box::new(slot.take(resume.already))
    } else {
        Box::new(io::empty())
    };
    tracing::info!(
        from_offset,
        payload = resume.payload,
        already = resume.already,
        fetch_from,
        "streaming the package"
    );

    let pipeline = Pipeline {
        trust,
        identities,
        installers,
        manifest: &manifest,
        ranges: &ranges,
        resume,
        sync_every,
        checkpoint,
        refetch: None,
    };
    match source {
        Source::Server(mut download) => {
            download.seek_to(fetch_from);
            let pipeline = Pipeline {
                refetch: Some(BlockRefetch {
                    requests: download.refetch_requests(),
                    fetch_from,
                    asked: Arc::default(),
                }),
                ..pipeline
            };
            let result = install_from(head, prefix.chain(&mut download), pipeline);
            // A broken download surfaces as a damaged read: say what it was.
            match (result, download.take_failure()) {
                (Err(_), Some(failure)) => Err(StreamError::Download(failure)),
                (result, _) => result,
            }
        }
        Source::File(path) => {
            let mut file = File::open(&path).map_err(|e| local(&path, e))?;
            file.seek(io::SeekFrom::Start(fetch_from))
                .map_err(|e| local(&path, e))?;
            install_from(head, prefix.chain(io::BufReader::new(file)), pipeline)
        }
    }
}

struct Pipeline<'a> {
    trust: &'a TrustSet,
    identities: &'a [&'a dyn IdentityTrait],
    installers: &'a mut Installers,
    manifest: &'a Verified<Manifest>,
    ranges: &'a [Range<u64>],
    resume: ResumePoint,
    sync_every: u64,
    checkpoint: &'a mut (dyn FnMut(u64) -> io::Result<()> + Send),
    /// Damaged blocks fetched again (from the server only).
    refetch: Option<BlockRefetch>,
}

fn install_from(head: &[u8], rest: impl Read, pipeline: Pipeline<'_>) -> Result<(), StreamError> {
    let Pipeline {
        trust,
        identities,
        installers,
        manifest,
        ranges,
        resume,
        sync_every,
        checkpoint,
        refetch,
    } = pipeline;
    let damaged = |error: airlift_package::Error| {
        StreamError::Damaged(match &refetch {
            Some(refetch) => refetch.explain(error),
            None => Damage::Package(error),
        })
    };
    let mut package = PackageReader::open(head.chain(rest), Limits::default())
        .and_then(|reader| reader.verify(trust))
        .map_err(damaged)?;
    if let Some(refetch) = refetch.clone() {
        package.refetch_damaged_blocks(move |error| refetch.ask(error));
    }
    package.resume_at(resume.payload).map_err(damaged)?;
    let mut already = resume.already;
    while let Some(payload) = package.next_payload().map_err(damaged)? {
        let index = payload.index();
        let mut decoded = payload.decoded(identities).map_err(damaged)?;
        let target = PayloadRef::new(manifest, index).ok_or_else(|| {
            StreamError::Damaged(Damage::Inconsistent(format!(
                "payload {index} is not in the manifest"
            )))
        })?;
        let result = if target.entry().kind == PayloadType::Image {
            let mut synced =
                |installed: u64| match checkpoint_at(manifest, ranges, index, installed) {
                    Some(offset) => checkpoint(offset),
                    None => Ok(()),
                };
            let write = SlotWrite {
                already,
                sync_every,
                synced: &mut synced,
            };
            installers
                .image
                .write(target, &mut decoded, write)
                .and_then(|outcome| {
                    synced(outcome.bytes)
                        .map_err(InstallError::io("saving progress", "the state file"))
                })
        } else {
            installers.install(target, &mut decoded).map(drop)
        };
        already = 0;
        match result {
            Ok(()) => {}
            // The reader failed: the bytes (or the network) are at fault.
            Err(InstallError::Payload { source, .. }) => {
                return Err(damaged(airlift_package::Error::from(source)))
            }
            Err(other) => return Err(StreamError::Install(other.to_string())),
        }
    }
    package.finish().map_err(damaged)
}

fn local(path: &Path, error: io::Error) -> StreamError {
    StreamError::Install(format!("reading {}: {error}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use airlift_package::{encode_payload, EncodeOptions, PayloadSpec};

    fn manifest(kinds: &[(PayloadType, Compression)]) -> (Manifest, Vec<Range<u64>>) {
        let mut builder = Manifest::builder("pkg", semver::Version::new(1, 0, 0), ["board"]);
        for (kind, compression) in kinds {
            let spec = PayloadSpec::new(kind.clone(), "rootfs", *compression);
            let entry = encode_payload(
                &[7u8; 1000][..],
                &spec,
                &EncodeOptions::default(),
                &mut io::sink(),
            )
            .expect("encode");
            builder = builder.payload(entry);
        }
        let manifest = builder.build();
        let mut start = 100;
        let ranges = manifest
            .payloads
            .iter()
            .map(|entry| {
                let range = start..start + entry.stored.size;
                start = range.end;
                range
            })
            .collect();
        (manifest, ranges)
    }

    #[test]
    fn a_raw_image_resumes_at_the_byte_and_others_at_their_start() {
        let (manifest, ranges) = manifest(&[
            (PayloadType::Image, Compression::None),
            (PayloadType::Image, Compression::Zstd),
        ]);
        let at = |offset| resume_point(&manifest, &ranges, offset);
        assert_eq!(
            at(0),
            ResumePoint {
                payload: 0,
                already: 0
            }
        );
        assert_eq!(
            at(100),
            ResumePoint {
                payload: 0,
                already: 0
            }
        );
        assert_eq!(
            at(600),
            ResumePoint {
                payload: 0,
                already: 500
            }
        );
        assert_eq!(
            at(1100),
            ResumePoint {
                payload: 1,
                already: 0
            }
        );
        assert_eq!(
            at(1105),
            ResumePoint {
                payload: 1,
                already: 0
            }
        );
        assert_eq!(
            at(ranges[1].end),
            ResumePoint {
                payload: 2,
                already: 0
            }
        );
    }

    #[test]
    fn nothing_resumes_past_an_in_place_payload() {
        let (manifest, ranges) = manifest(&[
            (PayloadType::File, Compression::None),
            (PayloadType::Image, Compression::None),
        ]);
        assert_eq!(
            resume_point(&manifest, &ranges, ranges[1].start + 10),
            ResumePoint {
                payload: 0,
                already: 0
            }
        );
        // And no checkpoint is ever taken there.
        assert_eq!(checkpoint_at(&manifest, &ranges, 1, 10), None);
        assert_eq!(checkpoint_at(&manifest, &ranges, 0, 1000), None);
    }

    #[test]
    fn checkpoints_fall_inside_raw_images_and_at_image_ends() {
        let (manifest, ranges) = manifest(&[
            (PayloadType::Image, Compression::None),
            (PayloadType::Image, Compression::Zstd),
        ]);
        assert_eq!(checkpoint_at(&manifest, &ranges, 0, 10), Some(110));
        assert_eq!(
            checkpoint_at(&manifest, &ranges, 0, 1000),
            Some(ranges[0].end)
        );
        assert_eq!(checkpoint_at(&manifest, &ranges, 1, 10), None);
        assert_eq!(
            checkpoint_at(&manifest, &ranges, 1, 1000),
            Some(ranges[1].end)
        );
        // Every checkpoint resumes where it says.
        for installed in [0, 1, 999, 1000] {
            let offset = checkpoint_at(&manifest, &ranges, 0, installed).expect("raw");
            let point = resume_point(&manifest, &ranges, offset);
            let expected = if installed == 1000 {
                ResumePoint {
                    payload: 1,
                    already: 0,
                }
            } else {
                ResumePoint {
                    payload: 0,
                    already: installed,
                }
            };
            assert_eq!(point, expected);
        }
    }
}
