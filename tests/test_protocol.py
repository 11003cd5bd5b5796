"""The Jupyter messaging protocol: signatures, heartbeat, kernel_info, is_complete, history,
comms, interrupt and shutdown."""

from __future__ import annotations

import json
import re
import subprocess
import time
import uuid

import zmq
from jupyter_client.session import Session

from conftest import (
    collect,
    complete_when_ready,
    get_reply,
    result_text,
    run,
    start_kernel,
    stop_kernel,
    stream_text,
    summary,
    the_error,
    wait_for_iopub,
)


def _url(info: dict, port_name: str) -> str:
    if info["transport"] == "tcp":
        return f"tcp://{info['ip']}:{info[port_name]}"
    return f"{info['transport']}://{info['ip']}-{info[port_name]}"


def _session(info: dict, key: bytes) -> Session:
    return Session(key=key, signature_scheme=info["signature_scheme"], username="e2e-test")


def _recv_reply(sock: zmq.Socket, session: Session, msg_id: str, timeout: float) -> dict | None:
    """The reply to `msg_id` on a raw DEALER socket, or None if none comes within `timeout`."""
    deadline = time.monotonic() + timeout
    while (remaining := deadline - time.monotonic()) > 0:
        if not sock.poll(int(remaining * 1000)):
            return None
        _idents, msg = session.recv(sock, mode=0)
        if msg is not None and msg["parent_header"].get("msg_id") == msg_id:
            return msg
    return None


def test_wrongly_signed_request_is_ignored(km, kc, tmp_path):
    info = km.get_connection_info(session=False)
    bad_marker = tmp_path / "bad-signature-marker"
    good_marker = tmp_path / "good-signature-marker"

    def write_code(path):
        return f"std::fs::write({json.dumps(str(path))}, \"x\").unwrap();"

    ctx = zmq.Context.instance()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.IDENTITY, uuid.uuid4().hex.encode())
    sock.connect(_url(info, "shell_port"))
    try:
        bad = _session(info, b"not-the-kernel-key")
        content = {
            "code": write_code(bad_marker),
            "silent": False,
            "store_history": True,
            "user_expressions": {},
            "allow_stdin": False,
            "stop_on_error": True,
        }
        sent = bad.send(sock, "execute_request", content)
        # No reply, and the code never runs.
        assert _recv_reply(sock, _session(info, info["key"]), sent["header"]["msg_id"], 5) is None
        assert not bad_marker.exists()

        # The same request, signed with the right key, is answered and runs.
        good = _session(info, info["key"])
        content["code"] = write_code(good_marker)
        sent = good.send(sock, "execute_request", content)
        reply = _recv_reply(sock, good, sent["header"]["msg_id"], 60)
        assert reply is not None, "no reply to a correctly signed request"
        assert reply["content"]["status"] == "ok", reply["content"]
        assert good_marker.exists()
        assert not bad_marker.exists()
    finally:
        sock.close(linger=0)

    # The kernel's own client still works.
    reply, msgs = run(kc, "1 + 2")
    assert result_text(msgs) == "3"


def test_heartbeat_echoes(km):
    info = km.get_connection_info(session=False)
    ctx = zmq.Context.instance()
    sock = ctx.socket(zmq.REQ)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(_url(info, "hb_port"))
    try:
        for payload in (b"ping", b"\x00binary\xff", uuid.uuid4().bytes):
            sock.send(payload)
            assert sock.poll(5000), "no heartbeat echo within 5s"
            assert sock.recv() == payload
    finally:
        sock.close(linger=0)


def _rustc_version() -> str:
    out = subprocess.run(["rustc", "--version"], capture_output=True, text=True, check=True).stdout
    m = re.match(r"rustc (\S+)", out)
    assert m, out
    return m.group(1)


def test_kernel_info(kc):
    msg_id = kc.kernel_info()
    reply = get_reply(kc, msg_id, 30)
    content = reply["content"]
    assert content["status"] == "ok"
    assert re.fullmatch(r"5\.\d+(\.\d+)?", content["protocol_version"]), content
    assert content["implementation"], content
    assert isinstance(content["implementation_version"], str)
    assert isinstance(content["banner"], str) and content["banner"], content

    li = content["language_info"]
    assert li["name"] == "rust"
    assert li["version"] == _rustc_version()
    assert li["mimetype"] == "text/x-rustsrc"
    assert li["file_extension"] == ".rs"
    assert li["pygments_lexer"] == "rust"
    assert li["codemirror_mode"] == "rust"

    links = content["help_links"]
    assert all(set(link) >= {"text", "url"} for link in links), links
    urls = [link["url"] for link in links]
    for prefix in (
        "https://rust-lang.github.io/async-book",  # the Async Book
        "https://tokio.rs/tokio/tutorial",  # the Tokio tutorial
        "https://docs.rs/tokio",  # the tokio API docs
    ):
        assert any(u.startswith(prefix) for u in urls), (prefix, urls)

    # busy and idle on iopub, parented to the request, and nothing else.
    msgs = wait_for_iopub(
        kc, msg_id, lambda m: m["msg_type"] == "status" and m["content"]["execution_state"] == "idle", 10
    )
    assert [summary(m) for m in msgs] == ["status:busy", "status:idle"]


