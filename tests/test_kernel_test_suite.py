"""The standard Jupyter kernel conformance suite (jupyter_kernel_test) against rust-async.

Every sample the suite offers is filled in (the separate IopubWelcomeTests are not run: the
kernel sends no JEP 65 iopub_welcome).
"""

from __future__ import annotations

from typing import Any

import jupyter_kernel_test
from jupyter_client.manager import start_new_kernel

from conftest import KERNEL_NAME, STARTUP_TIMEOUT, complete_when_ready

# The suite reads this module global (not a class attribute) for its kernel_info and inspect
# timeouts, at call time. Its 15 s default is too short for a kernel that compiles Rust.
CELL_TIMEOUT = 120
jupyter_kernel_test.TIMEOUT = CELL_TIMEOUT


class RustAsyncKernelTests(jupyter_kernel_test.KernelTests):
    kernel_name = KERNEL_NAME
    language_name = "rust"
    file_extension = ".rs"
    # Not read by jupyter_kernel_test 0.7 (see CELL_TIMEOUT), kept for newer versions.
    timeout = CELL_TIMEOUT

    code_hello_world = 'println!("hello, world");'

    code_stderr = 'eprintln!("oops");'

    # rust-analyzer (through evcxr) completes the last path segment; the reply's matches are
    # the candidates that start with the typed prefix.
    completion_samples = [
        {"text": "std::collections::HashM", "matches": {"HashMap"}},
        {"text": "let v: Vec<u8> = Vec::new(); v.is_em", "matches": {"is_empty"}},
    ]

    complete_code_samples = [
        "1",
        "let x = 1;",
        "fn f() {}",
        'println!("hi");',
        "let s = \"{\";",
    ]
    incomplete_code_samples = [
        "fn f() {",
        'let s = "abc',
        "let v = vec![1,\n2,",
    ]
    invalid_code_samples = [
        "fn f() { )",
        "let x = (1, 2];",
    ]

    code_generate_error = 'panic!("boom")'

    code_execute_result = [
        {"code": "1 + 1", "result": "2"},
        {"code": '"hi"', "result": '"hi"'},
        {"code": "let v = vec![1, 2, 3];\nv.len()", "result": "3"},
        # Top-level await: a cell is an async block run on the kernel's tokio runtime.
        {"code": "tokio::spawn(async { 6 * 7 }).await.unwrap()", "result": "42"},
    ]

    code_display_data = [
        {
            "code": r'println!("EVCXR_BEGIN_CONTENT text/html\n<b>hi</b>\nEVCXR_END_CONTENT");',
            "mime": "text/html",
        },
    ]

    # A glob (IPython's history search semantics) matching exactly one distinct input of
    # code_execute_result, which the suite runs several times: `unique` must then give one
    # entry, `n=3` three.
    code_history_pattern = "1 + *"
    supported_history_operations = ("tail", "range", "search")

    code_inspect_sample = "Vec"
    code_page_something = "Vec?"

    code_clear_output = "tokio::display::clear_output(false);"

    @classmethod
    def setUpClass(cls) -> None:
        cls.km, cls.kc = start_new_kernel(kernel_name=cls.kernel_name, startup_timeout=STARTUP_TIMEOUT)
        # The suite asks for each completion once. The first Tab of a kernel starts
        # rust-analyzer, and a Tab answered after 0.9 s (JupyterLab drops later answers) gets
        # nothing while it works: a student presses Tab again.
        for sample in cls.completion_samples:
            complete_when_ready(cls.kc, sample["text"])

    def get_non_kernel_info_reply(self, timeout: float | None = None) -> dict[str, Any] | None:
        # The suite waits for some replies (complete, is_complete) without a timeout.
        return super().get_non_kernel_info_reply(timeout=CELL_TIMEOUT if timeout is None else timeout)

    def execute_helper(
        self,
        code: str,
        timeout: int = CELL_TIMEOUT,
        silent: bool = False,
        store_history: bool = True,
        stop_on_error: bool = True,
    ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        # The suite's default timeout is bound to 15 s at definition time: compiling a cell
        # can take longer on a busy machine.
        return super().execute_helper(
            code,
            timeout=timeout,
            silent=silent,
            store_history=store_history,
            stop_on_error=stop_on_error,
        )
