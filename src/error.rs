//! One error type for the library. Every variant renders as a single line that names the
//! file (and line or field) at fault, so the CLI can print it and exit with status 2; quoted
//! input is escaped ([`one_line`]) so that it cannot break the line.
//!
//! Messages name the settings a caller can change by their library names in backticks
//! (`` `label_field` ``, `` `lr` ``, the fields of the settings structs); a front end renders
//! them in its own words (the `ptune` binary as its flags, `--label-field`, `--lr`).

use std::path::{Path, PathBuf};

/// The library's error: what went wrong and which file, line or input it concerns.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The file could not be opened, read or written.
    #[error("{}: {}", one_line(&path.display().to_string()), one_line(&source.to_string()))]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying I/O error.
        source: std::io::Error,
    },
    /// The file was read but its content is wrong (malformed JSON, corrupt weights, ...).
    #[error("{}: {}", one_line(&path.display().to_string()), one_line(msg))]
    File {
        /// The file.
        path: PathBuf,
        /// What is wrong with its content.
        msg: String,
    },
    /// One line of a text file is wrong.
    #[error("{}:{line}: {}", one_line(&path.display().to_string()), one_line(msg))]
    Line {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong with the line.
        msg: String,
    },
    /// A command-line value or specification is wrong.
    #[error("{}", one_line(.0))]
    Invalid(String),
    /// Training produced a non-finite loss.
    #[error("{}", one_line(.0))]
    Diverged(String),
}

/// `s` on one line: line breaks (and other control characters), which messages pick up from
/// the input they quote (a template, a label, a tensor name, a serde error), are written as
/// escapes (`\n`), so an error is always one line on a terminal or in a log.
pub fn one_line(s: &str) -> std::borrow::Cow<'_, str> {
    if !s.chars().any(|c| c.is_control()) {
        return std::borrow::Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    std::borrow::Cow::Owned(out)
}

/// `Result` with the library's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// [`Error::Io`] for `path`.
    pub fn io(path: impl AsRef<Path>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.as_ref().to_path_buf(),
            source,
        }
    }

    /// [`Error::File`]: `path` was read but `msg` says what is wrong with its content.
    pub fn file(path: impl AsRef<Path>, msg: impl Into<String>) -> Self {
        Error::File {
            path: path.as_ref().to_path_buf(),
            msg: msg.into(),
        }
    }

    /// [`Error::Line`]: line `line` (1-based) of `path` is wrong, as `msg` says.
    pub fn line(path: impl AsRef<Path>, line: usize, msg: impl Into<String>) -> Self {
        Error::Line {
            path: path.as_ref().to_path_buf(),
            line,
            msg: msg.into(),
        }
    }

    /// [`Error::Invalid`]: a command-line value or specification is wrong.
    pub fn invalid(msg: impl Into<String>) -> Self {
        Error::Invalid(msg.into())
    }
}

/// Reads a whole file, naming it in the error.
pub fn read_file(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| Error::io(path, e))
}

/// Writes `bytes` to `path` atomically: a temporary file in the same directory, then a rename,
/// so a reader (or a crash) never sees a half-written file.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(Error::io(path, e));
    }
    Ok(())
}
