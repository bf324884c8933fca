//! The login file, `cli.toml`: which server the admin commands talk to and
//! with which API token.
//!
//! It lives in `$AIRLIFT_CONFIG_DIR`, else `$XDG_CONFIG_HOME/airlift`, else
//! `~/.config/airlift`. It holds a secret, so it is created with mode 0600
//! from the start and appears under its final name atomically (a temporary
//! file renamed over it), like the key files. A file that does not parse is
//! an error that says how to fix it, never silently replaced.

use crate::server_url::ServerUrl;
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::ffi::OsString;
use std::fs::{self, Permissions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// The file's name inside the configuration directory.
pub const FILE_NAME: &str = "cli.toml";
/// Mode of the file: it holds a bearer token.
const FILE_MODE: u32 = 0o600;
/// Mode of a configuration directory we create.
const DIR_MODE: u32 = 0o700;

/// What `airlift server login` stores.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Login {
    /// The server's base URL, e.g. `https://updates.example.com`.
    pub server: ServerUrl,
    /// The management API token (a secret).
    pub token: String,
}

impl std::fmt::Debug for Login {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Login")
            .field("server", &self.server)
            .field("token", &mask(&self.token))
            .finish()
    }
}

/// `alt_0123456789…cdef` → `alt_0123…cdef`: enough to tell tokens apart,
/// not enough to use one. Short tokens are hidden entirely.
pub fn mask(token: &str) -> String {
    let chars: Vec<char> = token.chars().collect();
    if chars.len() < 16 {
        return "****".into();
    }
    let head: String = chars[..8].iter().collect();
    let tail: String = chars[chars.len() - 4..].iter().collect();
    format!("{head}…{tail}")
}

/// The configuration directory from the environment's values.
pub fn config_dir_from(
    airlift_config_dir: Option<OsString>,
    xdg_config_home: Option<OsString>,
    home: Option<OsString>,
) -> Result<PathBuf> {
    let non_empty = |value: Option<OsString>| value.filter(|v| !v.is_empty()).map(PathBuf::from);
    if let Some(dir) = non_empty(airlift_config_dir) {
        return Ok(dir);
    }
    // The XDG spec says relative values are invalid and must be ignored.
    if let Some(dir) = non_empty(xdg_config_home).filter(|dir| dir.is_absolute()) {
        return Ok(dir.join("airlift"));
    }
    match non_empty(home) {
        Some(home) => Ok(home.join(".config").join("airlift")),
        None => bail!(
            "cannot find a configuration directory: set AIRLIFT_CONFIG_DIR (or XDG_CONFIG_HOME or HOME)"
        ),
    }
}

/// The path of `cli.toml` for this process's environment.
pub fn path() -> Result<PathBuf> {
    let dir = config_dir_from(
        std::env::var_os("AIRLIFT_CONFIG_DIR"),
        std::env::var_os("XDG_CONFIG_HOME"),
        std::env::var_os("HOME"),
    )?;
    Ok(dir.join(FILE_NAME))
}

/// Reads the login at `path`; `None` when there is no file.
pub fn load(path: &Path) -> Result<Option<Login>> {
    let text = match fs::read_to_string(path) {
        Ok(text) => text,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(error).with_context(|| format!("reading {}", path.display())),
    };
    let login: Login = toml::from_str(&text).map_err(|error| {
        anyhow::anyhow!(
            "{} is not a valid airlift login file ({}); run `airlift server logout` and log in again",
            path.display(),
            error.message()
        )
    })?;
    if let Ok(metadata) = fs::metadata(path) {
        if metadata.permissions().mode() & 0o077 != 0 {
            eprintln!(
                "warning: {} holds an API token but others may read it; run `chmod 600 {}`",
                path.display(),
                path.display()
            );
        }
    }
    Ok(Some(login))
}

