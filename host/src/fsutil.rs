//! Private directories and atomic writes, for state that must not be read or
//! replaced by other users.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Creates `dir` (and parents) with mode 0700, then checks it with
/// [`check_private`].
pub(crate) fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
    }
    #[cfg(not(unix))]
    fs::create_dir_all(dir)?;
    check_private(dir)
}

/// Refuses a directory that other users can write to, or that belongs to
/// someone else.
pub(crate) fn check_private(dir: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let meta = fs::metadata(dir)?;
        if meta.permissions().mode() & 0o022 != 0 {
            return Err(std::io::Error::other(format!(
                "{} is writable by other users",
                dir.display()
            )));
        }
        if meta.uid() != current_uid() {
            return Err(std::io::Error::other(format!(
                "{} belongs to another user",
                dir.display()
            )));
        }
    }
    Ok(())
}

/// The effective user id of this process.
#[cfg(unix)]
pub(crate) fn current_uid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    #[allow(unsafe_code)]
    unsafe {
        libc::geteuid()
    }
}

/// Reads `path` if it is a regular file (not a symlink) that belongs to
/// this user and that no one else can write. The checks are made on the
/// opened file itself, so it cannot be swapped between check and read.
pub(crate) fn read_owned_file(path: &Path) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let mut options = fs::OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.custom_flags(libc::O_NOFOLLOW);
    }
    let mut file = options.open(path)?;
    check_owned_metadata(path, &file.metadata()?)?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// Checks that `path` is a regular file (not a symlink) that belongs to this
/// user and that no one else can write, before its contents are trusted.
pub(crate) fn check_owned_file(path: &Path) -> std::io::Result<()> {
    check_owned_metadata(path, &fs::symlink_metadata(path)?)
}

/// The checks of [`check_owned_file`], on metadata already read.
fn check_owned_metadata(path: &Path, meta: &fs::Metadata) -> std::io::Result<()> {
    if !meta.file_type().is_file() {
        return Err(std::io::Error::other(format!(
            "{} is not a regular file",
            path.display()
        )));
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        if meta.uid() != current_uid() {
            return Err(std::io::Error::other(format!(
                "{} belongs to another user",
                path.display()
            )));
        }
        if meta.permissions().mode() & 0o022 != 0 {
            return Err(std::io::Error::other(format!(
                "{} is writable by other users",
                path.display()
            )));
        }
    }
    Ok(())
}

/// Writes `bytes` to `path` through a temporary file in the same directory
/// and a rename, so a reader never sees a half-written file. The file is
/// created with mode 0600.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    // A bare file name's parent is "", which names no directory.
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let (tmp_path, mut file) = create_temp_file(dir)?;
    let result = file
        .write_all(bytes)
        .and_then(|()| file.sync_all())
        .and_then(|()| fs::rename(&tmp_path, path));
    if result.is_err() {
        let _ = fs::remove_file(&tmp_path);
        return result;
    }
    // Make the rename itself durable.
    fs::File::open(dir).and_then(|d| d.sync_all())
}

fn create_temp_file(dir: &Path) -> std::io::Result<(PathBuf, fs::File)> {
    let mut suffix = [0u8; 8];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut suffix)
        .map_err(|_| std::io::Error::other("the OS random number generator failed"))?;
    let path = dir.join(format!(".tmp-{}", hex::encode(suffix)));
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    Ok((path.clone(), options.open(&path)?))
}

/// Opens `path` for writing, creating it with mode 0600 if needed, without
/// following a symlink at its place, and checks it like
/// [`check_owned_file`]. For lock files.
pub(crate) fn open_private_file(path: &Path) -> std::io::Result<fs::File> {
    let mut options = fs::OpenOptions::new();
    options.read(true).write(true).create(true).truncate(false);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600).custom_flags(libc::O_NOFOLLOW);
    }
    let file = options.open(path)?;
    check_owned_file(path)?;
    Ok(file)
}

/// Reads at most `max` bytes of `path`, refusing larger files.
pub(crate) fn read_bounded(path: &Path, max: u64) -> Result<Vec<u8>, crate::error::LoadError> {
    let io_err = |e: std::io::Error| crate::error::LoadError::Io {
        path: path.display().to_string(),
        reason: e.to_string(),
    };
    let file = std::fs::File::open(path).map_err(io_err)?;
    let mut bytes = Vec::new();
    std::io::Read::read_to_end(&mut std::io::Read::take(file, max + 1), &mut bytes)
        .map_err(io_err)?;
    if bytes.len() as u64 > max {
        return Err(crate::error::LoadError::Io {
            path: path.display().to_string(),
            reason: format!("the file is larger than {max} bytes"),
        });
    }
    Ok(bytes)
}
