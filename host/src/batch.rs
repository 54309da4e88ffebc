//! A background writer that batches items: callers push without waiting for
//! the disk, a thread writes what accumulated in one transaction, and
//! `flush` waits until everything pushed before it is written.
//!
//! Used for usage rows ([`crate::ledger`]) and audit records
//! ([`crate::audit`]). It fails loudly rather than quietly:
//! - a writer thread that died (a panic) makes every later `push` and
//!   `flush` an error, instead of a flush that waits forever;
//! - a batch the write function refuses stops the writer for good when the
//!   function says the failure is fatal (the audit chain's head could not
//!   be read: appending would start a new chain and hide the old one), and
//!   `flush` reports it.

use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

/// How a batch write failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum WriteError {
    /// This batch was lost; the writer carries on with the next.
    #[error("{0}")]
    Batch(String),
    /// The writer cannot go on: this batch and everything after is refused.
    #[error("{0}")]
    Fatal(String),
}

/// Why a push or a flush failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    /// The writer stopped (closed, panicked, or after a fatal write error).
    #[error("the {writer} writer stopped: {reason}")]
    Stopped {
        /// The writer's name.
        writer: &'static str,
        /// Why.
        reason: String,
    },
    /// Some of what was flushed could not be written.
    #[error("the {writer} writer lost {lost} item(s): {reason}")]
    Lost {
        /// The writer's name.
        writer: &'static str,
        /// How many items, since the last flush that reported.
        lost: u64,
        /// The last write error.
        reason: String,
    },
}

struct State<T> {
    items: Vec<T>,
    /// Items ever queued, and items ever taken and written (or lost): a
    /// flush waits until the second reaches the first.
    queued: u64,
    done: u64,
    /// Items lost since the last flush that reported them, and why.
    lost: u64,
    last_error: Option<String>,
    /// Someone waits in `flush`: write without lingering.
    flush_wanted: bool,
    /// No more items are taken: closed, or the writer is gone.
    stopped: Option<String>,
}

struct Inner<T> {
    state: Mutex<State<T>>,
    /// Wakes the writer: items arrived, a flush is wanted, or it must stop.
    wake: Condvar,
    /// Wakes flushers: a batch is done.
    batch_done: Condvar,
}

