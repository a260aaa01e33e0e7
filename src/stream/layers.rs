//! Simulcast: the video layers of one stream (the same picture encoded at
//! several sizes, RFC 8853), what each sink wants of them, and which layer
//! that is right now.
//!
//! Layers are ranked by what they measure (the picture size of their last
//! keyframe, then their bitrate), never by rid name or SDP order: browsers
//! name them freely, and a layer the browser shrinks for lack of CPU must
//! rank where its picture is. A layer that sent nothing for
//! [`PAUSED_AFTER`] is paused (browsers switch layers off for bandwidth or
//! CPU); sinks that were on it move to the nearest live one.
//!
//! Every layer's timestamps are on one timeline (the publisher's session
//! rebases them, see `rtc/simulcast.rs`), so a sink can switch layers at a
//! keyframe and its consumer sees one continuous stream.

use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;

use super::meter::Meter;

/// A layer's index within its stream: the position of its rid in the
/// publisher's offer (0 for a stream without simulcast).
pub type LayerId = u8;

/// Most layers a publisher may send (RFC 8853 allows more; browsers send three).
pub const MAX_LAYERS: usize = 3;

/// A layer that sent nothing this long is paused (str0m's own threshold).
pub const PAUSED_AFTER: Duration = Duration::from_millis(1500);

/// How long after a stream's first video frame its top layer may still be
/// unknown: sinks of the top layer (the recording) wait until every layer
/// has shown its size, or this long, so they do not start on a smaller one
/// and switch a moment later.
pub const SETTLE_AFTER: Duration = Duration::from_secs(1);

/// Which layer a sink wants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Want {
    /// The largest live layer (recordings, restreams, viewers by default
    /// on streams without automatic selection).
    Top,
    /// The largest layer (the nearest live one while it is paused).
    High,
    /// The middle layer (of two, the smaller).
    Mid,
    /// The smallest layer.
    Low,
    /// One layer by index (the nearest live one while it is paused).
    Layer(LayerId),
}

impl Want {
    const TOP: u8 = 0x80;
    const HIGH: u8 = 0x81;
    const MID: u8 = 0x82;
    const LOW: u8 = 0x83;

    fn encode(self) -> u8 {
        match self {
            Want::Top => Want::TOP,
            Want::High => Want::HIGH,
            Want::Mid => Want::MID,
            Want::Low => Want::LOW,
            Want::Layer(id) => id.min(0x7f),
        }
    }

    fn decode(v: u8) -> Want {
        match v {
            Want::TOP => Want::Top,
            Want::HIGH => Want::High,
            Want::MID => Want::Mid,
            Want::LOW => Want::Low,
            id => Want::Layer(id),
        }
    }
}

/// One sink's layer choice, shared by the stream's fan-out (which switches
/// the sink at a keyframe of the wanted layer) and the sink's owner (which
/// may change what it wants, e.g. a viewer following its bandwidth).
#[derive(Debug)]
pub struct LayerChoice {
    want: AtomicU8,
    current: AtomicU8,
}

/// `current` when the sink is on no layer yet.
const NONE: u8 = 0xff;

impl LayerChoice {
    /// A choice of `want`, on no layer yet.
    pub fn new(want: Want) -> LayerChoice {
        LayerChoice {
            want: AtomicU8::new(want.encode()),
            current: AtomicU8::new(NONE),
        }
    }

    /// What the sink wants.
    pub fn want(&self) -> Want {
        Want::decode(self.want.load(Ordering::Relaxed))
    }

    /// Changes what the sink wants; the switch happens at the next keyframe
    /// of that layer (the stream asks the publisher for one).
    pub fn set_want(&self, want: Want) {
        self.want.store(want.encode(), Ordering::Relaxed);
    }

    /// The layer the sink receives now, once it received a keyframe.
    pub fn current(&self) -> Option<LayerId> {
        match self.current.load(Ordering::Relaxed) {
            NONE => None,
            id => Some(id),
        }
    }

