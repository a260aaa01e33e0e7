//! Recordings in S3-compatible object storage: every finished file uploaded
//! (checked by SHA-256), the bucket's recordings listed beside this disk's,
//! stored files read back for downloads.
//!
//! The local disk stays the crash-safe write path and the upload queue: a
//! file is uploaded only once it is finished, and removed from the disk only
//! once the bucket holds it whole. [`Storage`] is the bucket; [`upload`]
//! moves files into it; [`listing`] keeps the catalog in step with it.
//!
//! Objects: `PREFIX` + `STREAM/FILE` (the recording) with its SHA-256 as
//! object metadata (`x-amz-meta-sha256`), and `PREFIX` + `STREAM/FILE.json`
//! (the sidecar), written after the recording so that a listed sidecar always
//! has its file.

pub mod listing;
pub mod parts;
pub mod upload;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use object_store::aws::{AmazonS3, AmazonS3Builder, Checksum};
use object_store::path::Path as ObjectPath;
use object_store::signer::Signer;
use object_store::{ClientOptions, GetOptions, GetRange, ObjectStore, ObjectStoreExt, RetryConfig};

use crate::config::StorageConfig;

use super::catalog::Meta;

/// The object metadata key holding a stored file's SHA-256 (hex).
pub const SHA256_METADATA: &str = "sha256";

/// Credentials of the bucket. Never logged: `Debug` shows only the key id.
#[derive(Clone)]
pub struct Credentials {
    /// Access key id.
    pub access_key_id: String,
    /// Secret access key.
    pub secret_access_key: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"****")
            .finish()
    }
}

/// Why the bucket's credentials could not be found.
#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    /// Neither the config, the environment nor a file gave them.
    #[error(
        "storage.kind = \"s3\" needs credentials: access_key_id and secret_access_key \
         (or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or storage.credentials_file)"
    )]
    Missing,
    /// The credentials file could not be read.
    #[error("storage.credentials_file {path}: {source}")]
    Unreadable {
        /// The file.
        path: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// The credentials file lacks a key.
    #[error("storage.credentials_file {path}: no {key} line")]
    Incomplete {
        /// The file.
        path: String,
        /// The key missing.
        key: &'static str,
    },
}

impl Credentials {
    /// The credentials `config` names: its keys (the environment's when the
    /// file gave none), else those of `credentials_file`. Reads that file.
    pub fn resolve(config: &StorageConfig) -> Result<Credentials, CredentialsError> {
        match (&config.access_key_id, &config.secret_access_key) {
            (Some(id), Some(secret)) => Ok(Credentials {
                access_key_id: id.clone(),
                secret_access_key: secret.clone(),
            }),
            _ => match &config.credentials_file {
                Some(file) => Self::from_file(file),
                None => Err(CredentialsError::Missing),
            },
        }
    }

    /// The first `aws_access_key_id` and `aws_secret_access_key` of a file in
    /// the `~/.aws/credentials` form.
    pub fn from_file(file: &Path) -> Result<Credentials, CredentialsError> {
        let path = file.display().to_string();
        let text =
            std::fs::read_to_string(file).map_err(|source| CredentialsError::Unreadable {
                path: path.clone(),
                source,
            })?;
        let value = |key: &'static str| {
            text.lines()
                .filter_map(|l| l.split_once('='))
                .find(|(k, _)| k.trim() == key)
                .map(|(_, v)| v.trim().to_string())
                .filter(|v| !v.is_empty())
                .ok_or(CredentialsError::Incomplete {
                    path: path.clone(),
                    key,
                })
        };
        Ok(Credentials {
            access_key_id: value("aws_access_key_id")?,
            secret_access_key: value("aws_secret_access_key")?,
        })
    }
}

/// Why a storage request failed.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The bucket's client could not be built (a bad endpoint).
    #[error("cannot use the bucket: {0}")]
    Setup(String),
    /// The storage server answered with an error or not at all.
    #[error("{0}")]
    Request(#[from] object_store::Error),
    /// The object is not there.
    #[error("no such object")]
    NotFound,
    /// The bucket holds something other than what was uploaded.
    #[error("the stored object does not match the file: {0}")]
    Mismatch(String),
    /// Reading the local file failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// Another recording's object holds this recording's name in the bucket.
    #[error("another recording holds this name in the bucket")]
    NameTaken,
}

