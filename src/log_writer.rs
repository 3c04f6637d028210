//! Log lines to stderr, batched per runtime worker. A worker keeps its lines until it is about
//! to go idle (the runtime's park hook, [`before_park`]) or holds [`WRITE_AT`] bytes of them,
//! then writes them with one `write`; every other thread writes each line at once. Under load
//! that is one system call, and one take of stderr's lock, per few dozen requests instead of one
//! per request, and the two workers no longer queue on that lock; a server with nothing to do
//! holds no line back. A killed process (SIGKILL) loses what its workers held, at most
//! [`WRITE_AT`] bytes each; a stopping one writes them first ([`at_thread_stop`]).

use std::cell::RefCell;
use std::io::{self, Write};

/// Bytes of lines a worker keeps before writing them: about fifty request lines.
pub const WRITE_AT: usize = 16 * 1024;

thread_local! {
    /// This thread's held lines; `None` on threads that write at once.
    static HELD: RefCell<Option<Vec<u8>>> = const { RefCell::new(None) };
}

/// The log layer's writer: batched on runtime workers, direct elsewhere.
#[derive(Debug, Clone, Copy, Default)]
pub struct BatchedStderr;

impl tracing_subscriber::fmt::MakeWriter<'_> for BatchedStderr {
    type Writer = BatchedStderr;

    fn make_writer(&self) -> Self::Writer {
        BatchedStderr
    }
}

impl Write for BatchedStderr {
    fn write(&mut self, line: &[u8]) -> io::Result<usize> {
        self.write_all(line)?;
        Ok(line.len())
    }

    /// The log layer hands each line whole to one `write_all`.
    fn write_all(&mut self, line: &[u8]) -> io::Result<()> {
        let held = HELD
            .try_with(|held| -> io::Result<bool> {
                let Ok(mut held) = held.try_borrow_mut() else {
                    return Ok(false);
                };
                let Some(lines) = held.as_mut() else {
                    return Ok(false);
                };
                lines.extend_from_slice(line);
                if lines.len() >= WRITE_AT {
                    write_out(lines)?;
                }
                Ok(true)
            })
            .unwrap_or(Ok(false))?;
        if held {
            return Ok(());
        }
        io::stderr().write_all(line)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The runtime's park hook: writes what this worker holds before it goes idle. Only workers
/// park, so the first call also makes this thread one that holds its lines.
pub fn before_park() {
    let _ = HELD.try_with(|held| {
        if let Ok(mut held) = held.try_borrow_mut() {
            match held.as_mut() {
                Some(lines) => {
                    let _ = write_out(lines);
                }
                None => *held = Some(Vec::with_capacity(WRITE_AT + 1024)),
            }
        }
    });
}

/// The runtime's thread-stop hook: writes what this thread holds, and writes at once from here on.
pub fn at_thread_stop() {
    let _ = HELD.try_with(|held| {
        if let Ok(mut held) = held.try_borrow_mut()
            && let Some(mut lines) = held.take()
        {
            let _ = write_out(&mut lines);
        }
    });
}

fn write_out(lines: &mut Vec<u8>) -> io::Result<()> {
    if lines.is_empty() {
        return Ok(());
    }
    let written = io::stderr().write_all(lines);
    lines.clear();
    written
}
