//! A real browser for tests: headless Chromium driven through WebDriver.
//!
//! [`Browser::start`] starts Debian's `chromedriver` on a loopback port of
//! its own choosing (read from what it prints, never guessed or slept
//! for), opens one session of headless Chromium with a temporary profile,
//! and hands out the [`fantoccini`] client. Dropping it kills chromedriver
//! and the browser it started (they share a process group of their own),
//! and deletes the profile.
//!
//! Both programs come from Debian's `chromium` and `chromium-driver`
//! packages, which `.ci/install-packages` installs; without them
//! [`Browser::start`] fails with [`BrowserError::Missing`], whose message
//! says to run that script. `AIRLIFT_CHROMEDRIVER` and `AIRLIFT_CHROMIUM`
//! point elsewhere.
//!
//! ```no_run
//! use airlift_testkit::browser::{Browser, Locator, Options};
//!
//! # async fn example() -> Result<(), airlift_testkit::browser::BrowserError> {
//! let browser = Browser::start(Options::default()).await?;
//! browser.goto("http://127.0.0.1:8080/ui/").await?;
//! let heading = browser.find(Locator::Css("h1")).await?.text().await?;
//! browser.save_screenshot("overview.png".as_ref()).await?;
//! browser.close().await;
//! # Ok(())
//! # }
//! ```

use fantoccini::error::{CmdError, NewSessionError};
use fantoccini::wd::Capabilities;
use hyper_util::client::legacy::connect::HttpConnector;
use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;
use tempfile::TempDir;

pub use fantoccini::elements::Element;
pub use fantoccini::{Client, Locator};

/// Where Debian's `chromium-driver` puts chromedriver.
pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
/// Where Debian's `chromium` puts the browser (a launcher script).
pub const CHROMIUM: &str = "/usr/bin/chromium";
/// The window every session starts with: a laptop's.
pub const WINDOW: (u32, u32) = (1280, 900);
/// How long chromedriver may take to say it listens.
const DRIVER_READY: Duration = Duration::from_secs(30);
/// The tallest full-page screenshot: a longer page is cut there.
const MAX_PAGE_HEIGHT: u32 = 4000;

