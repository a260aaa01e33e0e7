//! The stream directory in Redis: one key per live stream name naming its
//! origin node. A publish claims the name atomically; the owner refreshes
//! the claim every heartbeat and releases it when the stream ends; refresh
//! and release are compare-and-set scripts, so only the current owner
//! touches a claim. Claims expire when their node stops beating.
//!
//! Keys (all under `castgate:`): `stream:{name}` (the claim, JSON, with a
//! TTL), `node:{id}` (a node record, JSON, with a TTL), `epoch` (a counter:
//! every new claim gets the next value). Starts and ends of streams are
//! published on the channel `castgate:streams`.

use redis::Script;
use redis::aio::ConnectionManager;
use serde::{Deserialize, Serialize};

/// The pub/sub channel of stream starts and ends.
pub const CHANNEL: &str = "castgate:streams";
/// Key prefix of the stream claims.
pub const STREAM_PREFIX: &str = "castgate:stream:";
/// Key prefix of the node records.
pub const NODE_PREFIX: &str = "castgate:node:";
const EPOCH_KEY: &str = "castgate:epoch";

/// The key of `name`'s claim.
pub fn stream_key(name: &str) -> String {
    format!("{STREAM_PREFIX}{name}")
}

/// The key of stream `name`'s state of one `kind` (what follows a stream
/// to its next origin, e.g. `targets`).
pub fn state_key(kind: &str, name: &str) -> String {
    format!("castgate:state:{kind}:{name}")
}

/// The key of node `id`'s record.
pub fn node_key(id: &str) -> String {
    format!("{NODE_PREFIX}{id}")
}

/// Who carries a stream: the claim stored under `stream:{name}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Claim {
    /// The origin node's id.
    pub node: String,
    /// The origin process's incarnation (random per start): a restarted
    /// node does not mistake its old claims for live ones.
    pub incarnation: String,
    /// Cluster-wide counter, higher for every new claim: the newer of two
    /// claims of a name wins.
    pub epoch: u64,
    /// The origin node's base URL.
    pub url: String,
    /// When the claim was made (Unix milliseconds).
    pub since_ms: u64,
}

/// A message on [`CHANNEL`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Announcement {
    /// `started` or `ended`.
    pub event: String,
    /// The stream name.
    pub name: String,
    /// The node that carries (or carried) it.
    pub node: String,
    /// That node's incarnation.
    pub incarnation: String,
    /// The claim's epoch.
    pub epoch: u64,
    /// The node's base URL.
    pub url: String,
}

/// The answer to a claim.
#[derive(Debug, Clone, PartialEq)]
pub enum ClaimOutcome {
    /// The name is this node's now (or already was): the stored claim, as
    /// stored (refresh and release compare it byte for byte).
    Held {
        /// The claim.
        claim: Claim,
        /// The exact JSON stored in Redis.
        stored: String,
    },
    /// Another node carries the name.
    Taken(Claim),
}

/// The answer to a refresh.
#[derive(Debug, Clone, PartialEq)]
pub enum RefreshOutcome {
    /// Still ours; the expiry moved on.
    Refreshed,
    /// The claim had expired (Redis was out of reach, or this process was
    /// stopped) and nobody took the name: it is ours again.
    Reasserted,
    /// Another claim holds the name now: this node has lost it.
    Lost(Option<Claim>),
}

const CLAIM: &str = r#"
local cur = redis.call('GET', KEYS[1])
if cur then
  local ok, c = pcall(cjson.decode, cur)
  if ok and type(c) == 'table' and c.node == ARGV[1] then
    if c.incarnation == ARGV[2] then
      redis.call('PEXPIRE', KEYS[1], ARGV[5])
      return {1, cur}
    end
  elseif ARGV[6] ~= '1' then
    return {0, cur}
  end
