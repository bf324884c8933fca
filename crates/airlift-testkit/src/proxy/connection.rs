//! One proxied connection: client → server request by request, each
//! request's fault decided before it is forwarded; server → client bytes,
//! with the fault of the request being answered applied to them. One
//! request is answered at a time on a connection (HTTP/1.1 without
//! pipelining, as the agent and reqwest speak it).

use super::{
    NetFault, ProxyStats, Shared, DOWNLOAD_CUT_PERCENT, ENDLESS_CAP, OTHER_CUT_PERCENT,
    REFUSE_PERCENT,
};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;

/// A request head longer than this is not HTTP the proxy forwards.
const MAX_HEAD: usize = 64 * 1024;

const UNAVAILABLE: &[u8] =
    b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\nconnection: close\r\n\r\n";

/// The seeded chance of one connection.
#[derive(Debug)]
pub(super) struct Chance(SmallRng);

impl Chance {
    pub(super) fn new(seed: u64, connection: u64) -> Self {
        Self(SmallRng::seed_from_u64(
            seed ^ connection.wrapping_mul(0x9E37_79B9),
        ))
    }

    fn fate(&mut self, download: bool) -> NetFault {
        let roll = self.0.gen_range(0..100);
        if roll < REFUSE_PERCENT {
            return NetFault::Unavailable;
        }
        let (cut, bytes) = if download {
            (DOWNLOAD_CUT_PERCENT, 64 * 1024)
        } else {
            (OTHER_CUT_PERCENT, 400)
        };
        if roll < REFUSE_PERCENT + cut {
            NetFault::CutAfter(self.0.gen_range(0..bytes))
        } else {
            NetFault::Pass
        }
    }
}

/// A request whose answer is flowing back.
#[derive(Debug, Clone, Copy)]
struct Answering {
    fault: NetFault,
    download: bool,
    /// Answer bytes forwarded so far.
    sent: usize,
}

/// The request being answered; `None` before the first.
type Current = Arc<Mutex<Option<Answering>>>;
type ClientWrite = Arc<tokio::sync::Mutex<OwnedWriteHalf>>;

pub(super) async fn run(
    client: TcpStream,
    shared: Arc<Shared>,
    chance: Option<Chance>,
) -> std::io::Result<()> {
    let server = TcpStream::connect(&shared.upstream).await?;
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    let client_write = Arc::new(tokio::sync::Mutex::new(client_write));
    let current: Current = Arc::default();
    // Whichever side ends first ends the connection.
    tokio::select! {
        _ = answers(server_read, client_write.clone(), current.clone(), &shared) => {},
        _ = requests(client_read, server_write, client_write, current, &shared, chance) => {},
    }
    Ok(())
}

/// Server → client.
async fn answers(
    mut server: OwnedReadHalf,
    client: ClientWrite,
    current: Current,
    shared: &Shared,
) -> std::io::Result<()> {
    let stats = &shared.stats;
    let mut buf = vec![0u8; 16 * 1024];
    // Body bytes of an endless answer still to come from the server.
    let mut endless_left: Option<u64> = None;
    loop {
        let n = server.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        let (n, answering) = shape(&mut buf[..n], &current, shared);
        match answering.map(|a| (a.fault, a.sent == n)) {
            Some((NetFault::Throttle(rate), _)) => drip(&client, &buf[..n], rate).await?,
            Some((NetFault::Endless, first)) => {
                if first {
                    endless_left = endless_head(&mut buf[..n]);
                } else if let Some(left) = endless_left.as_mut() {
                    *left = left.saturating_sub(n as u64);
                }
                client.lock().await.write_all(&buf[..n]).await?;
                if endless_left == Some(0) {
                    fill(&client, stats).await;
                    break;
                }
            }
            _ => {
                let substituted = answering
                    .filter(|a| !a.download)
                    .and_then(|_| substitute_offer(&buf[..n], shared));
                let bytes = substituted.as_deref().unwrap_or(&buf[..n]);
                client.lock().await.write_all(bytes).await?
            }
        }
        let Some(answering) = answering else { continue };
        if answering.download {
            ProxyStats::add(&stats.download_bytes, n as u64);
        }
        match answering.fault {
            NetFault::CutAfter(k) if answering.sent >= k => {
                ProxyStats::add(&stats.cuts, 1);
                break;
            }
            NetFault::StallAfter(k, pause) if answering.sent >= k => {
                ProxyStats::add(&stats.cuts, 1);
                tokio::time::sleep(pause).await;
                break;
            }
            _ => {}
        }
    }
    client.lock().await.shutdown().await
}