/// Why a browser could not be started or used.
#[derive(Debug, thiserror::Error)]
pub enum BrowserError {
    /// chromedriver or Chromium is not installed.
    #[error(
        "{program} is missing at {}: run `.ci/install-packages` (as root; it installs Debian's \
         `chromium` and `chromium-driver`), or point {variable} at it",
        path.display()
    )]
    Missing {
        /// Which program.
        program: &'static str,
        /// Where it was looked for.
        path: PathBuf,
        /// The variable that names another place.
        variable: &'static str,
    },
    /// A temporary profile or the process could not be made.
    #[error("starting chromedriver: {0}")]
    Spawn(#[source] std::io::Error),
    /// chromedriver exited or stayed silent.
    #[error("chromedriver did not say it listens within {DRIVER_READY:?}; it printed:\n{0}")]
    NotReady(String),
    /// chromedriver could not start a browser session.
    #[error("starting a headless Chromium session: {0}")]
    Session(#[source] Box<NewSessionError>),
    /// A WebDriver command failed.
    #[error(transparent)]
    Command(#[from] Box<CmdError>),
    /// A screenshot could not be written.
    #[error("writing {}: {source}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

impl From<CmdError> for BrowserError {
    fn from(error: CmdError) -> Self {
        BrowserError::Command(Box::new(error))
    }
}

/// How to start the browser.
#[derive(Debug, Clone)]
pub struct Options {
    /// Whether pages may run JavaScript [default: yes]. Off, a test sees
    /// what a reader without JavaScript (or a crawler) sees.
    pub javascript: bool,
    /// The window's width and height [default: [`WINDOW`]].
    pub window: (u32, u32),
}

impl Default for Options {
    fn default() -> Self {
        Options {
            javascript: true,
            window: WINDOW,
        }
    }
}

impl Options {
    /// The default options with JavaScript switched off.
    pub fn without_javascript() -> Self {
        Options {
            javascript: false,
            ..Options::default()
        }
    }
}

/// A program's path: the variable's value when set, else `default`; an
/// error naming the install script when nothing is there.
fn program(
    program: &'static str,
    variable: &'static str,
    default: &str,
) -> Result<PathBuf, BrowserError> {
    let path = std::env::var_os(variable).map_or_else(|| PathBuf::from(default), PathBuf::from);
    if path.is_file() {
        Ok(path)
    } else {
        Err(BrowserError::Missing {
            program,
            path,
            variable,
        })
    }
}

/// A headless Chromium session and the chromedriver that runs it; both
/// killed when dropped. Dereferences to the [`Client`].
#[derive(Debug)]
pub struct Browser {
    client: Client,
    driver: Child,
    window: (u32, u32),
    _profile: TempDir,
}

impl Browser {
    /// Starts chromedriver and a headless Chromium session.
    pub async fn start(options: Options) -> Result<Browser, BrowserError> {
        let chromedriver = program("chromedriver", "AIRLIFT_CHROMEDRIVER", CHROMEDRIVER)?;
        let chromium = program("chromium", "AIRLIFT_CHROMIUM", CHROMIUM)?;
        let profile = tempfile::Builder::new()
            .prefix("airlift-browser-")
            .tempdir()
            .map_err(BrowserError::Spawn)?;
        let (mut driver, url) = start_driver(&chromedriver)?;
        let capabilities = capabilities(&chromium, profile.path(), &options);
        let connected = fantoccini::ClientBuilder::new(HttpConnector::new())
            .capabilities(capabilities)
            .connect(&url)
            .await;
        let client = match connected {
            Ok(client) => client,
            Err(error) => {
                kill_group(&mut driver);
                return Err(BrowserError::Session(Box::new(error)));
            }
        };
        Ok(Browser {
            client,
            driver,
            window: options.window,
            _profile: profile,
        })
    }

    /// The WebDriver client.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Saves what the window shows as a PNG file, making its directory.
    pub async fn save_screenshot(&self, path: &Path) -> Result<(), BrowserError> {
        let png = self.client.screenshot().await?;
        write_png(path, &png)
    }

    /// Saves the whole page (up to 4000 pixels tall) as a PNG file: the
    /// window is made as tall as the document for the shot, then put back.
    pub async fn save_page_screenshot(&self, path: &Path) -> Result<(), BrowserError> {
        let height = self
            .client
            .execute(
                "return Math.ceil(document.documentElement.scrollHeight);",
                Vec::new(),
            )
            .await?
            .as_u64()
            .and_then(|h| u32::try_from(h).ok())
            .unwrap_or(self.window.1);
        let (width, window_height) = self.window;
        // The window's frame (not part of the page) is what the inner
        // height lacks of the outer one.
        let chrome = self
            .client
            .execute(
                "return window.outerHeight - window.innerHeight;",
                Vec::new(),
            )
            .await?
            .as_u64()
            .and_then(|h| u32::try_from(h).ok())
            .unwrap_or(0);
        let tall = height.clamp(window_height, MAX_PAGE_HEIGHT) + chrome;
        self.client.set_window_size(width, tall).await?;
        let shot = self.client.screenshot().await;
        self.client.set_window_size(width, window_height).await?;
        write_png(path, &shot?)
    }

    /// Ends the session politely (Chromium exits and cleans up), then
    /// stops chromedriver. Dropping does the same by force.
    pub async fn close(mut self) {
        let _ = self.client.clone().close().await;
        kill_group(&mut self.driver);
    }
}

impl std::ops::Deref for Browser {
    type Target = Client;

    fn deref(&self) -> &Client {
        &self.client
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        kill_group(&mut self.driver);
    }
}

/// Starts chromedriver on a free loopback port, in a process group of its
/// own (so that the browser it starts can be killed with it), and returns
/// it with its URL once it says where it listens.
fn start_driver(chromedriver: &Path) -> Result<(Child, String), BrowserError> {
    let mut child = Command::new(chromedriver)
        .arg("--port=0")
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(BrowserError::Spawn)?;
    let Some(stdout) = child.stdout.take() else {
        kill_group(&mut child);
        return Err(BrowserError::NotReady("(no stdout)".into()));
    };
    let (tx, rx) = mpsc::channel();
    // Reads to the end, so that chromedriver never blocks on a full pipe.
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut said = Vec::new();
    let deadline = std::time::Instant::now() + DRIVER_READY;
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => {
                if let Some(port) = listening_port(&line) {
                    return Ok((child, format!("http://127.0.0.1:{port}")));
                }
                said.push(line);
            }
            Err(_) => {
                kill_group(&mut child);
                return Err(BrowserError::NotReady(said.join("\n")));
            }
        }
    }
}

/// The port in chromedriver's "… started successfully on port 43463." line.
fn listening_port(line: &str) -> Option<u16> {
    let (_, rest) = line.split_once("started successfully on port ")?;
    rest.trim_end_matches(|c: char| !c.is_ascii_digit())
        .parse()
        .ok()
}

/// The session's capabilities: headless Chromium with a profile of its
/// own, sandbox off (tests run as root in containers), and JavaScript off
/// when asked.
fn capabilities(chromium: &Path, profile: &Path, options: &Options) -> Capabilities {
    let (width, height) = options.window;
    let mut args = vec![
        "--headless=new".to_owned(),
        "--no-sandbox".to_owned(),
        "--disable-gpu".to_owned(),
        "--disable-dev-shm-usage".to_owned(),
        "--hide-scrollbars".to_owned(),
        format!("--window-size={width},{height}"),
        format!("--user-data-dir={}", profile.display()),
    ];
    if !options.javascript {
        args.push("--blink-settings=scriptEnabled=false".to_owned());
    }
    let chrome = serde_json::json!({
        "binary": chromium.to_string_lossy(),
        "args": args,
        // The preference as well as the flag: either alone has been
        // ignored by some Chromium releases.
        "prefs": {
            "profile.managed_default_content_settings.javascript":
                if options.javascript { 1 } else { 2 },
        },
    });
    let mut capabilities = Capabilities::new();
    capabilities.insert("browserName".into(), "chrome".into());
    capabilities.insert("goog:chromeOptions".into(), chrome);
    capabilities
}

/// Kills chromedriver and everything in its process group (the browser),
/// then reaps it.
fn kill_group(child: &mut Child) {
    if let Some(pid) = i32::try_from(child.id())
        .ok()
        .and_then(rustix::process::Pid::from_raw)
    {
        let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
    }
    let _ = child.kill();
    let _ = child.wait();
}

fn write_png(path: &Path, png: &[u8]) -> Result<(), BrowserError> {
    let failed = |source| BrowserError::Write {
        path: path.to_owned(),
        source,
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(failed)?;
    }
    std::fs::write(path, png).map_err(failed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_port_is_read_from_what_chromedriver_prints() {
        assert_eq!(
            listening_port("ChromeDriver was started successfully on port 43463."),
            Some(43463)
        );
        assert_eq!(listening_port("Starting ChromeDriver 156 on port 0"), None);
        assert_eq!(listening_port("Only local connections are allowed."), None);
    }

    #[test]
    fn a_missing_program_names_the_install_script() {
        let error = program(
            "chromedriver",
            "AIRLIFT_TEST_NO_SUCH_VAR",
            "/nonexistent/chromedriver",
        )
        .expect_err("not installed there");
        let message = error.to_string();
        assert!(message.contains(".ci/install-packages"), "{message}");
        assert!(message.contains("/nonexistent/chromedriver"), "{message}");
    }

    #[test]
    fn javascript_off_reaches_the_browser_twice() {
        let off = capabilities(
            Path::new(CHROMIUM),
            Path::new("/tmp/p"),
            &Options::without_javascript(),
        );
        let chrome = &off["goog:chromeOptions"];
        let args: Vec<&str> = chrome["args"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|a| a.as_str())
            .collect();
        assert!(args.contains(&"--blink-settings=scriptEnabled=false"));
        assert!(args.contains(&"--headless=new"));
        assert!(args.contains(&"--user-data-dir=/tmp/p"));
        assert_eq!(
            chrome["prefs"]["profile.managed_default_content_settings.javascript"],
            2
        );
        let on = capabilities(
            Path::new(CHROMIUM),
            Path::new("/tmp/p"),
            &Options::default(),
        );
        assert!(!on["goog:chromeOptions"]["args"]
            .to_string()
            .contains("scriptEnabled"));
    }
}
