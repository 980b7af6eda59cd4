//! Access and cluster keys: from the command line, from key files, or (access keys of `serve`)
//! generated once and kept in the data directory. No function here logs or prints a key, and
//! errors name the file, never its contents.

use std::fs;
use std::io::Write;
use std::path::Path;

use anyhow::{bail, Context};

const KEY_FILE: &str = "access-key";

/// The keys given on the command line, trimmed, then those of each key file (one per line;
/// blank lines and lines starting with `#` are skipped). An empty or white-space key on the
/// command line is an error, not a missing flag: left to fall back to a generated key, each node
/// of a cluster would sign with a key of its own.
pub fn configured(
    keys: &[String],
    files: &[std::path::PathBuf],
    flag: &str,
    file_flag: &str,
) -> anyhow::Result<Vec<String>> {
    let mut out = Vec::with_capacity(keys.len());
    for key in keys {
        let key = key.trim();
        if key.is_empty() {
            bail!("{flag} is empty (or only white space; an empty item of a comma-separated list counts, e.g. a trailing comma): give a key, or leave the flag out to use the data dir's generated key");
        }
        out.push(key.to_owned());
    }
    let flag = file_flag;
    for file in files {
        let text = fs::read_to_string(file)
            .with_context(|| format!("reading {flag} {}", file.display()))?;
        let before = out.len();
        out.extend(
            text.lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .map(str::to_owned),
        );
        if out.len() == before {
            bail!("{flag} {} holds no key", file.display());
        }
    }
    Ok(out)
}

/// The configured keys, or the data dir's generated key (created on first start).
pub fn load_or_generate(configured: &[String], data_dir: &Path) -> anyhow::Result<Vec<String>> {
    if !configured.is_empty() {
        return Ok(configured.to_vec());
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
        let given = configured(
            &["  k1 ".into(), "k2".into()],
            &[],
            "--access-key",
            "--access-key-file",
        )
        .expect("configured");
        let configured = load_or_generate(&given, &dir).expect("configured");
        assert_eq!(configured, vec!["k1".to_string(), "k2".to_string()]);
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn key_files_add_keys_and_errors_name_the_file_not_the_key() {
        let dir = tempfile::tempdir().expect("temp dir");
        let file = dir.path().join("keys");
        fs::write(&file, "# rotated 2026-11\n\n  new-key  \nold-key\n").expect("write");
        let keys = configured(
            &["flag-key".into()],
            std::slice::from_ref(&file),
            "--access-key",
            "--access-key-file",
        )
        .expect("read");
        assert_eq!(keys, ["flag-key", "new-key", "old-key"]);
        let empty = dir.path().join("empty");
        fs::write(&empty, "# nothing\n").expect("write");
        let error = configured(&[], &[empty], "--access-key", "--access-key-file")
            .unwrap_err()
            .to_string();
        assert!(error.contains("holds no key"), "{error}");
        let error = format!(
            "{:#}",
            configured(
                &[],
                &[dir.path().join("missing")],
                "--access-key",
                "--access-key-file"
            )
            .unwrap_err()
        );
        assert!(error.contains("missing"), "{error}");
    }

    #[test]
    fn an_empty_or_blank_key_on_the_command_line_is_refused() {
        for blank in ["", "   ", "\t"] {
            let error = configured(
                &["k1".into(), blank.into()],
                &[],
                "--access-key",
                "--access-key-file",
            )
            .unwrap_err()
            .to_string();
            assert!(error.contains("--access-key is empty"), "{error}");
        }
    }
}
