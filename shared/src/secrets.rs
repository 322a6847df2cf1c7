//! Resolves the process secrets. Configured values win; in development a missing secret is
//! generated once, printed once and kept in `<data_dir>/dev-secrets.json` so restarts keep working.
//! With `--production` a missing secret is a startup error.

use std::{fs, path::Path};

use anyhow::{Context, bail};
use base64::{Engine, engine::general_purpose::STANDARD};
use serde::{Deserialize, Serialize};

use crate::{
    config::CommonConfig,
    crypto::{Keyring, random_base62, random_bytes},
};

/// Secrets every process needs, already parsed.
#[derive(Clone)]
pub struct Secrets {
    pub admin_token: String,
    pub keyring: Keyring,
    pub api_key_pepper: Vec<u8>,
}

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Secrets")
            .field("admin_token", &"<redacted>")
            .field("keyring", &self.keyring)
            .field("api_key_pepper", &"<redacted>")
            .finish()
    }
}

#[derive(Serialize, Deserialize, Default)]
struct DevSecrets {
    admin_token: Option<String>,
    master_keys: Option<String>,
    api_key_pepper: Option<String>,
}

impl Secrets {
    pub fn resolve(cfg: &CommonConfig) -> anyhow::Result<Self> {
        let missing: Vec<&str> = [
            ("SWITCHYARD_ADMIN_TOKEN", cfg.admin_token.is_none()),
            ("SWITCHYARD_MASTER_KEYS", cfg.master_keys.is_none()),
            ("SWITCHYARD_API_KEY_PEPPER", cfg.api_key_pepper.is_none()),
        ]
        .into_iter()
        .filter_map(|(name, is_missing)| is_missing.then_some(name))
        .collect();

        if !missing.is_empty() && cfg.is_production() {
            bail!(
                "production mode needs real secrets; set {}",
                missing.join(", ")
            );
        }
        let dev = if missing.is_empty() {
            DevSecrets::default()
        } else {
            load_or_create_dev_secrets(&cfg.data_dir)?
        };

        let admin_token = cfg
            .admin_token
            .clone()
            .or(dev.admin_token)
            .context("admin token")?;
        if admin_token.len() < 16 {
            bail!("SWITCHYARD_ADMIN_TOKEN must be at least 16 characters");
        }
        let keyring_spec = cfg
            .master_keys
            .clone()
            .or(dev.master_keys)
            .context("master keys")?;
        let keyring = Keyring::parse(&keyring_spec).context("SWITCHYARD_MASTER_KEYS")?;
        let pepper_b64 = cfg
            .api_key_pepper
            .clone()
            .or(dev.api_key_pepper)
            .context("pepper")?;
        let api_key_pepper = STANDARD
            .decode(pepper_b64.trim())
            .context("SWITCHYARD_API_KEY_PEPPER must be base64")?;
        if api_key_pepper.len() < 32 {
            bail!("SWITCHYARD_API_KEY_PEPPER must decode to at least 32 bytes");
        }
        Ok(Secrets {
            admin_token,
            keyring,
            api_key_pepper,
        })
    }
}

fn load_or_create_dev_secrets(dir: &Path) -> anyhow::Result<DevSecrets> {
    let path = dir.join("dev-secrets.json");
    if let Ok(text) = fs::read_to_string(&path) {
        let s: DevSecrets =
            serde_json::from_str(&text).with_context(|| format!("reading {}", path.display()))?;
        tracing::warn!(path = %path.display(), "using development secrets; set real ones (and --production) outside development");
        return Ok(s);
    }
    let s = DevSecrets {
        admin_token: Some(format!("sy_admin_{}", random_base62(32))),
        master_keys: Some(Keyring::generate_spec()),
        api_key_pepper: Some(STANDARD.encode(random_bytes::<32>())),
    };
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    write_private(&path, &serde_json::to_string_pretty(&s)?)?;
    // Printed exactly once, when generated, so the operator can use the admin API.
    eprintln!(
        "WARNING: no secrets configured; generated development secrets in {}.\n\
         Admin token (shown once): {}\n\
         Set SWITCHYARD_ADMIN_TOKEN, SWITCHYARD_MASTER_KEYS and SWITCHYARD_API_KEY_PEPPER in production.",
        path.display(),
        s.admin_token.as_deref().unwrap_or_default()
    );
    Ok(s)
}

fn write_private(path: &Path, contents: &str) -> anyhow::Result<()> {
    use std::io::Write;
    #[cfg(unix)]
    use std::os::unix::fs::OpenOptionsExt;
    let mut opts = fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    opts.mode(0o600);
    let mut f = opts
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    f.write_all(contents.as_bytes())?;
    Ok(())
}
