//! HTTP basic authentication, and a request id on every request.
//!
//! Users and their Argon2 password hashes (PHC strings, as `eddy hash-password` prints them)
//! come from the server's config file. When any user is configured, every endpoint but
//! `/healthcheck` needs `Authorization: Basic ...` with a known user and the right password;
//! a missing or wrong one gets 401 with ksqlDB's error body. Argon2 is slow on purpose, so a
//! header that verified once is remembered (in memory, bounded) and later requests with it
//! skip the hash.
//!
//! A check runs on tokio's blocking pool, at most [`PASSWORD_CHECKS_CONCURRENT_MAX`] at once,
//! so a flood of bad passwords queues for those slots instead of stalling the async runtime
//! (and every other request with it). An unknown user is checked against a dummy hash made
//! with the same parameters, so the answer takes as long as for a known user and its timing
//! does not tell which users exist.

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::Engine as _;
use parking_lot::Mutex;
use rand_core::OsRng;
use serde_json::json;
use tokio::sync::Semaphore;
use tracing::Instrument;

use crate::limits::PASSWORD_CHECKS_CONCURRENT_MAX;
use crate::server::AppState;

/// ksqlDB's error code for a request without valid credentials.
const UNAUTHORIZED: u32 = 40100;

/// Verified `Authorization` headers remembered before the cache starts over.
const REMEMBERED_HEADERS: usize = 1024;

/// The users allowed in, by name, with their password hashes.
pub struct Users {
    hashes: BTreeMap<String, String>,
    /// What an unknown user's password is checked against, so it costs a known user's time.
    dummy_hash: String,
    remembered: Mutex<HashSet<String>>,
    /// Slots for Argon2 checks: [`PASSWORD_CHECKS_CONCURRENT_MAX`] of them.
    password_checks: Arc<Semaphore>,
    /// Argon2 checks run so far, known users and unknown alike.
    password_checks_run: AtomicU64,
}

impl Users {
    /// Users from `name -> PHC hash`; a hash that does not parse is an error naming the user.
    pub fn new(hashes: BTreeMap<String, String>) -> Result<Users, String> {
        for (user, hash) in &hashes {
            PasswordHash::new(hash).map_err(|e| {
                format!("the password hash of user '{user}' is not a PHC string ({e}); make one with `eddy hash-password`")
            })?;
        }
        Ok(Users {
            hashes,
            dummy_hash: hash_password("a password no user has"),
            remembered: Mutex::new(HashSet::new()),
            password_checks: Arc::new(Semaphore::new(PASSWORD_CHECKS_CONCURRENT_MAX)),
            password_checks_run: AtomicU64::new(0),
        })
    }

    /// Whether `authorization` (the header's value) names a user with the right password.
    async fn admits(&self, authorization: &str) -> bool {
        if self.remembered.lock().contains(authorization) {
            return true;
        }
        let Some((user, password)) = basic_credentials(authorization) else {
            return false;
        };
        let (hash, known) = match self.hashes.get(&user) {
            Some(hash) => (hash.clone(), true),
            None => (self.dummy_hash.clone(), false),
        };
        let verified = self.verify(password, hash).await;
        let admitted = known && verified;
        if admitted {
            let mut remembered = self.remembered.lock();
            if remembered.len() >= REMEMBERED_HEADERS {
                remembered.clear();
            }
            remembered.insert(authorization.to_string());
        }
        admitted
    }

    /// Checks `password` against the PHC string `hash` on the blocking pool, once one of the
    /// [`PASSWORD_CHECKS_CONCURRENT_MAX`] slots is free.
    async fn verify(&self, password: String, hash: String) -> bool {
        let Ok(_slot) = Arc::clone(&self.password_checks).acquire_owned().await else {
            // The semaphore is never closed.
            return false;
        };
        self.password_checks_run.fetch_add(1, Ordering::Relaxed);
        let checked = tokio::task::spawn_blocking(move || {
            PasswordHash::new(&hash)
                .map(|hash| {
                    Argon2::default()
                        .verify_password(password.as_bytes(), &hash)
                        .is_ok()
                })
                .unwrap_or(false)
        })
        .await;
        checked.unwrap_or(false)
    }
}

/// The user and password of a `Basic` authorization header, if it is one.
fn basic_credentials(authorization: &str) -> Option<(String, String)> {
    let encoded = authorization.strip_prefix("Basic ")?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let decoded = String::from_utf8(decoded).ok()?;
    let (user, password) = decoded.split_once(':')?;
    Some((user.to_string(), password.to_string()))
}

/// An Argon2id hash of `password` with a fresh salt, as a PHC string for the config file.
pub fn hash_password(password: &str) -> String {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .expect("Argon2 with default parameters hashes any password")
        .to_string()
}