    pub(super) fn set_current(&self, id: LayerId) {
        self.current.store(id, Ordering::Relaxed);
    }
}

/// What a stream knows of one layer.
#[derive(Debug)]
struct Slot {
    rid: String,
    size: Option<(u32, u32)>,
    meter: Meter,
    last_frame: Option<Instant>,
}

/// The layers of one stream, kept by its fan-out (under its lock).
#[derive(Debug)]
pub(super) struct LayerTable {
    slots: Vec<Slot>,
    /// Layers that sent at least one frame, smallest first.
    ranked: Vec<LayerId>,
    /// Bit `id` set: the layer is live (sent within [`PAUSED_AFTER`]).
    live: u8,
    /// When the first video frame arrived.
    first_frame: Option<Instant>,
}

impl LayerTable {
    /// The layers named `rids` (in the publisher's order); no rids: one
    /// unnamed layer, a stream without simulcast.
    pub fn new(rids: &[String], now: Instant) -> LayerTable {
        let names: Vec<String> = if rids.is_empty() {
            vec![String::new()]
        } else {
            rids.iter().take(MAX_LAYERS).cloned().collect()
        };
        LayerTable {
            slots: names
                .into_iter()
                .map(|rid| Slot {
                    rid,
                    size: None,
                    meter: Meter::new(now),
                    last_frame: None,
                })
                .collect(),
            ranked: Vec::new(),
            live: 0,
            first_frame: None,
        }
    }

    /// Whether the top layer is known: every layer has shown its picture
    /// size, or [`SETTLE_AFTER`] has passed since the first video frame.
    pub fn settled(&self, now: Instant) -> bool {
        self.slots.iter().all(|s| s.size.is_some())
            || self
                .first_frame
                .is_some_and(|t| now.saturating_duration_since(t) >= SETTLE_AFTER)
    }

    /// Whether the stream has several layers.
    pub fn is_simulcast(&self) -> bool {
        self.slots.len() > 1
    }

    /// Number of layers the publisher announced.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// The index of the layer named `rid`.
    pub fn by_rid(&self, rid: &str) -> Option<LayerId> {
        self.slots
            .iter()
            .position(|s| s.rid == rid)
            .map(|i| i as LayerId)
    }

    /// A video frame of `bytes` arrived on `layer` at `now`; `size` is its
    /// picture size when it is a keyframe whose size could be read. Layers
    /// that went quiet become paused.
    pub fn on_frame(
        &mut self,
        layer: LayerId,
        now: Instant,
        bytes: usize,
        size: Option<(u32, u32)>,
    ) {
        if usize::from(layer) >= self.slots.len() {
            return;
        }
        self.first_frame.get_or_insert(now);
        let slot = &mut self.slots[usize::from(layer)];
        slot.meter.add(now, bytes, 1);
        let first = slot.last_frame.is_none();
        slot.last_frame = Some(now);
        let resized = size.is_some() && size != slot.size;
        if size.is_some() {
            slot.size = size;
        }
        let mut live = 0u8;
        for (i, s) in self.slots.iter().enumerate() {
            if s.last_frame
                .is_some_and(|t| now.saturating_duration_since(t) <= PAUSED_AFTER)
            {
                live |= 1 << i;
            }
        }
        if first || resized || live != self.live {
            self.live = live;
            self.rerank(now);
        }
    }

    fn rerank(&mut self, now: Instant) {
        let mut ranked: Vec<LayerId> = (0..self.slots.len())
            .filter(|&i| self.slots[i].last_frame.is_some())
            .map(|i| i as LayerId)
            .collect();
        let key = |id: &LayerId| {
            let s = &self.slots[usize::from(*id)];
            let area = s.size.map_or(0, |(w, h)| u64::from(w) * u64::from(h));
            (area, s.meter.rates(now).0 as u64)
        };
        ranked.sort_by_key(key);
        self.ranked = ranked;
    }

