//! What follows a stream to another node of a cluster: its API restream
//! targets, and whether it is being recorded (an operator may have started
//! that on request). The origin keeps both in Redis (through the cluster's
//! state, only while it holds the name) whenever they change and at every
//! heartbeat; they outlive the stream by `restream.resume_secs`, so a
//! publisher that reconnects to another node within that time gets its
//! pushes back there, with the same ids, and its recording goes on. An
//! operator who ends a stream ends its targets for good: the kept list is
//! emptied at once.
//!
//! The glue sits here because the cluster knows nothing of restreaming, nor
//! restreaming of the cluster; the WHIP handler takes the kept targets over
//! (`http::whip`).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{broadcast::error::RecvError, watch};
use tokio::task::JoinHandle;

use crate::cluster::Cluster;
use crate::events::Event;
use crate::names::StreamName;
use crate::record::Recorder;
use crate::restream::{Restreamer, SavedTarget};
use crate::stream::Hub;

const TARGETS: &str = SavedTarget::STATE_KIND;
const RECORDING: &str = crate::record::RECORDING_STATE_KIND;

/// Keeps every local stream's API targets in the cluster's state until `stop`.
pub fn start(
    cluster: Arc<Cluster>,
    hub: Arc<Hub>,
    restreamer: Arc<Restreamer>,
    recorder: Arc<Recorder>,
    stop: watch::Receiver<bool>,
) -> JoinHandle<()> {
    tokio::spawn(run(cluster, hub, restreamer, recorder, stop))
}

fn ttl(cluster: &Cluster, restreamer: &Restreamer) -> Duration {
    cluster.config().expiry() + Duration::from_secs_f64(restreamer.config().resume_secs.max(0.0))
}

async fn save(cluster: &Cluster, restreamer: &Restreamer, name: &StreamName) {
    let targets = restreamer.api_targets(name.as_str());
    let json = serde_json::to_string(&targets).unwrap_or_else(|_| "[]".into());
    cluster
        .save_state(name, TARGETS, &json, ttl(cluster, restreamer))
        .await;
}

/// Keeps whether the live stream `stream` is recorded (not once it ended:
/// its recording's end is the stream's, not an operator's stop).
async fn save_recording(
    cluster: &Cluster,
    restreamer: &Restreamer,
    recorder: &Recorder,
    stream: &crate::stream::LiveStream,
) {
    if stream.is_ended() {
        return;
    }
    let on = if recorder.status(stream.id()).is_some() {
        "on"
    } else {
        "off"
    };
    cluster
        .save_state(stream.name(), RECORDING, on, ttl(cluster, restreamer))
        .await;
}

async fn run(
    cluster: Arc<Cluster>,
    hub: Arc<Hub>,
    restreamer: Arc<Restreamer>,
    recorder: Arc<Recorder>,
    mut stop: watch::Receiver<bool>,
) {
    let mut events = hub.events().subscribe();
    let mut tick = tokio::time::interval(cluster.config().heartbeat());
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            _ = tick.tick() => {
                for s in hub.streams() {
                    if s.origin().is_none() && cluster.holds(s.name()) {
                        save(&cluster, &restreamer, s.name()).await;
                        save_recording(&cluster, &restreamer, &recorder, &s).await;
                    }
                }
            }
            e = events.recv() => match e {
                Ok(env) => match &env.event {
                    Event::RestreamState { stream, .. } => {
                        if let Ok(name) = StreamName::parse(stream)
                            && hub.get(&name).is_some_and(|s| s.origin().is_none())
                        {
                            save(&cluster, &restreamer, &name).await;
                        }
                    }
                    Event::RecordingStarted { stream, .. } | Event::RecordingFinalized { stream, .. } => {
                        if let Ok(name) = StreamName::parse(stream)
                            && let Some(s) = hub.get(&name).filter(|s| s.origin().is_none())
                        {
                            save_recording(&cluster, &restreamer, &recorder, &s).await;
                        }
                    }
                    Event::StreamEnded { stream, reason, .. } if reason == "ended_by_operator" => {
                        if let Ok(name) = StreamName::parse(stream) {
                            cluster
                                .save_state(&name, TARGETS, "[]", ttl(&cluster, &restreamer))
                                .await;
                        }
                    }
                    _ => {}
                },
                Err(RecvError::Lagged(_)) => {}
                Err(RecvError::Closed) => return,
            },
        }
    }
}