/// Writes `bytes` at `rate` bytes per second, in small steps.
async fn drip(client: &ClientWrite, bytes: &[u8], rate: u64) -> std::io::Result<()> {
    let step = usize::try_from(rate / 20).unwrap_or(usize::MAX).max(1);
    for piece in bytes.chunks(step) {
        client.lock().await.write_all(piece).await?;
        let pause = piece.len() as f64 / rate.max(1) as f64;
        tokio::time::sleep(std::time::Duration::from_secs_f64(pause)).await;
    }
    Ok(())
}

/// In the first chunk of an endless answer: takes its `content-length`
/// away (renamed, same length, so nothing moves) and returns how many body
/// bytes are still to come after this chunk.
fn endless_head(chunk: &mut [u8]) -> Option<u64> {
    const NAME: &[u8] = b"content-length:";
    let head_end = chunk.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let at = chunk[..head_end]
        .windows(NAME.len())
        .position(|w| w.eq_ignore_ascii_case(NAME))?;
    chunk[at..at + NAME.len()].copy_from_slice(b"x-endless-data:");
    let value = &chunk[at + NAME.len()..head_end];
    let line_end = value.iter().position(|&b| b == b'\r')?;
    let length: u64 = std::str::from_utf8(&value[..line_end])
        .ok()?
        .trim()
        .parse()
        .ok()?;
    Some(length.saturating_sub((chunk.len() - head_end) as u64))
}

/// Sends filler after an endless answer's real body until the client
/// stops taking it (or [`ENDLESS_CAP`]).
async fn fill(client: &ClientWrite, stats: &ProxyStats) {
    let filler = vec![b'A'; 16 * 1024];
    let mut sent = 0u64;
    while sent < ENDLESS_CAP {
        if client.lock().await.write_all(&filler).await.is_err() {
            return;
        }
        sent += filler.len() as u64;
        ProxyStats::add(&stats.filler, filler.len() as u64);
    }
}

/// Applies the current request's fault to an answer chunk: how many of its
/// bytes go on, and the request's state after them.
fn shape(chunk: &mut [u8], current: &Current, shared: &Shared) -> (usize, Option<Answering>) {
    let Ok(mut guard) = current.lock() else {
        return (chunk.len(), None);
    };
    let Some(answering) = guard.as_mut() else {
        return (chunk.len(), None);
    };
    let n = match answering.fault {
        NetFault::CutAfter(k) | NetFault::StallAfter(k, _) => {
            chunk.len().min(k.saturating_sub(answering.sent))
        }
        _ => chunk.len(),
    };
    if let NetFault::Corrupt(at) = answering.fault {
        if (answering.sent..answering.sent + n).contains(&at) {
            chunk[at - answering.sent] ^= 0xFF;
        }
    }
    if !answering.download {
        let tamper = shared.tamper.lock().ok().and_then(|t| t.clone());
        if let Some((from, to)) = tamper {
            if tamper_offer(&mut chunk[..n], &from, &to) {
                ProxyStats::add(&shared.stats.tampered, 1);
            }
        }
    }
    answering.sent += n;
    (n, Some(*answering))
}

