//! The handle of the OS thread behind a restream output (an RTMP target or an
//! HLS output): stored once started, polled for its end, joined at stop.

use std::sync::Mutex;
use std::thread::JoinHandle;

/// Holds the join handle of an output's thread.
#[derive(Debug, Default)]
pub struct Worker {
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Worker {
    /// Stores the thread running the output.
    pub fn set(&self, h: JoinHandle<()>) {
        *self.thread.lock().unwrap_or_else(|p| p.into_inner()) = Some(h);
    }

    /// Whether the thread has ended (or never started).
    pub fn finished(&self) -> bool {
        self.thread
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .is_none_or(|h| h.is_finished())
    }

    /// Joins the thread (blocks until the output has stopped).
    pub fn join(&self) {
        let h = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(h) = h {
            let _ = h.join();
        }
    }
}
