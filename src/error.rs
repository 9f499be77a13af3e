//! The crate's error type. Every failure names what was being done (table, object type,
//! page) and carries a class that decides retries and the process exit code.
//!
//! Secrets never enter an error: HTTP errors carry the path and query, never headers.

use std::fmt;

/// How a failure should be handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// Bad flags, config or input: fix the invocation (exit 2).
    Config,
    /// Token missing, invalid or without permission (exit 3).
    Auth,
    /// Worth trying again: 429, 5xx, timeouts, dropped connections, truncated bodies.
    Retryable,
    /// Retrying will not help: the export fails (exit 1).
    Fatal,
    /// One record or value is bad; counted and reported (exit 1 when it stops the export).
    Data,
    /// The export is committed but has data warnings, and `--strict` was given (exit 4).
    Strict,
    /// The export is committed, but the state or the baseline of ids could not be saved: the
    /// next run reads the same window again (exit 5).
    Unsaved,
}

impl ErrorClass {
    /// Process exit code for an export that ended with an error of this class (docs/FORMAT.md, "Exit codes").
    /// 75 is sysexits' EX_TEMPFAIL: an orchestrator retries on it alone.
    pub fn exit_code(self) -> i32 {
        match self {
            ErrorClass::Config => 2,
            ErrorClass::Auth => 3,
            ErrorClass::Fatal | ErrorClass::Data => 1,
            ErrorClass::Strict => 4,
            ErrorClass::Unsaved => 5,
            ErrorClass::Retryable => 75,
        }
    }
}

/// Everything that can go wrong in crmdump, one variant per failure site.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid configuration: {0}")]
    Config(String),

    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },

    /// The API answered with a status that is not retried (or retries ran out).
    #[error("{method} {path} answered HTTP {status}: {message}{}. {hint}", correlation.as_ref().map(|c| format!(" (correlationId {c})")).unwrap_or_default())]
    Api { method: &'static str, path: String, status: u16, message: String, correlation: Option<String>, hint: String },

    /// The account's daily request budget is spent: retrying before the daily reset cannot
    /// help (exit 1).
    #[error("{0}")]
    DailyLimit(Box<Error>),

    /// The request never produced a usable response (connect, timeout, reset, truncated body).
    #[error("{method} {path} failed: {detail}")]
    Transport { method: &'static str, path: String, detail: String, retryable: bool },

    /// A response that parsed as HTTP but not as the JSON shape we expect.
    #[error("{method} {path}: the response body is not the expected JSON ({detail})")]
    Malformed { method: &'static str, path: String, detail: String },

    /// Answers that contradict what was asked (a search that ignores its filters): retrying
    /// will not help (exit 1).
    #[error("{method} {path}: {detail}")]
    Inconsistent { method: &'static str, path: String, detail: String },

    /// Extraction of one stream failed; wraps the cause with the stream and page.
    #[error("while reading {stream} ({page}): {source}")]
    Stream {
        stream: String,
        page: String,
        #[source]
        source: Box<Error>,
    },

    #[error("writing {key}: {source}")]
    Sink {
        key: String,
        #[source]
        source: object_store::Error,
    },

    #[error("destination {dest}: {detail}")]
    Destination { dest: String, detail: String },

    /// A row that can never be written (for example larger than the part size limit).
    #[error("table {table}, record {record}: {detail}")]
    Row { table: String, record: String, detail: String },

    /// `crmdump verify` found mismatches (each printed).
    #[error("verify found {0} problems")]
    Verify(usize),

    /// `crmdump status --max-age`: an account's newest committed export is older than allowed
    /// (or there is none): a monitor's alarm (exit 1).
    #[error("{0}")]
    Stale(String),

    /// A live run of the same account (or a listener of the same destination) holds the
    /// destination's lease: nothing was touched (exit 75, retry later or wait with
    /// `--wait-for-lease`).
    #[error(
        "{dest} is being written by another run: {holder}. Nothing was touched; try again once it ends, or wait for it with --wait-for-lease 30m"
    )]
    LeaseHeld { dest: String, holder: String },

    /// This run lost its lease (it could not renew it in time, or another run took it over
    /// while this one was paused): it stopped without committing (exit 75).
    #[error(
        "{dest}: this run lost its lease on the destination ({why}); nothing was committed and the state was left alone. Run it again"
    )]
    LeaseLost { dest: String, why: String },

    /// The day is committed, but what the next run starts from could not be saved.
    #[error(
        "the export is committed, but the state could not be saved ({source}); the next run reads this window again"
    )]
    StateNotSaved {
        #[source]
        source: Box<Error>,
    },

    /// `--strict`: committed, but with data warnings.
    #[error(
        "the export is committed with {0} data warnings (listed above and in the manifest); --strict turns them into exit code 4"
    )]
    DataWarnings(u64),

    /// A file crmdump reads back (a manifest, a part, the state, the webhook journal or
    /// spool) is damaged: it names the file and what is wrong with it. The destination is
    /// refused until the file is restored or moved away (exit 2).
    #[error("{key} is damaged: {detail}")]
    Corrupt { key: String, detail: String },

    #[error("the sandbox failed: {0}")]
    Sandbox(String),

    #[error("internal error: {0}")]
    Internal(String),

    /// Stopped because another part of the same export failed (never the error reported
    /// when the real one is known).
    #[error("stopped because another part of the export failed")]
    Cancelled,
}