/// Client → server.
async fn requests(
    client: OwnedReadHalf,
    mut server: OwnedWriteHalf,
    client_write: ClientWrite,
    current: Current,
    shared: &Shared,
    mut chance: Option<Chance>,
) -> std::io::Result<()> {
    let stats = &shared.stats;
    let mut reader = BufReader::new(client);
    loop {
        let Some(head) = read_head(&mut reader).await? else {
            return Ok(());
        };
        let text = String::from_utf8_lossy(&head).to_ascii_lowercase();
        let length: u64 = text
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        let download = text
            .lines()
            .next()
            .is_some_and(|l| l.starts_with("get ") && l.contains("/download"));
        ProxyStats::add(&stats.requests, 1);
        if download {
            ProxyStats::add(&stats.downloads, 1);
        }
        let fault = match chance.as_mut() {
            Some(chance) => chance.fate(download),
            None if download => shared
                .plan
                .lock()
                .ok()
                .and_then(|mut plan| plan.pop_front())
                .unwrap_or(NetFault::Pass),
            None => NetFault::Pass,
        };
        let substitute = download
            .then(|| shared.substitute.lock().ok().and_then(|s| s.clone()))
            .flatten();
        if let Some(substitute) = substitute {
            // A hostile mirror answers the download itself.
            tokio::io::copy(&mut (&mut reader).take(length), &mut tokio::io::sink()).await?;
            let (answer, body) = answer_from(&substitute.file, &text);
            ProxyStats::add(&stats.tampered, 1);
            ProxyStats::add(&stats.download_bytes, body);
            let mut client = client_write.lock().await;
            client.write_all(&answer).await?;
            return client.shutdown().await;
        }
        if fault == NetFault::Unavailable {
            ProxyStats::add(&stats.refusals, 1);
            let mut client = client_write.lock().await;
            client.write_all(UNAVAILABLE).await?;
            return client.shutdown().await;
        }
        if let Ok(mut current) = current.lock() {
            *current = Some(Answering {
                fault,
                download,
                sent: 0,
            });
        }
        if let NetFault::HoldRequest(pause) = fault {
            tokio::time::sleep(pause).await;
        }
        server.write_all(&head).await?;
        forward_body(&mut reader, &mut server, length).await?;
    }
}

/// A request head, up to its blank line; `None` at the end of the stream.
async fn read_head(reader: &mut BufReader<OwnedReadHalf>) -> std::io::Result<Option<Vec<u8>>> {
    let mut head = Vec::new();
    loop {
        let mut line = Vec::new();
        if reader.read_until(b'\n', &mut line).await? == 0 {
            return Ok(None);
        }
        head.extend_from_slice(&line);
        if line == b"\r\n" || head.len() > MAX_HEAD {
            return Ok(Some(head));
        }
    }
}

/// Copies exactly `length` body bytes, whatever their size.
async fn forward_body(
    reader: &mut (impl AsyncRead + Unpin),
    server: &mut (impl AsyncWrite + Unpin),
    length: u64,
) -> std::io::Result<()> {
    let copied = tokio::io::copy(&mut reader.take(length), server).await?;
    if copied < length {
        return Err(std::io::ErrorKind::UnexpectedEof.into());
    }
    Ok(())
}

/// Rewrites the signed head of an offer in `answer` (a check-in answer,
/// small enough to arrive in one read): base64-decodes it, replaces `from`
/// by `to` once, encodes it again. Returns whether it did.
fn tamper_offer(answer: &mut [u8], from: &[u8], to: &[u8]) -> bool {
    use base64::Engine as _;
    const KEY: &[u8] = b"\"signed_manifest\":\"";
    let Some(start) = answer.windows(KEY.len()).position(|w| w == KEY) else {
        return false;
    };
    let start = start + KEY.len();
    let Some(len) = answer[start..].iter().position(|&b| b == b'"') else {
        return false;
    };
    let engine = base64::engine::general_purpose::STANDARD;
    let Ok(mut head) = engine.decode(&answer[start..start + len]) else {
        return false;
    };
    let Some(at) = head.windows(from.len()).position(|w| w == from) else {
        return false;
    };
    head[at..at + to.len()].copy_from_slice(to);
    let encoded = engine.encode(head);
    answer[start..start + len].copy_from_slice(encoded.as_bytes());
    true
}

