//! A Web Push service stand-in on 127.0.0.1, over HTTPS with a CA made at
//! test time (its PEM in a file the host under test is told to trust), so
//! the host's real TLS client path runs. Like a real push service it
//! checks each request's VAPID JWT (ES256 signature with the key the host
//! publishes, `aud` its own origin, `exp` within 24 hours), and like a
//! browser it decrypts the aes128gcm payload with the subscriber's private
//! key. It records every request per endpoint and answers what a test
//! asks (201 unless told: 404, 410, 429, 500, …).

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use http_body_util::{BodyExt as _, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response};
use p256::ecdsa::signature::Verifier as _;
use p256::ecdsa::{Signature, VerifyingKey};
use p256::elliptic_curve::sec1::ToEncodedPoint as _;
use serde_json::{Value, json};
use tokio_rustls::rustls;

/// The `Retry-After` seconds sent with a 429 or a 500.
pub const RETRY_AFTER_SECS: u64 = 1;

/// One request the stand-in got.
#[derive(Debug, Clone)]
pub struct Arrival {
    /// The endpoint's path.
    pub path: String,
    /// What the stand-in answered.
    pub status: u16,
    /// The decrypted payload, when the request passed every check.
    pub payload: Option<Value>,
    /// That payload's text exactly as decrypted (what a browser hands its
    /// service worker).
    pub text: Option<String>,
    /// Why it was refused (a failed check), if it was.
    pub refused: Option<String>,
    /// `TTL`, `Urgency`, `Topic` as sent.
    pub ttl: Option<String>,
    /// See [`Arrival::ttl`].
    pub urgency: Option<String>,
    /// See [`Arrival::ttl`].
    pub topic: Option<String>,
}

/// A browser's subscription: its endpoint at the stand-in and its keys.
#[derive(Clone)]
pub struct Subscriber {
    /// `https://127.0.0.1:PORT/push/<n>`.
    pub endpoint: String,
    path: String,
    secret: p256::SecretKey,
    auth: [u8; 16],
}

impl Subscriber {
    /// The body of `POST /api/push/subscriptions` for this browser.
    pub fn body(&self, device: &str) -> Value {
        let public = self.secret.public_key().to_encoded_point(false);
        json!({
            "endpoint": self.endpoint,
            "expirationTime": null,
            "keys": {"p256dh": B64.encode(public.as_bytes()), "auth": B64.encode(self.auth)},
            "device": device,
        })
    }
}

#[derive(Default)]
struct Inner {
    vapid_key: Option<String>,
    subscribers: HashMap<String, Subscriber>,
    answers: HashMap<String, VecDeque<u16>>,
    arrivals: Vec<Arrival>,
}

