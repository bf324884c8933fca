//! The dashboard in a real browser: headless Chromium (Debian's `chromium`
//! and `chromium-driver`, from `.ci/install-packages`) driven through
//! WebDriver (`airlift_testkit::browser`) against a real `airlift-server`
//! process, with fleets of real agents from `airlift-sim` where devices
//! are needed. A test binary of its own, apart from the `it` suite, so
//! that its browsers and fleets do not crowd that suite's servers.
//!
//! Without Chromium these tests fail, naming the install script. With
//! `AIRLIFT_SCREENSHOTS=1` they also write `docs/screenshots/*.png`, which
//! README.md shows.

mod audit;
mod deployments;
mod escaping;
mod overview;
mod packages;
mod pending;
mod repair;
mod security;
mod sign_in;
mod support;
mod tour;
