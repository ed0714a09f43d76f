//! The file ring store: the embedded default. One JSON file per ring (`keyring-<name>.json`,
//! mode 0600), replaced atomically under an exclusive lock (`.keyring-<name>.lock`).

use std::fs::{self, File, Metadata, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use async_trait::async_trait;
use zeroize::Zeroizing;

use super::state::{MAX_FILE_LEN, RingState, validate_name};
use super::store::RingStore;
use crate::error::KeyRingError;

/// A ring kept in a file in a directory. Several processes may share the directory: every
/// change is a compare-and-swap under an exclusive lock (write a temporary file, fsync, rename,
/// fsync the directory), so a crash leaves the old or the new ring and no change is lost.
///
/// Checking for a change costs one `stat`: the store holds the last file it read open, so the
/// inode number of that file cannot be reused while it does, and any replacement shows as a
/// new (device, inode). Size and times catch an edit in place.
pub struct FileRingStore {
    name: String,
    dir: PathBuf,
    path: PathBuf,
    lock_path: PathBuf,
    temp_prefix: String,
    seen: Mutex<Option<Seen>>,
}

/// The file last read.
struct Seen {
    /// Held open so that its inode number is not reused by a later file.
    _file: File,
    id: FileId,
    generation: u64,
}

/// What a `stat` says about a file's identity and content.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileId {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl FileId {
    fn of(m: &Metadata) -> Self {
        Self {
            dev: m.dev(),
            ino: m.ino(),
            size: m.size(),
            mtime: (m.mtime(), m.mtime_nsec()),
            ctime: (m.ctime(), m.ctime_nsec()),
        }
    }
}

fn io_error(path: &Path) -> impl FnOnce(io::Error) -> KeyRingError + '_ {
    move |source| KeyRingError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// Which lock to take.
#[derive(Clone, Copy)]
enum Lock {
    Shared,
    Exclusive,
}

