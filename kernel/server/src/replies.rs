//! The content of what the kernel sends, built from `jupyter_protocol`'s types (through the
//! wire crate): replies, and the iopub messages that carry a cell's output and error.

use crate::history;
use rust_async_engine::is_complete::Completeness;
use rust_async_engine::{render, CellError, CellOutcome, Completions, Output, StreamName};
use rust_async_wire::jupyter_protocol::{
    ClearOutput, CodeMirrorMode, CompleteReply, DisplayData, ErrorOutput, ExecuteResult, ExecutionCount,
    ExpressionResult, HelpLink, HistoryEntry, HistoryReply, InspectReply, IsCompleteReply, IsCompleteReplyStatus,
    JupyterMessageContent, KernelInfoReply, LanguageInfo, Media, ReplyStatus, StreamContent, Stdio,
    Transient, UpdateDisplayData,
};
use rust_async_wire::content;

/// A mime bundle (`{"text/plain": ...}`) as `jupyter_protocol`'s media.
pub(crate) fn media(bundle: serde_json::Map<String, serde_json::Value>) -> Media {
    serde_json::from_value(serde_json::Value::Object(bundle)).unwrap_or_default()
}

pub(crate) fn kernel_info() -> KernelInfoReply {
    let rustc = std::process::Command::new("rustc").arg("--version").output().ok();
    let version = rustc
        .and_then(|output| String::from_utf8(output.stdout).ok())
        .and_then(|text| text.split_whitespace().nth(1).map(str::to_owned))
        .unwrap_or_else(|| "unknown".into());
    let link = |text: &str, url: &str| HelpLink { text: text.into(), url: url.into() };
    KernelInfoReply {
        status: ReplyStatus::Ok,
        protocol_version: rust_async_wire::PROTOCOL_VERSION.into(),
        implementation: "rust-async".into(),
        implementation_version: env!("CARGO_PKG_VERSION").into(),
        language_info: LanguageInfo {
            name: "rust".into(),
            version,
            mimetype: Some("text/x-rustsrc".into()),
            file_extension: Some(".rs".into()),
            pygments_lexer: Some("rust".into()),
            codemirror_mode: Some(CodeMirrorMode::Simple("rust".into())),
            nbconvert_exporter: None,
        },
        banner: "rust-async: Rust in notebooks, every cell inside one shared tokio runtime".into(),
        help_links: vec![
            link("Asynchronous Programming in Rust (the Async Book)", "https://rust-lang.github.io/async-book/"),
            link("Tokio tutorial", "https://tokio.rs/tokio/tutorial"),
            link("tokio API docs", "https://docs.rs/tokio/latest/tokio/"),
        ],
        debugger: false,
        error: None,
    }
}

pub(crate) fn complete_reply(found: Completions) -> CompleteReply {
    CompleteReply {
        matches: found.matches,
        cursor_start: found.cursor_start,
        cursor_end: found.cursor_end,
        metadata: Default::default(),
        status: ReplyStatus::Ok,
        error: None,
    }
}

/// Documentation as plain text and Markdown.
pub(crate) fn documentation_media((text, markdown): (String, String)) -> Media {
    media(serde_json::Map::from_iter([("text/plain".into(), text.into()), ("text/markdown".into(), markdown.into())]))
}

pub(crate) fn inspect_reply(documentation: Option<(String, String)>) -> InspectReply {
    InspectReply {
        found: documentation.is_some(),
        data: documentation.map(documentation_media).unwrap_or_default(),
        metadata: Default::default(),
        status: ReplyStatus::Ok,
        error: None,
    }
}

pub(crate) fn is_complete_reply(completeness: Completeness) -> IsCompleteReply {
    let (status, indent) = match completeness {
        Completeness::Complete => (IsCompleteReplyStatus::Complete, String::new()),
        Completeness::Incomplete { indent } => (IsCompleteReplyStatus::Incomplete, indent),
        Completeness::Invalid => (IsCompleteReplyStatus::Invalid, String::new()),
    };
    IsCompleteReply { status, indent }
}

/// `entries`: (execution count, code, output), the output shown when `with_output` (a cell
/// without a value as an empty text).
pub(crate) fn history_reply(entries: Vec<history::Entry>, with_output: bool) -> HistoryReply {
    let history = entries
        .into_iter()
        .map(|(count, code, output)| match with_output {
            true => HistoryEntry::InputOutput(history::SESSION, count, (code, output.unwrap_or_default())),
            false => HistoryEntry::Input(history::SESSION, count, code),
        })
        .collect();
    HistoryReply { history, status: ReplyStatus::Ok, error: None }
}

