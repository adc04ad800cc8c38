//! The Linux watch backend: inotify, called directly.
//!
//! notify's own inotify watcher serves every `watch` call on its event-loop
//! thread, so installing 10,000 directory watches costs 10,000 round trips
//! (a channel send, an eventfd wake-up and a blocking receive each) that
//! compete with the walk for the same cores. Here a watch is one
//! `inotify_add_watch` system call made by whichever thread asks: the
//! walker threads install the watches of the directories they find, as
//! they find them.
//!
//! A reader thread turns the kernel's events into [`notify::Event`]s, so
//! the rest of the watcher handles them exactly like notify's:
//!
//! | inotify | notify event |
//! |---|---|
//! | `IN_CREATE` | `Create(Folder)` / `Create(File)` |
//! | `IN_DELETE` | `Remove(Folder)` / `Remove(File)` |
//! | `IN_MOVED_FROM` / `IN_MOVED_TO` | `Modify(Name(From))` / `Modify(Name(To))` |
//! | `IN_MODIFY`, `IN_CLOSE_WRITE` | `Modify(Data(Any))` |
//! | `IN_ATTRIB` | `Modify(Metadata(Any))` |
//! | `IN_DELETE_SELF` | `Remove(Folder)` on the watched directory |
//! | `IN_MOVE_SELF` | `Modify(Name(Any))` on the watched directory |
//! | `IN_Q_OVERFLOW` | an event flagged `Rescan` |
//! | `ENOSPC` from `inotify_add_watch` | `ErrorKind::MaxFilesWatch` |
//!
//! The kernel gives a directory that is watched twice (moved, then watched
//! under its new name) the same watch descriptor, so the table maps each
//! descriptor to the path it was last installed for, and removing a watch
//! under an old name only forgets that name.
//!
//! One instance serialises its `inotify_add_watch` calls on the group's
//! mark lock: two threads installing 10,000 watches into one instance took
//! as long as one thread (27 ms here), into one instance each 16 ms. So a
//! watcher has one instance ("lane") per walker thread, and a thread
//! installs into its own lane. A directory already watched is re-watched
//! in the lane that holds it. Each instance counts against the per-user
//! `fs.inotify.max_user_instances` (128 by default), so lanes beyond the
//! first come from a process-wide budget of [`EXTRA_LANE_BUDGET`], and a
//! lane the kernel refuses is simply not used.

use std::cell::Cell;
use std::collections::HashMap;
use std::ffi::OsStr;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;

use inotify::{EventMask, Inotify, WatchDescriptor, WatchMask, Watches};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use notify::event::{
    CreateKind, DataChange, Flag, MetadataKind, ModifyKind, RemoveKind, RenameMode,
};
use notify::{Event, EventKind};

use super::RawSink;

/// What each directory watch asks the kernel for (the same events notify's
/// inotify backend asks for, directories only, symlinks not followed).
const DIR_MASK: WatchMask = WatchMask::ATTRIB
    .union(WatchMask::CREATE)
    .union(WatchMask::DELETE)
    .union(WatchMask::CLOSE_WRITE)
    .union(WatchMask::MODIFY)
    .union(WatchMask::MOVED_FROM)
    .union(WatchMask::MOVED_TO)
    .union(WatchMask::DELETE_SELF)
    .union(WatchMask::MOVE_SELF)
    .union(WatchMask::ONLYDIR)
    .union(WatchMask::DONT_FOLLOW)
    .union(WatchMask::EXCL_UNLINK);

/// Bytes read from the inotify descriptor at once (about 250 events with
/// short names).
const READ_BUFFER: usize = 16 * 1024;

/// Extra inotify instances (beyond each watcher's first) the whole process
/// may hold at once.
pub(crate) const EXTRA_LANE_BUDGET: usize = 16;

/// Extra instances held now, process-wide.
static EXTRA_LANES: AtomicUsize = AtomicUsize::new(0);

/// Numbers the watchers, for [`LANE`].
static NEXT_WATCHER: AtomicU64 = AtomicU64::new(0);

thread_local! {
    /// The lane this thread installs into, for the watcher it last
    /// installed for (a walker thread serves one walk of one watcher).
    static LANE: Cell<Option<(u64, usize)>> = const { Cell::new(None) };
}

