//! The bounded queue between a producer that must never wait and one slow
//! consumer: between the hub and each sink (a viewer session, the recorder,
//! a restream pipeline), and between a restream pipeline and each of its
//! outputs (RTMP targets, HLS).
//!
//! The producer pushes without ever waiting. When the queue is full the
//! consumer is too slow: its queued items are dropped, the drop is counted,
//! and the queue skips ahead to the next video keyframe so the consumer
//! resumes with a picture it can decode. Nobody else is affected.
//!
//! The consumer learns of new items through a [`Wake`]: a viewer's shard
//! through its channel, a thread through a [`Doorbell`].

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use crate::media::{Frame, MediaKind};

/// Tells a consumer that its queue has something new (items or the end).
///
/// Called from the producer's thread or task, so it must not block.
pub trait Wake: Send + Sync {
    /// The queue went from empty to non-empty, or was closed.
    fn wake(&self);
}

/// A wake-up for a consumer thread: [`Wake::wake`] rings it, and the thread
/// waits for a ring (or a timeout) with [`Doorbell::wait`]. A ring is kept
/// until it is heard, so none is lost between a look at the queue and the
/// wait.
#[derive(Debug, Default)]
pub struct Doorbell {
    rung: Mutex<bool>,
    cv: Condvar,
}

impl Doorbell {
    /// A bell that has not rung.
    pub fn new() -> Arc<Doorbell> {
        Arc::new(Doorbell::default())
    }

    /// Waits until the bell rings or `timeout` passes; true if it rang.
    pub fn wait(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut rung = self.rung.lock();
        while !*rung {
            if self.cv.wait_until(&mut rung, deadline).timed_out() {
                break;
            }
        }
        std::mem::take(&mut *rung)
    }
}

impl Wake for Arc<Doorbell> {
    fn wake(&self) {
        *self.rung.lock() = true;
        self.cv.notify_all();
    }
}

/// What a queue needs to know of an item to start consumers at keyframes.
pub trait Keyed {
    /// A video item (audio never needs a keyframe of its own).
    fn is_video(&self) -> bool;
    /// A video item a decoder can start at.
    fn is_keyframe(&self) -> bool;
}

impl Keyed for Frame {
    fn is_video(&self) -> bool {
        self.kind() == MediaKind::Video
    }

    fn is_keyframe(&self) -> bool {
        self.keyframe
    }
}

/// What happened to a pushed item.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pushed {
    /// Queued for the consumer.
    Queued,
    /// Dropped on purpose: the consumer waits for a video keyframe.
    Skipped,
    /// The queue was full: everything queued was dropped and the consumer now
    /// waits for a keyframe (the caller should ask the publisher for one).
    Overflow,
    /// The consumer is gone (or takes nothing now).
    Closed,
}

/// What [`KeyframeQueue::pop`] found.
#[derive(Debug)]
pub enum Popped<T> {
    /// The oldest item.
    Item(Arc<T>),
    /// Nothing queued now.
    Empty,
    /// Nothing queued, and nothing will come: the queue is closed.
    Closed,
}

struct Inner<T> {
    items: VecDeque<Arc<T>>,
    waiting_for_keyframe: bool,
    accepting: bool,
    closed: bool,
}

/// A bounded, drop-to-keyframe queue for one consumer.
pub struct KeyframeQueue<T> {
    inner: Mutex<Inner<T>>,
    capacity: usize,
    /// Audio waits for the first keyframe too (an output that must begin
    /// with a picture); else audio always passes.
    hold_audio: bool,
    waker: Box<dyn Wake>,
    dropped: AtomicU64,
    skipped: AtomicU64,
    delivered: AtomicU64,
}

/// The queue of a hub sink: frames.
pub type SinkQueue = KeyframeQueue<Frame>;

impl<T> std::fmt::Debug for KeyframeQueue<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyframeQueue")
            .field("capacity", &self.capacity)
            .field("dropped", &self.dropped.load(Ordering::Relaxed))
            .finish()
    }
}

impl<T: Keyed> KeyframeQueue<T> {
    /// A queue holding at most `capacity` items that starts at a video
    /// keyframe (audio passes at once).
    pub fn new(capacity: usize, waker: Box<dyn Wake>) -> KeyframeQueue<T> {
        KeyframeQueue {
            inner: Mutex::new(Inner {
                items: VecDeque::with_capacity(capacity.min(64)),
                waiting_for_keyframe: true,
                accepting: true,
                closed: false,
            }),
            capacity: capacity.max(1),
            hold_audio: false,
            waker,
            dropped: AtomicU64::new(0),
            skipped: AtomicU64::new(0),
            delivered: AtomicU64::new(0),
        }
    }

    /// With `hold`, audio also waits for the first video keyframe (and is
    /// dropped with the video on overflow), for consumers whose output must
    /// begin with a picture.
    pub fn holding_audio(mut self, hold: bool) -> KeyframeQueue<T> {
        self.hold_audio = hold;
        self
    }

