//! What a config reload (SIGHUP) may change in a running gateway: the dotted
//! keys that differ between two configs, which of them apply live, and the
//! config in force once the live ones are taken.
//!
//! Live: `auth.*` (tokens, JWT keys, rules, callback), the webhooks
//! (`events.webhooks`, `events.webhook_*`), `record.*` and `restream.*`
//! except the few below. Everything else (listen addresses, the UDP port,
//! TLS files, shards, limits, …) needs a restart.

use super::Config;

/// Keys under a live section that still need a restart.
const RESTART_ONLY: [&str; 7] = [
    "record.enabled",
    "record.dir",
    "record.export_max_concurrent",
    "record.export_role",
    "restream.enabled",
    "restream.allowed_hosts",
    "restream.hls_dir",
];

/// Whether the dotted key `key` (as [`changed_keys`] names it) can change
/// without a restart.
pub fn is_live(key: &str) -> bool {
    if RESTART_ONLY
        .iter()
        .any(|k| key == *k || key.starts_with(&format!("{k}.")))
    {
        return false;
    }
    key == "auth"
        || key.starts_with("auth.")
        || key == "events.webhooks"
        || key.starts_with("events.webhook_")
        || key.starts_with("record.")
        || key.starts_with("restream.")
}

/// The dotted keys whose values differ between `old` and `new` (a list is
/// one key: `auth.rules`, `events.webhooks`), sorted. Names only: values
/// may be secrets.
pub fn changed_keys(old: &Config, new: &Config) -> Vec<String> {
    let (Ok(a), Ok(b)) = (serde_json::to_value(old), serde_json::to_value(new)) else {
        return vec!["<config>".into()];
    };
    let mut out = Vec::new();
    diff("", &a, &b, &mut out);
    out.sort();
    out
}

fn diff(path: &str, a: &serde_json::Value, b: &serde_json::Value, out: &mut Vec<String>) {
    use serde_json::Value::Object;
    match (a, b) {
        (Object(x), Object(y)) => {
            let mut keys: Vec<&String> = x.keys().chain(y.keys()).collect();
            keys.sort();
            keys.dedup();
            for k in keys {
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                let null = serde_json::Value::Null;
                diff(
                    &p,
                    x.get(k).unwrap_or(&null),
                    y.get(k).unwrap_or(&null),
                    out,
                );
            }
        }
        _ if a != b => out.push(path.to_string()),
        _ => {}
    }
}

/// The config in force after a reload from `old` to `new`: `new`'s live
/// keys, `old`'s everything else (what needs a restart keeps running as it is).
pub fn take_live(old: &Config, new: &Config) -> Config {
    let mut c = old.clone();
    c.auth = new.auth.clone();
    c.events.webhooks = new.events.webhooks.clone();
    c.events.webhook_timeout_secs = new.events.webhook_timeout_secs;
    c.events.webhook_max_attempts = new.events.webhook_max_attempts;
    c.events.webhook_backoff_min_secs = new.events.webhook_backoff_min_secs;
    c.events.webhook_backoff_max_secs = new.events.webhook_backoff_max_secs;
    c.record = super::RecordConfig {
        enabled: old.record.enabled,
        dir: old.record.dir.clone(),
        ..new.record.clone()
    };
    c.restream = super::RestreamConfig {
        enabled: old.restream.enabled,
        allowed_hosts: old.restream.allowed_hosts.clone(),
        hls_dir: old.restream.hls_dir.clone(),
        ..new.restream.clone()
    };
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    fn changed() -> (Config, Config) {
        let old = Config::default();
        let mut new = Config::from_toml(
            "[http]\nlisten = \"127.0.0.1:9999\"\n\
             [auth]\npublish_token = \"new-token\"\n\
             [record]\nstreams = [\"studio-*\"]\ndir = \"/elsewhere\"\n\
             [restream]\nhls_streams = [\"x\"]\nenabled = false\n\
             [[events.webhooks]]\nurl = \"http://127.0.0.1:1/h\"\n",
        )
        .unwrap();
        new.rtc.workers = 3;
        (old, new)
    }

    #[test]
    fn changed_keys_are_named_without_values() {
        let (old, new) = changed();
        let keys = changed_keys(&old, &new);
        assert_eq!(
            keys,
            [
                "auth.publish_token",
                "events.webhooks",
                "http.listen",
                "record.dir",
                "record.streams",
                "restream.enabled",
                "restream.hls_streams",
                "rtc.workers",
            ]
        );
        assert!(keys.iter().all(|k| !k.contains("new-token")));
        assert!(changed_keys(&old, &old.clone()).is_empty());
    }

    #[test]
    fn only_live_keys_are_taken_and_the_rest_waits_for_a_restart() {
        let (old, new) = changed();
        let merged = take_live(&old, &new);
        let applied = changed_keys(&old, &merged);
        let waiting = changed_keys(&merged, &new);
        assert!(applied.iter().all(|k| is_live(k)), "{applied:?}");
        assert!(waiting.iter().all(|k| !is_live(k)), "{waiting:?}");
        assert_eq!(
            applied,
            [
                "auth.publish_token",
                "events.webhooks",
                "record.streams",
                "restream.hls_streams"
            ]
        );
        assert_eq!(
            waiting,
            [
                "http.listen",
                "record.dir",
                "restream.enabled",
                "rtc.workers"
            ]
        );
    }
}