impl<T> Inner<T> {
    fn lock(&self) -> MutexGuard<'_, State<T>> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A batching background writer of `T`s.
pub(crate) struct BatchWriter<T: Send + 'static> {
    name: &'static str,
    max_batch: usize,
    inner: Arc<Inner<T>>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl<T: Send + 'static> std::fmt::Debug for BatchWriter<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BatchWriter")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl<T: Send + 'static> BatchWriter<T> {
    /// Starts a writer thread named `clawcage-<name>` that calls `write`
    /// with each batch: at most `max_batch` items, gathered for up to
    /// `linger` after the first arrives (less when someone flushes or the
    /// batch is full).
    pub fn spawn<W>(name: &'static str, linger: Duration, max_batch: usize, write: W) -> Self
    where
        W: FnMut(&[T]) -> Result<(), WriteError> + Send + 'static,
    {
        let inner = Arc::new(Inner {
            state: Mutex::new(State {
                items: Vec::new(),
                queued: 0,
                done: 0,
                lost: 0,
                last_error: None,
                flush_wanted: false,
                stopped: None,
            }),
            wake: Condvar::new(),
            batch_done: Condvar::new(),
        });
        let thread = {
            let inner = inner.clone();
            std::thread::Builder::new()
                .name(format!("clawcage-{name}"))
                .spawn(move || run(&inner, linger, max_batch, write))
        };
        let thread = match thread {
            Ok(thread) => Some(thread),
            Err(e) => {
                inner.lock().stopped = Some(format!("cannot start its thread: {e}"));
                None
            }
        };
        Self {
            name,
            max_batch,
            inner,
            thread: Mutex::new(thread),
        }
    }

    /// Queues `item`; refused once the writer stopped.
    pub fn push(&self, item: T) -> Result<(), BatchError> {
        self.push_with(|items| {
            items.push(item);
            1
        })
    }

    /// Queues what `add` appends (it returns how many), under the queue's
    /// lock, so related items stay together and in order.
    pub(crate) fn push_with(&self, add: impl FnOnce(&mut Vec<T>) -> u64) -> Result<(), BatchError> {
        let mut state = self.inner.lock();
        if let Some(reason) = &state.stopped {
            return Err(BatchError::Stopped {
                writer: self.name,
                reason: reason.clone(),
            });
        }
        let before = state.items.len();
        let added = add(&mut state.items);
        state.queued += added;
        // Only the first item of a batch wakes the writer (the rest wait
        // for it to linger and collect them), and the one that fills a
        // batch. Not every item past that: a busy writer finds a full
        // queue when it comes back, and each wake is a system call.
        let filled = before < self.max_batch && state.items.len() >= self.max_batch;
        if added > 0 && (before == 0 || filled) {
            self.inner.wake.notify_one();
        }
        Ok(())
    }

    /// Waits until everything queued before it is written; fails if the
    /// writer stopped or some of it was lost.
    pub fn flush(&self) -> Result<(), BatchError> {
        let mut state = self.inner.lock();
        let target = state.queued;
        if state.done < target {
            state.flush_wanted = true;
            self.inner.wake.notify_all();
            while state.done < target && state.stopped.is_none() {
                state = self
                    .inner
                    .batch_done
                    .wait(state)
                    .unwrap_or_else(|e| e.into_inner());
            }
        }
        if state.done < target
            && let Some(reason) = &state.stopped
        {
            return Err(BatchError::Stopped {
                writer: self.name,
                reason: reason.clone(),
            });
        }
        if state.lost > 0 {
            let lost = std::mem::take(&mut state.lost);
            return Err(BatchError::Lost {
                writer: self.name,
                lost,
                reason: state.last_error.clone().unwrap_or_default(),
            });
        }
        Ok(())
    }

    /// Why the writer stopped, if it did.
    pub fn stopped(&self) -> Option<String> {
        self.inner.lock().stopped.clone()
    }

    /// Writes what is queued, then stops the thread.
    pub fn close(&self) {
        {
            let mut state = self.inner.lock();
            state.stopped.get_or_insert_with(|| "closed".into());
        }
        self.inner.wake.notify_all();
        let thread = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(thread) = thread {
            let _ = thread.join();
        }
    }
}

impl<T: Send + 'static> Drop for BatchWriter<T> {
    fn drop(&mut self) {
        self.close();
    }
}

/// The writer thread.
fn run<T, W>(inner: &Inner<T>, linger: Duration, max_batch: usize, mut write: W)
where
    W: FnMut(&[T]) -> Result<(), WriteError>,
{
    /// Marks the writer stopped when the thread ends, by a panic too, so no
    /// flush waits on a writer that is gone.
    struct Stopper<'a, T>(&'a Inner<T>);
    impl<T> Drop for Stopper<'_, T> {
        fn drop(&mut self) {
            let mut state = self.0.lock();
            if std::thread::panicking() {
                state.stopped = Some("its thread panicked".into());
            }
            state.stopped.get_or_insert_with(|| "closed".into());
            drop(state);
            self.0.batch_done.notify_all();
        }
    }
    let _stopper = Stopper(inner);
    loop {
        let mut state = inner.lock();
        while state.items.is_empty() && state.stopped.is_none() {
            state = inner.wake.wait(state).unwrap_or_else(|e| e.into_inner());
        }
        if !state.flush_wanted && state.stopped.is_none() && state.items.len() < max_batch {
            state = inner
                .wake
                .wait_timeout(state, linger)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        let take = state.items.len().min(max_batch);
        let batch: Vec<T> = state.items.drain(..take).collect();
        state.flush_wanted = state.flush_wanted && !state.items.is_empty();
        let stopping = state.stopped.is_some() && state.items.is_empty();
        drop(state);
        let outcome = if batch.is_empty() {
            Ok(())
        } else {
            write(&batch)
        };
        let mut state = inner.lock();
        state.done += batch.len() as u64;
        match outcome {
            Ok(()) => {}
            Err(WriteError::Batch(reason)) => {
                state.lost += batch.len() as u64;
                state.last_error = Some(reason);
            }
            Err(WriteError::Fatal(reason)) => {
                // Nothing more is written: what is queued is lost with it.
                state.lost += batch.len() as u64 + state.items.len() as u64;
                state.done += state.items.len() as u64;
                state.items.clear();
                state.last_error = Some(reason.clone());
                state.stopped = Some(reason);
            }
        }
        let stop = stopping || state.stopped.is_some() && state.items.is_empty();
        drop(state);
        inner.batch_done.notify_all();
        if stop {
            return;
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn everything_pushed_before_a_flush_is_written_in_order() {
        let written = Arc::new(Mutex::new(Vec::new()));
        let writer = {
            let written = written.clone();
            BatchWriter::spawn(
                "test",
                Duration::from_millis(5),
                3,
                move |batch: &[u32]| {
                    written.lock().unwrap().extend_from_slice(batch);
                    Ok(())
                },
            )
        };
        for i in 0..10 {
            writer.push(i).unwrap();
        }
        writer.flush().unwrap();
        assert_eq!(*written.lock().unwrap(), (0..10).collect::<Vec<_>>());
    }

    #[test]
    fn a_writer_that_panicked_fails_flush_and_push_instead_of_hanging() {
        let writer = BatchWriter::spawn(
            "test",
            Duration::ZERO,
            8,
            |_: &[u32]| -> Result<(), WriteError> { panic!("the disk caught fire") },
        );
        writer.push(1).unwrap();
        let error = writer.flush().unwrap_err();
        assert_eq!(
            error,
            BatchError::Stopped {
                writer: "test",
                reason: "its thread panicked".into()
            }
        );
        assert!(writer.push(2).is_err());
        assert_eq!(writer.stopped().as_deref(), Some("its thread panicked"));
    }

    #[test]
    fn lost_batches_are_reported_and_a_fatal_error_stops_the_writer() {
        let calls = Arc::new(AtomicUsize::new(0));
        let writer = {
            let calls = calls.clone();
            BatchWriter::spawn("test", Duration::ZERO, 1, move |batch: &[u32]| {
                calls.fetch_add(1, Ordering::SeqCst);
                match batch[0] {
                    1 => Err(WriteError::Batch("disk full".into())),
                    2 => Err(WriteError::Fatal("chain head unreadable".into())),
                    _ => Ok(()),
                }
            })
        };
        writer.push(0).unwrap();
        writer.flush().unwrap();
        writer.push(1).unwrap();
        assert_eq!(
            writer.flush().unwrap_err(),
            BatchError::Lost {
                writer: "test",
                lost: 1,
                reason: "disk full".into()
            }
        );
        writer.push(3).unwrap();
        writer.flush().unwrap();
        writer.push(2).unwrap();
        assert!(matches!(writer.flush(), Err(BatchError::Lost { .. })));
        let refused = writer.push(4).unwrap_err();
        assert_eq!(
            refused,
            BatchError::Stopped {
                writer: "test",
                reason: "chain head unreadable".into()
            }
        );
        assert_eq!(calls.load(Ordering::SeqCst), 4);
    }
}
