//! Downloads offloaded to the object store: the server (its package files
//! in `s3s-fs`, which checks presigned URLs' signatures and expiry) answers
//! the agent's download with a `307` to a presigned URL; the agent fetches
//! the package there, resumes there with `Range` after a cut, and asks the
//! server again when its URL has expired or the store refuses it.
//!
//! Two loopback proxies count and break things: one between the agent and
//! the server (each download request it sees is a redirect asked for), one
//! in front of `s3s-fs` (the server's `--blob-endpoint`, so the presigned
//! URLs point through it). The proxy meets requests whose path holds
//! `/download` with its planned faults: the blob prefix `downloads` makes
//! the agent's GETs of package objects such requests, and nothing else the
//! server sends the store is a GET of that path.

use crate::harness::{enrol, Device, Operator, RawDeployment, Signer};
use crate::server::InProcessServer;
use airlift_agent::boot::Slot;
use airlift_testkit::proxy::{Faults, FlakyProxy, NetFault};
use airlift_testkit::s3::{S3Server, ACCESS_KEY_ID, SECRET_ACCESS_KEY};
use std::time::Duration;

const IMAGE_SIZE: usize = 1024 * 1024;

/// A server whose package files are in `s3s-fs` behind a proxy meeting
/// the agent's object GETs with `store_faults`, a device behind a proxy to
/// the server, and a raw 1 MiB image deployed to it.
struct Offloaded {
    /// Holds the trusted key's file.
    _signer: Signer,
    _s3: S3Server,
    store: FlakyProxy,
    _server: InProcessServer,
    to_server: FlakyProxy,
    device: Device,
    operator: Operator,
    deployment: String,
    image: Vec<u8>,
    package_len: u64,
}

impl Offloaded {
    fn start(store_faults: Vec<NetFault>, server_flags: &[&str]) -> Self {
        let signer = Signer::new();
        let s3 = S3Server::start();
        let store = FlakyProxy::start(s3.endpoint(), Faults::Planned(store_faults)).expect("proxy");
        let blob_url = s3.url("downloads");
        let mut flags = vec![
            "--poll-interval",
            "1",
            "--blob-url",
            &blob_url,
            "--blob-endpoint",
            store.url(),
            "--blob-path-style",
            "--blob-access-key-id",
            ACCESS_KEY_ID,
            "--blob-secret-access-key",
            SECRET_ACCESS_KEY,
        ];
        flags.extend_from_slice(server_flags);
        let server = InProcessServer::start_with(signer.public_key_file(), &flags);
        let to_server = FlakyProxy::start(&server.url, Faults::Planned(Vec::new())).expect("proxy");
        let device = Device::new(to_server.url(), signer.public_key_file(), &["true"]);
        let operator = Operator::new(&server);
        let device_id = enrol(&device, &operator);
        let RawDeployment {
            deployment,
            image,
            package_len,
        } = operator.deploy_raw(&signer, &device_id, IMAGE_SIZE);
        Self {
            _signer: signer,
            _s3: s3,
            store,
            _server: server,
            to_server,
            device,
            operator,
            deployment,
            image,
            package_len,
        }
    }

    /// One run of the agent that installs the update; its log.
    fn install(&self) -> String {
        let run = self.device.run_faulted("save:0");
        assert!(run.success, "{}", run.log);
        assert!(
            !run.log.contains("X-Amz-Signature") && !run.log.contains("X-Amz-Credential"),
            "a presigned URL's query is a credential, never logged:\n{}",
            run.log
        );
        assert_eq!(self.device.slot(Slot::B), self.image);
        assert_eq!(self.device.power_up().slot, Slot::B);
        self.device.run_once();
        assert_eq!(self.operator.device_state(&self.deployment).0, "success");
        run.log
    }

    /// Redirects the agent asked the server for.
    fn redirects(&self) -> u64 {
        self.to_server.stats().downloads()
    }

    /// Package bytes the store sent the agent, and the GETs it took.
    fn store_traffic(&self) -> (u64, u64) {
        let stats = self.store.stats();
        (stats.download_bytes(), stats.downloads())
    }
}

#[test]
fn an_update_is_installed_from_the_object_store_through_a_presigned_redirect() {
    let offloaded = Offloaded::start(Vec::new(), &[]);
    offloaded.install();
    assert_eq!(offloaded.redirects(), 1, "one redirect asked for");
    let (bytes, gets) = offloaded.store_traffic();
    assert_eq!(gets, 1, "one GET from the store");
    // The agent has the package's head from its offer and fetches the
    // rest: the image, stored raw, is most of it.
    assert!(
        bytes >= IMAGE_SIZE as u64,
        "the package came from the store: {bytes} bytes of a {}-byte package",
        offloaded.package_len
    );
}

#[test]
fn a_download_cut_at_the_store_resumes_there_with_range() {
    let offloaded = Offloaded::start(
        vec![NetFault::CutAfter(300_000), NetFault::CutAfter(200_000)],
        &[],
    );
    offloaded.install();
    let (bytes, gets) = offloaded.store_traffic();
    assert_eq!(gets, 3, "two cuts, two resumed GETs");
    assert_eq!(offloaded.store.unused(), 0, "every cut was met");
    assert!(
        bytes < offloaded.package_len + offloaded.package_len / 10,
        "resumed with Range, not restarted: {bytes} bytes for a {}-byte package",
        offloaded.package_len
    );
    assert_eq!(
        offloaded.redirects(),
        1,
        "the URL was still good: resumed at the store without asking the server"
    );
}

#[test]
fn a_url_the_store_refuses_as_expired_is_renewed_and_the_download_goes_on() {
    // The resume after the cut is held at the proxy past the URL's 2 s, so
    // s3s-fs itself refuses it (403 AccessDenied, "Request has expired").
    let offloaded = Offloaded::start(
        vec![
            NetFault::CutAfter(300_000),
            NetFault::HoldRequest(Duration::from_secs(3)),
        ],
        &["--blob-url-expiry", "2s"],
    );
    offloaded.device.set_network_timeout(10);
    let log = offloaded.install();
    assert!(
        log.contains("the object store refused the download URL") && log.contains("AccessDenied"),
        "{log}"
    );
    assert_eq!(offloaded.redirects(), 2, "a second redirect was asked for");
    let (bytes, gets) = offloaded.store_traffic();
    assert_eq!(gets, 3, "the cut GET, the refused one, the resumed one");
    assert!(
        bytes < offloaded.package_len + offloaded.package_len / 10,
        "the renewed URL resumed from the byte reached: {bytes} bytes"
    );
}

#[test]
fn a_url_that_expired_while_the_download_stalled_is_renewed_before_the_store_is_asked() {
    // The store stalls after 300 kB; the agent gives up on the silence
    // after 2 s, when its URL (2 s) has expired: it asks the server first.
    let offloaded = Offloaded::start(
        vec![NetFault::StallAfter(300_000, Duration::from_secs(6))],
        &["--blob-url-expiry", "2s"],
    );
    offloaded.device.set_network_timeout(2);
    let log = offloaded.install();
    assert!(
        log.contains("the download URL expired; asking the server for a fresh one"),
        "{log}"
    );
    assert!(
        !log.contains("the object store refused"),
        "no request was wasted on a URL known to be spent:\n{log}"
    );
    assert_eq!(offloaded.redirects(), 2, "a second redirect was asked for");
    let (bytes, gets) = offloaded.store_traffic();
    assert_eq!(gets, 2);
    assert!(
        bytes < offloaded.package_len + offloaded.package_len / 10,
        "{bytes} bytes"
    );
}