    fn is_live(&self, id: LayerId) -> bool {
        self.live & (1 << id) != 0
    }

    /// The layer a sink wanting `want` should be on now: the wanted one if
    /// it is live, else the nearest live one (the smaller on a tie); `None`
    /// while no layer is live.
    pub fn resolve(&self, want: Want) -> Option<LayerId> {
        if !self.is_simulcast() {
            return self.is_live(0).then_some(0);
        }
        let n = self.ranked.len();
        if n == 0 {
            return None;
        }
        let position = match want {
            Want::Top | Want::High => n - 1,
            Want::Mid => (n - 1) / 2,
            Want::Low => 0,
            Want::Layer(id) => self.ranked.iter().position(|&r| r == id).unwrap_or(n - 1),
        };
        if matches!(want, Want::Top) {
            return self
                .ranked
                .iter()
                .rev()
                .copied()
                .find(|&id| self.is_live(id));
        }
        self.ranked
            .iter()
            .enumerate()
            .filter(|(_, id)| self.is_live(**id))
            .min_by_key(|(i, _)| (i.abs_diff(position), *i))
            .map(|(_, id)| *id)
    }

    /// The picture size of `layer`'s last keyframe.
    pub fn size(&self, layer: LayerId) -> Option<(u32, u32)> {
        self.slots.get(usize::from(layer)).and_then(|s| s.size)
    }

    /// What the API shows of each layer, smallest first (layers that never
    /// sent last).
    pub fn infos(&self, now: Instant) -> Vec<LayerInfo> {
        let mut order: Vec<LayerId> = self.ranked.clone();
        order.extend((0..self.slots.len() as LayerId).filter(|id| !self.ranked.contains(id)));
        order
            .into_iter()
            .map(|id| {
                let s = &self.slots[usize::from(id)];
                let (bps, fps) = s.meter.rates(now);
                LayerInfo {
                    id,
                    rid: s.rid.clone(),
                    width: s.size.map(|z| z.0),
                    height: s.size.map(|z| z.1),
                    bitrate_kbps: (bps / 100.0).round() / 10.0,
                    fps: (fps * 10.0).round() / 10.0,
                    active: self.is_live(id),
                }
            })
            .collect()
    }

    /// The live layers, smallest first, each with its bitrate over the last
    /// second (bits per second): what an automatic viewer chooses from, a
    /// few times a second, without building `LayerInfo`s.
    pub fn live_rates(&self, now: Instant) -> Vec<(LayerId, f64)> {
        self.ranked
            .iter()
            .copied()
            .filter(|&id| self.is_live(id))
            .map(|id| (id, self.slots[usize::from(id)].meter.rates(now).0))
            .collect()
    }

    /// The rid of `layer` (empty for a stream without simulcast).
    pub fn rid(&self, layer: LayerId) -> Option<&str> {
        self.slots.get(usize::from(layer)).map(|s| s.rid.as_str())
    }
}