/// Counts of uploads since start (monotonic, for metrics), and the queue now.
#[derive(Debug, Default)]
pub struct StorageStats {
    /// Bytes of recordings (parts) the bucket accepted.
    pub bytes_uploaded: AtomicU64,
    /// Recordings stored (checked).
    pub stored: AtomicU64,
    /// Upload attempts that failed.
    pub failures: AtomicU64,
    /// Recordings waiting to be stored now (gauge).
    pub pending: AtomicU64,
    /// Seconds since the end of the oldest recording still waiting (gauge).
    pub oldest_pending_secs: AtomicU64,
}

/// One bucket (and prefix) that recordings go to.
pub struct Storage {
    store: Arc<AmazonS3>,
    /// For the one request `object_store` does not make (listing the open
    /// multipart uploads of a key), signed with the same credentials.
    lister: reqwest::Client,
    credentials: Credentials,
    prefix: String,
    config: StorageConfig,
    stats: StorageStats,
}

impl std::fmt::Debug for Storage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Storage")
            .field("bucket", &self.config.bucket)
            .field("prefix", &self.prefix)
            .finish()
    }
}

/// A byte range of a stored object and the stream of its bytes.
pub struct ObjectRead {
    /// The bytes, in order.
    pub body: futures_util::stream::BoxStream<'static, Result<bytes::Bytes, object_store::Error>>,
    /// The range served.
    pub range: std::ops::Range<u64>,
    /// The whole object's size.
    pub size: u64,
}