/// A watch: the lane (instance) it lives in and its descriptor number.
type WatchId = (usize, i32);

/// The watch table shared by the installing threads and the reader.
#[derive(Default)]
struct Table {
    /// Watch → the directory it was last installed for.
    by_wd: HashMap<WatchId, Arc<Path>>,
    /// Directory → its lane and descriptor (several names may share one
    /// after a move).
    by_path: HashMap<Arc<Path>, (usize, WatchDescriptor)>,
    /// Watches being installed: their descriptor may reach the reader
    /// before it is in the table.
    in_flight: usize,
    /// The reader waits for an install to finish.
    reader_waiting: bool,
}

struct Shared {
    table: Mutex<Table>,
    installed: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Table> {
        // The table stays consistent between statements; a panic elsewhere
        // while holding the lock leaves nothing half-written.
        self.table.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Installs watches from any thread (the walker's threads hold one each).
#[derive(Clone)]
pub(crate) struct Installer {
    /// One per lane.
    lanes: Arc<[Watches]>,
    shared: Arc<Shared>,
    /// This watcher's number ([`NEXT_WATCHER`]).
    id: u64,
    /// Round-robin over the lanes, one step per new thread.
    next_lane: Arc<AtomicUsize>,
}

impl Installer {
    /// The calling thread's lane: assigned round-robin on its first
    /// install for this watcher, so the walker's threads get one each.
    fn thread_lane(&self) -> usize {
        LANE.with(|cached| match cached.get() {
            Some((id, lane)) if id == self.id => lane,
            _ => {
                let lane = self.next_lane.fetch_add(1, Ordering::Relaxed) % self.lanes.len();
                cached.set(Some((self.id, lane)));
                lane
            }
        })
    }

    /// Watches directory `dir` (not recursively): in the lane that already
    /// holds it, or else in the calling thread's.
    pub(crate) fn add(&self, dir: &Path) -> notify::Result<()> {
        let lane = {
            let mut table = self.shared.lock();
            table.in_flight += 1;
            table
                .by_path
                .get(dir)
                .map_or_else(|| self.thread_lane(), |(lane, _)| *lane)
        };
        // `Watches::add` takes `&mut self` though it only uses the shared
        // descriptor; a clone is a reference-count increment.
        let added = self.lanes[lane].clone().add(dir, DIR_MASK);
        let mut table = self.shared.lock();
        table.in_flight -= 1;
        let result = match added {
            Ok(wd) => {
                let path: Arc<Path> = Arc::from(dir);
                table
                    .by_wd
                    .insert((lane, wd.get_watch_descriptor_id()), Arc::clone(&path));
                if let Some((old_lane, old)) = table.by_path.insert(path, (lane, wd))
                    && old_lane != lane
                {
                    // Two threads added the same new directory at once, each
                    // in its own lane: keep one mark, or its events would
                    // come twice.
                    table
                        .by_wd
                        .remove(&(old_lane, old.get_watch_descriptor_id()));
                    let _ = self.lanes[old_lane].clone().remove(old);
                }
                Ok(())
            }
            Err(error) => Err(add_error(error, dir)),
        };
        if table.reader_waiting {
            self.shared.installed.notify_all();
        }
        result
    }

    /// Stops watching `dir`; a descriptor now installed for another name
    /// (the directory moved) is left in place.
    pub(crate) fn remove(&self, dir: &Path) -> notify::Result<()> {
        let mut table = self.shared.lock();
        let Some((lane, wd)) = table.by_path.remove(dir) else {
            return Err(notify::Error::watch_not_found().add_path(dir.to_path_buf()));
        };
        let id = (lane, wd.get_watch_descriptor_id());
        if table
            .by_wd
            .get(&id)
            .is_some_and(|current| &**current == dir)
        {
            table.by_wd.remove(&id);
            drop(table);
            // The kernel may have dropped it with the directory already.
            let _ = self.lanes[lane].clone().remove(wd);
        }
        Ok(())
    }
}

fn add_error(error: io::Error, dir: &Path) -> notify::Error {
    if error.raw_os_error() == Some(nix::libc::ENOSPC) {
        notify::Error::new(notify::ErrorKind::MaxFilesWatch)
    } else {
        notify::Error::io(error).add_path(dir.to_path_buf())
    }
}

/// The watcher's inotify instances (lanes) with their reader thread.
pub(crate) struct InotifyWatcher {
    installer: Installer,
    /// Lanes taken from [`EXTRA_LANE_BUDGET`], given back on drop.
    extra_lanes: usize,
    /// Closing it wakes the reader, which then exits.
    stop: Option<OwnedFd>,
    reader: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for InotifyWatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InotifyWatcher").finish_non_exhaustive()
    }
}

impl InotifyWatcher {
    /// Creates up to `lanes` inotify instances (at least one; the others
    /// as the process-wide budget and the kernel allow) and starts their
    /// reader, which sends every event to `sink`.
    pub(crate) fn new(sink: RawSink, lanes: usize) -> io::Result<Self> {
        let mut instances = vec![Inotify::init()?];
        while instances.len() < lanes.max(1) && take_extra_lane() {
            if let Ok(inotify) = Inotify::init() {
                instances.push(inotify);
            } else {
                // The kernel's per-user instance limit: fewer lanes.
                EXTRA_LANES.fetch_sub(1, Ordering::Relaxed);
                break;
            }
        }
        let extra_lanes = instances.len() - 1;
        // Close-on-exec: a child spawned meanwhile (a pipeline step, a
        // browser in a test) must not hold the write end open, or closing
        // ours would never wake the reader and `drop` would wait forever.
        let (wake, stop) =
            nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(io::Error::from)?;
        let shared = Arc::new(Shared {
            table: Mutex::new(Table::default()),
            installed: Condvar::new(),
        });
        let installer = Installer {
            lanes: instances.iter().map(Inotify::watches).collect(),
            shared: Arc::clone(&shared),
            id: NEXT_WATCHER.fetch_add(1, Ordering::Relaxed),
            next_lane: Arc::new(AtomicUsize::new(0)),
        };
        let reader = std::thread::Builder::new()
            .name("orchex-inotify".to_owned())
            .spawn(move || read_events(instances, &wake, &shared, &sink));
        let reader = match reader {
            Ok(reader) => reader,
            Err(error) => {
                EXTRA_LANES.fetch_sub(extra_lanes, Ordering::Relaxed);
                return Err(error);
            }
        };
        Ok(Self {
            installer,
            extra_lanes,
            stop: Some(stop),
            reader: Some(reader),
        })
    }

    /// A handle that installs watches from other threads.
    pub(crate) fn installer(&self) -> &Installer {
        &self.installer
    }

    /// Watches directory `dir` (not recursively).
    pub(crate) fn watch(&self, dir: &Path) -> notify::Result<()> {
        self.installer.add(dir)
    }

    /// Stops watching `dir`.
    pub(crate) fn unwatch(&self, dir: &Path) -> notify::Result<()> {
        self.installer.remove(dir)
    }
}

impl Drop for InotifyWatcher {
    fn drop(&mut self) {
        // A byte on the pipe (and its closing) makes the reader's poll
        // return; the reader then drops the instance, which releases every
        // watch.
        if let Some(stop) = self.stop.take() {
            let _ = nix::unistd::write(&stop, &[1]);
        }
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
        EXTRA_LANES.fetch_sub(self.extra_lanes, Ordering::Relaxed);
    }
}

/// Takes one lane from [`EXTRA_LANE_BUDGET`]; `false` when none is left.
fn take_extra_lane() -> bool {
    EXTRA_LANES
        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |held| {
            (held < EXTRA_LANE_BUDGET).then_some(held + 1)
        })
        .is_ok()
}

/// The reader thread: waits for events on every lane or the stop pipe,
/// translates, sends.
fn read_events(mut lanes: Vec<Inotify>, wake: &OwnedFd, shared: &Shared, sink: &RawSink) {
    let mut buffer = vec![0_u8; READ_BUFFER];
    loop {
        let (ready, stopped) = {
            let mut fds: Vec<PollFd<'_>> = lanes
                .iter()
                .map(|lane| PollFd::new(lane.as_fd(), PollFlags::POLLIN))
                .collect();
            fds.push(PollFd::new(wake.as_fd(), PollFlags::POLLIN));
            match poll(&mut fds, PollTimeout::NONE) {
                Ok(_) => {}
                Err(nix::errno::Errno::EINTR) => continue,
                Err(error) => {
                    let _ = sink.0.send(Err(notify::Error::io(error.into())));
                    return;
                }
            }
            let is_ready = |fd: &PollFd<'_>| fd.revents().is_some_and(|flags| !flags.is_empty());
            let stopped = fds.last().is_some_and(is_ready);
            let ready: Vec<bool> = fds[..lanes.len()].iter().map(is_ready).collect();
            (ready, stopped)
        };
        if stopped {
            return;
        }
        for (lane, inotify) in lanes.iter_mut().enumerate() {
            if !ready[lane] {
                continue;
            }
            let events = match inotify.read_events(&mut buffer) {
                Ok(events) => events,
                Err(error)
                    if matches!(
                        error.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                    ) =>
                {
                    continue;
                }
                Err(error) => {
                    let _ = sink.0.send(Err(notify::Error::io(error)));
                    return;
                }
            };
            for event in events {
                if let Some(event) = translate(
                    shared,
                    (lane, event.wd.get_watch_descriptor_id()),
                    event.mask,
                    event.name,
                ) {
                    // The receiver is gone only when the repository is being
                    // removed.
                    let _ = sink.0.send(Ok(event));
                }
            }
        }
    }
}

/// The notify event for one inotify event, if it matters.
fn translate(shared: &Shared, wd: WatchId, mask: EventMask, name: Option<&OsStr>) -> Option<Event> {
    if mask.contains(EventMask::Q_OVERFLOW) {
        return Some(Event::new(EventKind::Other).set_flag(Flag::Rescan));
    }
    if mask.contains(EventMask::IGNORED) {
        // The watch is gone (directory deleted, or removed by us).
        let mut table = shared.lock();
        if let Some(path) = table.by_wd.remove(&wd)
            && table
                .by_path
                .get(&path)
                .is_some_and(|(lane, current)| (*lane, current.get_watch_descriptor_id()) == wd)
        {
            table.by_path.remove(&path);
        }
        return None;
    }
    let dir = directory_of(shared, wd)?;
    let (kind, path) = if let Some(name) = name {
        (entry_event_kind(mask)?, dir.join(name))
    } else {
        (directory_event_kind(mask)?, dir.to_path_buf())
    };
    Some(Event::new(kind).add_path(path))
}

/// The kind of an event about an entry of a watched directory.
fn entry_event_kind(mask: EventMask) -> Option<EventKind> {
    let is_dir = mask.contains(EventMask::ISDIR);
    Some(if mask.contains(EventMask::CREATE) {
        EventKind::Create(if is_dir {
            CreateKind::Folder
        } else {
            CreateKind::File
        })
    } else if mask.contains(EventMask::DELETE) {
        EventKind::Remove(if is_dir {
            RemoveKind::Folder
        } else {
            RemoveKind::File
        })
    } else if mask.contains(EventMask::MOVED_FROM) {
        EventKind::Modify(ModifyKind::Name(RenameMode::From))
    } else if mask.contains(EventMask::MOVED_TO) {
        EventKind::Modify(ModifyKind::Name(RenameMode::To))
    } else if mask.intersects(EventMask::MODIFY | EventMask::CLOSE_WRITE) {
        EventKind::Modify(ModifyKind::Data(DataChange::Any))
    } else if mask.contains(EventMask::ATTRIB) {
        EventKind::Modify(ModifyKind::Metadata(MetadataKind::Any))
    } else {
        return None;
    })
}

/// The kind of an event about a watched directory itself.
fn directory_event_kind(mask: EventMask) -> Option<EventKind> {
    Some(if mask.contains(EventMask::DELETE_SELF) {
        EventKind::Remove(RemoveKind::Folder)
    } else if mask.contains(EventMask::MOVE_SELF) {
        EventKind::Modify(ModifyKind::Name(RenameMode::Any))
    } else if mask.contains(EventMask::ATTRIB) {
        EventKind::Modify(ModifyKind::Metadata(MetadataKind::Any))
    } else {
        return None;
    })
}

/// The directory watch `wd` was installed for. A descriptor can reach the
/// reader before its installer has recorded it, so while installs are in
/// flight an unknown descriptor is waited for.
fn directory_of(shared: &Shared, wd: WatchId) -> Option<Arc<Path>> {
    let mut table = shared.lock();
    loop {
        if let Some(path) = table.by_wd.get(&wd) {
            return Some(Arc::clone(path));
        }
        if table.in_flight == 0 {
            // Removed by us before its last events were read.
            return None;
        }
        table.reader_waiting = true;
        table = shared
            .installed
            .wait(table)
            .unwrap_or_else(PoisonError::into_inner);
        table.reader_waiting = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;
    use std::time::Duration;

    fn watcher() -> (
        InotifyWatcher,
        tokio::sync::mpsc::UnboundedReceiver<super::super::RawEvent>,
    ) {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        (InotifyWatcher::new(RawSink(tx), 2).unwrap(), rx)
    }

    /// Waits for events until one matches (bounded, so a missing event
    /// fails the test instead of hanging it).
    fn wait_for(
        rx: &mut tokio::sync::mpsc::UnboundedReceiver<super::super::RawEvent>,
        what: impl Fn(&Event) -> bool,
    ) -> Event {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            match rx.try_recv() {
                Ok(Ok(event)) if what(&event) => return event,
                Ok(_) => {}
                Err(tokio::sync::mpsc::error::TryRecvError::Empty) => {
                    assert!(std::time::Instant::now() < deadline, "no matching event");
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(error) => panic!("{error}"),
            }
        }
    }

    #[test]
    fn events_come_out_as_notify_events_with_full_paths() {
        let dir = tempfile::tempdir().unwrap();
        let root = std::fs::canonicalize(dir.path()).unwrap();
        let (watcher, mut rx) = watcher();
        watcher.watch(&root).unwrap();

        std::fs::write(root.join("a.txt"), "x").unwrap();
        let created = wait_for(&mut rx, |e| e.kind == EventKind::Create(CreateKind::File));
        assert_eq!(created.paths, [root.join("a.txt")]);

        std::fs::create_dir(root.join("sub")).unwrap();
        let folder = wait_for(&mut rx, |e| e.kind == EventKind::Create(CreateKind::Folder));
        assert_eq!(folder.paths, [root.join("sub")]);

        std::fs::rename(root.join("a.txt"), root.join("b.txt")).unwrap();
        let from = wait_for(&mut rx, |e| {
            e.kind == EventKind::Modify(ModifyKind::Name(RenameMode::From))
        });
        assert_eq!(from.paths, [root.join("a.txt")]);
        let to = wait_for(&mut rx, |e| {
            e.kind == EventKind::Modify(ModifyKind::Name(RenameMode::To))
        });
        assert_eq!(to.paths, [root.join("b.txt")]);

        std::fs::remove_file(root.join("b.txt")).unwrap();
        let removed = wait_for(&mut rx, |e| e.kind == EventKind::Remove(RemoveKind::File));
        assert_eq!(removed.paths, [root.join("b.txt")]);
    }

    #[test]
    fn a_deleted_watched_directory_reports_itself_and_leaves_the_table() {
        let dir = tempfile::tempdir().unwrap();
        let root = std::fs::canonicalize(dir.path()).unwrap();
        let sub = root.join("sub");
        std::fs::create_dir(&sub).unwrap();
        let (watcher, mut rx) = watcher();
        watcher.watch(&sub).unwrap();
        std::fs::remove_dir(&sub).unwrap();
        let gone = wait_for(&mut rx, |e| e.kind == EventKind::Remove(RemoveKind::Folder));
        assert_eq!(gone.paths, std::slice::from_ref(&sub));
        // IN_IGNORED follows IN_DELETE_SELF; once read, the table is empty.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !watcher.installer.shared.lock().by_wd.is_empty() {
            assert!(
                std::time::Instant::now() < deadline,
                "watch never forgotten"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(watcher.unwatch(&sub).is_err(), "nothing left to unwatch");
    }

    #[test]
    fn a_moved_directory_watched_under_its_new_name_keeps_its_watch() {
        let dir = tempfile::tempdir().unwrap();
        let root = std::fs::canonicalize(dir.path()).unwrap();
        let (old, new) = (root.join("old"), root.join("new"));
        std::fs::create_dir(&old).unwrap();
        let (watcher, mut rx) = watcher();
        watcher.watch(&old).unwrap();
        std::fs::rename(&old, &new).unwrap();
        // The monitor watches the new name first, then forgets the old one
        // (or the other way round); either way the directory stays watched.
        watcher.watch(&new).unwrap();
        watcher.unwatch(&old).unwrap();
        std::fs::write(new.join("inside.txt"), "x").unwrap();
        let created = wait_for(&mut rx, |e| e.kind == EventKind::Create(CreateKind::File));
        assert_eq!(created.paths, [new.join("inside.txt")]);
    }

    /// Two threads install into their own lanes; events of every lane
    /// come out, and a directory watched again stays in its lane (a second
    /// mark in another lane would double its events).
    /// The lane tests share the process-wide budget; one at a time.
    static LANE_TESTS: Mutex<()> = Mutex::new(());

    #[test]
    fn threads_install_into_their_own_lanes_and_every_lane_is_read() {
        let _one_at_a_time = LANE_TESTS.lock().unwrap_or_else(PoisonError::into_inner);
        let dir = tempfile::tempdir().unwrap();
        let root = std::fs::canonicalize(dir.path()).unwrap();
        let dirs: Vec<PathBuf> = (0..8).map(|i| root.join(format!("d{i}"))).collect();
        for d in &dirs {
            std::fs::create_dir(d).unwrap();
        }
        let (watcher, mut rx) = watcher();
        let installer = watcher.installer().clone();
        std::thread::scope(|scope| {
            for half in dirs.chunks(4) {
                let installer = installer.clone();
                scope.spawn(move || {
                    for d in half {
                        installer.add(d).unwrap();
                    }
                });
            }
        });
        let lanes: std::collections::BTreeSet<usize> = watcher
            .installer
            .shared
            .lock()
            .by_path
            .values()
            .map(|(lane, _)| *lane)
            .collect();
        assert_eq!(lanes.len(), 2, "both lanes hold watches: {lanes:?}");
        // Re-watching from this thread keeps each directory in its lane.
        for d in &dirs {
            watcher.watch(d).unwrap();
        }
        assert_eq!(watcher.installer.shared.lock().by_wd.len(), dirs.len());
        for d in &dirs {
            std::fs::write(d.join("f"), "x").unwrap();
        }
        let mut created = std::collections::BTreeSet::new();
        while created.len() < dirs.len() {
            let event = wait_for(&mut rx, |e| e.kind == EventKind::Create(CreateKind::File));
            assert!(created.insert(event.paths[0].clone()), "doubled: {event:?}");
        }
        let expected: std::collections::BTreeSet<PathBuf> =
            dirs.iter().map(|d| d.join("f")).collect();
        assert_eq!(created, expected);
    }

    #[test]
    fn extra_lanes_come_from_a_bounded_budget_and_go_back_on_drop() {
        let _one_at_a_time = LANE_TESTS.lock().unwrap_or_else(PoisonError::into_inner);
        let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
        let big = InotifyWatcher::new(RawSink(tx), EXTRA_LANE_BUDGET * 4).unwrap();
        let lanes = big.installer.lanes.len();
        assert!((1..=EXTRA_LANE_BUDGET + 1).contains(&lanes), "{lanes}");
        assert!(EXTRA_LANES.load(Ordering::Relaxed) <= EXTRA_LANE_BUDGET);
        drop(big);
        let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
        let one = InotifyWatcher::new(RawSink(tx), 1).unwrap();
        assert_eq!(one.installer.lanes.len(), 1);
    }

    #[test]
    fn watching_a_missing_directory_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let (watcher, _rx) = watcher();
        let missing = dir.path().join("missing");
        let error = watcher.watch(&missing).unwrap_err();
        assert_eq!(error.paths, [missing]);
    }

    #[test]
    fn dropping_the_watcher_stops_its_reader_even_with_a_child_running() {
        // A child started while the watcher exists must not keep its stop
        // pipe open.
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let (watcher, mut rx) = watcher();
        let mut second = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        drop(watcher);
        assert!(rx.blocking_recv().is_none());
        let _ = child.kill();
        let _ = second.kill();
        let _ = child.wait();
        let _ = second.wait();
    }

    #[test]
    fn dropping_the_watcher_stops_its_reader() {
        let (watcher, mut rx) = watcher();
        drop(watcher);
        // The reader held the only sender: the channel closes.
        assert!(rx.blocking_recv().is_none());
    }
}
