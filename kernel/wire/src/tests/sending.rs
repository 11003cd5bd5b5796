//! Encoding, the content the kernel sends, and connection files.

use super::*;

// --- encoding and constructors ----------------------------------------------

#[test]
fn encode_decode_round_trip_preserves_everything() {
    let parent = request(
        "execute_request",
        json!({"code": "1", "silent": false, "store_history": true}),
    );
    let mut reply = Message::reply_to(&parent, StreamContent::stdout("hello\n"), SESSION);
    reply.metadata.insert("key".to_owned(), json!("value"));
    reply.buffers.push(Bytes::from_static(b"\x00binary"));

    let frames = encode(&reply, &signer()).unwrap();
    assert_eq!(frames[0].as_ref(), b"client-identity");
    assert_eq!(frames[1].as_ref(), DELIMITER);
    assert_eq!(frames.len(), 1 + 1 + 5 + 1);

    let decoded = decode(frames, &signer()).unwrap();
    assert_eq!(decoded.identities, parent.identities);
    assert_eq!(decoded.metadata, reply.metadata);
    assert_eq!(decoded.buffers, reply.buffers);
    let parent_header = decoded.parent_header.expect("parent header");
    assert_eq!(
        serde_json::to_value(&parent_header).unwrap(),
        serde_json::to_value(&parent.header).unwrap()
    );
    assert_eq!(
        serde_json::to_value(&decoded.header).unwrap(),
        serde_json::to_value(&reply.header).unwrap()
    );
    let JupyterMessageContent::StreamContent(stream) = decoded.content else {
        panic!("not a stream")
    };
    assert_eq!(stream.text, "hello\n");
}

#[test]
fn reply_header_is_fresh_and_parent_is_the_request_header() {
    let parent = request("kernel_info_request", json!({}));
    let reply = Message::reply_to(&parent, content::execute_reply_ok(1, vec![], Default::default()), SESSION);
    assert_eq!(reply.identities, parent.identities);
    assert_eq!(reply.header.msg_type, "execute_reply");
    assert_eq!(reply.header.username, "kernel");
    assert_eq!(reply.header.session, SESSION);
    assert_eq!(reply.header.version, "5.3");
    assert_ne!(reply.header.msg_id, parent.header.msg_id);
    assert!(uuid::Uuid::parse_str(&reply.header.msg_id).is_ok());
    let parent_header = reply.parent_header.as_ref().unwrap();
    assert_eq!(parent_header.msg_id, "c0ffee-1");
    assert_eq!(parent_header.session, "client-session");

    let second = Message::reply_to(&parent, content::execute_reply_ok(1, vec![], Default::default()), SESSION);
    assert_ne!(second.header.msg_id, reply.header.msg_id);

    // ISO 8601, with no more than the microseconds Python keeps.
    let header_json = serde_json::to_value(&reply.header).unwrap();
    let date = header_json["date"].as_str().unwrap();
    assert!(chrono::DateTime::parse_from_rfc3339(date).is_ok(), "{date}");
    let fraction = date.split_once('.').map_or("Z", |(_, fraction)| fraction);
    assert!(fraction.len() <= "123456Z".len(), "{date}");
}

#[test]
fn broadcast_uses_topic_and_optional_parent() {
    let starting = Message::broadcast(None, Status::starting(), SESSION);
    assert_eq!(starting.identities, vec![Bytes::from_static(b"status")]);
    assert!(starting.parent_header.is_none());
    let frames = encode(&starting, &signer()).unwrap();
    assert_eq!(frames[0].as_ref(), b"status");
    assert_eq!(frames[4].as_ref(), b"{}", "no parent is sent as {{}}");
    assert_eq!(
        serde_json::from_slice::<Value>(&frames[6]).unwrap(),
        json!({"execution_state": "starting"})
    );

    let parent = request(
        "execute_request",
        json!({"code": "", "silent": false, "store_history": true}),
    );
    let busy = Message::broadcast(Some(&parent), Status::busy(), SESSION);
    assert_eq!(busy.parent_header.unwrap().msg_id, parent.header.msg_id);
}

#[test]
fn signature_of_encoded_message_matches_python_style_check() {
    let message = Message::broadcast(None, Status::idle(), SESSION);
    let frames = encode(&message, &signer()).unwrap();
    let parts: Vec<&[u8]> = frames[3..7].iter().map(|frame| frame.as_ref()).collect();
    signer().verify(&frames[2], &parts).unwrap();
    assert_eq!(frames[2].len(), 64);
}

// --- content the kernel sends -------------------------------------------------

#[test]
fn execute_replies_have_the_fields_clients_expect() {
    assert_eq!(
        wire_content(content::execute_reply_ok(3, vec![], Default::default())),
        json!({"status": "ok", "execution_count": 3, "user_expressions": {}, "payload": []})
    );
    assert_eq!(
        wire_content(content::execute_reply_error(
            4,
            "E0425",
            "cannot find value `y`",
            vec!["tb".into()]
        )),
        json!({
            "status": "error", "execution_count": 4, "user_expressions": {}, "payload": [],
            "ename": "E0425", "evalue": "cannot find value `y`", "traceback": ["tb"],
        })
    );
    // Hand-built with the defaults: user_expressions still becomes {}.
    let by_hand = jupyter_protocol::ExecuteReply {
        execution_count: ExecutionCount::new(5),
        ..Default::default()
    };
    assert_eq!(wire_content(by_hand)["user_expressions"], json!({}));

    let aborted = content::aborted_reply("execute_request");
    assert_eq!(aborted.message_type(), "execute_reply");
    assert_eq!(wire_content(aborted), json!({"status": "aborted"}));
}