def test_is_complete(kc):
    expected = {
        "1": "complete",
        "let x = 1;": "complete",
        "fn f() {}": "complete",
        "fn f() {": "incomplete",
        'let s = "abc': "incomplete",
        "fn f() { )": "invalid",
    }
    for code, status in expected.items():
        msg_id = kc.is_complete(code)
        reply = get_reply(kc, msg_id, 30)
        assert reply["content"]["status"] == status, (code, reply["content"])
        if status == "incomplete":
            assert isinstance(reply["content"].get("indent", ""), str)


def test_history_tail(kc):
    codes = [f"let hist_{i} = {i};" for i in range(3)]
    for code in codes:
        reply, _ = run(kc, code)
        assert reply["content"]["status"] == "ok"
    msg_id = kc.history(hist_access_type="tail", n=3, raw=True, output=False)
    reply = get_reply(kc, msg_id, 30)
    history = reply["content"]["history"]
    assert [h[2] for h in history] == codes, history
    sessions = {h[0] for h in history}
    assert len(sessions) == 1
    lines = [h[1] for h in history]
    assert lines == sorted(lines) and len(set(lines)) == 3, lines


def test_comm_info_is_empty(kc):
    msg_id = kc.comm_info()
    reply = get_reply(kc, msg_id, 30)
    assert reply["content"]["status"] == "ok"
    assert reply["content"]["comms"] == {}


def test_comm_open_unknown_target_is_closed(kc):
    comm_id = uuid.uuid4().hex
    msg = kc.session.msg(
        "comm_open", {"comm_id": comm_id, "target_name": "no-such-target", "data": {}}
    )
    kc.shell_channel.send(msg)
    # The messaging spec: a comm_open for an unknown target is answered by a comm_close.
    msgs = wait_for_iopub(
        kc,
        msg["header"]["msg_id"],
        lambda m: m["msg_type"] == "comm_close",
        10,
    )
    assert msgs[-1]["content"]["comm_id"] == comm_id
    # ... and the kernel goes on working.
    reply, out = run(kc, "2 + 2")
    assert result_text(out) == "4"
    msg_id = kc.comm_info()
    assert get_reply(kc, msg_id, 30)["content"]["comms"] == {}


def test_interrupt(km, kc):
    assert km.kernel_spec.interrupt_mode == "message"
    reply, _ = run(kc, "let survivor = 41;")
    assert reply["content"]["status"] == "ok"

    msg_id = kc.execute(
        'println!("sleeping");\ntokio::time::sleep(std::time::Duration::from_secs(60)).await;\n'
        'println!("woke up");'
    )
    seen = wait_for_iopub(
        kc, msg_id, lambda m: m["msg_type"] == "stream" and "sleeping" in m["content"]["text"], 60
    )
    started = time.monotonic()
    km.interrupt_kernel()
    reply, msgs = collect(kc, msg_id, timeout=10)
    elapsed = time.monotonic() - started
    assert elapsed < 2, f"interrupt took {elapsed:.1f}s"
    assert reply["content"]["status"] == "error", reply["content"]
    assert reply["content"]["ename"] == "Interrupted"
    assert the_error(msgs)["content"]["ename"] == "Interrupted"
    assert "woke up" not in stream_text(seen + msgs)

    # What earlier cells defined is still there.
    reply, msgs = run(kc, "survivor + 1")
    assert reply["content"]["status"] == "ok", [summary(m) for m in msgs]
    assert result_text(msgs) == "42"


def test_interrupt_when_idle_is_harmless(km, kc):
    km.interrupt_kernel()
    time.sleep(0.5)
    reply, msgs = run(kc, "7 * 6")
    assert reply["content"]["status"] == "ok", [summary(m) for m in msgs]
    assert result_text(msgs) == "42"


def test_shutdown_ends_the_process():
    km, kc = start_kernel()
    try:
        msg_id = kc.shutdown(restart=False)
        reply = get_reply(kc, msg_id, 30, channel="control")
        assert reply["content"]["status"] == "ok"
        assert reply["content"]["restart"] is False
        deadline = time.monotonic() + 15
        while km.is_alive() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not km.is_alive(), "the kernel process is still running 15s after shutdown"
        process = km.provisioner.process  # type: ignore[union-attr]
        assert process.poll() == 0, f"exit status {process.poll()}"
    finally:
        stop_kernel(km, kc)


def test_completion_offers_no_kernel_internals(kc):
    reply = complete_when_ready(kc, "let y = ")
    matches = reply["content"]["matches"]
    assert "Vec" in matches, matches[:40]
    assert not [m for m in matches if m.lower().startswith("evcxr")], matches


def test_completion_offers_each_name_once(kc):
    run(kc, "let bytes = vec![1u8, 2];", timeout=180)
    matches = complete_when_ready(kc, "bytes.le")["content"]["matches"]
    # `Vec::len` and the slice's `len` (through `Deref`) are one name to type.
    assert "len" in matches, matches
    assert len(matches) == len(set(matches)), matches


def test_help_pages_explain_the_kernels_spawn_and_hide_rustdocs_hidden_lines(kc):
    reply, _ = run(kc, "tokio::spawn?", timeout=180)
    page = reply["content"]["payload"][0]["data"]["text/plain"]
    assert "JoinHandle" in page and "concurrently" in page, page
    reply, _ = run(kc, "tokio::time::sleep?", timeout=180)
    for form in ("text/plain", "text/markdown"):
        page = reply["content"]["payload"][0]["data"][form]
        assert "sleep(Duration::from_millis(100)).await" in page, page
        assert "# #[tokio::main" not in page and "# async fn main" not in page, page