    /// Offers an item; never blocks beyond a short lock.
    pub fn push(&self, item: &Arc<T>) -> Pushed {
        let mut inner = self.inner.lock();
        if inner.closed || !inner.accepting {
            return Pushed::Closed;
        }
        let video = item.is_video();
        let starts = video && item.is_keyframe();
        if inner.waiting_for_keyframe && (video || self.hold_audio) {
            if !starts {
                self.skipped.fetch_add(1, Ordering::Relaxed);
                return Pushed::Skipped;
            }
            inner.waiting_for_keyframe = false;
        }
        if inner.items.len() >= self.capacity {
            let n = inner.items.len() as u64;
            inner.items.clear();
            inner.waiting_for_keyframe = true;
            self.dropped.fetch_add(n, Ordering::Relaxed);
            if !starts && (video || self.hold_audio) {
                self.dropped.fetch_add(1, Ordering::Relaxed);
                return Pushed::Overflow;
            }
            if starts {
                inner.waiting_for_keyframe = false;
            }
            inner.items.push_back(item.clone());
            drop(inner);
            self.waker.wake();
            return Pushed::Overflow;
        }
        let was_empty = inner.items.is_empty();
        inner.items.push_back(item.clone());
        drop(inner);
        if was_empty {
            self.waker.wake();
        }
        Pushed::Queued
    }

    /// Queues items from a cached group of pictures (first one a keyframe)
    /// for a consumer that should start at once. Only a whole group fits (a
    /// tail without its keyframe would not decode); false when it does not,
    /// and the consumer waits for the next keyframe instead.
    pub fn prefill(&self, items: &[Arc<T>]) -> bool {
        let mut inner = self.inner.lock();
        if inner.closed || items.is_empty() || items.len() + inner.items.len() > self.capacity {
            return false;
        }
        inner.items.extend(items.iter().cloned());
        inner.waiting_for_keyframe = false;
        drop(inner);
        self.waker.wake();
        true
    }

    /// Moves every queued item into `out`; returns false once the queue is closed.
    pub fn drain(&self, out: &mut Vec<Arc<T>>) -> bool {
        let mut inner = self.inner.lock();
        let n = inner.items.len();
        out.extend(inner.items.drain(..));
        self.delivered.fetch_add(n as u64, Ordering::Relaxed);
        !inner.closed
    }

    /// The oldest queued item, without waiting.
    pub fn pop(&self) -> Popped<T> {
        let mut inner = self.inner.lock();
        match inner.items.pop_front() {
            Some(item) => {
                self.delivered.fetch_add(1, Ordering::Relaxed);
                Popped::Item(item)
            }
            None if inner.closed => Popped::Closed,
            None => Popped::Empty,
        }
    }

    /// Stops taking items (`false`: what is queued is dropped, pushes are
    /// refused) or takes them again (`true`: from the next keyframe), e.g.
    /// while an output reconnects.
    pub fn set_accepting(&self, on: bool) {
        let mut inner = self.inner.lock();
        inner.accepting = on;
        inner.items.clear();
        inner.waiting_for_keyframe = true;
    }

    /// Ends the queue: no more items are accepted and the consumer is woken.
    pub fn close(&self) {
        let mut inner = self.inner.lock();
        if inner.closed {
            return;
        }
        inner.closed = true;
        drop(inner);
        self.waker.wake();
    }

    /// Whether [`KeyframeQueue::close`] was called.
    pub fn is_closed(&self) -> bool {
        self.inner.lock().closed
    }

    /// Items dropped because this consumer fell behind (queue overflow).
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Items passed over while waiting for a keyframe (joining, or after an
    /// overflow): expected, not a sign of trouble.
    pub fn skipped(&self) -> u64 {
        self.skipped.load(Ordering::Relaxed)
    }

    /// Items handed to the consumer so far.
    pub fn delivered(&self) -> u64 {
        self.delivered.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::frame::{Codec, CodecParams};
    use std::sync::atomic::AtomicUsize;

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
            layer: 0,
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
    fn held_audio_waits_for_the_first_picture_and_goes_with_an_overflow() {
        let q = SinkQueue::new(2, Box::new(CountWakes(Arc::default()))).holding_audio(true);
        assert_eq!(q.push(&frame(Codec::Opus, true, 0)), Pushed::Skipped);
        assert_eq!(q.push(&frame(Codec::Vp8, true, 1)), Pushed::Queued);
        assert_eq!(q.push(&frame(Codec::Opus, true, 2)), Pushed::Queued);
        assert_eq!(q.push(&frame(Codec::Opus, true, 3)), Pushed::Overflow);
        assert_eq!(q.push(&frame(Codec::Opus, true, 4)), Pushed::Skipped);
        assert_eq!(q.push(&frame(Codec::Vp8, true, 5)), Pushed::Queued);
        assert!(matches!(q.pop(), Popped::Item(f) if f.rtp_time == 5));
        assert!(matches!(q.pop(), Popped::Empty));
        assert_eq!(q.dropped(), 3);
        q.set_accepting(false);
        assert_eq!(q.push(&frame(Codec::Vp8, true, 6)), Pushed::Closed);
        q.set_accepting(true);
        assert_eq!(
            q.push(&frame(Codec::Vp8, false, 7)),
            Pushed::Skipped,
            "from a keyframe again"
        );
        q.close();
        assert!(matches!(q.pop(), Popped::Closed));
    }

    #[test]
    fn a_doorbell_keeps_a_ring_until_it_is_heard() {
        let bell = Doorbell::new();
        assert!(!bell.wait(Duration::from_millis(1)));
        bell.wake();
        assert!(bell.wait(Duration::from_secs(5)), "rung before the wait");
        assert!(!bell.wait(Duration::from_millis(1)), "heard once");
        let ringer = bell.clone();
        let t = std::thread::spawn(move || ringer.wake());
        assert!(bell.wait(Duration::from_secs(5)));
        t.join().unwrap();
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
