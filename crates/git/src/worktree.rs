//! Snapshots of the user's working tree and file fingerprints, for the
//! `worktree` delivery: copy what git would see (tracked and untracked
//! files, minus ignored ones and `.git`), remember a content hash of each
//! file, and later tell which files the user changed meanwhile.
//!
//! Also the shared directory walk with git's ignore rules that
//! `write_dir_as_commit` and `diff_dirs` use. This module never writes to
//! the user's repository (working tree, index or `.git`); it knows nothing
//! about backups or conflicts, which the orchestrator decides.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::AtomicBool;

use gix::bstr::{BString, ByteSlice};
use serde::{Deserialize, Serialize};

use crate::error::{GitError, GixResultExt};
use crate::{GitRepo, Oid};

/// How git stores a file: the three blob modes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum FileMode {
    /// A regular file (`100644`).
    Regular,
    /// A regular file with the executable bit (`100755`).
    Executable,
    /// A symbolic link (`120000`); its content is the link target.
    Symlink,
}

impl FileMode {
    /// The tree entry kind for this mode.
    pub(crate) fn entry_kind(self) -> gix::objs::tree::EntryKind {
        match self {
            FileMode::Regular => gix::objs::tree::EntryKind::Blob,
            FileMode::Executable => gix::objs::tree::EntryKind::BlobExecutable,
            FileMode::Symlink => gix::objs::tree::EntryKind::Link,
        }
    }
}

/// What a file looked like: enough to tell whether it changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FileFingerprint {
    /// The git blob id of the content (of the link target for a symlink):
    /// what `git hash-object` prints for the file, without filters.
    pub hash: Oid,
    /// The content size in bytes.
    pub size: u64,
    /// Regular, executable or symlink.
    pub mode: FileMode,
}

/// A copy of the working tree, as [`GitRepo::snapshot_worktree`] made it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    /// Every copied file by its path relative to the working tree (with
    /// `/` separators), with its fingerprint at copy time.
    pub files: BTreeMap<String, FileFingerprint>,
}

impl Snapshot {
    /// Whether `current` (from [`GitRepo::fingerprint_worktree_file`]) is
    /// what the snapshot saw at `rel`: the same content and mode, or absent
    /// both times.
    pub fn is_unchanged(&self, rel: &str, current: Option<&FileFingerprint>) -> bool {
        self.files.get(rel) == current
    }
}

impl GitRepo {
    /// Copy the working tree into `dest` (created if missing, and it must
    /// be empty): tracked files as they are on disk (modified or not) and
    /// untracked files, but no ignored file (`.gitignore` at any level,
    /// `.git/info/exclude`, `core.excludesFile`) and nothing of `.git`.
    /// A tracked file that is also ignored is copied, as git keeps it.
    ///
    /// Symlinks are copied as symlinks and the executable bit is kept.
    /// Nested repositories and submodules are skipped, and so are files
    /// that vanish during the copy. The user's repository is only read.
    pub fn snapshot_worktree(&self, dest: &Path) -> Result<Snapshot, GitError> {
        let workdir = self.require_workdir()?.to_owned();
        let repo = self.local();
        let index = repo
            .index_or_empty()
            .ctx(|| format!("reading the index of {}", workdir.display()))?;
        let paths = walk_files(&repo, &index)?;
        prepare_empty_dir(dest)?;
        let mut snapshot = Snapshot::default();
        for rel in paths {
            let rel = utf8_path(&workdir, &rel)?;
            let Some(file) = read_file(&workdir.join(&rel))? else {
                continue;
            };
            file.write_to(&dest.join(&rel))?;
            snapshot.files.insert(rel, file.fingerprint()?);
        }
        Ok(snapshot)
    }

    /// The fingerprint of a file in the working tree now, computed as in
    /// [`GitRepo::snapshot_worktree`]; `None` when nothing is there (or a
    /// directory is). `rel` is relative to the working tree, with `/`
    /// separators, and may not leave it or enter `.git`.
    pub fn fingerprint_worktree_file(
        &self,
        rel: &str,
    ) -> Result<Option<FileFingerprint>, GitError> {
        let workdir = self.require_workdir()?;
        let path = checked_relative(workdir, rel)?;
        read_file(&path)?.map(|file| file.fingerprint()).transpose()
    }
}

