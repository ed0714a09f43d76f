//! `vault encrypt` and `vault decrypt`: values sealed whole in memory, and streams of any size
//! sealed and opened one 64 KiB segment at a time, with a progress bar on a terminal.

use std::fs::File;
use std::future::Future;
use std::io::{self, BufReader, BufWriter, IsTerminal as _, Read, Seek as _, SeekFrom, Write};
use std::path::{Path, PathBuf};

use vault::objects::admin::{AdminError, FileKeys};
use vault::objects::stream::{self, StreamHead};
use vault::objects::{Envelope, KeyContext, MAGIC};
use zeroize::Zeroizing;

use super::exit::{BAD_INPUT, Failure};
use super::stdio::{envelope_bytes, write_envelope};
use super::terminal::progress_bar;

/// Inputs larger than this are sealed as a stream (and never held whole in memory).
const STREAM_ABOVE: usize = 8 << 20;
/// The unit of reads and writes while streaming.
const CHUNK: usize = 1 << 20;

/// A file sealed on every core is read this much at a time between updates of the bar.
const SLICE: u64 = 64 << 20;

/// Where a command reads and writes: a file or standard input and output.
pub(crate) struct Files {
    input: Option<PathBuf>,
    output: Option<PathBuf>,
}

/// Plaintext bytes `start..=end` (`end` `None`: to the end), as `--range START-END` gives them.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Range {
    start: u64,
    end: Option<u64>,
}

impl Range {
    pub(crate) fn parse(text: &str) -> Result<Self, Failure> {
        let bad = || Failure {
            code: BAD_INPUT,
            message: format!(
                "--range {text:?}: expected START-END (byte offsets, both included) or START-"
            ),
        };
        let (start, end) = text.split_once('-').ok_or_else(bad)?;
        let start = start.parse::<u64>().map_err(|_| bad())?;
        let end = match end {
            "" => None,
            end => Some(end.parse::<u64>().map_err(|_| bad())?),
        };
        if end.is_some_and(|end| end < start) {
            return Err(bad());
        }
        Ok(Self { start, end })
    }

    /// The bytes it covers of a plaintext of `len` bytes: `(start, count)`.
    fn within(self, len: u64) -> Result<(u64, u64), Failure> {
        if self.start >= len {
            return Err(Failure {
                code: BAD_INPUT,
                message: format!(
                    "--range starts at byte {} but the plaintext has {len} bytes",
                    self.start
                ),
            });
        }
        let last = self.end.map_or(len - 1, |end| end.min(len - 1));
        Ok((self.start, last - self.start + 1))
    }
}

impl Files {
    pub(crate) fn new(input: Option<PathBuf>, output: Option<PathBuf>) -> Self {
        Self { input, output }
    }

    pub(crate) async fn encrypt(
        &self,
        keys: &FileKeys,
        ctx: &KeyContext,
        aad: &[u8],
        binary: bool,
        force_stream: bool,
    ) -> Result<(), Failure> {
        let (mut input, size) = self.open_input()?;
        // What fits is sealed whole; only a larger input is read on as a stream.
        let mut first = Zeroizing::new(Vec::new());
        if !force_stream {
            first.reserve_exact(STREAM_ABOVE + 1);
            input
                .by_ref()
                .take(STREAM_ABOVE as u64 + 1)
                .read_to_end(&mut first)?;
            if first.len() <= STREAM_ABOVE {
                let sealed = keys.encrypt(ctx, &first, aad).await?;
                return self.write_complete(|out| write_envelope(out, &sealed, binary));
            }
        }
        if self.output.is_none() && io::stdout().is_terminal() {
            return Err(Failure {
                code: BAD_INPUT,
                message: "a streamed envelope is binary: redirect standard output or give --out"
                    .into(),
            });
        }
        let sealer = keys.encrypt_stream(ctx, aad).await?;
        self.write_complete(|out| {
            let mut writer = sealer.writer(out);
            writer.write_all(&first)?;
            drop(first);
            let bar = progress_bar(size);
            bar.inc(writer.plaintext_len());
            // A file is read at any offset and sealed on every core, a slice at a time for the
            // bar. Then what the input still gives (all of a pipe; what was appended to the
            // file meanwhile) is read on this thread and sealed on another.
            if let (Input::File(file), Some(size)) = (&mut input, size)
                && file.metadata()?.is_file()
            {
                let mut at = writer.plaintext_len();
                while at < size {
                    let end = size.min(at.saturating_add(SLICE));
                    writer.write_from_at(&*file, at..end)?;
                    bar.inc(end - at);
                    at = end;
                }
                // On from what was taken: past `size` if the file grew before it was read.
                file.seek(SeekFrom::Start(writer.plaintext_len()))?;
            }
            writer.write_from_pipelined(&mut Counted(&mut input, |n| bar.inc(n)))?;
            writer.finish()?;
            bar.finish_and_clear();
            Ok(())
        })
    }