#[test]
fn other_replies_serialise_as_jupyter_expects() {
    assert_eq!(
        wire_content(CommInfoReply::default()),
        json!({"status": "ok", "comms": {}})
    );
    assert_eq!(
        wire_content(IsCompleteReply::incomplete("    ".into())),
        json!({"status": "incomplete", "indent": "    "})
    );
    assert_eq!(
        wire_content(HistoryReply::new(vec![HistoryEntry::Input(
            0,
            1,
            "1 + 1".into()
        )])),
        json!({"status": "ok", "history": [[0, 1, "1 + 1"]]})
    );
    assert_eq!(
        wire_content(InputRequest {
            prompt: "name: ".into(),
            password: false
        }),
        json!({"prompt": "name: ", "password": false})
    );

    let kernel_info = KernelInfoReply {
        status: ReplyStatus::Ok,
        protocol_version: "5.3".into(),
        implementation: "rust-async".into(),
        implementation_version: "0.1.0".into(),
        language_info: LanguageInfo {
            name: "rust".into(),
            version: "1.0".into(),
            mimetype: Some("text/rust".into()),
            file_extension: Some(".rs".into()),
            pygments_lexer: Some("rust".into()),
            codemirror_mode: Some(CodeMirrorMode::Simple("rust".into())),
            nbconvert_exporter: None,
        },
        banner: "Rust".into(),
        help_links: vec![HelpLink {
            text: "Rust std".into(),
            url: "https://doc.rust-lang.org/std/".into(),
        }],
        debugger: false,
        error: None,
    };
    let kernel_info = wire_content(kernel_info);
    assert_eq!(kernel_info["status"], "ok");
    assert_eq!(kernel_info["language_info"]["codemirror_mode"], "rust");
    assert_eq!(kernel_info["language_info"]["file_extension"], ".rs");
    assert_eq!(
        kernel_info["help_links"],
        json!([{"text": "Rust std", "url": "https://doc.rust-lang.org/std/"}])
    );
}

#[test]
fn iopub_outputs_serialise_as_jupyter_expects() {
    assert_eq!(
        wire_content(StreamContent::stderr("oops")),
        json!({"name": "stderr", "text": "oops"})
    );
    assert_eq!(
        wire_content(ClearOutput { wait: true }),
        json!({"wait": true})
    );
    assert_eq!(
        wire_content(ErrorOutput {
            ename: "E".into(),
            evalue: "v".into(),
            traceback: vec![]
        }),
        json!({"ename": "E", "evalue": "v", "traceback": []})
    );
    let bundle = Media::new(vec![
        MediaType::Plain("2".into()),
        MediaType::Html("<b>2</b>".into()),
    ]);
    assert_eq!(
        wire_content(ExecuteResult::new(ExecutionCount::new(7), bundle.clone())),
        json!({"execution_count": 7, "data": {"text/plain": "2", "text/html": "<b>2</b>"}, "metadata": {}})
    );
    assert_eq!(
        wire_content(DisplayData::new(bundle)),
        json!({"data": {"text/plain": "2", "text/html": "<b>2</b>"}, "metadata": {}})
    );
    assert_eq!(
        wire_content(content::raw("custom_msg", Value::Null)),
        json!({})
    );
}

// --- connection files ---------------------------------------------------------

#[test]
fn reads_connection_file_and_builds_endpoints() {
    let path = std::env::temp_dir().join(format!("wire-test-{}.json", uuid::Uuid::new_v4()));
    std::fs::write(
        &path,
        json!({
            "shell_port": 5001, "iopub_port": 5002, "stdin_port": 5003, "control_port": 5004,
            "hb_port": 5005, "ip": "127.0.0.1", "key": KEY, "transport": "tcp",
            "signature_scheme": "hmac-sha256", "kernel_name": "rust-async",
        })
        .to_string(),
    )
    .unwrap();
    let info = read_connection_file(&path);
    std::fs::remove_file(&path).unwrap();
    let info = info.unwrap();

    assert_eq!(endpoint(&info, Channel::Shell), "tcp://127.0.0.1:5001");
    assert_eq!(endpoint(&info, Channel::IOPub), "tcp://127.0.0.1:5002");
    assert_eq!(endpoint(&info, Channel::Stdin), "tcp://127.0.0.1:5003");
    assert_eq!(endpoint(&info, Channel::Control), "tcp://127.0.0.1:5004");
    assert_eq!(endpoint(&info, Channel::Heartbeat), "tcp://127.0.0.1:5005");
    assert!(Signer::from_connection_info(&info).unwrap().is_signing());

    let ipv6 = ConnectionInfo {
        ip: "::1".into(),
        ..info
    };
    assert_eq!(endpoint(&ipv6, Channel::Shell), "tcp://[::1]:5001");
}

#[test]
fn connection_file_errors_are_reported() {
    let missing = read_connection_file("/nonexistent/kernel.json").unwrap_err();
    assert!(matches!(missing, WireError::ConnectionFileIo { .. }));

    let path = std::env::temp_dir().join(format!("wire-test-{}.json", uuid::Uuid::new_v4()));
    std::fs::write(&path, "{\"ip\": ").unwrap();
    let invalid = read_connection_file(&path).unwrap_err();
    std::fs::remove_file(&path).unwrap();
    assert!(matches!(invalid, WireError::ConnectionFileFormat { .. }));
}
