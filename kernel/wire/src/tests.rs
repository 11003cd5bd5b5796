use bytes::Bytes;
use jupyter_protocol::{
    ClearOutput, CodeMirrorMode, CommId, CommInfoReply, DisplayData, ErrorOutput, ExecuteResult,
    ExecutionCount, HelpLink, HistoryEntry, HistoryReply, InputRequest, IsCompleteReply,
    KernelInfoReply, LanguageInfo, Media, MediaType, ReplyStatus, Status, StreamContent,
};
use serde_json::{json, Value};

use crate::*;

const KEY: &str = "a0436f6c-1916-498b-8eb9-e81ab9368e84";
const SESSION: &str = "kernel-session";

fn signer() -> Signer {
    Signer::new("hmac-sha256", KEY.as_bytes()).unwrap()
}

/// Frames as a client would send them: one identity, then the signed parts.
fn client_frames(signer: &Signer, header: Value, parent: Value, content: Value) -> Vec<Vec<u8>> {
    let parts = [header, parent, json!({}), content].map(|part| serde_json::to_vec(&part).unwrap());
    let signature = signer.sign(&parts.each_ref().map(|part| part.as_slice()));
    let mut frames = vec![
        b"client-identity".to_vec(),
        DELIMITER.to_vec(),
        signature.into_bytes(),
    ];
    frames.extend(parts);
    frames
}

fn client_header(msg_type: &str) -> Value {
    json!({
        "msg_id": "c0ffee-1", "username": "username", "session": "client-session",
        "date": "2024-05-01T12:00:00.123456Z", "msg_type": msg_type, "version": "5.3",
    })
}

fn request(msg_type: &str, content: Value) -> Message {
    let frames = client_frames(&signer(), client_header(msg_type), json!({}), content);
    decode(frames, &signer()).unwrap()
}

/// The content frame that `encode` produces for `content`.
fn wire_content(content: impl Into<JupyterMessageContent>) -> Value {
    let parent = request(
        "execute_request",
        json!({"code": "", "silent": false, "store_history": true}),
    );
    let frames = encode(&Message::reply_to(&parent, content, SESSION), &signer()).unwrap();
    serde_json::from_slice(&frames[6]).unwrap()
}

// --- signing -------------------------------------------------------------

#[test]
fn known_hmac_vector() {
    // Expected value computed independently with Python:
    //   hmac.new(KEY.encode(), digestmod=hashlib.sha256), then update() with each part.
    let parts: [&[u8]; 4] = [
        br#"{"msg_id":"1","msg_type":"kernel_info_request"}"#,
        b"{}",
        b"{}",
        b"{}",
    ];
    let expected = "23d21ade63d42fc48bbe2721cd9045ceffb260c3521b7d246495f23adfca79a0";
    assert_eq!(signer().sign(&parts), expected);
    signer().verify(expected.as_bytes(), &parts).unwrap();
}

#[test]
fn sign_verify_round_trip_and_rejections() {
    let parts: [&[u8]; 4] = [b"header", b"parent", b"metadata", b"content"];
    let signature = signer().sign(&parts);
    signer().verify(signature.as_bytes(), &parts).unwrap();

    let tampered: [&[u8]; 4] = [b"header", b"parent", b"metadata", b"content!"];
    assert!(matches!(
        signer().verify(signature.as_bytes(), &tampered),
        Err(WireError::BadSignature)
    ));

    let other_key = Signer::new("hmac-sha256", b"another key").unwrap();
    assert!(matches!(
        other_key.verify(signature.as_bytes(), &parts),
        Err(WireError::BadSignature)
    ));

    for bogus in [&b""[..], b"not hex at all", &signature.as_bytes()[..10]] {
        assert!(matches!(
            signer().verify(bogus, &parts),
            Err(WireError::BadSignature)
        ));
    }
}

#[test]
fn empty_key_signs_nothing_and_accepts_anything() {
    let unsigned = Signer::new("hmac-sha256", b"").unwrap();
    assert!(!unsigned.is_signing());
    assert_eq!(unsigned.sign(&[b"anything"]), "");
    unsigned.verify(b"", &[b"x"]).unwrap();
    unsigned.verify(b"garbage", &[b"x"]).unwrap();
}

#[test]
fn unsupported_scheme_is_rejected() {
    let error = Signer::new("hmac-md5", b"key").unwrap_err();
    assert!(matches!(error, WireError::UnsupportedSignatureScheme(scheme) if scheme == "hmac-md5"));
}

