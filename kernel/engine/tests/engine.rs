//! The engine driven directly, with no kernel process and no sockets: the second front end of
//! the engine (the Jupyter kernel is the first), and fast feedback on what a cell does.
//!
//! This test binary is also what the engine starts as evcxr's user-code process, cargo's rustc
//! wrapper and rust-analyzer's process (the engine re-executes the running binary), so it runs
//! its tests from its own `main` (`harness = false`), after `serve_process_role`. It needs the
//! runtime library prepared (`scripts/setup`), as a kernel does.

use rust_async_engine::runtime_library::RuntimeLibrary;
use rust_async_engine::{render, CellOutcome, Engine, EngineEvent, ErrorKind, InputReader, Output, StreamName};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// An engine and what its sink received.
struct Harness {
    engine: Engine,
    events: Arc<Mutex<Vec<EngineEvent>>>,
}

impl Harness {
    fn start() -> Harness {
        let library = RuntimeLibrary::locate();
        assert!(library.is_prepared(), "the runtime library is not prepared: run scripts/setup first");
        let events = Arc::new(Mutex::new(Vec::new()));
        let sink_events = Arc::clone(&events);
        let sink = Arc::new(move |event| sink_events.lock().unwrap().push(event));
        let engine = Engine::start(&library, sink).expect("the engine starts");
        Harness { engine, events }
    }

    /// Runs a cell with no stdin; returns its outcome and the stdout it printed.
    fn run(&mut self, code: &str) -> (CellOutcome, String) {
        self.events.lock().unwrap().clear();
        let no_input: InputReader = Arc::new(|_: &str| None);
        let interrupts = self.engine.interrupter().interrupts();
        let outcome = self.engine.execute(code, no_input, interrupts);
        (outcome, self.printed(StreamName::Stdout))
    }

    fn printed(&self, stream: StreamName) -> String {
        let events = self.events.lock().unwrap();
        events
            .iter()
            .filter_map(|event| match event {
                EngineEvent::Output { output: Output::Stream { name, text }, .. } if *name == stream => Some(text.as_str()),
                _ => None,
            })
            .collect()
    }

    /// Runs a cell that must succeed; returns its value as plain text ("" without one).
    fn value(&mut self, code: &str) -> String {
        match self.run(code).0 {
            CellOutcome::Success { result } => result
                .and_then(|result| result.get("text/plain").and_then(|text| text.as_str()).map(str::to_owned))
                .unwrap_or_default(),
            CellOutcome::Failure(error) => panic!("cell failed:\n{code}\n{}", render::plain_text(&error)),
        }
    }

    /// Runs a cell that must fail; returns its error's kind name and its plain traceback.
    fn failure(&mut self, code: &str) -> (String, String) {
        match self.run(code).0 {
            CellOutcome::Failure(error) => (error.kind.name().to_owned(), render::plain_text(&error)),
            CellOutcome::Success { result } => panic!("cell succeeded:\n{code}\nwith {result:?}"),
        }
    }
}

fn a_future_and_a_task_are_kept_across_cells(harness: &mut Harness) {
    harness.value("async fn answer() -> u32 { 6 * 7 }\nlet later = answer();");
    assert_eq!(harness.value("later.await"), "42");
    harness.value("let handle = tokio::spawn(async { tokio::time::sleep(std::time::Duration::from_millis(50)).await; 7 });");
    assert_eq!(harness.value("handle.await.unwrap()"), "7");
}

fn output_is_credited_to_its_cell(harness: &mut Harness) {
    let (outcome, printed) = harness.run("println!(\"hello from a cell\");");
    assert!(matches!(outcome, CellOutcome::Success { result: None }), "{outcome:?}");
    assert_eq!(printed, "hello from a cell\n");
}

fn variables_are_typed_by_rustc(harness: &mut Harness) {
    harness.value("let scores = std::collections::HashMap::<String, u8>::from([(\"a\".to_owned(), 1)]);");
    let variables = harness.engine.variables();
    let scores = variables.iter().find(|(name, _)| name == "scores").map(|(_, kind)| kind.as_str());
    assert_eq!(scores, Some("std::collections::HashMap<std::string::String, u8>"));
    assert_eq!(harness.value("scores[\"a\"] + 1"), "2");
}

fn a_compile_error_points_at_the_cells_own_line(harness: &mut Harness) {
    let (kind, traceback) = harness.failure("let fine = 1;\nlet broken = missing_name + fine;");
    assert_eq!(kind, "CompileError");
    assert!(traceback.contains("cannot find value `missing_name`"), "{traceback}");
    assert!(traceback.contains("--> cell line 2, column 14"), "{traceback}");
}

fn a_forgotten_await_gets_a_hint(harness: &mut Harness) {
    let (kind, traceback) = harness.failure("async fn name() -> String { \"x\".into() }\nlet n = name().len();");
    assert_eq!(kind, "CompileError");
    assert!(traceback.contains("hint: this value is a future"), "{traceback}");
}

fn a_panic_and_a_question_mark_fail_the_cell(harness: &mut Harness) {
    let (kind, traceback) = harness.failure("let empty: Vec<u8> = Vec::new();\nempty[3];");
    assert_eq!(kind, "Panic");
    assert!(traceback.contains("--> cell line 2"), "{traceback}");
    let (kind, traceback) = harness.failure("let n: i32 = \"seven\".parse()?;");
    assert_eq!(kind, "ParseIntError");
    assert!(traceback.contains("the cell returned this error through `?`"), "{traceback}");
}