end
local epoch = redis.call('INCR', KEYS[2])
local v = cjson.encode({node=ARGV[1], incarnation=ARGV[2], epoch=epoch, url=ARGV[3], since_ms=tonumber(ARGV[4])})
redis.call('SET', KEYS[1], v, 'PX', ARGV[5])
redis.call('PUBLISH', ARGV[7], cjson.encode({event='started', name=ARGV[8], node=ARGV[1], incarnation=ARGV[2], epoch=epoch, url=ARGV[3]}))
return {2, v}
"#;

const REFRESH: &str = r#"
local cur = redis.call('GET', KEYS[1])
if cur == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return {1, ''}
end
if not cur then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  redis.call('PUBLISH', ARGV[3], ARGV[4])
  return {3, ''}
end
return {0, cur}
"#;

const SAVE_STATE: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[3])
  return 1
end
return 0
"#;

const RELEASE: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  redis.call('PUBLISH', ARGV[2], ARGV[3])
  return 1
end
return 0
"#;

/// Takes or keeps a lease: set if free, extended if this holder has it.
const LEASE: &str = r#"
local cur = redis.call('GET', KEYS[1])
if not cur then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
if cur == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
"#;

/// The Redis key of the lease `name` (one node at a time does that work).
pub fn lease_key(name: &str) -> String {
    format!("castgate:lease:{name}")
}

/// The directory's operations for one node.
pub struct Directory {
    lease: Script,
    claim: Script,
    refresh: Script,
    release: Script,
    save_state: Script,
    node: String,
    incarnation: String,
    url: String,
}

fn parse_claim(json: &str) -> redis::RedisResult<Claim> {
    serde_json::from_str(json).map_err(|e| {
        redis::RedisError::from((
            redis::ErrorKind::Parse,
            "a stream claim in Redis is not castgate's JSON",
            e.to_string(),
        ))
    })
}

impl Directory {
    /// The directory as node `node` (incarnation `incarnation`, reached at
    /// `url`) uses it.
    pub fn new(node: &str, incarnation: &str, url: &str) -> Directory {
        Directory {
            lease: Script::new(LEASE),
            claim: Script::new(CLAIM),
            refresh: Script::new(REFRESH),
            release: Script::new(RELEASE),
            save_state: Script::new(SAVE_STATE),
            node: node.to_string(),
            incarnation: incarnation.to_string(),
            url: url.to_string(),
        }
    }

    /// Claims `name` for this node for `ttl_ms`. With `takeover`, a claim of
    /// another node is replaced (its node learns it from the channel, and
    /// from its next refresh).
    pub async fn claim(
        &self,
        con: &mut ConnectionManager,
        name: &str,
        since_ms: u64,
        ttl_ms: u64,
        takeover: bool,
    ) -> redis::RedisResult<ClaimOutcome> {
        let (code, stored): (i64, String) = self
            .claim
            .key(stream_key(name))
            .key(EPOCH_KEY)
            .arg(&self.node)
            .arg(&self.incarnation)
            .arg(&self.url)
            .arg(since_ms)
            .arg(ttl_ms)
            .arg(if takeover { "1" } else { "0" })
            .arg(CHANNEL)
            .arg(name)
            .invoke_async(con)
            .await?;
        let claim = parse_claim(&stored)?;
        Ok(if code == 0 {
            ClaimOutcome::Taken(claim)
        } else {
            ClaimOutcome::Held { claim, stored }
        })
    }

    fn announcement(&self, event: &str, name: &str, claim: &Claim) -> String {
        serde_json::to_string(&Announcement {
            event: event.to_string(),
            name: name.to_string(),
            node: claim.node.clone(),
            incarnation: claim.incarnation.clone(),
            epoch: claim.epoch,
            url: claim.url.clone(),
        })
        .unwrap_or_default()
    }

    /// Moves the expiry of this node's claim `stored` of `name` on by
    /// `ttl_ms`; puts it back if it expired and nobody took the name.
    pub async fn refresh(
        &self,
        con: &mut ConnectionManager,
        name: &str,
        claim: &Claim,
        stored: &str,
        ttl_ms: u64,
    ) -> redis::RedisResult<RefreshOutcome> {
        let (code, current): (i64, String) = self
            .refresh
            .key(stream_key(name))
            .arg(stored)
            .arg(ttl_ms)
            .arg(CHANNEL)
            .arg(self.announcement("started", name, claim))
            .invoke_async(con)
            .await?;
        Ok(match code {
            1 => RefreshOutcome::Refreshed,
            3 => RefreshOutcome::Reasserted,
            _ => RefreshOutcome::Lost(parse_claim(&current).ok()),
        })
    }

