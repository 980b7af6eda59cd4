//! Real storage faults for tests: a small tmpfs that a test fills, and a read-only bind mount.
//!
//! Mounting needs root (or CAP_SYS_ADMIN). A refusal for want of privileges is an `Err` the test
//! turns into a clear skip ([`skip`]); any other failure of `mount` is a bug in the test and
//! panics.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A mount made for one test, undone (lazily) when dropped.
pub struct Mount(PathBuf);

impl Mount {
    /// Where it is mounted.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

fn mount(args: &[&str], source: &Path, at: &Path) -> Result<Mount, String> {
    let output = Command::new("mount")
        .args(args)
        .arg(source)
        .arg(at)
        .output()
        .map_err(|e| format!("run mount: {e}"))?;
    if output.status.success() {
        return Ok(Mount(at.to_path_buf()));
    }
    let stderr = String::from_utf8_lossy(&output.stderr).trim().to_owned();
    let lower = stderr.to_lowercase();
    assert!(
        lower.contains("permission denied")
            || lower.contains("not permitted")
            || lower.contains("superuser"),
        "mount {args:?} {} {}: {stderr}",
        source.display(),
        at.display()
    );
    Err(stderr)
}

/// Mounts a tmpfs of `megabytes` MiB at `at` (which must exist).
pub fn tmpfs(at: &Path, megabytes: u32) -> Result<Mount, String> {
    let size = format!("size={megabytes}m");
    mount(&["-t", "tmpfs", "-o", &size], Path::new("tmpfs"), at)
}

/// Bind-mounts `dir` onto itself, so that [`read_only`] can flip it.
pub fn bind(dir: &Path) -> Result<Mount, String> {
    mount(&["--bind"], dir, dir)
}

/// Makes a bind mount read-only (`true`) or writable again (`false`).
pub fn read_only(mount: &Mount, read_only: bool) {
    let options = if read_only {
        "remount,bind,ro"
    } else {
        "remount,bind,rw"
    };
    let status = Command::new("mount")
        .args(["-o", options])
        .arg(mount.path())
        .status()
        .expect("run mount");
    assert!(
        status.success(),
        "mount -o {options} {}",
        mount.path().display()
    );
}

/// Fills the filesystem holding `dir` with one file (`dir/filler`) and returns its path:
/// remove it to end the fault.
pub fn fill(dir: &Path) -> PathBuf {
    let path = dir.join("filler");
    let mut file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .expect("create the filler file");
    let chunk = vec![0xa5u8; 64 * 1024];
    while file.write_all(&chunk).is_ok() {}
    // The last partial chunk may leave a few bytes: take them too.
    while file.write_all(&[0]).is_ok() {}
    path
}

/// Says plainly that a test did not run here, and why.
pub fn skip(why: &str) {
    eprintln!(
        "SKIPPED: this machine does not allow the mount the test needs ({why}); run as root to test storage faults"
    );
}
