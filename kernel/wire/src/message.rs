//! The message type and its conversion to and from ZeroMQ frames.

use bytes::Bytes;
use jupyter_protocol::{Header, JupyterMessageContent};
use serde_json::{Map, Value};

use crate::{content, Signer, WireError};

/// The frame separating routing identities from the signed message.
pub const DELIMITER: &[u8] = b"<IDS|MSG>";

/// The messaging protocol version written into every header we create.
pub const PROTOCOL_VERSION: &str = "5.3";

/// Frames that must follow the delimiter: signature, header, parent header,
/// metadata, content.
const REQUIRED_FRAMES_AFTER_DELIMITER: usize = 5;

/// One Jupyter message, decoded.
///
/// `header.msg_type` names the type of `content`; [`Message::reply_to`] and
/// [`Message::broadcast`] keep the two in step. Message types that
/// `jupyter_protocol` does not know decode as
/// [`JupyterMessageContent::UnknownMessage`], which keeps the raw JSON.
///
/// Header fields outside the 5.3 spec (e.g. `subshell_id`) are not kept:
/// `jupyter_protocol::Header` has no place for them, and they only matter to
/// kernels that advertise the features they belong to.
#[derive(Debug, Clone)]
pub struct Message {
    /// ZeroMQ routing identities (shell/control/stdin), or the topic (iopub).
    pub identities: Vec<Bytes>,
    pub header: Header,
    /// The header of the message this one answers; `None` is sent as `{}`.
    pub parent_header: Option<Header>,
    pub metadata: Map<String, Value>,
    pub content: JupyterMessageContent,
    /// Binary buffers after the content frame (used by comms/widgets).
    pub buffers: Vec<Bytes>,
}

impl Message {
    /// A reply (or any message in answer to `parent`, e.g. an `input_request`)
    /// routed back to the sender of `parent`.
    ///
    /// `session` is the kernel's own session id, fixed for its lifetime.
    pub fn reply_to(
        parent: &Message,
        content: impl Into<JupyterMessageContent>,
        session: &str,
    ) -> Message {
        Self::new(
            parent.identities.clone(),
            Some(parent),
            content.into(),
            session,
        )
    }

    /// An iopub message, caused by `parent` if any (`status: starting` has no
    /// parent). The topic frame is the message type, which subscribers that
    /// subscribe to everything (all Jupyter clients) ignore.
    pub fn broadcast(
        parent: Option<&Message>,
        content: impl Into<JupyterMessageContent>,
        session: &str,
    ) -> Message {
        let content = content.into();
        let topic = Bytes::copy_from_slice(content.message_type().as_bytes());
        Self::new(vec![topic], parent, content, session)
    }

    fn new(
        identities: Vec<Bytes>,
        parent: Option<&Message>,
        content: JupyterMessageContent,
        session: &str,
    ) -> Message {
        let header = Header {
            msg_id: uuid::Uuid::new_v4().to_string(),
            username: "kernel".to_owned(),
            session: session.to_owned(),
            date: now_to_the_microsecond(),
            msg_type: content.message_type().to_owned(),
            version: PROTOCOL_VERSION.to_owned(),
        };
        Message {
            identities,
            header,
            parent_header: parent.map(|parent| parent.header.clone()),
            metadata: Map::new(),
            content,
            buffers: Vec::new(),
        }
    }

    pub fn msg_type(&self) -> &str {
        &self.header.msg_type
    }
}

/// Truncated to microseconds, the precision of Python's datetime, so clients
/// never see more than six fractional digits.
fn now_to_the_microsecond() -> chrono::DateTime<chrono::Utc> {
    let since_epoch = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let whole_seconds = i64::try_from(since_epoch.as_secs()).unwrap_or(i64::MAX);
    let nanoseconds = since_epoch.subsec_micros() * 1_000;
    chrono::DateTime::from_timestamp(whole_seconds, nanoseconds).unwrap_or_default()
}

