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

mod sending;
