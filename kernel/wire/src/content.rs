//! Building content that `jupyter_protocol`'s types do not express exactly.
//!
//! Most content is built directly from `jupyter_protocol` structs
//! (`StreamContent::stdout(..)`, `Status::busy()`, `DisplayData`, ...). Three
//! gaps need care, and are handled here:
//!
//! * An *aborted* reply is just `{"status": "aborted"}` (as ipykernel sends
//!   it). The typed `ExecuteReply` would add `execution_count: 0`, which
//!   frontends show as the cell's prompt number, so [`aborted_reply`] sends
//!   raw JSON instead.
//! * `ExecuteReply::user_expressions` defaults to `None`, serialised as
//!   `null`; the spec (and jupyter_kernel_test) require a dict. [`encode`]
//!   writes `{}` instead, so building an `ExecuteReply` by hand is safe too.
//! * `ExecuteResult::transient` is serialised as `null` when `None`; the spec
//!   makes it an optional dict, so [`encode`] leaves it out.
//!
//! [`raw`] is the general escape hatch: any `msg_type` with any JSON object
//! as content, for messages the typed structs get wrong or do not know.
//!
//! [`encode`]: crate::encode

use jupyter_protocol::{
    ExecuteReply, ExecutionCount, ExpressionResult, JupyterMessageContent, Payload, ReplyError, ReplyStatus,
    UnknownMessage,
};
use std::collections::HashMap;
use serde_json::{json, Map, Value};

use crate::WireError;

/// Content sent exactly as given, under `msg_type`. `content` should be a
/// JSON object; `null` is sent as `{}`.
pub fn raw(msg_type: impl Into<String>, content: Value) -> JupyterMessageContent {
    JupyterMessageContent::UnknownMessage(UnknownMessage {
        msg_type: msg_type.into(),
        content,
    })
}

/// The reply type answering `request_msg_type` (`execute_request` → `execute_reply`).
pub fn reply_type_for(request_msg_type: &str) -> String {
    let stem = request_msg_type
        .strip_suffix("_request")
        .unwrap_or(request_msg_type);
    format!("{stem}_reply")
}

/// `{"status": "aborted"}` as the reply to a request of `request_msg_type`,
/// e.g. for the `execute_request`s queued behind one that failed.
pub fn aborted_reply(request_msg_type: &str) -> JupyterMessageContent {
    raw(
        reply_type_for(request_msg_type),
        json!({ "status": "aborted" }),
    )
}

/// A successful `execute_reply`: `payload` (a page of documentation, say) and the values of
/// the request's `user_expressions` (an empty dict when none, as clients expect).
pub fn execute_reply_ok(
    execution_count: usize,
    payload: Vec<Payload>,
    user_expressions: HashMap<String, ExpressionResult>,
) -> JupyterMessageContent {
    ExecuteReply {
        status: ReplyStatus::Ok,
        execution_count: ExecutionCount::new(execution_count),
        payload,
        user_expressions: Some(user_expressions),
        error: None,
    }
    .into()
}

/// A failed `execute_reply`: `status: "error"` with `ename`, `evalue` and
/// `traceback` next to `execution_count` (jupyter_client expects all of them).
/// The same error also goes to iopub as an `error` message (`ErrorOutput`).
pub fn execute_reply_error(
    execution_count: usize,
    ename: impl Into<String>,
    evalue: impl Into<String>,
    traceback: Vec<String>,
) -> JupyterMessageContent {
    ExecuteReply {
        status: ReplyStatus::Error,
        execution_count: ExecutionCount::new(execution_count),
        payload: Vec::new(),
        user_expressions: Some(Default::default()),
        error: Some(Box::new(ReplyError {
            ename: ename.into(),
            evalue: evalue.into(),
            traceback,
        })),
    }
    .into()
}

/// The JSON written to the content frame, with the repairs described in the
/// module documentation.
pub(crate) fn to_wire_json(content: &JupyterMessageContent) -> Result<Value, WireError> {
    if let JupyterMessageContent::UnknownMessage(unknown) = content {
        // Serialised directly rather than through `UnknownMessage`'s flatten,
        // which would reject anything but an object.
        return Ok(match &unknown.content {
            Value::Null => Value::Object(Map::new()),
            other => other.clone(),
        });
    }
    let mut json = serde_json::to_value(content).map_err(WireError::Serialize)?;
    if let Value::Object(fields) = &mut json {
        let is_null = |field: &str| fields.get(field).is_some_and(Value::is_null);
        match content {
            JupyterMessageContent::ExecuteReply(_) if is_null("user_expressions") => {
                fields.insert("user_expressions".to_owned(), Value::Object(Map::new()));
            }
            JupyterMessageContent::ExecuteResult(_) if is_null("transient") => {
                fields.remove("transient");
            }
            _ => {}
        }
    }
    Ok(json)
}
