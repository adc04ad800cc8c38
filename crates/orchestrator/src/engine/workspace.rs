//! Isolated workspaces: one directory per job under
//! `<storage>/workspaces/<job id>/`, removed after every outcome, and the
//! input hash behind the `unchanged` skip.

use std::io;
use std::path::{Path, PathBuf};

use globset::{GlobBuilder, GlobSet, GlobSetBuilder};
use orchex_core::{JobId, Pipeline};
use sha2::{Digest, Sha256};

/// The directory holding every job's workspace.
pub(crate) fn workspaces_root(storage: &Path) -> PathBuf {
    storage.join("workspaces")
}

/// A job's workspace directory; removed when dropped.
#[derive(Debug)]
pub(crate) struct Workspace {
    root: PathBuf,
}

impl Workspace {
    /// Creates `<storage>/workspaces/<job>/`, replacing a leftover one.
    pub(crate) fn create(storage: &Path, job: JobId) -> io::Result<Self> {
        let root = workspaces_root(storage).join(job.to_string());
        if root.exists() {
            std::fs::remove_dir_all(&root)?;
        }
        std::fs::create_dir_all(&root)?;
        Ok(Self { root })
    }

    /// Where the steps run.
    pub(crate) fn work_dir(&self) -> PathBuf {
        self.root.join("work")
    }

    /// The pristine copy a worktree delivery diffs against.
    pub(crate) fn base_dir(&self) -> PathBuf {
        self.root.join("base")
    }
}

impl Drop for Workspace {
    fn drop(&mut self) {
        if let Err(err) = std::fs::remove_dir_all(&self.root)
            && err.kind() != io::ErrorKind::NotFound
        {
            tracing::warn!(path = %self.root.display(), %err, "cannot remove a job workspace");
        }
    }
}

/// Where the step `index` of the job whose steps run in `work` records its
/// process group (`<storage>/workspaces/<job>/step-<index>.pgid`, beside
/// `work/`), see [`crate::process::run_process_recorded`].
pub(crate) fn group_file(work: &Path, index: u32) -> PathBuf {
    work.with_file_name(format!("step-{index}.pgid"))
}

/// The process groups recorded by steps in leftover workspaces (after a
/// crash), with their job ids: every step that had started when the daemon
/// died. `None` is a group file left empty: the daemon died between
/// creating it and writing the group id, so the step may be running under a
/// group nobody recorded. Call before [`remove_leftovers`].
pub(crate) fn leftover_groups(storage: &Path) -> Vec<(String, Option<u32>)> {
    let Ok(workspaces) = std::fs::read_dir(workspaces_root(storage)) else {
        return Vec::new();
    };
    let mut groups: Vec<(String, Option<u32>)> = Vec::new();
    for workspace in workspaces.flatten() {
        // The workspace is named after its job.
        let job = workspace.file_name().to_string_lossy().into_owned();
        let Ok(entries) = std::fs::read_dir(workspace.path()) else {
            continue;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.starts_with("step-") && name.ends_with(".pgid") {
                groups.push((job.clone(), crate::process::recorded_group(&entry.path())));
            }
        }
    }
    groups.sort_unstable();
    groups.dedup();
    groups
}

/// Removes every leftover workspace (after a crash); returns how many.
pub(crate) fn remove_leftovers(storage: &Path) -> io::Result<usize> {
    let root = workspaces_root(storage);
    let entries = match std::fs::read_dir(&root) {
        Ok(entries) => entries,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(err) => return Err(err),
    };
    let mut removed = 0;
    for entry in entries {
        let path = entry?.path();
        std::fs::remove_dir_all(&path)?;
        removed += 1;
    }
    Ok(removed)
}

/// Copies a directory tree (files, symlinks, permissions), without `.git`.
pub(crate) fn copy_tree(from: &Path, to: &Path) -> io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let name = entry.file_name();
        if name == ".git" {
            continue;
        }
        let source = entry.path();
        let target = to.join(&name);
        let file_type = entry.file_type()?;
        if file_type.is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(&source)?, &target)?;
        } else if file_type.is_dir() {
            copy_tree(&source, &target)?;
        } else if file_type.is_file() {
            std::fs::copy(&source, &target)?;
        }
    }
    Ok(())
}

/// Compiles path globs the way routing does (`*` stays in a directory).
pub(crate) fn path_globs(patterns: &[String]) -> Result<GlobSet, globset::Error> {
    let mut builder = GlobSetBuilder::new();
    for pattern in patterns {
        builder.add(GlobBuilder::new(pattern).literal_separator(true).build()?);
    }
    builder.build()
}

