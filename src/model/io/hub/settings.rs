//! [`HubSettings`]: where the Hub and its cache are, from the environment as
//! huggingface_hub reads it.

use std::path::PathBuf;

use crate::error::{Error, Result};

/// Where the Hub and its cache are, and whether the network may be used. Built from the
/// environment by [`HubSettings::from_env`] at the command-line boundary; tests build it
/// directly.
#[derive(Debug, Clone)]
pub struct HubSettings {
    /// The hub cache (the directory holding `models--ORG--NAME/`).
    pub cache_dir: PathBuf,
    /// Base URL, e.g. `https://huggingface.co` (no trailing slash).
    pub endpoint: String,
    /// Bearer token for gated and private repositories.
    pub token: Option<String>,
    /// Never use the network: only what the cache holds.
    pub offline: bool,
    /// Draw a progress bar for downloads (only when stderr is a terminal).
    pub progress: bool,
}

/// The Hub's base URL when no endpoint is configured.
pub const DEFAULT_ENDPOINT: &str = "https://huggingface.co";

/// `HF_HUB_OFFLINE`-style booleans, as huggingface_hub reads them.
fn env_true(name: &str) -> bool {
    std::env::var(name).is_ok_and(|v| {
        matches!(
            v.trim().to_ascii_uppercase().as_str(),
            "1" | "ON" | "YES" | "TRUE"
        )
    })
}

fn env_nonempty(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

impl HubSettings {
    /// The settings huggingface_hub would use: `HF_HUB_CACHE`, `HF_HOME` (default
    /// `$XDG_CACHE_HOME/huggingface`, else `~/.cache/huggingface`), `HF_ENDPOINT`, `HF_TOKEN`
    /// (else the token file `HF_TOKEN_PATH` or `HF_HOME/token` that `huggingface-cli login`
    /// writes), `HF_HUB_OFFLINE`, `HF_HUB_DISABLE_PROGRESS_BARS`.
    pub fn from_env() -> Result<Self> {
        let hf_home = || -> Result<PathBuf> {
            if let Some(h) = env_nonempty("HF_HOME") {
                return Ok(PathBuf::from(h));
            }
            if let Some(x) = env_nonempty("XDG_CACHE_HOME") {
                return Ok(PathBuf::from(x).join("huggingface"));
            }
            env_nonempty("HOME")
                .map(|h| PathBuf::from(h).join(".cache").join("huggingface"))
                .ok_or_else(|| {
                    Error::invalid(
                        "no Hugging Face cache directory: set HF_HUB_CACHE or HF_HOME (HOME is not set)",
                    )
                })
        };
        let cache_dir = match env_nonempty("HF_HUB_CACHE") {
            Some(c) => PathBuf::from(c),
            None => hf_home()?.join("hub"),
        };
        let cache_dir = std::path::absolute(&cache_dir).map_err(|e| Error::io(&cache_dir, e))?;
        let endpoint = env_nonempty("HF_ENDPOINT").unwrap_or_else(|| DEFAULT_ENDPOINT.into());
        let token = match env_nonempty("HF_TOKEN") {
            Some(t) => Some(t.trim().to_string()),
            None => {
                let path = match env_nonempty("HF_TOKEN_PATH") {
                    Some(p) => Some(PathBuf::from(p)),
                    None => hf_home().ok().map(|h| h.join("token")),
                };
                path.and_then(|p| std::fs::read_to_string(p).ok())
                    .map(|t| t.trim().to_string())
                    .filter(|t| !t.is_empty())
            }
        };
        let settings = HubSettings {
            cache_dir,
            endpoint,
            token,
            offline: env_true("HF_HUB_OFFLINE"),
            progress: !env_true("HF_HUB_DISABLE_PROGRESS_BARS"),
        };
        settings.validate()?;
        Ok(settings)
    }

    pub(super) fn validate(&self) -> Result<()> {
        let e = &self.endpoint;
        let rest = e
            .strip_prefix("https://")
            .or_else(|| e.strip_prefix("http://"));
        if rest.is_none_or(|r| r.is_empty() || r.contains(char::is_whitespace)) {
            return Err(Error::invalid(format!(
                "HF_ENDPOINT \"{e}\" is not an http:// or https:// URL"
            )));
        }
        if !self.cache_dir.is_absolute() {
            return Err(Error::invalid(format!(
                "hub cache {} is not an absolute path",
                self.cache_dir.display()
            )));
        }
        Ok(())
    }
}
