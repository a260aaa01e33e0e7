//! The stream hub: live streams by name, each with one publisher and any
//! number of sinks, exchanging castgate's own [`Frame`](crate::media::Frame)s.
//!
//! Nothing here knows about WebRTC or HTTP; `rtc/` feeds frames in and
//! consumes them, and later `record/` and `restream/` consume them too.

pub mod hub;
pub mod keyframe;
pub mod layers;
pub mod live;
pub mod meter;
pub mod sink;
pub mod snapshot;

pub use hub::{Hub, PublishError, StreamObserver};
pub use keyframe::KeyframePacer;
pub use layers::{LayerChoice, LayerId, LayerInfo, Want};
pub use live::{
    LiveStream, PublisherControl, SinkKind, StreamCounters, StreamInfo, StreamPolicy, Subscription,
};
pub use sink::{Doorbell, Keyed, KeyframeQueue, Popped, Pushed, SinkQueue, Wake};