/// An output of a cell as the iopub message that shows it.
pub(crate) fn output_content(output: Output) -> JupyterMessageContent {
    match output {
        Output::Stream { name, text } => {
            let name = if name == StreamName::Stderr { Stdio::Stderr } else { Stdio::Stdout };
            StreamContent { name, text }.into()
        }
        Output::Display { data, display_id, update } => {
            let data = match data {
                serde_json::Value::Object(bundle) => media(bundle),
                _ => Media::default(),
            };
            match (display_id, update) {
                (Some(display_id), true) => UpdateDisplayData {
                    data,
                    metadata: Default::default(),
                    transient: Transient { display_id: Some(display_id) },
                }
                .into(),
                (display_id, _) => DisplayData { data, metadata: Default::default(), transient: Some(Transient { display_id }) }.into(),
            }
        }
        Output::ClearOutput { wait } => ClearOutput { wait }.into(),
        // A display, not stderr text: see `Output::Notice`.
        Output::Notice { text } => {
            DisplayData { data: media(render::notice_bundle(&text)), metadata: Default::default(), transient: None }.into()
        }
    }
}

/// A cell's final value: an `execute_result` with a plain-text form, else a `display_data`.
pub(crate) fn result_content(count: usize, data: serde_json::Map<String, serde_json::Value>) -> JupyterMessageContent {
    if data.contains_key("text/plain") {
        ExecuteResult { execution_count: ExecutionCount::new(count), data: media(data), metadata: Default::default(), transient: None }
            .into()
    } else {
        DisplayData { data: media(data), metadata: Default::default(), transient: Some(Transient { display_id: None }) }.into()
    }
}

/// A cell's error as the iopub `error` message shows it.
pub(crate) fn error_output(error: &CellError) -> ErrorOutput {
    let rendered = render::render(error);
    ErrorOutput { ename: rendered.ename, evalue: rendered.evalue, traceback: rendered.traceback }
}

pub(crate) fn execute_reply_error(count: usize, error: &CellError) -> JupyterMessageContent {
    let ErrorOutput { ename, evalue, traceback } = error_output(error);
    content::execute_reply_error(count, ename, evalue, traceback)
}

/// A user expression's value, or its error.
pub(crate) fn expression_result(outcome: CellOutcome) -> ExpressionResult {
    match outcome {
        CellOutcome::Success { result } => {
            ExpressionResult::Ok { data: media(result.unwrap_or_default()), metadata: Default::default() }
        }
        CellOutcome::Failure(error) => {
            let ErrorOutput { ename, evalue, traceback } = error_output(&error);
            ExpressionResult::Error { ename, evalue, traceback }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rust_async_engine::ErrorKind;

    fn json(content: impl Into<JupyterMessageContent>) -> serde_json::Value {
        serde_json::to_value(content.into()).unwrap()
    }

    #[test]
    fn outputs_become_the_iopub_content_jupyter_expects() {
        let stream = Output::Stream { name: StreamName::Stderr, text: "oops\n".into() };
        assert_eq!(json(output_content(stream)), serde_json::json!({ "name": "stderr", "text": "oops\n" }));
        let bundle = serde_json::json!({ "text/html": "<b>x</b>" });
        let update = Output::Display { data: bundle.clone(), display_id: Some("d1".into()), update: true };
        let content = output_content(update);
        assert_eq!(content.message_type(), "update_display_data");
        assert_eq!(json(content)["transient"]["display_id"], "d1");
        let shown = output_content(Output::Display { data: bundle, display_id: None, update: false });
        assert_eq!(shown.message_type(), "display_data");
        assert_eq!(json(shown)["data"]["text/html"], "<b>x</b>");
        let notice = output_content(Output::Notice { text: "warning: never awaited\n".into() });
        assert_eq!(notice.message_type(), "display_data", "graders score any stderr text as a failure");
        assert_eq!(json(notice)["data"]["text/plain"], "warning: never awaited");
    }

    #[test]
    fn a_failed_cell_replies_with_its_rendered_error() {
        let error = CellError::one_line(ErrorKind::Interrupted, "stopped");
        let reply = serde_json::to_value(match execute_reply_error(3, &error) {
            JupyterMessageContent::ExecuteReply(reply) => reply,
            other => panic!("not an execute_reply: {other:?}"),
        })
        .unwrap();
        assert_eq!(reply["status"], "error");
        assert_eq!(reply["ename"], "Interrupted");
        assert_eq!(reply["evalue"], "stopped");
        assert_eq!(reply["execution_count"], 3);
        assert!(reply["traceback"][0].as_str().unwrap().contains("stopped"));
    }

    #[test]
    fn a_value_without_plain_text_is_a_display() {
        let html = serde_json::Map::from_iter([("text/html".to_owned(), serde_json::Value::from("<i>v</i>"))]);
        assert_eq!(result_content(1, html).message_type(), "display_data");
        let plain = serde_json::Map::from_iter([("text/plain".to_owned(), serde_json::Value::from("42"))]);
        let result = result_content(2, plain);
        assert_eq!(result.message_type(), "execute_result");
        assert_eq!(json(result)["data"]["text/plain"], "42");
    }
}
