//! Stopping the running cell from another thread (the kernel's control channel).

use crate::output::OutputReader;
use crate::{host, Engine};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How long a cell that ignores an interrupt (no await point reached) may go on before the
/// user process is restarted.
const INTERRUPT_GRACE: Duration = Duration::from_secs(3);

/// Lets another thread interrupt the cell the engine is running.
#[derive(Clone)]
pub struct Interrupter {
    output: Arc<OutputReader>,
    process: Arc<Mutex<std::process::Child>>,
    killed_by_interrupt: Arc<AtomicBool>,
}

impl Interrupter {
    /// How many interrupt requests have arrived so far (see [`Engine::execute`]).
    pub fn interrupts(&self) -> u64 {
        self.output.interrupts()
    }

    /// Cancels the running cell at its current await point. A cell that does not reach an
    /// await point within a grace period is ended by restarting the user process. A cell that
    /// is still compiling (a `:dep` can take minutes) is stopped there: its cargo is ended.
    pub fn interrupt(&self) {
        if !self.output.interrupt() {
            host::kill_children_named("cargo");
        }
        let output = Arc::clone(&self.output);
        let process = Arc::clone(&self.process);
        let killed = Arc::clone(&self.killed_by_interrupt);
        std::thread::spawn(move || {
            // The grace period starts when the interrupt reaches a running cell: an interrupt
            // during compilation waits for the cell to start.
            let (execution, mut cell) = output.running_cell();
            while cell.is_none() {
                std::thread::sleep(Duration::from_millis(50));
                let (now, now_cell) = output.running_cell();
                if now != execution {
                    return;
                }
                cell = now_cell;
            }
            std::thread::sleep(INTERRUPT_GRACE);
            if output.running_cell() == (execution, cell) {
                killed.store(true, Ordering::SeqCst);
                if let Ok(mut child) = process.lock() {
                    let _ = child.kill();
                }
            }
        });
    }
}

impl Engine {
    pub fn interrupter(&self) -> Interrupter {
        Interrupter {
            output: Arc::clone(&self.output),
            process: Arc::clone(&self.process),
            killed_by_interrupt: Arc::clone(&self.killed_by_interrupt),
        }
    }
}