impl Error {
    /// The class of this error, looking through stream wrappers.
    pub fn class(&self) -> ErrorClass {
        match self {
            Error::Config(_) | Error::Corrupt { .. } => ErrorClass::Config,
            Error::Io { .. } | Error::Destination { .. } | Error::DailyLimit(_) | Error::Inconsistent { .. } => {
                ErrorClass::Fatal
            }
            // A cloud store that kept failing after object_store's own retries (5xx, timeouts,
            // refused connections) may answer later; a missing object, a denial or a local
            // folder that refuses (a full disk, a file in the way) will not.
            Error::Sink { source: object_store::Error::Generic { store, .. }, .. }
                if !matches!(*store, "LocalFileSystem" | "InMemory") =>
            {
                ErrorClass::Retryable
            }
            Error::Sink { .. } => ErrorClass::Fatal,
            Error::LeaseHeld { .. } | Error::LeaseLost { .. } => ErrorClass::Retryable,
            Error::StateNotSaved { .. } => ErrorClass::Unsaved,
            Error::Api { status, .. } => match status {
                401 | 403 => ErrorClass::Auth,
                429 | 500..=599 => ErrorClass::Retryable,
                _ => ErrorClass::Fatal,
            },
            Error::Transport { retryable, .. } => {
                if *retryable {
                    ErrorClass::Retryable
                } else {
                    ErrorClass::Fatal
                }
            }
            Error::Malformed { .. } => ErrorClass::Retryable,
            Error::Stream { source, .. } => source.class(),
            Error::Row { .. } => ErrorClass::Data,
            Error::DataWarnings(_) => ErrorClass::Strict,
            Error::Sandbox(_) | Error::Internal(_) | Error::Verify(_) | Error::Stale(_) | Error::Cancelled => {
                ErrorClass::Fatal
            }
        }
    }

    /// Whether this is (or wraps) [`Error::Cancelled`]: a consequence of another failure.
    pub fn is_cancelled(&self) -> bool {
        match self {
            Error::Cancelled => true,
            Error::Stream { source, .. } => source.is_cancelled(),
            _ => false,
        }
    }

    /// Wrap with the stream and page being read, so the message says where it failed.
    pub fn in_stream(self, stream: impl fmt::Display, page: impl fmt::Display) -> Error {
        Error::Stream { stream: stream.to_string(), page: page.to_string(), source: Box::new(self) }
    }

    /// The HTTP status of an API answer this error is (or wraps).
    pub fn status(&self) -> Option<u16> {
        match self {
            Error::Api { status, .. } => Some(*status),
            Error::Stream { source, .. } | Error::DailyLimit(source) => source.status(),
            _ => None,
        }
    }

    pub fn io(what: impl Into<String>, source: std::io::Error) -> Error {
        Error::Io { what: what.into(), source }
    }

    /// `key` is damaged: `detail` says how.
    pub fn corrupt(key: impl Into<String>, detail: impl fmt::Display) -> Error {
        Error::Corrupt { key: key.into(), detail: detail.to_string() }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_map_to_spec_exit_codes() {
        let auth = Error::Api {
            method: "GET",
            path: "/crm/v3/objects/contacts".into(),
            status: 401,
            message: "expired".into(),
            correlation: None,
            hint: String::new(),
        };
        assert_eq!(auth.class().exit_code(), 3);
        let wrapped = auth.in_stream("OBJECTS_CONTACTS", "first page");
        assert_eq!(wrapped.class(), ErrorClass::Auth);
        assert!(wrapped.to_string().contains("OBJECTS_CONTACTS"));
        assert_eq!(Error::Config("x".into()).class().exit_code(), 2);
        let bad_request = Error::Api {
            method: "POST",
            path: "/x".into(),
            status: 400,
            message: "bad".into(),
            correlation: Some("abc".into()),
            hint: String::new(),
        };
        assert_eq!(bad_request.class(), ErrorClass::Fatal);
        assert!(bad_request.to_string().contains("correlationId abc"));
        let held = Error::LeaseHeld { dest: "s3://b/x".into(), holder: "run 1 on host h".into() };
        assert_eq!(held.class().exit_code(), 75, "an orchestrator retries on 75 alone");
        let unsaved = Error::StateNotSaved { source: Box::new(Error::Config("disk full".into())) };
        assert_eq!(unsaved.class().exit_code(), 5);
        assert!(unsaved.to_string().contains("committed"));
    }
}
