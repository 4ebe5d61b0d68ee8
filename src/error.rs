//! One error type for the library: every message names the file, and the row and field where known.

use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Bad content in an input file, located as precisely as we can.
    #[error("{file}{}{}: {message}", .row.map(|r| format!(", row {r}")).unwrap_or_default(), .field.as_ref().map(|f| format!(", field '{f}'")).unwrap_or_default())]
    Input { file: PathBuf, row: Option<u64>, field: Option<String>, message: String },
    /// Reading or writing a file failed.
    #[error("{}: {source}", .path.display())]
    Io { path: PathBuf, #[source] source: std::io::Error },
    /// A setting or command-line value makes no sense.
    #[error("{0}")]
    Config(String),
    #[error("{}: {source}", .path.display())]
    Parquet { path: PathBuf, #[source] source: parquet::errors::ParquetError },
    #[error("{}: {source}", .path.display())]
    Arrow { path: PathBuf, #[source] source: arrow::error::ArrowError },
    #[error("{0}")]
    Other(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Bad content at a row (1-based, as a text editor shows it) of a file.
    pub fn at_row(file: &Path, row: u64, field: Option<&str>, message: impl Into<String>) -> Self {
        Error::Input { file: file.to_path_buf(), row: Some(row), field: field.map(str::to_owned), message: message.into() }
    }
    /// Bad content in a file as a whole.
    pub fn in_file(file: &Path, message: impl Into<String>) -> Self {
        Error::Input { file: file.to_path_buf(), row: None, field: None, message: message.into() }
    }
    pub fn io(path: &Path, source: std::io::Error) -> Self {
        Error::Io { path: path.to_path_buf(), source }
    }
    pub fn parquet(path: &Path, source: parquet::errors::ParquetError) -> Self {
        Error::Parquet { path: path.to_path_buf(), source }
    }
    pub fn arrow(path: &Path, source: arrow::error::ArrowError) -> Self {
        Error::Arrow { path: path.to_path_buf(), source }
    }
}