/// Rejects requests without valid credentials when users are configured.
pub(crate) async fn authenticate(
    State(app): State<Arc<AppState>>,
    request: Request,
    next: Next,
) -> Response {
    let Some(users) = &app.users else {
        return next.run(request).await;
    };
    if request.uri().path() == "/healthcheck" {
        return next.run(request).await;
    }
    let authorization = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if users.admits(authorization).await {
        return next.run(request).await;
    }
    let message = if authorization.is_empty() {
        "Unauthorized: this server needs HTTP basic authentication (user and password)"
    } else {
        "Unauthorized: unknown user or wrong password"
    };
    let mut response = (
        StatusCode::UNAUTHORIZED,
        Json(json!({
            "@type": "generic_error",
            "error_code": UNAUTHORIZED,
            "message": message,
            "stackTrace": [],
        })),
    )
        .into_response();
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Basic realm=\"eddy\""),
    );
    tracing::info!(path = %request.uri().path(), "rejected: {message}");
    response
}

/// Gives every request an id: logged with everything it does, and returned as `X-Request-Id`.
pub(crate) async fn request_id(request: Request, next: Next) -> Response {
    static NEXT_ID: AtomicU64 = AtomicU64::new(1);
    let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    let span = tracing::info_span!(
        "request",
        id,
        method = %request.method(),
        path = %request.uri().path()
    );
    let mut response = next.run(request).instrument(span.clone()).await;
    span.in_scope(|| tracing::debug!(status = response.status().as_u16(), "answered"));
    if let Ok(value) = HeaderValue::from_str(&id.to_string()) {
        response.headers_mut().insert("x-request-id", value);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn basic(user: &str, password: &str) -> String {
        let encoded =
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        format!("Basic {encoded}")
    }

    fn ann() -> Users {
        Users::new(BTreeMap::from([(
            "ann".to_string(),
            hash_password("s3cret"),
        )]))
        .unwrap()
    }

    #[tokio::test]
    async fn only_the_right_password_is_admitted() {
        let users = ann();
        assert!(users.admits(&basic("ann", "s3cret")).await);
        assert!(users.admits(&basic("ann", "s3cret")).await, "remembered");
        assert!(!users.admits(&basic("ann", "wrong")).await);
        assert!(!users.admits(&basic("bob", "s3cret")).await);
        assert!(!users.admits("Bearer x").await);
        assert!(!users.admits("").await);
    }

    /// An unknown user's password is checked with Argon2 like a known user's (against the
    /// dummy hash), so the answer's timing does not say whether the user exists; a header
    /// that is not Basic is refused without a check.
    #[tokio::test]
    async fn an_unknown_user_costs_an_argon2_check_like_a_known_one() {
        let users = ann();
        assert!(!users.admits(&basic("ann", "wrong")).await);
        assert_eq!(users.password_checks_run.load(Ordering::Relaxed), 1);
        assert!(!users.admits(&basic("nobody", "wrong")).await);
        assert_eq!(users.password_checks_run.load(Ordering::Relaxed), 2);
        assert!(!users.admits("Bearer x").await);
        assert_eq!(users.password_checks_run.load(Ordering::Relaxed), 2);
    }

    /// Checks wait for one of the PASSWORD_CHECKS_CONCURRENT_MAX slots and run off the async
    /// runtime. Method: take every slot, start a check on a one-thread runtime, and see that
    /// another task still runs while the check waits; then free the slots and see it finish.
    #[tokio::test(flavor = "current_thread")]
    async fn password_checks_are_bounded_and_leave_the_runtime_free() {
        let users = Arc::new(ann());
        let all_slots = Arc::clone(&users.password_checks)
            .acquire_many_owned(PASSWORD_CHECKS_CONCURRENT_MAX as u32)
            .await
            .unwrap();
        let check = tokio::spawn({
            let users = Arc::clone(&users);
            async move { users.admits(&basic("ann", "s3cret")).await }
        });
        let other = tokio::spawn(async { "ran" });
        assert_eq!(other.await.unwrap(), "ran");
        tokio::task::yield_now().await;
        assert!(!check.is_finished(), "the check waits for a free slot");
        assert_eq!(users.password_checks_run.load(Ordering::Relaxed), 0);
        drop(all_slots);
        assert!(check.await.unwrap());
        assert_eq!(users.password_checks_run.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn a_hash_that_is_not_phc_is_refused_by_name() {
        let error = Users::new(BTreeMap::from([("ann".to_string(), "plain".to_string())]))
            .err()
            .unwrap();
        assert!(error.contains("user 'ann'"), "{error}");
    }
}