fn a_second_tokio_is_refused(harness: &mut Harness) {
    let (kind, traceback) = harness.failure(":dep tokio = \"1\"");
    assert_eq!(kind, "DependencyError");
    assert!(traceback.contains("tokio is built into this kernel"), "{traceback}");
}

fn statics_last_across_cells(harness: &mut Harness) {
    harness.value(
        "use std::sync::atomic::{AtomicU32, Ordering};\nstatic HITS: AtomicU32 = AtomicU32::new(0);\n\
         fn hit() -> u32 { HITS.fetch_add(1, Ordering::SeqCst) + 1 }\nhit();",
    );
    assert_eq!(harness.value("hit()"), "2");
    assert_eq!(harness.value("HITS.load(Ordering::SeqCst)"), "2");
}

fn an_interrupt_stops_the_cell_and_keeps_the_variables(harness: &mut Harness) {
    harness.value("let kept = 5;");
    let interrupter = harness.engine.interrupter();
    let stopper = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(1500));
        interrupter.interrupt();
    });
    let started = Instant::now();
    let (kind, _) = harness.failure("tokio::time::sleep(std::time::Duration::from_secs(60)).await;");
    stopper.join().unwrap();
    assert_eq!(kind, ErrorKind::Interrupted.name());
    assert!(started.elapsed() < Duration::from_secs(30), "stopped at the await, not at its end");
    assert_eq!(harness.value("kept"), "5");
}

fn a_cells_prints_are_its_own_while_tasks_of_another_cell_run(harness: &mut Harness) {
    // A task of one cell that is polled all the time, on the runtime's worker threads...
    harness.value(
        "let busy = tokio::spawn(async { loop { tokio::task::yield_now().await; } });",
    );
    // ...must not take the prints of a later cell, printed meanwhile.
    let (outcome, printed) = harness.run("for i in 0..300 { println!(\"line {i}\"); tokio::task::yield_now().await; }");
    assert!(matches!(outcome, CellOutcome::Success { .. }), "{outcome:?}");
    let started: Vec<u64> = harness
        .events
        .lock()
        .unwrap()
        .iter()
        .filter_map(|event| match event {
            EngineEvent::CellStarted(cell) => Some(*cell),
            _ => None,
        })
        .collect();
    let cell = *started.last().expect("the cell started");
    let events = harness.events.lock().unwrap();
    let misplaced: Vec<&str> = events
        .iter()
        .filter_map(|event| match event {
            EngineEvent::Output { cell: Some(credited), output: Output::Stream { text, .. } } if *credited != cell => Some(text.as_str()),
            _ => None,
        })
        .collect();
    assert!(misplaced.is_empty(), "credited to another cell: {misplaced:?}");
    assert_eq!(printed.lines().count(), 300);
    drop(events);
    harness.value("busy.abort();");
}

const TESTS: &[(&str, fn(&mut Harness))] = &[
    ("a_future_and_a_task_are_kept_across_cells", a_future_and_a_task_are_kept_across_cells),
    ("output_is_credited_to_its_cell", output_is_credited_to_its_cell),
    ("variables_are_typed_by_rustc", variables_are_typed_by_rustc),
    ("a_compile_error_points_at_the_cells_own_line", a_compile_error_points_at_the_cells_own_line),
    ("a_forgotten_await_gets_a_hint", a_forgotten_await_gets_a_hint),
    ("a_panic_and_a_question_mark_fail_the_cell", a_panic_and_a_question_mark_fail_the_cell),
    ("a_second_tokio_is_refused", a_second_tokio_is_refused),
    ("statics_last_across_cells", statics_last_across_cells),
    ("an_interrupt_stops_the_cell_and_keeps_the_variables", an_interrupt_stops_the_cell_and_keeps_the_variables),
    ("a_cells_prints_are_its_own_while_tasks_of_another_cell_run", a_cells_prints_are_its_own_while_tasks_of_another_cell_run),
];

fn main() {
    // As evcxr's user-code process, cargo's rustc wrapper or rust-analyzer's process, this
    // binary serves that role and never returns.
    rust_async_engine::serve_process_role();
    let filter: Vec<String> = std::env::args().skip(1).filter(|arg| !arg.starts_with('-')).collect();
    let selected: Vec<_> = TESTS.iter().filter(|(name, _)| filter.is_empty() || filter.iter().any(|f| name.contains(f.as_str()))).collect();
    println!("\nrunning {} engine tests (one engine, no kernel process)", selected.len());
    let mut harness = Harness::start();
    let mut failed = Vec::new();
    for (name, test) in selected {
        let started = Instant::now();
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| test(&mut harness)));
        let verdict = if result.is_ok() { "ok" } else { "FAILED" };
        println!("test {name} ... {verdict} ({:.1} s)", started.elapsed().as_secs_f64());
        if result.is_err() {
            failed.push(*name);
        }
    }
    drop(harness);
    if failed.is_empty() {
        println!("\nengine tests: ok");
    } else {
        println!("\nengine tests FAILED: {}", failed.join(", "));
        std::process::exit(1);
    }
}