    pub(crate) async fn decrypt(
        &self,
        keys: impl Future<Output = Result<FileKeys, AdminError>>,
        aad: &[u8],
        show_context: bool,
        range: Option<Range>,
    ) -> Result<(), Failure> {
        let (input, size) = self.open_input()?;
        let (start, input) = peek(Box::new(input))?;
        let mut input = BufReader::with_capacity(CHUNK, input);
        if !is_streamed(&start) {
            let mut all = Vec::new();
            input.read_to_end(&mut all)?;
            let bytes = envelope_bytes(&all)?;
            let envelope = Envelope::parse(&bytes).map_err(vault::objects::CryptoError::from)?;
            let opened = keys.await?.decrypt(&envelope, aad).await?;
            if show_context {
                eprintln!("{}", opened.context());
            }
            let plaintext = opened.plaintext();
            let plaintext = match range {
                Some(r) => {
                    let (start, count) = r.within(plaintext.len() as u64)?;
                    let start = usize::try_from(start).unwrap_or(usize::MAX);
                    let count = usize::try_from(count).unwrap_or(usize::MAX);
                    plaintext
                        .get(start..start.saturating_add(count))
                        .unwrap_or_default()
                }
                None => plaintext,
            };
            return self.write_complete(|out| out.write_all(plaintext));
        }
        let head = StreamHead::read_from(&mut input)?;
        // Random access needs a file to seek in: the named one, or standard input redirected
        // from one. Checked before any key is asked for.
        let seekable = match range {
            Some(_) => {
                let path = self.input.as_deref().unwrap_or(Path::new("/dev/stdin"));
                let mut file = File::open(path)?;
                file.seek(SeekFrom::End(0)).map_err(|e| Failure {
                    code: BAD_INPUT,
                    message: format!("--range needs a file to seek in, not a pipe: {e}"),
                })?;
                Some(file)
            }
            None => None,
        };
        let opener = keys.await?.decrypt_stream(&head, aad).await?;
        // The context is authentic once segments verified: shown after them.
        let context = opener.context().clone();
        match (range, seekable) {
            (Some(r), Some(file)) => {
                let mut plain = opener.seekable(BufReader::with_capacity(CHUNK, file))?;
                let (start, count) = r.within(plain.plaintext_len())?;
                plain.seek(SeekFrom::Start(start))?;
                self.write_complete(|out| {
                    copy(&mut plain.by_ref().take(count), out, |_| ())?;
                    Ok(())
                })?;
            }
            _ => self.write_complete(|out| {
                let bar = progress_bar(size);
                bar.inc(head.len() as u64);
                copy(&mut opener.reader(input), out, |n| bar.inc(n))?;
                bar.finish_and_clear();
                Ok(())
            })?,
        }
        if show_context {
            eprintln!("{context}");
        }
        Ok(())
    }

    /// The input, and its size when it is a file.
    fn open_input(&self) -> Result<(Input, Option<u64>), Failure> {
        match &self.input {
            Some(path) => {
                let file = File::open(path).map_err(|e| Failure {
                    code: BAD_INPUT,
                    message: format!("{}: {e}", path.display()),
                })?;
                let size = file.metadata().ok().map(|m| m.len());
                Ok((Input::File(file), size))
            }
            None => Ok((Input::Stdin(io::stdin().lock()), None)),
        }
    }

    /// Runs `write` on the output. A file output is written beside its final name and renamed
    /// over it only once complete: a failure (a tampered segment, a full disk) leaves no part.
    fn write_complete(
        &self,
        write: impl FnOnce(&mut dyn Write) -> io::Result<()>,
    ) -> Result<(), Failure> {
        let sink: Box<dyn Write> = match self.output.as_deref().map(Output::of).transpose()? {
            None | Some(Output::Stdout) => Box::new(io::stdout().lock()),
            Some(Output::Direct(path)) => {
                Box::new(std::fs::OpenOptions::new().write(true).open(path)?)
            }
            Some(Output::Append(path)) => {
                Box::new(std::fs::OpenOptions::new().append(true).open(path)?)
            }
            Some(Output::Replace(path)) => return replace(&path, write),
        };
        let mut out = BufWriter::with_capacity(CHUNK, sink);
        write(&mut out)?;
        out.flush()?;
        Ok(())
    }
}

/// Writes `path` beside it and renames the result over it once complete: it is complete or
/// untouched.
fn replace(
    path: &Path,
    write: impl FnOnce(&mut dyn Write) -> io::Result<()>,
) -> Result<(), Failure> {
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty());
    let (file, tmp_path) = tempfile_in(dir.unwrap_or(Path::new(".")))?;
    let result = (|| {
        let mut out = BufWriter::with_capacity(CHUNK, file);
        write(&mut out)?;
        let file = out.into_inner().map_err(io::IntoInnerError::into_error)?;
        file.sync_all()?;
        std::fs::rename(&tmp_path, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp_path);
    }
    result.map_err(Failure::from)
}

