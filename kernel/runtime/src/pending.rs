//! A future kept in a variable between cells: Rust's form of Python's coroutine object.
//!
//! `let result = do_something();` makes a future that has not run. evcxr cannot store an
//! `impl Future` (its type has no name), so the engine rewrites such a `let` to box the future
//! into a [`Pending`], which has a name, keeps the future un-run, and runs it when a later cell
//! awaits it. Non-`Send` futures are fine: they stay on the cell thread.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

pub struct Pending<T> {
    future: Pin<Box<dyn Future<Output = T>>>,
    polled: bool,
}

impl<T> Pending<T> {
    pub fn new(future: impl Future<Output = T> + 'static) -> Pending<T> {
        Pending { future: Box::pin(future), polled: false }
    }

    /// What `tokio::pin!` gives: a pinned reference, for `poll`-level code.
    pub fn as_mut(&mut self) -> Pin<&mut Pending<T>> {
        Pin::new(self)
    }
}

impl<T> Future for Pending<T> {
    type Output = T;
    fn poll(mut self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<T> {
        self.polled = true;
        self.future.as_mut().poll(context)
    }
}

impl<T> fmt::Debug for Pending<T> {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = if self.polled { "started, not finished" } else { "not started: nothing has run yet" };
        write!(
            formatter,
            "<pending future, output {}: {state}; `.await` it to run it>",
            std::any::type_name::<T>()
        )
    }
}
