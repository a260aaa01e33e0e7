//! One sink's bounded queue between the hub and a consumer (a viewer session,
//! later the recorder and restream targets).
//!
//! The hub pushes without ever waiting. When the queue is full the consumer
//! is too slow: its queued frames are dropped, the drop is counted, and the
//! queue skips ahead to the next video keyframe so the consumer resumes with a
//! picture it can decode. Nobody else is affected.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;

use super::frame::{Frame, MediaKind};

/// Tells a consumer that its queue has something new (frames or the end).
///
/// Called from the publisher's worker, so it must not block.
pub trait Wake: Send + Sync {
    /// The queue went from empty to non-empty, or was closed.
    fn wake(&self);
}

/// What happened to a pushed frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pushed {
    /// Queued for the consumer.
    Queued,
    /// Dropped on purpose: the consumer waits for a video keyframe.
    Skipped,
    /// The queue was full: everything queued was dropped and the consumer now
    /// waits for a keyframe (the caller should ask the publisher for one).
    Overflow,
    /// The consumer is gone.
    Closed,
}

struct Inner {
    frames: VecDeque<Arc<Frame>>,
    waiting_for_keyframe: bool,
    closed: bool,
}

/// A bounded, drop-to-keyframe frame queue for one consumer.
pub struct SinkQueue {
    inner: Mutex<Inner>,
    capacity: usize,
    waker: Box<dyn Wake>,
    dropped: AtomicU64,
    skipped: AtomicU64,
    delivered: AtomicU64,
}

impl std::fmt::Debug for SinkQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SinkQueue")
            .field("capacity", &self.capacity)
            .field("dropped", &self.dropped())
            .finish()
    }
}

impl SinkQueue {
    /// A queue holding at most `capacity` frames that starts at a video keyframe.
    pub fn new(capacity: usize, waker: Box<dyn Wake>) -> SinkQueue {
        SinkQueue {
            inner: Mutex::new(Inner {
                frames: VecDeque::with_capacity(capacity.min(64)),
                waiting_for_keyframe: true,
                closed: false,
            }),
            capacity: capacity.max(1),
            waker,
            dropped: AtomicU64::new(0),
            skipped: AtomicU64::new(0),
            delivered: AtomicU64::new(0),
        }
    }

    /// Offers a frame; never blocks beyond a short lock.
    pub fn push(&self, frame: &Arc<Frame>) -> Pushed {
        let mut inner = self.inner.lock();
        if inner.closed {
            return Pushed::Closed;
        }
        let video = frame.kind() == MediaKind::Video;
        if video && inner.waiting_for_keyframe {
            if !frame.keyframe {
                self.skipped.fetch_add(1, Ordering::Relaxed);
                return Pushed::Skipped;
            }
            inner.waiting_for_keyframe = false;
        }
        if inner.frames.len() >= self.capacity {
            let n = inner.frames.len() as u64;
            inner.frames.clear();
            inner.waiting_for_keyframe = true;
            self.dropped.fetch_add(n, Ordering::Relaxed);
            if video && !frame.keyframe {
                self.dropped.fetch_add(1, Ordering::Relaxed);
                return Pushed::Overflow;
            }
            if video {
                inner.waiting_for_keyframe = false;
            }
            inner.frames.push_back(frame.clone());
            drop(inner);
            self.waker.wake();
            return Pushed::Overflow;
        }
        let was_empty = inner.frames.is_empty();
        inner.frames.push_back(frame.clone());
        drop(inner);
        if was_empty {
            self.waker.wake();
        }
        Pushed::Queued
    }

    /// Queues frames from a cached group of pictures (first one a keyframe)
    /// for a consumer that should start at once. Only a whole group fits (a
    /// tail without its keyframe would not decode); false when it does not,
    /// and the consumer waits for the next keyframe instead.
    pub fn prefill(&self, frames: &[Arc<Frame>]) -> bool {
        let mut inner = self.inner.lock();
        if inner.closed || frames.is_empty() || frames.len() + inner.frames.len() > self.capacity {
            return false;
        }
        inner.frames.extend(frames.iter().cloned());
        inner.waiting_for_keyframe = false;
        drop(inner);
        self.waker.wake();
        true
    }

    /// Moves every queued frame into `out`; returns false once the queue is closed.
    pub fn drain(&self, out: &mut Vec<Arc<Frame>>) -> bool {
        let mut inner = self.inner.lock();
        let n = inner.frames.len();
        out.extend(inner.frames.drain(..));
        self.delivered.fetch_add(n as u64, Ordering::Relaxed);
        !inner.closed
    }

    /// Ends the queue: no more frames are accepted and the consumer is woken.
    pub fn close(&self) {
        let mut inner = self.inner.lock();
        if inner.closed {
            return;
        }
        inner.closed = true;
        drop(inner);
        self.waker.wake();
    }