impl Storage {
    /// The bucket `config` names, reached with `credentials`. Makes no
    /// request yet.
    pub fn open(
        config: &StorageConfig,
        credentials: &Credentials,
    ) -> Result<Storage, StorageError> {
        let bucket = config
            .bucket
            .clone()
            .ok_or_else(|| StorageError::Setup("storage.bucket is not set".into()))?;
        let timeout = Duration::from_secs_f64(config.timeout_secs);
        let mut builder = AmazonS3Builder::new()
            .with_bucket_name(bucket)
            .with_region(config.region.clone())
            .with_access_key_id(credentials.access_key_id.clone())
            .with_secret_access_key(credentials.secret_access_key.clone())
            .with_virtual_hosted_style_request(!config.path_style())
            .with_checksum_algorithm(Checksum::SHA256)
            // No bound on a whole request (a long download, a part on a slow
            // uplink); a connection that makes no progress for `timeout_secs`
            // is abandoned.
            .with_client_options(
                ClientOptions::new()
                    .with_timeout_disabled()
                    .with_read_timeout(timeout)
                    .with_connect_timeout(timeout.min(Duration::from_secs(10)))
                    .with_allow_http(
                        config
                            .endpoint
                            .as_deref()
                            .is_some_and(|e| e.starts_with("http://")),
                    ),
            )
            // castgate's own loop retries uploads for as long as needed; the
            // client retries a request briefly (a dropped connection).
            .with_retry(RetryConfig {
                max_retries: 2,
                retry_timeout: timeout,
                ..RetryConfig::default()
            });
        if let Some(endpoint) = &config.endpoint {
            builder = builder.with_endpoint(endpoint.trim_end_matches('/'));
        }
        let store = builder
            .build()
            .map_err(|e| StorageError::Setup(e.to_string()))?;
        let lister = reqwest::Client::builder()
            .timeout(timeout)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| StorageError::Setup(e.to_string()))?;
        Ok(Storage {
            store: Arc::new(store),
            lister,
            credentials: credentials.clone(),
            prefix: config.key_prefix(),
            config: config.clone(),
            stats: StorageStats::default(),
        })
    }

    /// The settings it was opened with.
    pub fn config(&self) -> &StorageConfig {
        &self.config
    }

    /// Uploads, failures and the queue, for metrics.
    pub fn stats(&self) -> &StorageStats {
        &self.stats
    }

    /// The prefix every object of castgate's starts with (`""` or ending in `/`).
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The object name of a recording's file.
    pub fn key_of(&self, meta: &Meta) -> String {
        format!("{}{}/{}", self.prefix, meta.stream, meta.file)
    }

    /// The object name of a recording's sidecar.
    pub fn sidecar_key_of(&self, meta: &Meta) -> String {
        format!("{}.json", self.key_of(meta))
    }

    /// The client, for the uploader and the listing.
    fn client(&self) -> &Arc<AmazonS3> {
        &self.store
    }

    /// Reads `range` (all when `None`) of a recording's stored file.
    pub async fn read(
        &self,
        meta: &Meta,
        range: Option<std::ops::Range<u64>>,
    ) -> Result<ObjectRead, StorageError> {
        let opts = GetOptions {
            range: range.map(GetRange::Bounded),
            ..GetOptions::default()
        };
        let got = self
            .store
            .get_opts(&ObjectPath::from(self.key_of(meta)), opts)
            .await
            .map_err(not_found)?;
        let size = got.meta.size;
        let range = got.range.clone();
        Ok(ObjectRead {
            body: got.into_stream(),
            range,
            size,
        })
    }

    /// The size of a recording's stored file.
    pub async fn size(&self, meta: &Meta) -> Result<u64, StorageError> {
        let head = self
            .store
            .head(&ObjectPath::from(self.key_of(meta)))
            .await
            .map_err(not_found)?;
        Ok(head.size)
    }

    /// A URL that reads a recording's stored file for `valid` (presigned).
    pub async fn presigned_url(
        &self,
        meta: &Meta,
        valid: Duration,
    ) -> Result<String, StorageError> {
        let url = self
            .store
            .signed_url(
                http::Method::GET,
                &ObjectPath::from(self.key_of(meta)),
                valid,
            )
            .await?;
        Ok(url.to_string())
    }

    /// Deletes a recording's stored file and sidecar (sidecar first, so no
    /// listing shows a recording without its file). Deleting what is not
    /// there succeeds.
    pub async fn delete(&self, meta: &Meta) -> Result<(), StorageError> {
        for key in [self.sidecar_key_of(meta), self.key_of(meta)] {
            match self.store.delete(&ObjectPath::from(key)).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    /// How long a presigned URL for `meta` stays valid: `presign_secs`, or
    /// twice the recording's duration when longer (at most 7 days).
    pub fn presign_validity(&self, meta: &Meta) -> Duration {
        let twice = meta.duration_secs.unwrap_or(0.0).max(0.0) * 2.0;
        Duration::from_secs_f64(twice.max(self.config.presign_secs as f64).min(604_800.0))
    }

    /// The ids of the multipart uploads open for `key` (S3's
    /// ListMultipartUploads): what a request whose answer was lost, or a
    /// crash before the id was written down, left behind.
    pub async fn open_uploads(&self, key: &str) -> Result<Vec<String>, StorageError> {
        let bucket = self.config.bucket.as_deref().unwrap_or_default();
        let query = format!("uploads&prefix={}", encode_query(key));
        let url = match (&self.config.endpoint, self.config.path_style()) {
            (Some(e), true) => format!("{}/{bucket}?{query}", e.trim_end_matches('/')),
            (Some(e), false) => match e.split_once("://") {
                Some((scheme, host)) => {
                    format!(
                        "{scheme}://{bucket}.{}/?{query}",
                        host.trim_end_matches('/')
                    )
                }
                None => return Err(StorageError::Setup("bad endpoint".into())),
            },
            (None, true) => format!(
                "https://s3.{}.amazonaws.com/{bucket}?{query}",
                self.config.region
            ),
            (None, false) => format!(
                "https://{bucket}.s3.{}.amazonaws.com/?{query}",
                self.config.region
            ),
        };
        let mut request = http::Request::builder()
            .method(http::Method::GET)
            .uri(&url)
            .body(object_store::client::HttpRequestBody::empty())
            .map_err(|e| StorageError::Setup(e.to_string()))?;
        let credential = object_store::aws::AwsCredential {
            key_id: self.credentials.access_key_id.clone(),
            secret_key: self.credentials.secret_access_key.clone(),
            token: None,
        };
        object_store::aws::AwsAuthorizer::new(&credential, "s3", &self.config.region)
            .try_authorize(&mut request, None)?;
        let response = self
            .lister
            .get(&url)
            .headers(request.headers().clone())
            .send()
            .await
            .map_err(|e| StorageError::Setup(format!("listing open uploads: {e}")))?;
        let status = response.status();
        let text = response
            .text()
            .await
            .map_err(|e| StorageError::Setup(format!("listing open uploads: {e}")))?;
        if !status.is_success() {
            return Err(StorageError::Setup(format!(
                "listing open uploads: HTTP {status}"
            )));
        }
        Ok(text
            .split("<Upload>")
            .skip(1)
            .filter(|u| xml_text(u, "Key").as_deref() == Some(key))
            .filter_map(|u| xml_text(u, "UploadId"))
            .collect())
    }

    /// Aborts every multipart upload open for `key` (failures only logged:
    /// not every server lists open uploads).
    pub(crate) async fn sweep_uploads(&self, key: &str) {
        use object_store::multipart::MultipartStore;
        match self.open_uploads(key).await {
            Ok(ids) => {
                for id in ids {
                    match self
                        .store
                        .abort_multipart(&ObjectPath::from(key), &id)
                        .await
                    {
                        Ok(()) => tracing::info!(key, "aborted a multipart upload left open"),
                        Err(e) => tracing::debug!(key, error = %e, "aborting a multipart upload"),
                    }
                }
            }
            Err(e) => tracing::debug!(key, error = %e, "cannot list open multipart uploads"),
        }
    }

    pub(crate) fn count_failure(&self) {
        self.stats.failures.fetch_add(1, Ordering::Relaxed);
    }
}

fn not_found(e: object_store::Error) -> StorageError {
    match e {
        object_store::Error::NotFound { .. } => StorageError::NotFound,
        e => StorageError::Request(e),
    }
}

/// `s` for a URL query value (RFC 3986 unreserved kept, the rest %-encoded).
fn encode_query(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The text of the first `<tag>…</tag>` in `xml`, its entities decoded.
fn xml_text(xml: &str, tag: &str) -> Option<String> {
    let (open, close) = (format!("<{tag}>"), format!("</{tag}>"));
    let start = xml.find(&open)? + open.len();
    let len = xml[start..].find(&close)?;
    Some(
        xml[start..start + len]
            .replace("&lt;", "<")
            .replace("&gt;", ">")
            .replace("&quot;", "\"")
            .replace("&apos;", "'")
            .replace("&amp;", "&"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_uploads_are_read_from_s3s_answer() {
        let xml = "<ListMultipartUploadsResult><Bucket>b</Bucket>\
            <Upload><Key>cam/a.mkv</Key><UploadId>u1</UploadId></Upload>\
            <Upload><Key>cam/a.mkv.json</Key><UploadId>u2</UploadId></Upload>\
            <Upload><Key>a&amp;b</Key><UploadId>u3</UploadId></Upload></ListMultipartUploadsResult>";
        let uploads: Vec<(Option<String>, Option<String>)> = xml
            .split("<Upload>")
            .skip(1)
            .map(|u| (xml_text(u, "Key"), xml_text(u, "UploadId")))
            .collect();
        assert_eq!(uploads[0], (Some("cam/a.mkv".into()), Some("u1".into())));
        assert_eq!(uploads[2].0.as_deref(), Some("a&b"));
    }

    #[test]
    fn query_values_are_percent_encoded() {
        assert_eq!(
            encode_query("cam/2026-12-06T10-00-00Z.webm"),
            "cam%2F2026-12-06T10-00-00Z.webm"
        );
        assert_eq!(encode_query("a b&c"), "a%20b%26c");
    }

    #[test]
    fn credentials_never_show_their_secret() {
        let c = Credentials {
            access_key_id: "AKIDEXAMPLE".into(),
            secret_access_key: "wJalrXUtnFEMI".into(),
        };
        let shown = format!("{c:?}");
        assert!(shown.contains("AKIDEXAMPLE") && !shown.contains("wJalrXUtnFEMI"));
    }

    #[test]
    fn a_credentials_file_in_the_aws_form_is_read() {
        let dir = std::env::temp_dir().join(format!("castgate-creds-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("credentials");
        std::fs::write(
            &file,
            "[default]\naws_access_key_id = AKID\naws_secret_access_key = s3cr3t\n",
        )
        .unwrap();
        let c = Credentials::from_file(&file).unwrap();
        assert_eq!(
            (c.access_key_id.as_str(), c.secret_access_key.as_str()),
            ("AKID", "s3cr3t")
        );
        std::fs::write(&file, "aws_access_key_id = AKID\n").unwrap();
        let e = Credentials::from_file(&file).unwrap_err().to_string();
        assert!(e.contains("aws_secret_access_key"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