/// One simulcast layer as `GET /api/streams` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct LayerInfo {
    /// Index of the layer (its rid's position in the publisher's offer).
    #[serde(skip)]
    pub id: LayerId,
    /// The publisher's name for the layer (`a=rid`).
    pub rid: String,
    /// Picture width of its last keyframe.
    pub width: Option<u32>,
    /// Picture height of its last keyframe.
    pub height: Option<u32>,
    /// Its bitrate over the last second.
    pub bitrate_kbps: f64,
    /// Its frames per second over the last second.
    pub fps: f64,
    /// False while the publisher has paused it (nothing for 1.5 s).
    pub active: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> (LayerTable, Instant) {
        let t0 = Instant::now();
        let rids = ["h", "m", "l"].map(String::from);
        (LayerTable::new(&rids, t0), t0)
    }

    #[test]
    fn wants_travel_through_one_byte() {
        for w in [
            Want::Top,
            Want::High,
            Want::Mid,
            Want::Low,
            Want::Layer(0),
            Want::Layer(2),
        ] {
            let c = LayerChoice::new(w);
            assert_eq!(c.want(), w);
        }
        let c = LayerChoice::new(Want::Top);
        assert_eq!(c.current(), None);
        c.set_current(1);
        assert_eq!(c.current(), Some(1));
    }

    #[test]
    fn layers_rank_by_picture_size_not_by_name_or_order() {
        let (mut t, t0) = table();
        // The offer says h, m, l; the pictures say otherwise.
        t.on_frame(0, t0, 100, Some((320, 180)));
        t.on_frame(1, t0, 100, Some((1280, 720)));
        t.on_frame(2, t0, 100, Some((640, 360)));
        assert_eq!(t.resolve(Want::Low), Some(0));
        assert_eq!(t.resolve(Want::Mid), Some(2));
        assert_eq!(t.resolve(Want::High), Some(1));
        assert_eq!(t.resolve(Want::Top), Some(1));
        assert_eq!(t.by_rid("l"), Some(2));
        let infos = t.infos(t0);
        let rids: Vec<&str> = infos.iter().map(|i| i.rid.as_str()).collect();
        assert_eq!(rids, ["h", "l", "m"], "smallest first");
    }

    #[test]
    fn a_paused_layer_gives_way_to_the_nearest_live_one() {
        let (mut t, t0) = table();
        t.on_frame(0, t0, 100, Some((320, 180)));
        t.on_frame(1, t0, 100, Some((640, 360)));
        t.on_frame(2, t0, 100, Some((1280, 720)));
        // Only the two small layers go on.
        let later = t0 + PAUSED_AFTER + Duration::from_millis(100);
        t.on_frame(0, later, 100, None);
        t.on_frame(1, later, 100, None);
        assert_eq!(t.resolve(Want::Top), Some(1));
        assert_eq!(t.resolve(Want::High), Some(1));
        assert_eq!(t.resolve(Want::Layer(2)), Some(1));
        assert_eq!(t.resolve(Want::Low), Some(0));
        assert!(!t.infos(later).iter().find(|i| i.id == 2).unwrap().active);
        // The top layer comes back.
        t.on_frame(2, later, 100, None);
        assert_eq!(t.resolve(Want::Top), Some(2));
    }

    #[test]
    fn the_top_layer_is_settled_once_every_layer_has_a_size_or_a_second_passed() {
        let (mut t, t0) = table();
        assert!(!t.settled(t0));
        t.on_frame(0, t0, 100, Some((640, 360)));
        t.on_frame(1, t0, 100, Some((320, 180)));
        assert!(!t.settled(t0), "layer 2 not seen yet");
        t.on_frame(2, t0, 100, Some((1280, 720)));
        assert!(t.settled(t0));
        let (mut t, t0) = table();
        t.on_frame(0, t0, 100, Some((640, 360)));
        assert!(t.settled(t0 + SETTLE_AFTER), "the others may never come");
    }

    #[test]
    fn with_two_layers_mid_is_the_smaller() {
        let (mut t, t0) = table();
        t.on_frame(0, t0, 100, Some((640, 360)));
        t.on_frame(2, t0, 100, Some((320, 180)));
        assert_eq!(t.resolve(Want::Mid), Some(2));
        assert_eq!(t.resolve(Want::High), Some(0));
    }

    #[test]
    fn a_single_layer_stream_has_layer_zero() {
        let t0 = Instant::now();
        let mut t = LayerTable::new(&[], t0);
        assert!(!t.is_simulcast());
        assert_eq!(t.resolve(Want::Low), None, "nothing sent yet");
        t.on_frame(0, t0, 100, Some((640, 480)));
        for w in [Want::Top, Want::Low, Want::Layer(2)] {
            assert_eq!(t.resolve(w), Some(0));
        }
    }
}
