//! The Jupyter wire protocol, and nothing else: connection files, message
//! framing, HMAC signing/verification and typed message content.
//!
//! This crate owns no sockets and makes no decisions about what a kernel does
//! with a message; the server crate moves frames between ZeroMQ sockets and
//! this crate, and the engine decides what to run.
//!
//! A message travels as a list of ZeroMQ frames
//! ([spec](https://jupyter-client.readthedocs.io/en/latest/messaging.html#the-wire-protocol)):
//!
//! ```text
//! [identities...] <IDS|MSG> signature header parent_header metadata content [buffers...]
//! ```
//!
//! * [`decode`] turns received frames into a [`Message`], checking the
//!   signature *before* any JSON is parsed, so unauthenticated input is never
//!   interpreted.
//! * [`encode`] turns a [`Message`] into frames, signing them.
//! * [`Message::reply_to`] and [`Message::broadcast`] build outgoing
//!   messages with a correct header and parent header.
//! * [`Signer`] holds the HMAC key from the connection file.
//!
//! Message content uses the types of the [`jupyter_protocol`] crate
//! (re-exported, so the server names the very same types). Where those types
//! cannot say what the kernel must send, [`content`] has helpers and a raw
//! JSON escape hatch, and [`encode`] repairs two of their serialisation quirks
//! (see [`content`]).

mod connection;
pub mod content;
mod message;
mod signer;

#[cfg(test)]
mod tests;

pub use jupyter_protocol;

pub use connection::{endpoint, read_connection_file};
pub use jupyter_protocol::{Channel, ConnectionInfo, Header, JupyterMessageContent};
pub use message::{decode, encode, Message, DELIMITER, PROTOCOL_VERSION};
pub use signer::Signer;

use std::path::PathBuf;

/// Everything that can go wrong between bytes on a socket and a [`Message`].
///
/// Each kind of malformed input has its own variant so the server can log
/// precisely and decide what to drop; none of them is ever a panic.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("cannot read connection file {path}: {source}")]
    ConnectionFileIo {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("invalid connection file {path}: {source}")]
    ConnectionFileFormat {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },

    #[error("unsupported signature scheme {0:?} (only \"hmac-sha256\" is supported)")]
    UnsupportedSignatureScheme(String),

    #[error("message has no <IDS|MSG> delimiter frame")]
    MissingDelimiter,

    /// Fewer than the five frames (signature, header, parent header,
    /// metadata, content) that must follow the delimiter.
    #[error("message has {found} frame(s) after the delimiter, at least 5 are required")]
    TooFewFrames { found: usize },

    /// The signature is missing, malformed or does not match. Nothing of the
    /// message was parsed.
    #[error("message signature is missing or invalid")]
    BadSignature,

    /// A frame is not valid JSON, or not the JSON shape its position requires.
    #[error("invalid JSON in {part}: {source}")]
    InvalidJson {
        part: &'static str,
        #[source]
        source: serde_json::Error,
    },

    /// The content is valid JSON but does not match the schema of `msg_type`.
    #[error("invalid content for {msg_type}: {source}")]
    InvalidContent {
        msg_type: String,
        #[source]
        source: serde_json::Error,
    },

    #[error("cannot serialise message: {0}")]
    Serialize(#[source] serde_json::Error),
}