    /// Whether [`SinkQueue::close`] was called.
    pub fn is_closed(&self) -> bool {
        self.inner.lock().closed
    }

    /// Frames dropped because this consumer fell behind (queue overflow).
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Video frames passed over while waiting for a keyframe (joining, or
    /// after an overflow): expected, not a sign of trouble.
    pub fn skipped(&self) -> u64 {
        self.skipped.load(Ordering::Relaxed)
    }

    /// Frames handed to the consumer so far.
    pub fn delivered(&self) -> u64 {
        self.delivered.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stream::frame::{Codec, CodecParams};
    use std::sync::atomic::AtomicUsize;
    use std::time::Instant;

    struct CountWakes(Arc<AtomicUsize>);
    impl Wake for CountWakes {
        fn wake(&self) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn frame(codec: Codec, keyframe: bool, t: u64) -> Arc<Frame> {
        Arc::new(Frame {
            params: CodecParams::new(codec, 90_000),
            keyframe,
            rtp_time: t,
            arrival: Instant::now(),
            sender_clock: None,
            after_loss: false,
            data: Arc::from(vec![t as u8]),
            rtp_payloads: Vec::new(),
        })
    }

    #[test]
    fn starts_at_keyframe_and_passes_audio() {
        let wakes = Arc::new(AtomicUsize::new(0));
        let q = SinkQueue::new(8, Box::new(CountWakes(wakes.clone())));
        assert_eq!(q.push(&frame(Codec::Vp8, false, 1)), Pushed::Skipped);
        assert_eq!(q.push(&frame(Codec::Opus, true, 2)), Pushed::Queued);
        assert_eq!(q.push(&frame(Codec::Vp8, true, 3)), Pushed::Queued);
        assert_eq!(q.push(&frame(Codec::Vp8, false, 4)), Pushed::Queued);
        let mut out = vec![];
        assert!(q.drain(&mut out));
        let times: Vec<u64> = out.iter().map(|f| f.rtp_time).collect();
        assert_eq!(times, vec![2, 3, 4]);
        assert_eq!(
            wakes.load(Ordering::Relaxed),
            1,
            "one wake per empty→non-empty"
        );
        assert_eq!((q.dropped(), q.skipped()), (0, 1));
    }

    #[test]
    fn prefill_takes_a_whole_group_or_nothing() {
        let gop: Vec<Arc<Frame>> = (0..6).map(|t| frame(Codec::Vp8, t == 0, t)).collect();
        // Too long for the queue: nothing, so the consumer waits for a keyframe
        // instead of starting on frames it cannot decode.
        let small = SinkQueue::new(4, Box::new(CountWakes(Arc::default())));
        assert!(!small.prefill(&gop));
        assert_eq!(small.push(&frame(Codec::Vp8, false, 6)), Pushed::Skipped);
        // Fits: the group, keyframe first, then live frames after it.
        let big = SinkQueue::new(16, Box::new(CountWakes(Arc::default())));
        assert!(big.prefill(&gop));
        assert_eq!(big.push(&frame(Codec::Vp8, false, 6)), Pushed::Queued);
        let mut out = vec![];
        big.drain(&mut out);
        let times: Vec<u64> = out.iter().map(|f| f.rtp_time).collect();
        assert_eq!(times, vec![0, 1, 2, 3, 4, 5, 6]);
        assert!(out[0].keyframe);
    }

    #[test]
    fn overflow_skips_to_next_keyframe() {
        let q = SinkQueue::new(4, Box::new(CountWakes(Arc::default())));
        q.push(&frame(Codec::Vp8, true, 0));
        for t in 1..4 {
            assert_eq!(q.push(&frame(Codec::Vp8, false, t)), Pushed::Queued);
        }
        assert_eq!(q.push(&frame(Codec::Vp8, false, 4)), Pushed::Overflow);
        assert_eq!(q.push(&frame(Codec::Vp8, false, 5)), Pushed::Skipped);
        assert_eq!(q.push(&frame(Codec::Vp8, true, 6)), Pushed::Queued);
        let mut out = vec![];
        q.drain(&mut out);
        assert_eq!(out.len(), 1);
        assert!(out[0].keyframe);
        assert_eq!((q.dropped(), q.skipped()), (5, 1));
    }

    #[test]
    fn close_wakes_and_refuses() {
        let wakes = Arc::new(AtomicUsize::new(0));
        let q = SinkQueue::new(4, Box::new(CountWakes(wakes.clone())));
        q.close();
        assert_eq!(wakes.load(Ordering::Relaxed), 1);
        assert_eq!(q.push(&frame(Codec::Opus, true, 0)), Pushed::Closed);
        assert!(!q.drain(&mut vec![]));
    }
}