#[test]
fn signer_debug_hides_key() {
    assert!(!format!("{:?}", signer()).contains(KEY));
}

// --- decoding malformed input ---------------------------------------------

#[test]
fn tampered_content_is_rejected_by_decode() {
    let mut frames = client_frames(
        &signer(),
        client_header("kernel_info_request"),
        json!({}),
        json!({}),
    );
    *frames.last_mut().unwrap() = br#"{"evil":true}"#.to_vec();
    assert!(matches!(
        decode(frames, &signer()),
        Err(WireError::BadSignature)
    ));
}

#[test]
fn wrong_key_or_missing_signature_is_rejected_by_decode() {
    let intruder = Signer::new("hmac-sha256", b"wrong").unwrap();
    let frames = client_frames(
        &intruder,
        client_header("kernel_info_request"),
        json!({}),
        json!({}),
    );
    assert!(matches!(
        decode(frames, &signer()),
        Err(WireError::BadSignature)
    ));

    let unsigned_frames = client_frames(
        &Signer::unsigned(),
        client_header("kernel_info_request"),
        json!({}),
        json!({}),
    );
    assert!(unsigned_frames[2].is_empty());
    assert!(matches!(
        decode(unsigned_frames.clone(), &signer()),
        Err(WireError::BadSignature)
    ));
    // ...but a kernel without a key takes it.
    decode(unsigned_frames, &Signer::unsigned()).unwrap();
}

#[test]
fn signature_is_checked_before_parsing() {
    // Garbage JSON with a bad signature must be reported as a bad signature.
    let frames: Vec<Vec<u8>> = vec![
        DELIMITER.to_vec(),
        b"00".to_vec(),
        b"{".to_vec(),
        b"}".to_vec(),
        b"[".to_vec(),
        b"]".to_vec(),
    ];
    assert!(matches!(
        decode(frames, &signer()),
        Err(WireError::BadSignature)
    ));
}