/// The SHA-256 of some bytes, as lowercase hex.
pub(crate) fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// The content hash of a file as [`sha256_hex`] of its bytes (of the link
/// target for a symlink), or `None` when it does not exist.
pub(crate) fn file_hash(path: &Path) -> io::Result<Option<String>> {
    match std::fs::symlink_metadata(path) {
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(err) => Err(err),
        Ok(meta) if meta.file_type().is_symlink() => {
            let target = std::fs::read_link(path)?;
            Ok(Some(sha256_hex(target.as_os_str().as_encoded_bytes())))
        }
        Ok(_) => Ok(Some(sha256_hex(&std::fs::read(path)?))),
    }
}

/// The input hash of a job: the pipeline's definition and every file of
/// `dir` its `paths` select (path and content), in path order.
pub(crate) fn input_hash(pipeline: &Pipeline, dir: &Path) -> io::Result<String> {
    let globs = path_globs(&pipeline.paths).map_err(io::Error::other)?;
    let mut hasher = Sha256::new();
    let definition = serde_json::to_vec(pipeline).map_err(io::Error::other)?;
    hasher.update(&definition);
    let mut files = Vec::new();
    collect_files(dir, dir, &mut files)?;
    files.sort();
    for rel in files {
        if !globs.is_match(&rel) {
            continue;
        }
        hasher.update(rel.as_bytes());
        hasher.update([0]);
        let hash = file_hash(&dir.join(&rel))?.unwrap_or_default();
        hasher.update(hash.as_bytes());
        hasher.update([0]);
    }
    Ok(hex::encode(hasher.finalize()))
}

/// Every file (and symlink) under `dir`, as `/`-separated relative paths,
/// `.git` excluded.
pub(crate) fn collect_files(root: &Path, dir: &Path, out: &mut Vec<String>) -> io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_name() == ".git" {
            continue;
        }
        let path = entry.path();
        let file_type = entry.file_type()?;
        if file_type.is_dir() {
            collect_files(root, &path, out)?;
        } else if let Ok(rel) = path.strip_prefix(root) {
            out.push(rel.to_string_lossy().replace('\\', "/"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use orchex_core::Step;

    fn pipeline(paths: &[&str]) -> Pipeline {
        let mut pipeline = Pipeline::new("p", vec![Step::default()]);
        pipeline.paths = paths.iter().map(|p| (*p).to_owned()).collect();
        pipeline
    }

    #[test]
    fn input_hash_depends_only_on_selected_files_and_the_definition() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("schema")).unwrap();
        std::fs::write(dir.path().join("schema/a.json"), "1").unwrap();
        std::fs::write(dir.path().join("README.md"), "x").unwrap();
        let p = pipeline(&["schema/**"]);
        let first = input_hash(&p, dir.path()).unwrap();
        std::fs::write(dir.path().join("README.md"), "changed").unwrap();
        assert_eq!(input_hash(&p, dir.path()).unwrap(), first);
        std::fs::write(dir.path().join("schema/a.json"), "2").unwrap();
        let second = input_hash(&p, dir.path()).unwrap();
        assert_ne!(second, first);
        let mut other = p.clone();
        other.steps[0].name = "renamed".into();
        assert_ne!(input_hash(&other, dir.path()).unwrap(), second);
    }

    #[test]
    fn workspaces_are_removed_on_drop_and_leftovers_on_request() {
        let storage = tempfile::tempdir().unwrap();
        let job = JobId::new();
        let ws = Workspace::create(storage.path(), job).unwrap();
        std::fs::create_dir_all(ws.work_dir()).unwrap();
        std::fs::write(ws.work_dir().join("f"), "x").unwrap();
        let root = workspaces_root(storage.path()).join(job.to_string());
        assert!(root.exists());
        drop(ws);
        assert!(!root.exists());

        std::fs::create_dir_all(workspaces_root(storage.path()).join("a/b")).unwrap();
        std::fs::create_dir_all(workspaces_root(storage.path()).join("c")).unwrap();
        assert_eq!(remove_leftovers(storage.path()).unwrap(), 2);
        assert_eq!(remove_leftovers(storage.path()).unwrap(), 0);
    }

    #[test]
    fn copy_tree_keeps_symlinks_and_modes_and_skips_git() {
        use std::os::unix::fs::PermissionsExt as _;
        let from = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(from.path().join(".git")).unwrap();
        std::fs::create_dir_all(from.path().join("d")).unwrap();
        std::fs::write(from.path().join("d/x.sh"), "#!/bin/sh").unwrap();
        std::fs::set_permissions(
            from.path().join("d/x.sh"),
            std::fs::Permissions::from_mode(0o755),
        )
        .unwrap();
        std::os::unix::fs::symlink("d/x.sh", from.path().join("link")).unwrap();
        let to = tempfile::tempdir().unwrap();
        let target = to.path().join("copy");
        copy_tree(from.path(), &target).unwrap();
        assert!(!target.join(".git").exists());
        let mode = std::fs::metadata(target.join("d/x.sh"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o111, 0o111);
        assert_eq!(
            std::fs::read_link(target.join("link")).unwrap(),
            Path::new("d/x.sh")
        );
    }
}