/// The content and mode of one file on disk.
#[derive(Debug)]
pub(crate) struct FileContent {
    pub(crate) mode: FileMode,
    /// The bytes (the link target for a symlink).
    pub(crate) data: Vec<u8>,
    /// Unix permission bits of a regular file, to reproduce exactly.
    permissions: Option<fs::Permissions>,
}

impl FileContent {
    /// Its git blob id.
    pub(crate) fn blob_id(&self) -> Result<gix::ObjectId, GitError> {
        gix::objs::compute_hash(gix::hash::Kind::Sha1, gix::objs::Kind::Blob, &self.data)
            .map_err(|err| GitError::gix("hashing file content", &err))
    }

    /// Its fingerprint.
    pub(crate) fn fingerprint(&self) -> Result<FileFingerprint, GitError> {
        Ok(FileFingerprint {
            hash: self.blob_id()?.into(),
            size: self.data.len() as u64,
            mode: self.mode,
        })
    }

    /// Recreate the file at `dest`, creating parent directories.
    pub(crate) fn write_to(&self, dest: &Path) -> Result<(), GitError> {
        if let Some(parent) = dest.parent() {
            fs::create_dir_all(parent).map_err(|err| GitError::io(parent, err))?;
        }
        match self.mode {
            FileMode::Symlink => write_symlink(&self.data, dest),
            FileMode::Regular | FileMode::Executable => {
                fs::write(dest, &self.data).map_err(|err| GitError::io(dest, err))?;
                if let Some(permissions) = &self.permissions {
                    fs::set_permissions(dest, permissions.clone())
                        .map_err(|err| GitError::io(dest, err))?;
                }
                Ok(())
            }
        }
    }
}

#[cfg(unix)]
fn write_symlink(target: &[u8], dest: &Path) -> Result<(), GitError> {
    use std::os::unix::ffi::OsStrExt;
    let target = std::ffi::OsStr::from_bytes(target);
    std::os::unix::fs::symlink(target, dest).map_err(|err| GitError::io(dest, err))
}

#[cfg(not(unix))]
fn write_symlink(target: &[u8], dest: &Path) -> Result<(), GitError> {
    // Like git with `core.symlinks = false`: a file holding the target.
    fs::write(dest, target).map_err(|err| GitError::io(dest, err))
}

/// Read a regular file or symlink; `None` when nothing, a directory or a
/// special file is there.
pub(crate) fn read_file(path: &Path) -> Result<Option<FileContent>, GitError> {
    let metadata = match fs::symlink_metadata(path) {
        Ok(metadata) => metadata,
        Err(err) if is_absent(&err) => return Ok(None),
        Err(err) => return Err(GitError::io(path, err)),
    };
    let file_type = metadata.file_type();
    if file_type.is_symlink() {
        let target = match fs::read_link(path) {
            Ok(target) => target,
            Err(err) if is_absent(&err) => return Ok(None),
            Err(err) => return Err(GitError::io(path, err)),
        };
        return Ok(Some(FileContent {
            mode: FileMode::Symlink,
            data: link_target_bytes(&target),
            permissions: None,
        }));
    }
    if !file_type.is_file() {
        return Ok(None);
    }
    let data = match fs::read(path) {
        Ok(data) => data,
        Err(err) if is_absent(&err) => return Ok(None),
        Err(err) => return Err(GitError::io(path, err)),
    };
    Ok(Some(FileContent {
        mode: if is_executable(&metadata) {
            FileMode::Executable
        } else {
            FileMode::Regular
        },
        data,
        permissions: Some(metadata.permissions()),
    }))
}

fn is_absent(err: &std::io::Error) -> bool {
    matches!(
        err.kind(),
        std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory
    )
}

#[cfg(unix)]
fn is_executable(metadata: &fs::Metadata) -> bool {
    use std::os::unix::fs::PermissionsExt;
    // Like git: the owner's execute bit decides.
    metadata.permissions().mode() & 0o100 != 0
}

