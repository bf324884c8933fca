//! A dashboard to test: a real `airlift-server` process with a release key
//! it trusts, simulated fleets of real agents (`airlift-sim`), signed-in
//! headless Chromium sessions (`airlift_testkit::browser`), the management
//! API beside them to compare with, and screenshots on request.

use airlift_sim::{Fleet, FleetConfig};
use airlift_testkit::browser::{Browser, Locator, Options};
use airlift_testkit::packages::Signer;
use airlift_testkit::postgres::FreshSchema;
use airlift_testkit::server::{ServerProcess, ADMIN_TOKEN};
use serde_json::Value;
use std::future::Future;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use tempfile::TempDir;

/// The device type of every simulated device here.
pub const DEVICE_TYPE: &str = "sim-board";

/// Set to `1` to (re)write `docs/screenshots/*.png`.
pub const SCREENSHOTS_VAR: &str = "AIRLIFT_SCREENSHOTS";

/// A server, its release key, and an API client with the admin token.
pub struct Dashboard {
    pub server: ServerProcess,
    pub signer: Signer,
    http: reqwest::Client,
    _data: TempDir,
    /// Dropped after the server (fields drop in order).
    _schema: Option<FreshSchema>,
}

impl Dashboard {
    /// A server on SQLite.
    pub fn start() -> Self {
        Self::start_on(None)
    }

    /// A server on PostgreSQL (a fresh schema), when
    /// `AIRLIFT_TEST_POSTGRES_URL` is set.
    pub fn start_on_postgres() -> Option<Self> {
        FreshSchema::create("browser").map(|schema| Self::start_on(Some(schema)))
    }

    fn start_on(schema: Option<FreshSchema>) -> Self {
        let signer = Signer::new();
        let data = tempfile::tempdir().expect("data directory");
        let mut builder = ServerProcess::builder(env!("CARGO_BIN_EXE_airlift-server"), data.path())
            .trust(signer.public_key_file())
            .admin_token(ADMIN_TOKEN)
            .args(["--poll-interval", "1"]);
        if let Some(schema) = &schema {
            builder = builder.args(["--database-url", schema.url()]);
        }
        let server = builder.start().expect("airlift-server starts");
        Self {
            server,
            signer,
            http: reqwest::Client::new(),
            _data: data,
            _schema: schema,
        }
    }

    /// The server's data directory (its SQLite database is `airlift.db`
    /// there when it runs on SQLite).
    pub fn data_dir(&self) -> &std::path::Path {
        self._data.path()
    }

    /// `http://127.0.0.1:PORT/ui…`.
    pub fn ui(&self, path: &str) -> String {
        format!("{}/ui{path}", self.server.url())
    }

    /// `GET /api/v1{path}` as admin; the JSON answer.
    pub async fn api_get(&self, path: &str) -> Value {
        let response = self
            .http
            .get(format!("{}/api/v1{path}", self.server.url()))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .expect("API request");
        assert!(
            response.status().is_success(),
            "GET {path}: {}",
            response.status()
        );
        response.json().await.expect("JSON")
    }

    /// `POST /api/v1{path}` as admin with a JSON or raw body; asserts
    /// success and returns the JSON answer.
    pub async fn api_post(&self, path: &str, body: impl Into<Body>) -> Value {
        let request = self
            .http
            .post(format!("{}/api/v1{path}", self.server.url()))
            .bearer_auth(ADMIN_TOKEN);
        let request = match body.into() {
            Body::Json(json) => request.json(&json),
            Body::Bytes(bytes) => request.body(bytes),
        };
        let response = request.send().await.expect("API request");
        let status = response.status();
        let text = response.text().await.expect("body");
        assert!(status.is_success(), "POST {path}: {status} {text}");
        serde_json::from_str(&text).unwrap_or(Value::Null)
    }

    /// How many devices the API counts with `status`.
    pub async fn device_total(&self, status: &str) -> u64 {
        self.api_get(&format!("/devices?status={status}&per_page=1"))
            .await["total"]
            .as_u64()
            .expect("total")
    }

    /// A new API token with `role`; its secret.
    pub async fn token(&self, name: &str, role: &str) -> String {
        let created = self
            .api_post("/tokens", serde_json::json!({"name": name, "role": role}))
            .await;
        created["secret"].as_str().expect("secret").to_owned()
    }

    /// A signed package named `rootfs` of one simulator image saying it is
    /// `version`, for [`DEVICE_TYPE`].
    pub fn package(&self, version: &str) -> Vec<u8> {
        airlift_sim::image::signed_package(self.signer.key(), version, 16 * 1024, DEVICE_TYPE)
            .expect("package")
    }

    /// Uploads [`Self::package`] through the API; the package's JSON.
    pub async fn upload(&self, version: &str) -> Value {
        self.api_post("/packages", self.package(version)).await
    }