/// The stand-in; stops when dropped.
pub struct PushService {
    origin: String,
    ca_file: PathBuf,
    _dir: tempfile::TempDir,
    inner: Arc<Mutex<Inner>>,
    next: Mutex<u32>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for PushService {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn lock(m: &Mutex<Inner>) -> std::sync::MutexGuard<'_, Inner> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl PushService {
    /// Makes a CA and a certificate for 127.0.0.1 signed by it, and serves
    /// HTTPS on a free port.
    pub async fn start() -> PushService {
        let ca_key = rcgen::KeyPair::generate().expect("a CA key");
        let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(rcgen::DnType::CommonName, "duraclaw test push CA");
        ca.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
            rcgen::KeyUsagePurpose::DigitalSignature,
        ];
        let ca_cert = ca.self_signed(&ca_key).expect("the CA certificate");
        let leaf_key = rcgen::KeyPair::generate().expect("a server key");
        let mut leaf = rcgen::CertificateParams::new(vec!["127.0.0.1".into(), "localhost".into()])
            .expect("server params");
        leaf.distinguished_name
            .push(rcgen::DnType::CommonName, "127.0.0.1");
        leaf.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
        let issuer = rcgen::Issuer::from_params(&ca, &ca_key);
        let leaf_cert = leaf
            .signed_by(&leaf_key, &issuer)
            .expect("the server certificate");

        let dir = tempfile::tempdir().expect("a temp dir");
        let ca_file = dir.path().join("push-ca.pem");
        std::fs::write(&ca_file, ca_cert.pem()).expect("write the CA");

        let provider = Arc::new(ring_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .with_no_client_auth()
            .with_single_cert(
                vec![leaf_cert.der().clone(), ca_cert.der().clone()],
                rustls::pki_types::PrivateKeyDer::Pkcs8(leaf_key.serialize_der().into()),
            )
            .expect("the server's TLS config");
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the push service");
        let port = listener.local_addr().expect("its address").port();
        let origin = format!("https://127.0.0.1:{port}");
        let inner = Arc::new(Mutex::new(Inner::default()));
        let task = {
            let (inner, origin) = (inner.clone(), origin.clone());
            tokio::spawn(async move {
                loop {
                    let Ok((tcp, _)) = listener.accept().await else {
                        continue;
                    };
                    let (acceptor, inner, origin) =
                        (acceptor.clone(), inner.clone(), origin.clone());
                    tokio::spawn(async move {
                        let Ok(tls) = acceptor.accept(tcp).await else {
                            return;
                        };
                        let service = hyper::service::service_fn(move |req| {
                            let (inner, origin) = (inner.clone(), origin.clone());
                            async move { Ok::<_, Infallible>(handle(&inner, &origin, req).await) }
                        });
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                            .await;
                    });
                }
            })
        };
        PushService {
            origin,
            ca_file,
            _dir: dir,
            inner,
            next: Mutex::new(0),
            task,
        }
    }

    /// `https://127.0.0.1:PORT`.
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// The PEM file of the CA to trust.
    pub fn ca_file(&self) -> &Path {
        &self.ca_file
    }

    /// The VAPID public key (base64url) pushes must be signed with (the
    /// host's `GET /api/push/key`).
    pub fn expect_key(&self, public_key: &str) {
        lock(&self.inner).vapid_key = Some(public_key.to_owned());
    }

    /// A new browser: keys of its own and an endpoint here.
    pub fn subscriber(&self) -> Subscriber {
        let n = {
            let mut next = self.next.lock().unwrap_or_else(|p| p.into_inner());
            *next += 1;
            *next
        };
        let path = format!("/push/{n}");
        let mut auth = [0u8; 16];
        getrandom::fill(&mut auth).expect("randomness");
        let sub = Subscriber {
            endpoint: format!("{}{path}", self.origin),
            path: path.clone(),
            secret: p256::SecretKey::random(&mut p256::elliptic_curve::rand_core::OsRng),
            auth,
        };
        lock(&self.inner).subscribers.insert(path, sub.clone());
        sub
    }

    /// The next requests to `sub` are answered these statuses, in order
    /// (then 201 again).
    pub fn answer(&self, sub: &Subscriber, statuses: &[u16]) {
        lock(&self.inner)
            .answers
            .entry(sub.path.clone())
            .or_default()
            .extend(statuses);
    }

    /// Every request to `sub` so far, oldest first.
    pub fn arrivals(&self, sub: &Subscriber) -> Vec<Arrival> {
        lock(&self.inner)
            .arrivals
            .iter()
            .filter(|a| a.path == sub.path)
            .cloned()
            .collect()
    }

    /// Every request so far.
    pub fn all_arrivals(&self) -> Vec<Arrival> {
        lock(&self.inner).arrivals.clone()
    }

    /// Waits until `sub` got a request that `pred` holds for; panics after
    /// `within`, showing what did arrive.
    pub async fn wait_for(
        &self,
        sub: &Subscriber,
        within: Duration,
        what: &str,
        pred: impl Fn(&[Arrival]) -> bool,
    ) -> Vec<Arrival> {
        let deadline = Instant::now() + within;
        loop {
            let got = self.arrivals(sub);
            if pred(&got) {
                return got;
            }
            assert!(
                Instant::now() < deadline,
                "no {what} at {} within {within:?}; arrived: {got:#?}",
                sub.endpoint
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

#[allow(deprecated)]
fn ring_provider() -> rustls::crypto::CryptoProvider {
    rustls::crypto::ring::default_provider()
}

fn header(req: &Request<Incoming>, name: &str) -> Option<String> {
    req.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// Checks a request as a push service does and decrypts it as the
/// browser would: the payload, or why it is refused.
fn check(
    origin: &str,
    expected_key: Option<&str>,
    sub: Option<&Subscriber>,
    authorization: Option<&str>,
    encoding: Option<&str>,
    ttl: Option<&str>,
    body: Vec<u8>,
) -> Result<(Value, String), String> {
    let sub = sub.ok_or("no such subscription")?;
    let auth = authorization.ok_or("no Authorization header")?;
    let (t, k) = auth
        .strip_prefix("vapid t=")
        .and_then(|rest| rest.split_once(", k="))
        .ok_or_else(|| format!("not a vapid Authorization: {auth}"))?;
    if let Some(want) = expected_key
        && want != k
    {
        return Err(format!("signed with key {k}, not the host's {want}"));
    }
    let key = B64
        .decode(k)
        .ok()
        .and_then(|b| VerifyingKey::from_sec1_bytes(&b).ok())
        .ok_or("k is not a P-256 public key")?;
    let parts: Vec<&str> = t.split('.').collect();
    let [h, c, s] = parts[..] else {
        return Err("the JWT has not three parts".into());
    };
    let header: Value = B64
        .decode(h)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or("the JWT header is not JSON")?;
    if header["alg"] != "ES256" {
        return Err(format!("the JWT's alg is {}", header["alg"]));
    }
    let sig = B64
        .decode(s)
        .ok()
        .and_then(|b| Signature::from_slice(&b).ok())
        .ok_or("the JWT signature is not an ES256 signature")?;
    key.verify(format!("{h}.{c}").as_bytes(), &sig)
        .map_err(|_| "the JWT signature does not verify")?;
    let claims: Value = B64
        .decode(c)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or("the JWT claims are not JSON")?;
    if claims["aud"] != origin {
        return Err(format!("aud is {}, not {origin}", claims["aud"]));
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let exp = claims["exp"].as_u64().ok_or("no exp")?;
    if exp <= now || exp > now + 24 * 3600 {
        return Err(format!("exp {exp} is not within 24 hours of {now}"));
    }
    if encoding != Some("aes128gcm") {
        return Err(format!("Content-Encoding {encoding:?}"));
    }
    if ttl.and_then(|t| t.parse::<u64>().ok()).is_none() {
        return Err("no TTL".into());
    }
    let auth = web_push_native::Auth::clone_from_slice(&sub.auth);
    let plain = web_push_native::decrypt(body, &sub.secret, &auth)
        .map_err(|e| format!("the payload does not decrypt: {e}"))?;
    let text = String::from_utf8(plain).map_err(|e| format!("the payload is not UTF-8: {e}"))?;
    let value = serde_json::from_str(&text).map_err(|e| format!("the payload is not JSON: {e}"))?;
    Ok((value, text))
}

async fn handle(
    inner: &Mutex<Inner>,
    origin: &str,
    req: Request<Incoming>,
) -> Response<Full<Bytes>> {
    let path = req.uri().path().to_owned();
    let (authorization, encoding) = (
        header(&req, "authorization"),
        header(&req, "content-encoding"),
    );
    let (ttl, urgency, topic) = (
        header(&req, "ttl"),
        header(&req, "urgency"),
        header(&req, "topic"),
    );
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes().to_vec(),
        Err(_) => Vec::new(),
    };
    let mut inner = lock(inner);
    let checked = check(
        origin,
        inner.vapid_key.as_deref(),
        inner.subscribers.get(&path),
        authorization.as_deref(),
        encoding.as_deref(),
        ttl.as_deref(),
        body,
    );
    let (status, payload, text, refused) = match checked {
        Ok((payload, text)) => {
            let status = inner
                .answers
                .get_mut(&path)
                .and_then(VecDeque::pop_front)
                .unwrap_or(201);
            (status, Some(payload), Some(text), None)
        }
        Err(why) => (400, None, None, Some(why)),
    };
    inner.arrivals.push(Arrival {
        path,
        status,
        payload,
        text,
        refused,
        ttl,
        urgency,
        topic,
    });
    let mut answer = Response::builder().status(status);
    if matches!(status, 429 | 500..=599) {
        answer = answer.header("retry-after", RETRY_AFTER_SECS.to_string());
    }
    answer
        .body(Full::new(Bytes::new()))
        .unwrap_or_else(|_| Response::new(Full::new(Bytes::new())))
}