    /// Deletes this node's claim `stored` of `name` (if it is still the one
    /// in Redis) and announces the end. `true` if it was deleted.
    pub async fn release(
        &self,
        con: &mut ConnectionManager,
        name: &str,
        claim: &Claim,
        stored: &str,
    ) -> redis::RedisResult<bool> {
        let deleted: i64 = self
            .release
            .key(stream_key(name))
            .arg(stored)
            .arg(CHANNEL)
            .arg(self.announcement("ended", name, claim))
            .invoke_async(con)
            .await?;
        Ok(deleted == 1)
    }

    /// Stores `value` as the `kind` state of stream `name` for `ttl_ms`,
    /// if this node's claim `stored` still holds the name (a node that lost
    /// it cannot overwrite the new origin's state). `true` if stored.
    pub async fn save_state(
        &self,
        con: &mut ConnectionManager,
        name: &str,
        stored: &str,
        kind: &str,
        value: &str,
        ttl_ms: u64,
    ) -> redis::RedisResult<bool> {
        let saved: i64 = self
            .save_state
            .key(stream_key(name))
            .key(state_key(kind, name))
            .arg(stored)
            .arg(value)
            .arg(ttl_ms.max(1))
            .invoke_async(con)
            .await?;
        Ok(saved == 1)
    }

    /// Takes the lease `name` for this node (incarnation) for `ttl_ms`, or
    /// extends it if this node has it: `true` when this node holds it now.
    pub async fn lease(
        &self,
        con: &mut ConnectionManager,
        name: &str,
        ttl_ms: u64,
    ) -> redis::RedisResult<bool> {
        let held: i64 = self
            .lease
            .key(lease_key(name))
            .arg(format!("{}/{}", self.node, self.incarnation))
            .arg(ttl_ms.max(1))
            .invoke_async(con)
            .await?;
        Ok(held == 1)
    }

    /// The `kind` state of stream `name`, if any.
    pub async fn load_state(
        con: &mut ConnectionManager,
        name: &str,
        kind: &str,
    ) -> redis::RedisResult<Option<String>> {
        redis::cmd("GET")
            .arg(state_key(kind, name))
            .query_async(con)
            .await
    }

    /// The claim of `name`, if any node has one.
    pub async fn lookup(
        con: &mut ConnectionManager,
        name: &str,
    ) -> redis::RedisResult<Option<Claim>> {
        let v: Option<String> = redis::cmd("GET")
            .arg(stream_key(name))
            .query_async(con)
            .await?;
        v.map(|s| parse_claim(&s)).transpose()
    }
}

/// Every value under the keys starting with `prefix`, with the rest of its
/// key (SCAN, then MGET in batches): the directory's full picture.
pub async fn scan_values(
    con: &mut ConnectionManager,
    prefix: &str,
) -> redis::RedisResult<Vec<(String, String)>> {
    let mut cursor: u64 = 0;
    let mut keys: Vec<String> = Vec::new();
    loop {
        let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(format!("{prefix}*"))
            .arg("COUNT")
            .arg(1000)
            .query_async(con)
            .await?;
        keys.extend(batch);
        if next == 0 {
            break;
        }
        cursor = next;
    }
    keys.sort();
    keys.dedup();
    let mut out = Vec::with_capacity(keys.len());
    for chunk in keys.chunks(500) {
        let values: Vec<Option<String>> = redis::cmd("MGET").arg(chunk).query_async(con).await?;
        for (k, v) in chunk.iter().zip(values) {
            if let (Some(rest), Some(v)) = (k.strip_prefix(prefix), v) {
                out.push((rest.to_string(), v));
            }
        }
    }
    Ok(out)
}