#[test]
fn malformed_frames_give_errors_not_panics() {
    let no_frames: Vec<Vec<u8>> = Vec::new();
    assert!(matches!(
        decode(no_frames, &signer()),
        Err(WireError::MissingDelimiter)
    ));

    let no_delimiter = vec![b"id".to_vec(), b"sig".to_vec(), b"{}".to_vec()];
    assert!(matches!(
        decode(no_delimiter, &signer()),
        Err(WireError::MissingDelimiter)
    ));

    let mut truncated = client_frames(
        &signer(),
        client_header("kernel_info_request"),
        json!({}),
        json!({}),
    );
    truncated.truncate(5);
    assert!(matches!(
        decode(truncated, &signer()),
        Err(WireError::TooFewFrames { found: 3 })
    ));

    let only_delimiter = vec![DELIMITER.to_vec()];
    assert!(matches!(
        decode(only_delimiter, &signer()),
        Err(WireError::TooFewFrames { found: 0 })
    ));

    // Correctly signed, but not JSON / not the right JSON.
    let sign_raw = |parts: [&[u8]; 4]| -> Vec<Vec<u8>> {
        let mut frames = vec![DELIMITER.to_vec(), signer().sign(&parts).into_bytes()];
        frames.extend(parts.map(<[u8]>::to_vec));
        frames
    };
    let header = serde_json::to_vec(&client_header("execute_request")).unwrap();
    let cases: [([&[u8]; 4], &str); 5] = [
        ([b"\xff\xfe not json", b"{}", b"{}", b"{}"], "header"),
        ([br#"{"msg_id": "1"}"#, b"{}", b"{}", b"{}"], "header"),
        ([&header, b"[1, 2]", b"{}", b"{}"], "parent_header"),
        ([&header, b"{}", b"[]", b"{}"], "metadata"),
        ([&header, b"{}", b"{}", b"{\"code\": "], "content"),
    ];
    for (parts, expected_part) in cases {
        match decode(sign_raw(parts), &signer()) {
            Err(WireError::InvalidJson { part, .. }) => assert_eq!(part, expected_part),
            other => panic!("expected InvalidJson in {expected_part}, got {other:?}"),
        }
    }

    // Valid JSON that does not fit the message type's schema.
    match decode(
        sign_raw([&header, b"{}", b"{}", br#"{"silent": "no"}"#]),
        &signer(),
    ) {
        Err(WireError::InvalidContent { msg_type, .. }) => assert_eq!(msg_type, "execute_request"),
        other => panic!("expected InvalidContent, got {other:?}"),
    }
}

// --- decoding real-looking requests ----------------------------------------

#[test]
fn decodes_execute_request() {
    let message = request(
        "execute_request",
        json!({
            "code": "let x = 1;\nx + 1", "silent": false, "store_history": true,
            "user_expressions": {}, "allow_stdin": true, "stop_on_error": true,
        }),
    );
    assert_eq!(
        message.identities,
        vec![Bytes::from_static(b"client-identity")]
    );
    assert_eq!(message.msg_type(), "execute_request");
    assert_eq!(message.header.msg_id, "c0ffee-1");
    assert!(message.parent_header.is_none());
    assert!(message.buffers.is_empty());
    let JupyterMessageContent::ExecuteRequest(execute) = &message.content else {
        panic!("wrong content {:?}", message.content);
    };
    assert_eq!(execute.code, "let x = 1;\nx + 1");
    assert!(execute.allow_stdin && execute.store_history && !execute.silent);
}

#[test]
fn decodes_frames_produced_by_jupyter_client() {
    // Captured from jupyter_client 8.10 with the test key:
    //   Session(key=KEY, username="username", session="client-session")
    //   .serialize(session.msg("execute_request", content=...), ident=[b"\x00k\x8bEg"])
    let frames: Vec<&'static [u8]> = vec![
        b"\x00k\x8bEg",
        b"<IDS|MSG>",
        b"44e656a546c43920f11cf3cb1f3673a134f87aa58b84affe5babf6537876bb06",
        br#"{"msg_id": "client-session_10960_0", "msg_type": "execute_request", "username": "username", "session": "client-session", "date": "2026-11-25T11:33:27.790779Z", "version": "5.4"}"#,
        b"{}",
        b"{}",
        br#"{"code": "println!(\"hi\");", "silent": false, "store_history": true, "user_expressions": {}, "allow_stdin": true, "stop_on_error": true}"#,
    ];
    let message = decode(frames, &signer()).unwrap();
    assert_eq!(message.identities, vec![Bytes::from_static(b"\x00k\x8bEg")]);
    assert_eq!(message.header.msg_id, "client-session_10960_0");
    assert_eq!(message.header.version, "5.4");
    let JupyterMessageContent::ExecuteRequest(execute) = &message.content else {
        panic!("wrong content {:?}", message.content);
    };
    assert_eq!(execute.code, "println!(\"hi\");");
}

#[test]
fn decodes_kernel_info_request_with_several_identities() {
    let mut frames = client_frames(
        &signer(),
        client_header("kernel_info_request"),
        json!({}),
        json!({}),
    );
    frames.insert(0, b"proxy-identity".to_vec());
    let message = decode(frames, &signer()).unwrap();
    assert_eq!(message.identities.len(), 2);
    assert!(matches!(
        message.content,
        JupyterMessageContent::KernelInfoRequest(_)
    ));
}

#[test]
fn decodes_comm_open_with_buffers() {
    let mut frames = client_frames(
        &signer(),
        client_header("comm_open"),
        json!({}),
        json!({"comm_id": "comm-1", "target_name": "jupyter.widget", "data": {"state": {}}}),
    );
    frames.push(vec![0, 1, 2, 255]);
    let message = decode(frames, &signer()).unwrap();
    let JupyterMessageContent::CommOpen(open) = &message.content else {
        panic!("wrong content {:?}", message.content);
    };
    assert_eq!(open.comm_id, CommId("comm-1".to_owned()));
    assert_eq!(open.target_name, "jupyter.widget");
    assert_eq!(message.buffers, vec![Bytes::from_static(&[0, 1, 2, 255])]);
}

#[test]
fn unknown_message_type_keeps_raw_content_through_round_trip() {
    let content = json!({"anything": [1, 2, {"nested": true}]});
    let message = request("future_request", content.clone());
    let JupyterMessageContent::UnknownMessage(unknown) = &message.content else {
        panic!("wrong content {:?}", message.content);
    };
    assert_eq!(unknown.msg_type, "future_request");
    assert_eq!(unknown.content, content);

    let again = decode(encode(&message, &signer()).unwrap(), &signer()).unwrap();
    assert_eq!(again.msg_type(), "future_request");
    assert!(
        matches!(again.content, JupyterMessageContent::UnknownMessage(ref u) if u.content == content)
    );
}

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
    let reply = Message::reply_to(&parent, content::execute_reply_ok(1), SESSION);
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

    let second = Message::reply_to(&parent, content::execute_reply_ok(1), SESSION);
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
        wire_content(content::execute_reply_ok(3)),
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
