//! The devices and the management API: enrolment, deployments, uploads,
//! and single check-ins outside the load phases.

use crate::{ADMIN_TOKEN, DEVICE_TYPE};
use airlift_protocol::device::CHECK_IN_PATH;
use airlift_testkit::device::{DeviceApi, TestDevice};
use anyhow::{ensure, Context, Result};
use futures::{StreamExt, TryStreamExt};
use hyper::StatusCode;
use serde_json::{json, Value};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

/// A device the server accepted, with its token; what it reports is
/// [`inventory`] of its index.
pub struct Device {
    pub index: usize,
    pub id: String,
    pub token: String,
}

impl Device {
    pub fn inventory(&self) -> Value {
        inventory(self.index)
    }
}

/// Device type, hardware revision, 3 installed entries, security version
/// and 5 attributes: about 300 bytes of JSON, different for every device.
pub fn inventory(index: usize) -> Value {
    let region = ["eu-west", "us-east", "ap-south"][index % 3];
    json!({
        "device_type": DEVICE_TYPE,
        "hardware_revision": "rev-c",
        "installed": {
            "bootloader": "2024.01.3",
            "os": "1.4.2",
            "fleet-agent": "3.2.1",
        },
        "security_version": 3,
        "attributes": {
            "kernel": "6.6.31-bench",
            "region": region,
            "site": format!("plant-{:02}", index % 17),
            "serial": format!("SN-{index:06}"),
            "mac": format!("02:00:00:{:02x}:{:02x}:{:02x}", (index >> 16) & 0xff, (index >> 8) & 0xff, index & 0xff),
        },
    })
}

/// The management and setup side: a pooled reqwest client, which the test
/// kit's device also sends its auth requests through.
pub struct Admin {
    client: reqwest::Client,
    url: String,
}

impl DeviceApi for Admin {
    fn base_url(&self) -> &str {
        &self.url
    }

    fn http(&self) -> &reqwest::Client {
        &self.client
    }
}

impl Admin {
    pub fn new(url: &str) -> Result<Self> {
        Ok(Self {
            client: reqwest::Client::builder().tcp_nodelay(true).build()?,
            url: url.to_owned(),
        })
    }

    /// After the server restarted on another port.
    pub fn set_url(&mut self, url: &str) {
        url.clone_into(&mut self.url);
    }

    fn api(&self, path: &str) -> String {
        format!("{}/api/v1{path}", self.url)
    }

    pub async fn post(&self, path: &str, body: &Value) -> Result<(StatusCode, Value)> {
        let response = self
            .client
            .post(self.api(path))
            .bearer_auth(ADMIN_TOKEN)
            .json(body)
            .send()
            .await?;
        let status = StatusCode::from_u16(response.status().as_u16())?;
        Ok((status, response.json().await.unwrap_or(Value::Null)))
    }

    pub async fn get(&self, path: &str) -> Result<Value> {
        let response = self
            .client
            .get(self.api(path))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await?;
        ensure!(
            response.status().is_success(),
            "GET {path}: {}",
            response.status()
        );
        Ok(response.json().await?)
    }

    pub async fn upload(&self, file: &Path) -> Result<Value> {
        let bytes = tokio::fs::read(file).await?;
        let response = self
            .client
            .post(self.api("/packages"))
            .bearer_auth(ADMIN_TOKEN)
            .body(bytes)
            .send()
            .await?;
        let status = response.status();
        let text = response.text().await?;
        ensure!(status.as_u16() == 201, "upload: {status}: {text}");
        Ok(serde_json::from_str(&text)?)
    }

    pub async fn deploy(&self, package_id: &str, devices: &[&str]) -> Result<String> {
        let (status, body) = self
            .post(
                "/deployments",
                &json!({"name": "bench", "package_id": package_id, "target": {"devices": devices}}),
            )
            .await?;
        ensure!(
            status == StatusCode::CREATED,
            "deployment: {status}: {body}"
        );
        Ok(body["id"].as_str().context("deployment id")?.to_owned())
    }

    /// Pre-authorises a new key with the identity `serial` (the operator's
    /// step), then authenticates as the device with a signed request, which
    /// accepts it on this first contact and answers a token. Returns the
    /// device id and the token.
    pub async fn enrol(&self, serial: &str) -> Result<(String, String)> {
        let mut device = TestDevice::new(serial, DEVICE_TYPE);
        let (status, answer) = self
            .post(
                "/devices/preauthorize",
                &json!({"identity": {"serial": serial}, "public_key": device.public_key()}),
            )
            .await?;
        ensure!(
            status == StatusCode::CREATED,
            "preauthorize: {status} {answer}"
        );
        let status = device.authenticate(self).await;
        ensure!(status.as_u16() == 200, "first auth: {status}");
        let id = device.id.context("device id")?;
        let token = device.token.context("token")?;
        Ok((id.to_string(), token))
    }

    pub async fn check_in(&self, device: &Device) -> Result<Value> {
        let response = self
            .client
            .post(format!("{}{CHECK_IN_PATH}", self.url))
            .bearer_auth(&device.token)
            .json(&device.inventory())
            .send()
            .await?;
        ensure!(
            response.status().is_success(),
            "check-in: {}",
            response.status()
        );
        Ok(response.json().await?)
    }

    /// Enrols a device and checks it in once, which stores its inventory:
    /// from then on only its check-in time changes.
    async fn enrol_and_check_in(&self, index: usize) -> Result<Device> {
        let (id, token) = self.enrol(&format!("SN-{index:06}")).await?;
        let device = Device { index, id, token };
        self.check_in(&device).await?;
        Ok(device)
    }
}

/// Enrols `count` devices, `concurrency` at a time (there is no bulk form
/// of pre-authorisation; the server takes first contacts without the
/// per-address limit). Each is pre-authorised, authenticates for its token
/// and checks in once.
pub async fn enrol_devices(admin: &Admin, count: usize, concurrency: usize) -> Result<Vec<Device>> {
    let started = Instant::now();
    let done = AtomicUsize::new(0);
    let devices: Vec<Device> = futures::stream::iter(0..count)
        .map(|index| {
            let done = &done;
            async move {
                let device = admin.enrol_and_check_in(index).await;
                let n = done.fetch_add(1, Ordering::Relaxed) + 1;
                if n % 10_000 == 0 {
                    eprintln!(
                        "  {n} devices enrolled ({:.0} s)",
                        started.elapsed().as_secs_f64()
                    );
                }
                device
            }
        })
        .buffered(concurrency)
        .try_collect()
        .await?;
    eprintln!(
        "{count} devices pre-authorised, authenticated and checked in once in {:.1} s \
         ({concurrency} at a time)",
        started.elapsed().as_secs_f64()
    );
    Ok(devices)
}