/// A check-in answer (one read, as for [`tamper_offer`]) whose offer now
/// carries the substitute's head, size and SHA-256, its `content-length`
/// set again; `None` when there is no substitute or no offer in it.
fn substitute_offer(answer: &[u8], shared: &Shared) -> Option<Vec<u8>> {
    use base64::Engine as _;
    let substitute = shared.substitute.lock().ok()?.clone()?;
    let head_end = answer.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let mut body: serde_json::Value = serde_json::from_slice(&answer[head_end..]).ok()?;
    let offer = offer_in(&mut body)?;
    let engine = base64::engine::general_purpose::STANDARD;
    offer.insert(
        "signed_manifest".into(),
        engine.encode(&substitute.head).into(),
    );
    offer.insert("size".into(), substitute.file.len().into());
    let sha256 = airlift_package::Sha256Digest::of(&substitute.file).to_string();
    offer.insert("sha256".into(), sha256.into());
    let body = serde_json::to_vec(&body).ok()?;
    let head = String::from_utf8_lossy(&answer[..head_end]);
    let mut rewritten = String::new();
    for line in head.split_inclusive("\r\n") {
        if line.to_ascii_lowercase().starts_with("content-length:") {
            rewritten.push_str(&format!("content-length: {}\r\n", body.len()));
        } else {
            rewritten.push_str(line);
        }
    }
    ProxyStats::add(&shared.stats.tampered, 1);
    let mut out = rewritten.into_bytes();
    out.extend_from_slice(&body);
    Some(out)
}

/// The object in `value` that has a `signed_manifest`: the offer.
fn offer_in(
    value: &mut serde_json::Value,
) -> Option<&mut serde_json::Map<String, serde_json::Value>> {
    use serde_json::Value;
    let map = match value {
        Value::Object(map) => map,
        Value::Array(items) => return items.iter_mut().find_map(offer_in),
        _ => return None,
    };
    if map.contains_key("signed_manifest") {
        return Some(map);
    }
    map.values_mut().find_map(offer_in)
}

/// The answer to a download request (its head lower-cased) from `file`:
/// the byte range it asks for (`bytes=START-` or `START-END`) as `206`,
/// else the whole file; with the body's length.
fn answer_from(file: &[u8], request: &str) -> (Vec<u8>, u64) {
    let total = file.len() as u64;
    let range = request
        .lines()
        .find_map(|l| l.strip_prefix("range:"))
        .and_then(|v| v.trim().strip_prefix("bytes="))
        .and_then(|r| {
            let (start, end) = r.split_once('-')?;
            let start: u64 = start.parse().ok()?;
            let last = total.checked_sub(1)?;
            let end = match end {
                "" => last,
                end => end.parse::<u64>().ok()?.min(last),
            };
            (start <= end).then_some((start, end))
        });
    let etag = airlift_package::Sha256Digest::of(file);
    let (status, extra, body) = match range {
        Some((start, end)) => (
            "206 Partial Content",
            format!("content-range: bytes {start}-{end}/{total}\r\n"),
            &file[start as usize..=end as usize],
        ),
        None => ("200 OK", String::new(), file),
    };
    let mut answer = format!(
        "HTTP/1.1 {status}\r\ncontent-type: application/octet-stream\r\naccept-ranges: bytes\r\netag: \"{etag}\"\r\n{extra}content-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    answer.extend_from_slice(body);
    (answer, body.len() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine as _;

    #[test]
    fn an_offer_head_is_altered_in_place_and_other_answers_are_not() {
        let engine = base64::engine::general_purpose::STANDARD;
        let head = engine.encode(b"name rootfs version 2.0.0 sig");
        let mut answer = format!("{{\"offer\":{{\"signed_manifest\":\"{head}\"}}}}").into_bytes();
        assert!(tamper_offer(&mut answer, b"2.0.0", b"9.0.0"));
        let text = String::from_utf8(answer).expect("utf-8");
        let altered = engine.encode(b"name rootfs version 9.0.0 sig");
        assert!(text.contains(&altered), "{text}");
        assert!(!tamper_offer(&mut b"{\"poll\":1}".to_vec(), b"2", b"9"));
    }

    #[test]
    fn chance_is_repeatable_and_keeps_its_shares() {
        let fates = |seed| {
            let mut chance = Chance::new(seed, 1);
            (0..2000)
                .map(|i| chance.fate(i % 2 == 0))
                .collect::<Vec<_>>()
        };
        assert_eq!(fates(7), fates(7));
        let all = fates(7);
        let refused = all.iter().filter(|f| **f == NetFault::Unavailable).count();
        assert!((50..150).contains(&refused), "{refused} of 2000 refused");
        let cut = all
            .iter()
            .filter(|f| matches!(f, NetFault::CutAfter(_)))
            .count();
        // (35 % of downloads + 10 % of others) / 2 = 22.5 %.
        assert!((350..550).contains(&cut), "{cut} of 2000 cut");
    }
}