#[cfg(not(unix))]
fn is_executable(_metadata: &fs::Metadata) -> bool {
    false
}

#[cfg(unix)]
fn link_target_bytes(target: &Path) -> Vec<u8> {
    use std::os::unix::ffi::OsStrExt;
    target.as_os_str().as_bytes().to_vec()
}

#[cfg(not(unix))]
fn link_target_bytes(target: &Path) -> Vec<u8> {
    target.to_string_lossy().replace('\\', "/").into_bytes()
}

/// The files (regular and symlinks) git would see in `repo`'s working
/// directory given `index`: tracked files present on disk and untracked
/// files that are not ignored, sorted by path. Never `.git`, never nested
/// repositories.
pub(crate) fn walk_files(
    repo: &gix::Repository,
    index: &gix::index::State,
) -> Result<Vec<BString>, GitError> {
    let root = repo
        .workdir()
        .map_or_else(|| repo.git_dir().to_owned(), Path::to_owned);
    let context = || format!("walking {}", root.display());
    let options = repo
        .dirwalk_options()
        .ctx(context)?
        .emit_tracked(true)
        .emit_untracked(gix::dir::walk::EmissionMode::Matching)
        .emit_ignored(None)
        .emit_pruned(false)
        .emit_empty_directories(false)
        .recurse_repositories(false);
    let mut collect = gix::dir::walk::delegate::Collect::default();
    let interrupt = AtomicBool::new(false);
    repo.dirwalk(
        index,
        Vec::<BString>::new(),
        &interrupt,
        options,
        &mut collect,
    )
    .ctx(context)?;
    let mut paths: Vec<BString> = collect
        .into_entries_by_path()
        .into_iter()
        .filter(|(entry, _)| {
            matches!(
                entry.status,
                gix::dir::entry::Status::Tracked | gix::dir::entry::Status::Untracked
            ) && matches!(
                entry.disk_kind,
                Some(gix::dir::entry::Kind::File | gix::dir::entry::Kind::Symlink)
            ) && entry.property.is_none()
        })
        .map(|(entry, _)| entry.rela_path)
        .collect();
    paths.dedup();
    Ok(paths)
}

/// A walked path as UTF-8, or [`GitError::InvalidPath`].
pub(crate) fn utf8_path(root: &Path, rel: &BString) -> Result<String, GitError> {
    rel.to_str()
        .map(str::to_owned)
        .map_err(|_| GitError::InvalidPath {
            path: root.join(rel.to_str_lossy().as_ref()),
            message: "file names must be valid UTF-8".to_owned(),
        })
}

/// Resolve `rel` under `root`, refusing absolute paths, `..`, and `.git`.
pub(crate) fn checked_relative(root: &Path, rel: &str) -> Result<PathBuf, GitError> {
    let invalid = |message: &str| GitError::InvalidPath {
        path: PathBuf::from(rel),
        message: message.to_owned(),
    };
    if rel.is_empty() {
        return Err(invalid("empty path"));
    }
    let mut path = root.to_owned();
    for component in Path::new(rel).components() {
        match component {
            Component::Normal(name) => {
                if name.eq_ignore_ascii_case(".git") {
                    return Err(invalid(
                        "paths inside .git are not part of the working tree",
                    ));
                }
                path.push(name);
            }
            Component::CurDir => {}
            Component::ParentDir => return Err(invalid("'..' is not allowed")),
            Component::RootDir | Component::Prefix(_) => {
                return Err(invalid("must be relative to the working tree"));
            }
        }
    }
    Ok(path)
}

/// Make sure `dest` exists and is an empty directory.
pub(crate) fn prepare_empty_dir(dest: &Path) -> Result<(), GitError> {
    match fs::read_dir(dest) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                return Err(GitError::DestinationNotEmpty {
                    path: dest.to_owned(),
                });
            }
            Ok(())
        }
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            fs::create_dir_all(dest).map_err(|err| GitError::io(dest, err))
        }
        Err(err) if err.kind() == std::io::ErrorKind::NotADirectory => {
            Err(GitError::DestinationNotEmpty {
                path: dest.to_owned(),
            })
        }
        Err(err) => Err(GitError::io(dest, err)),
    }
}