/// Parses received frames into a [`Message`].
///
/// The signature is verified before anything is parsed. Accepts any frame
/// type convertible to [`Bytes`] (`Vec<u8>`, `Bytes`, ...), so frames from
/// the `zeromq` crate (`ZmqMessage::into_vec`) move in without copying.
pub fn decode<Frames>(frames: Frames, signer: &Signer) -> Result<Message, WireError>
where
    Frames: IntoIterator,
    Frames::Item: Into<Bytes>,
{
    let mut frames: Vec<Bytes> = frames.into_iter().map(Into::into).collect();
    let delimiter_index = frames
        .iter()
        .position(|frame| frame.as_ref() == DELIMITER)
        .ok_or(WireError::MissingDelimiter)?;
    let frames_after_delimiter = frames.len() - delimiter_index - 1;
    if frames_after_delimiter < REQUIRED_FRAMES_AFTER_DELIMITER {
        return Err(WireError::TooFewFrames {
            found: frames_after_delimiter,
        });
    }

    let buffers = frames.split_off(delimiter_index + 1 + REQUIRED_FRAMES_AFTER_DELIMITER);
    let signed = frames.split_off(delimiter_index + 1);
    frames.truncate(delimiter_index);
    let identities = frames;

    // Always matches after the length check above; kept as an error rather
    // than an index so no input can reach a panic.
    let [signature, header, parent_header, metadata, content] = &signed[..] else {
        return Err(WireError::TooFewFrames {
            found: signed.len(),
        });
    };
    signer.verify(signature, &[header, parent_header, metadata, content])?;

    let header: Header = parse_json("header", header)?;
    let parent_header = parse_parent_header(parent_header)?;
    let metadata: Map<String, Value> = parse_json("metadata", metadata)?;
    let mut content_json: Value = parse_json("content", content)?;
    if header.msg_type == "history_request" {
        fill_history_defaults(&mut content_json);
    }
    let content = JupyterMessageContent::from_type_and_content(&header.msg_type, content_json)
        .map_err(|source| WireError::InvalidContent {
            msg_type: header.msg_type.clone(),
            source,
        })?;

    Ok(Message {
        identities,
        header,
        parent_header,
        metadata,
        content,
        buffers,
    })
}

/// Turns a [`Message`] into signed frames, ready to send.
pub fn encode(message: &Message, signer: &Signer) -> Result<Vec<Bytes>, WireError> {
    let header = serde_json::to_vec(&message.header).map_err(WireError::Serialize)?;
    let parent_header = match &message.parent_header {
        Some(parent) => serde_json::to_vec(parent).map_err(WireError::Serialize)?,
        None => b"{}".to_vec(),
    };
    let metadata = serde_json::to_vec(&message.metadata).map_err(WireError::Serialize)?;
    let content = serde_json::to_vec(&content::to_wire_json(&message.content)?)
        .map_err(WireError::Serialize)?;
    let signature = signer.sign(&[&header, &parent_header, &metadata, &content]);

    let mut frames = Vec::with_capacity(
        message.identities.len() + 1 + REQUIRED_FRAMES_AFTER_DELIMITER + message.buffers.len(),
    );
    frames.extend(message.identities.iter().cloned());
    frames.push(Bytes::from_static(DELIMITER));
    frames.push(Bytes::from(signature));
    for json in [header, parent_header, metadata, content] {
        frames.push(Bytes::from(json));
    }
    frames.extend(message.buffers.iter().cloned());
    Ok(frames)
}

fn parse_json<T: serde::de::DeserializeOwned>(
    part: &'static str,
    frame: &[u8],
) -> Result<T, WireError> {
    serde_json::from_slice(frame).map_err(|source| WireError::InvalidJson { part, source })
}

/// `{}` (or `null`) means "no parent"; anything else must be a full header.
fn parse_parent_header(frame: &[u8]) -> Result<Option<Header>, WireError> {
    let value: Value = parse_json("parent_header", frame)?;
    let has_no_parent = match &value {
        Value::Null => true,
        Value::Object(fields) => fields.is_empty(),
        _ => false,
    };
    if has_no_parent {
        return Ok(None);
    }
    serde_json::from_value(value)
        .map(Some)
        .map_err(|source| WireError::InvalidJson {
            part: "parent_header",
            source,
        })
}

/// jupyter_client sends `null` for history fields the caller left out (`n`, `start`, ...), which
/// the typed `HistoryRequest` cannot hold; read them as the protocol's defaults instead.
fn fill_history_defaults(content: &mut Value) {
    let Some(fields) = content.as_object_mut() else { return };
    let defaults = [
        ("output", Value::Bool(false)),
        ("raw", Value::Bool(false)),
        ("unique", Value::Bool(false)),
        ("n", Value::from(0)),
        ("start", Value::from(0)),
        ("stop", Value::from(0)),
        ("pattern", Value::from("*")),
    ];
    for (name, default) in defaults {
        if fields.get(name).is_none_or(Value::is_null) {
            fields.insert(name.to_owned(), default);
        }
    }
}