/// Writes `login` to `path` atomically with mode 0600, creating the
/// directory (mode 0700) if needed.
pub fn save(path: &Path, login: &Login) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    fs::DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(dir)
        .with_context(|| format!("creating directory {}", dir.display()))?;
    let text = format!(
        "# Written by `airlift server login`. It holds an API token: keep it private.\n{}",
        toml::to_string(login).context("encoding the login file")?
    );
    let mut file = tempfile::Builder::new()
        .prefix(".airlift-cli-")
        .permissions(Permissions::from_mode(FILE_MODE))
        .tempfile_in(dir)
        .with_context(|| format!("creating a temporary file in {}", dir.display()))?;
    file.write_all(text.as_bytes())
        .and_then(|()| file.as_file().sync_all())
        .with_context(|| format!("writing {}", file.path().display()))?;
    file.persist(path)
        .map_err(|e| e.error)
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// Deletes the login file; `false` if there was none.
pub fn remove(path: &Path) -> Result<bool> {
    match fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(error) => Err(error).with_context(|| format!("deleting {}", path.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(text: &str) -> Option<OsString> {
        Some(OsString::from(text))
    }

    #[test]
    fn the_directory_follows_airlift_then_xdg_then_home() {
        let dir = |a, x, h| config_dir_from(a, x, h).expect("a directory");
        assert_eq!(
            dir(os("/etc/airlift-cli"), os("/xdg"), os("/home/ops")),
            PathBuf::from("/etc/airlift-cli")
        );
        assert_eq!(
            dir(None, os("/xdg"), os("/home/ops")),
            PathBuf::from("/xdg/airlift")
        );
        assert_eq!(
            dir(os(""), os("relative/xdg"), os("/home/ops")),
            PathBuf::from("/home/ops/.config/airlift"),
            "empty and relative values are ignored"
        );
        let error = config_dir_from(None, None, None).expect_err("nothing set");
        assert!(error.to_string().contains("AIRLIFT_CONFIG_DIR"), "{error}");
    }

    fn login() -> Login {
        Login {
            server: "https://updates.example.com/".parse().expect("valid URL"),
            token: "alt_0123456789abcdef0123456789abcdef".into(),
        }
    }

    #[test]
    fn a_saved_login_loads_back_and_is_private() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("nested/airlift").join(FILE_NAME);
        assert_eq!(load(&path).expect("no file is fine"), None);

        save(&path, &login()).expect("save");
        assert_eq!(load(&path).expect("load"), Some(login()));
        let mode = fs::metadata(&path).expect("metadata").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let dir_mode = fs::metadata(path.parent().expect("parent"))
            .expect("metadata")
            .permissions()
            .mode();
        assert_eq!(dir_mode & 0o077, 0, "directory mode {dir_mode:o}");

        let replacement = Login {
            token: "alt_ffffffffffffffffffffffffffffffff".into(),
            ..login()
        };
        save(&path, &replacement).expect("save again");
        assert_eq!(load(&path).expect("load"), Some(replacement));
        let names: Vec<_> = fs::read_dir(path.parent().expect("parent"))
            .expect("list")
            .map(|entry| entry.expect("entry").file_name())
            .collect();
        assert_eq!(
            names,
            [OsString::from(FILE_NAME)],
            "no temporary files left"
        );

        assert!(remove(&path).expect("remove"));
        assert!(!remove(&path).expect("remove again"));
        assert_eq!(load(&path).expect("gone"), None);
    }

    #[test]
    fn the_file_stores_the_normalised_url() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join(FILE_NAME);
        save(&path, &login()).expect("save");
        let text = fs::read_to_string(&path).expect("read");
        assert!(
            text.contains("server = \"https://updates.example.com\""),
            "{text}"
        );
    }

    #[test]
    fn a_corrupt_file_is_an_error_that_says_what_to_do() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join(FILE_NAME);
        fs::write(&path, "server = 42\n").expect("write");
        let error = load(&path).expect_err("corrupt");
        assert!(
            error.to_string().contains("airlift server logout"),
            "{error}"
        );
        fs::write(&path, "server = \"ftp://x\"\ntoken = \"t\"\n").expect("write");
        let error = load(&path).expect_err("bad scheme");
        assert!(error.to_string().contains("http"), "{error}");
    }

    #[test]
    fn tokens_are_masked() {
        assert_eq!(
            mask("alt_0123456789abcdef0123456789abcdef"),
            "alt_0123…cdef"
        );
        assert_eq!(mask("short"), "****");
        let debug = format!("{:?}", login());
        assert!(!debug.contains("0123456789abcdef0123"), "{debug}");
    }
}