    /// A fleet of `devices` simulated devices polling every second, with
    /// serials `{prefix}-NNNNN`; `admitted` pre-authorises them (else they
    /// wait in the admission queue). `adjust` changes the rest.
    pub fn fleet(
        &self,
        prefix: &str,
        devices: usize,
        admitted: bool,
        adjust: impl FnOnce(&mut FleetConfig),
    ) -> Fleet {
        let public = self.signer.public_key_file().to_owned();
        let mut config = FleetConfig::new(self.server.url(), public, devices, DEVICE_TYPE);
        config.serial_prefix = prefix.to_owned();
        config.admin_token = admitted.then(|| ADMIN_TOKEN.to_owned());
        config.poll_interval = Some(Duration::from_secs(1));
        config.ramp_up = Duration::from_millis(200);
        config.workers = 4;
        adjust(&mut config);
        Fleet::start(config).expect("fleet starts")
    }

    /// A headless Chromium signed in with `token`.
    pub async fn browser(&self, token: &str) -> Browser {
        self.browser_with(token, Options::default()).await
    }

    /// A headless Chromium with `options`, signed in with `token`.
    pub async fn browser_with(&self, token: &str, options: Options) -> Browser {
        let browser = match Browser::start(options).await {
            Ok(browser) => browser,
            Err(error) => panic!("{error}"),
        };
        sign_in(&browser, &self.ui("/sign-in"), token).await;
        browser
    }
}

/// A request body for [`Dashboard::api_post`].
pub enum Body {
    Json(Value),
    Bytes(Vec<u8>),
}

impl From<Value> for Body {
    fn from(json: Value) -> Self {
        Body::Json(json)
    }
}

impl From<Vec<u8>> for Body {
    fn from(bytes: Vec<u8>) -> Self {
        Body::Bytes(bytes)
    }
}

/// Signs in through the sign-in form, as a person would (no JavaScript
/// needed), and waits until the overview is shown.
pub async fn sign_in(browser: &Browser, sign_in_url: &str, token: &str) {
    browser.goto(sign_in_url).await.expect("sign-in page");
    let field = browser
        .find(Locator::Css("#token"))
        .await
        .expect("token field");
    field.send_keys(token).await.expect("type the token");
    browser
        .find(Locator::Css(
            "form[action='/ui/sign-in'] button[type=submit]",
        ))
        .await
        .expect("sign-in button")
        .click()
        .await
        .expect("sign in");
    eventually("the overview after signing in", || async {
        let url = browser.current_url().await.ok()?;
        (url.path() == "/ui/").then_some(())
    })
    .await;
}

/// How long [`eventually`] waits.
pub const PATIENCE: Duration = Duration::from_secs(30);

/// Asks `check` every 100 ms until it answers `Some`, for [`PATIENCE`];
/// panics naming `what` when it never does.
pub async fn eventually<T, F, Fut>(what: &str, check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    within(what, PATIENCE, check).await
}

/// [`eventually`] with a timeout of its own.
pub async fn within<T, F, Fut>(what: &str, patience: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + patience;
    loop {
        if let Some(found) = check().await {
            return found;
        }
        assert!(Instant::now() < deadline, "waited {patience:?} for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The text of the first element `css` selects, if any.
pub async fn text_of(browser: &Browser, css: &str) -> Option<String> {
    let element = browser.find(Locator::Css(css)).await.ok()?;
    element.text().await.ok()
}

/// The texts of every element `css` selects.
pub async fn texts_of(browser: &Browser, css: &str) -> Vec<String> {
    let mut texts = Vec::new();
    for element in browser
        .find_all(Locator::Css(css))
        .await
        .unwrap_or_default()
    {
        texts.push(element.text().await.unwrap_or_default());
    }
    texts
}

/// Opens `url` and waits until its `<h1>` is there.
pub async fn open(browser: &Browser, url: &str) {
    browser.goto(url).await.expect("open page");
    browser
        .wait()
        .at_most(PATIENCE)
        .for_element(Locator::Css("h1"))
        .await
        .unwrap_or_else(|e| panic!("{url} shows no heading: {e}"));
}

/// Where the committed screenshots live.
pub fn screenshot_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs/screenshots")
}

/// Saves the whole page as `docs/screenshots/{name}.png`, only when
/// `AIRLIFT_SCREENSHOTS=1` (so that CI does not rewrite committed files).
pub async fn screenshot(browser: &Browser, name: &str) {
    if std::env::var(SCREENSHOTS_VAR).as_deref() != Ok("1") {
        return;
    }
    // Local times and live regions settle before the shot.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let path = screenshot_dir().join(format!("{name}.png"));
    if let Err(error) = browser.save_page_screenshot(&path).await {
        panic!("screenshot {name}: {error}");
    }
}
