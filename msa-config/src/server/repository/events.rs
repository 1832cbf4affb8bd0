//! The kernel's queue of changes under a directory tree (inotify), read without blocking.
//!
//! A writer's `close` returns after the kernel has queued its `IN_CLOSE_WRITE`, so a
//! request that reads this queue first sees every file written before it was sent.
//! `notify`, which wakes the repository's follower, delivers its events from a thread of
//! its own and cannot promise that: an event may still be on its way when a request is
//! answered.

use std::io;
use std::path::Path;
use std::sync::Mutex;

use inotify::{EventMask, Inotify, WatchMask};

/// What is watched on every directory of the tree: a file written and closed, moved in or
/// out, deleted; a directory created (its files follow), and the directory itself gone.
/// A bare `IN_MODIFY` is not: a file still being written is read once it is closed.
const MASK: WatchMask = WatchMask::CLOSE_WRITE
    .union(WatchMask::MOVED_TO)
    .union(WatchMask::MOVED_FROM)
    .union(WatchMask::DELETE)
    .union(WatchMask::CREATE)
    .union(WatchMask::DELETE_SELF)
    .union(WatchMask::MOVE_SELF);

/// The most directories watched; past it, changes in the others are found by the scan.
const MAX_WATCHES: usize = 4096;

/// An inotify instance watching a directory tree.
#[derive(Debug)]
pub(super) struct Events {
    inotify: Mutex<Inotify>,
}

impl Events {
    /// Watches `dir` and every directory under it.
    pub(super) fn watch(dir: &Path) -> io::Result<Events> {
        let events = Events {
            inotify: Mutex::new(Inotify::init()?),
        };
        events.watch_tree(dir)?;
        Ok(events)
    }

    /// Adds a watch to every directory of the tree not yet watched (a directory watched
    /// already keeps its watch); hidden directories are skipped, as the snapshot skips them.
    /// Only the top directory must be watchable: one that vanishes meanwhile is passed over.
    pub(super) fn watch_tree(&self, dir: &Path) -> io::Result<()> {
        let mut watches = self.queue().watches();
        watches.add(dir, MASK)?;
        let mut pending = vec![dir.to_path_buf()];
        let mut count = 1;
        while let Some(dir) = pending.pop() {
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries.flatten() {
                let hidden = entry.file_name().as_encoded_bytes().starts_with(b".");
                if hidden || !entry.file_type().is_ok_and(|t| t.is_dir()) {
                    continue;
                }
                if count == MAX_WATCHES || watches.add(entry.path(), MASK).is_err() {
                    continue;
                }
                count += 1;
                pending.push(entry.path());
            }
        }
        Ok(())
    }

    /// Reads every queued event without waiting; `true` when one of them changed a config
    /// file or the tree (`is_config` tells a config file's name), or the queue overflowed.
    pub(super) fn drain(&self, is_config: impl Fn(&str) -> bool) -> io::Result<bool> {
        let mut changed = false;
        let mut buffer = [0u8; 4096];
        let mut inotify = self.queue();
        loop {
            let events = match inotify.read_events(&mut buffer) {
                Ok(events) => events,
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => return Ok(changed),
                Err(error) => return Err(error),
            };
            let mut read = false;
            for event in events {
                read = true;
                let name = event.name.map(|n| n.to_string_lossy());
                let hidden = name.as_deref().is_some_and(|n| n.starts_with('.'));
                changed |= event.mask.contains(EventMask::Q_OVERFLOW)
                    || event
                        .mask
                        .intersects(EventMask::DELETE_SELF | EventMask::MOVE_SELF)
                    || (!hidden && event.mask.contains(EventMask::ISDIR))
                    || (!hidden && name.as_deref().is_some_and(&is_config));
            }
            if !read {
                return Ok(changed);
            }
        }
    }

    fn queue(&self) -> std::sync::MutexGuard<'_, Inotify> {
        msa_core::sync::lock(&self.inotify)
    }
}
