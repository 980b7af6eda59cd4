//! Access keys: from the command line, or generated once and kept in the data directory.

use std::fs;
use std::io::Write;
use std::path::Path;

use anyhow::{bail, Context};

const KEY_FILE: &str = "access-key";

/// The configured keys, or the data dir's generated key (created on first start).
/// The keys given on the command line, trimmed, empty ones dropped.
pub fn configured(keys: &[String]) -> Vec<String> {
    keys.iter()
        .map(|k| k.trim().to_owned())
        .filter(|k| !k.is_empty())
        .collect()
}

pub fn load_or_generate(configured: &[String], data_dir: &Path) -> anyhow::Result<Vec<String>> {
    let configured = self::configured(configured);
    if !configured.is_empty() {
        return Ok(configured);
    }
    let path = data_dir.join(KEY_FILE);
    match fs::read_to_string(&path) {
        Ok(key) if !key.trim().is_empty() => return Ok(vec![key.trim().to_owned()]),
        Ok(_) => bail!(
            "{} is empty: delete it to generate a new key, or pass --access-key",
            path.display()
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    }
    fs::create_dir_all(data_dir).with_context(|| format!("creating {}", data_dir.display()))?;
    let key = switchboard_auth::generate_access_key();
    write_private(&path, &key)?;
    Ok(vec![key])
}

/// Writes `contents` to `path` atomically, readable only by the owner.
pub fn write_private(path: &Path, contents: &str) -> anyhow::Result<()> {
    let tmp = path.with_extension("tmp");
    {
        let mut options = fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file = options
            .open(&tmp)
            .with_context(|| format!("creating {}", tmp.display()))?;
        file.write_all(contents.as_bytes())?;
        file.sync_all()?;
    }
    fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_once_then_reused() {
        let dir = std::env::temp_dir().join(format!("switchboard-keys-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let first = load_or_generate(&[], &dir).expect("generated");
        let second = load_or_generate(&[], &dir).expect("reused");
        assert_eq!(first, second);
        assert_eq!(first[0].len(), 44);
        let configured =
            load_or_generate(&["  k1 ".into(), "k2".into()], &dir).expect("configured");
        assert_eq!(configured, vec!["k1".to_string(), "k2".to_string()]);
        let _ = fs::remove_dir_all(&dir);
    }
}