impl std::fmt::Debug for FileRingStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileRingStore")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl FileRingStore {
    /// The store of ring `name` in `dir`. Touches nothing yet.
    ///
    /// # Errors
    /// [`KeyRingError::Malformed`] for an invalid name.
    pub fn new(dir: &Path, name: &str) -> Result<Self, KeyRingError> {
        validate_name(name)?;
        Ok(Self {
            name: name.to_owned(),
            dir: dir.to_owned(),
            path: dir.join(format!("keyring-{name}.json")),
            lock_path: dir.join(format!(".keyring-{name}.lock")),
            // Ring names have no '.', so no ring's prefix is a prefix of another's.
            temp_prefix: format!(".keyring-{name}.tmp-"),
            seen: Mutex::new(None),
        })
    }

    /// The ring file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Moves the ring file to `to` under the exclusive lock, only if its generation is still
    /// `generation` (the one just copied elsewhere): no process can change the ring between
    /// the check and the move, and processes still using the file find it gone and refuse.
    ///
    /// # Errors
    /// [`KeyRingError::Busy`] if the ring changed since (nothing moved); I/O errors.
    pub fn retire(&self, to: &Path, generation: u64) -> Result<(), KeyRingError> {
        let _lock = self.lock(Lock::Exclusive)?;
        let stored = self.read()?.ok_or_else(|| self.missing())?;
        if stored.generation != generation {
            return Err(KeyRingError::Busy);
        }
        fs::rename(&self.path, to).map_err(io_error(&self.path))?;
        self.sync_dir()
    }

    /// Opens the ring under the exclusive lock, removing temporary files that an interrupted
    /// change left behind; stores `create` if there is no ring and it is given.
    /// The directory is created (mode 0700) only to create a ring; without `create`, a missing
    /// ring leaves the file system untouched.
    pub(crate) fn open_now(&self, create: Option<RingState>) -> Result<RingState, KeyRingError> {
        if create.is_some() {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&self.dir)
                .map_err(io_error(&self.dir))?;
        } else if !self.path.exists() {
            return Err(self.missing());
        }
        let _lock = self.lock(Lock::Exclusive)?;
        self.remove_stale_temps();
        if let Some(ring) = self.read()? {
            return Ok(ring);
        }
        let ring = create.ok_or_else(|| self.missing())?;
        self.write(&ring, true)?;
        Ok(ring)
    }

    pub(crate) fn load_if_changed_now(
        &self,
        known: Option<u64>,
    ) -> Result<Option<RingState>, KeyRingError> {
        let id = match fs::metadata(&self.path) {
            Ok(m) => FileId::of(&m),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(self.missing()),
            Err(e) => return Err(io_error(&self.path)(e)),
        };
        {
            let seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(s) = &*seen
                && s.id == id
                && Some(s.generation) == known
            {
                return Ok(None);
            }
        }
        // The file was replaced or edited: hand it over even at the same generation, so the
        // provider can tell a ring recreated in its place from its own.
        let _lock = self.lock(Lock::Shared)?;
        self.read()?.ok_or_else(|| self.missing()).map(Some)
    }

    pub(crate) fn replace_now(&self, ring: &RingState) -> Result<bool, KeyRingError> {
        let _lock = self.lock(Lock::Exclusive)?;
        self.remove_stale_temps();
        let stored = self.read()?.ok_or_else(|| self.missing())?;
        if stored.generation.checked_add(1) != Some(ring.generation) {
            return Ok(false);
        }
        self.write(ring, false)?;
        Ok(true)
    }

    fn missing(&self) -> KeyRingError {
        KeyRingError::Missing {
            location: self.path.display().to_string(),
        }
    }

    /// The ring in the file, or `None` if there is no file; remembers what it read. Call under
    /// a lock.
    fn read(&self) -> Result<Option<RingState>, KeyRingError> {
        let mut file = match File::open(&self.path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_error(&self.path)(e)),
        };
        let meta = file.metadata().map_err(io_error(&self.path))?;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(KeyRingError::Permissions {
                path: self.path.display().to_string(),
                mode,
            });
        }
        // Sized up front: a growing buffer would leave unwiped copies of the keys behind.
        let cap = usize::try_from(meta.len()).map_or(MAX_FILE_LEN, |n| n.min(MAX_FILE_LEN)) + 1;
        let mut bytes = Zeroizing::new(Vec::with_capacity(cap));
        Read::by_ref(&mut file)
            .take(MAX_FILE_LEN as u64 + 1)
            .read_to_end(&mut bytes)
            .map_err(io_error(&self.path))?;
        let ring = RingState::decode(&bytes, Some(&self.name)).map_err(|e| match e {
            KeyRingError::Malformed { reason } => KeyRingError::Malformed {
                reason: format!("{}: {reason}", self.path.display()),
            },
            e => e,
        })?;
        self.remember(file, &meta, ring.generation);
        Ok(Some(ring))
    }

    fn remember(&self, file: File, meta: &Metadata, generation: u64) {
        *self.seen.lock().unwrap_or_else(|e| e.into_inner()) = Some(Seen {
            _file: file,
            id: FileId::of(meta),
            generation,
        });
    }

    /// Writes `ring` as the file: a new file if `create` (failing if one appeared), else a
    /// replacement. Call under the exclusive lock.
    fn write(&self, ring: &RingState, create: bool) -> Result<(), KeyRingError> {
        let tmp = self.write_temp(&ring.encode())?;
        let placed = if create {
            // A hard link fails if the target exists: create-if-absent, atomically, even
            // against a writer that does not take the lock.
            let linked = fs::hard_link(&tmp, &self.path);
            let _ = fs::remove_file(&tmp);
            linked
        } else {
            fs::rename(&tmp, &self.path).inspect_err(|_| {
                let _ = fs::remove_file(&tmp);
            })
        };
        placed.map_err(io_error(&self.path))?;
        // Remember the new file, so this process does not read its own change again; if it
        // cannot be reopened, forget the old one and the next check reads it.
        match File::open(&self.path).and_then(|f| f.metadata().map(|m| (f, m))) {
            Ok((file, meta)) => self.remember(file, &meta, ring.generation),
            Err(_) => *self.seen.lock().unwrap_or_else(|e| e.into_inner()) = None,
        }
        // The change is in place; an error from here on says only that its durability is not
        // confirmed (the ring in use is re-read from the file at the next check either way).
        self.sync_dir()
    }

    /// Writes `bytes` to a new temporary file beside the ring and makes it durable.
    fn write_temp(&self, bytes: &[u8]) -> Result<PathBuf, KeyRingError> {
        let mut suffix = [0u8; 8];
        crate::random::fill(&mut suffix).map_err(|_| KeyRingError::Random)?;
        let tmp = self.dir.join(format!(
            "{}{}-{:016x}",
            self.temp_prefix,
            std::process::id(),
            u64::from_be_bytes(suffix)
        ));
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(io_error(&tmp))?;
        let written = file.write_all(bytes).and_then(|()| file.sync_all());
        if let Err(e) = written {
            let _ = fs::remove_file(&tmp);
            return Err(io_error(&tmp)(e));
        }
        Ok(tmp)
    }

    /// Removes this ring's temporary files: under the exclusive lock no change is in progress,
    /// so any that exist were left by a change that was interrupted (they may hold root keys).
    fn remove_stale_temps(&self) {
        let Ok(entries) = fs::read_dir(&self.dir) else {
            return;
        };
        for entry in entries.flatten() {
            if entry
                .file_name()
                .to_str()
                .is_some_and(|n| n.starts_with(&self.temp_prefix))
            {
                let _ = fs::remove_file(entry.path());
            }
        }
    }

    fn sync_dir(&self) -> Result<(), KeyRingError> {
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(io_error(&self.dir))
    }

    /// A lock on the ring's lock file, released on drop.
    fn lock(&self, kind: Lock) -> Result<File, KeyRingError> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&self.lock_path)
            .map_err(io_error(&self.lock_path))?;
        match kind {
            Lock::Shared => file.lock_shared(),
            Lock::Exclusive => file.lock(),
        }
        .map_err(io_error(&self.lock_path))?;
        Ok(file)
    }
}

/// File operations are short (a `stat` when nothing changed; a read, or a write with two
/// fsyncs, when something did) and run on the calling task.
#[async_trait]
impl RingStore for FileRingStore {
    fn name(&self) -> &str {
        &self.name
    }

    fn location(&self) -> String {
        self.path.display().to_string()
    }

    fn is_local(&self) -> bool {
        true
    }

    async fn load_if_changed(&self, known: Option<u64>) -> Result<Option<RingState>, KeyRingError> {
        self.load_if_changed_now(known)
    }

    async fn create(&self, ring: RingState) -> Result<RingState, KeyRingError> {
        self.open_now(Some(ring))
    }

    async fn replace(&self, ring: &RingState) -> Result<bool, KeyRingError> {
        self.replace_now(ring)
    }
}