/// How `--out` is written.
enum Output {
    /// `-` or `/dev/stdout`: this process's standard output, as the shell opened it.
    Stdout,
    /// A regular file, new or not, or one a symbolic link leads to (the link stays): written
    /// beside it and renamed over it once complete, so it is complete or untouched.
    Replace(PathBuf),
    /// A device or a FIFO: written as it comes (there is nothing to rename over).
    Direct(PathBuf),
    /// A link into `/proc` (`/dev/fd/N`, `/proc/self/fd/N`): the descriptor's own file, appended
    /// to, as the shell's redirection set it up; never truncated or replaced.
    Append(PathBuf),
}

impl Output {
    fn of(path: &Path) -> io::Result<Self> {
        if path == Path::new("-") || path == Path::new("/dev/stdout") {
            return Ok(Self::Stdout);
        }
        let mut at = path.to_path_buf();
        // As the kernel: at most 40 links.
        for _ in 0..=40 {
            // `/dev/fd/N` and `/proc/self/fd/N` name a descriptor, not a file to replace.
            let dir = at.parent().filter(|d| !d.as_os_str().is_empty());
            let dir = dir.map_or_else(|| Path::new(".").canonicalize(), Path::canonicalize);
            if dir.is_ok_and(|d| d.starts_with("/proc")) {
                return Ok(Self::Append(path.to_path_buf()));
            }
            match std::fs::symlink_metadata(&at) {
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Self::Replace(at)),
                Err(e) => return Err(e),
                Ok(m) if m.file_type().is_symlink() => {
                    let target = std::fs::read_link(&at)?;
                    at = match at.parent() {
                        Some(dir) if target.is_relative() => dir.join(target),
                        _ => target,
                    };
                }
                Ok(m) if m.is_file() => return Ok(Self::Replace(at)),
                Ok(_) => return Ok(Self::Direct(path.to_path_buf())),
            }
        }
        Err(io::Error::other(format!(
            "{}: too many levels of symbolic links",
            path.display()
        )))
    }
}

/// A new file `.vault-<pid>-<n>.tmp` in `dir`, owner-only.
fn tempfile_in(dir: &Path) -> io::Result<(File, PathBuf)> {
    use std::os::unix::fs::OpenOptionsExt as _;
    for n in 0..100u32 {
        let path = dir.join(format!(".vault-{}-{n}.tmp", std::process::id()));
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
        {
            Ok(file) => return Ok((file, path)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
    }
    Err(io::Error::other("no free temporary file name"))
}

/// A reader that reports the length of each read.
/// The input: a file, or standard input.
enum Input {
    File(File),
    Stdin(io::StdinLock<'static>),
}

impl Read for Input {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Self::File(file) => file.read(buf),
            Self::Stdin(stdin) => stdin.read(buf),
        }
    }
}

struct Counted<R, F>(R, F);

impl<R: Read, F: FnMut(u64)> Read for Counted<R, F> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.0.read(buf)?;
        (self.1)(n as u64);
        Ok(n)
    }
}

/// Copies `from` to `to` a chunk at a time, reporting each chunk's length.
fn copy(from: &mut dyn Read, to: &mut dyn Write, mut done: impl FnMut(u64)) -> io::Result<()> {
    let mut buf = Zeroizing::new(vec![0u8; CHUNK]);
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        to.write_all(buf.get(..n).unwrap_or_default())?;
        done(n as u64);
    }
}

/// The first 7 bytes of `input` (fewer if it ends first), and `input` whole again.
pub(crate) fn peek(mut input: Box<dyn Read + '_>) -> io::Result<(Vec<u8>, impl Read + '_)> {
    let mut start = [0u8; 7];
    let got = read_up_to(&mut input, &mut start)?;
    let start = start.get(..got).unwrap_or_default().to_vec();
    Ok((start.clone(), io::Cursor::new(start).chain(input)))
}

/// Whether an envelope starting with `start` is streamed: told by its suite (bytes 5 and 6),
/// before anything else is read.
pub(crate) fn is_streamed(start: &[u8]) -> bool {
    start.starts_with(&MAGIC)
        && start.get(5..7) == Some(&stream::SUITE_AES256GCM_SEGMENTED_COMMIT.to_be_bytes())
}

/// The first bytes of `input`, as many as `into` holds unless it ends first.
fn read_up_to(input: &mut dyn Read, into: &mut [u8]) -> io::Result<usize> {
    let mut got = 0;
    while got < into.len() {
        match input.read(into.get_mut(got..).unwrap_or_default()) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}
