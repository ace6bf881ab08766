//! HTTP basic authentication, and a request id on every request.
//!
//! Users and their Argon2 password hashes (PHC strings, as `eddy hash-password` prints them)
//! come from the server's config file. When any user is configured, every endpoint but
//! `/healthcheck` needs `Authorization: Basic ...` with a known user and the right password;
//! a missing or wrong one gets 401 with ksqlDB's error body. Argon2 is slow on purpose, so a
//! header that verified once is remembered (in memory, bounded) and later requests with it
//! skip the hash.

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
use tracing::Instrument;

use crate::server::AppState;

/// ksqlDB's error code for a request without valid credentials.
const UNAUTHORIZED: u32 = 40100;

/// Verified `Authorization` headers remembered before the cache starts over.
const REMEMBERED_HEADERS: usize = 1024;

/// The users allowed in, by name, with their password hashes.
pub struct Users {
    hashes: BTreeMap<String, String>,
    remembered: Mutex<HashSet<String>>,
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
            remembered: Mutex::new(HashSet::new()),
        })
    }

    /// Whether `authorization` (the header's value) names a user with the right password.
    fn admits(&self, authorization: &str) -> bool {
        if self.remembered.lock().contains(authorization) {
            return true;
        }
        let Some(encoded) = authorization.strip_prefix("Basic ") else {
            return false;
        };
        let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(encoded.trim()) else {
            return false;
        };
        let Ok(decoded) = String::from_utf8(decoded) else {
            return false;
        };
        let Some((user, password)) = decoded.split_once(':') else {
            return false;
        };
        let Some(hash) = self.hashes.get(user) else {
            return false;
        };
        let admitted = PasswordHash::new(hash)
            .map(|hash| {
                Argon2::default()
                    .verify_password(password.as_bytes(), &hash)
                    .is_ok()
            })
            .unwrap_or(false);
        if admitted {
            let mut remembered = self.remembered.lock();
            if remembered.len() >= REMEMBERED_HEADERS {
                remembered.clear();
            }
            remembered.insert(authorization.to_string());
        }
        admitted
    }
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
    if users.admits(authorization) {
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

    #[test]
    fn only_the_right_password_is_admitted() {
        let users = Users::new(BTreeMap::from([(
            "ann".to_string(),
            hash_password("s3cret"),
        )]))
        .unwrap();
        assert!(users.admits(&basic("ann", "s3cret")));
        assert!(users.admits(&basic("ann", "s3cret")), "remembered");
        assert!(!users.admits(&basic("ann", "wrong")));
        assert!(!users.admits(&basic("bob", "s3cret")));
        assert!(!users.admits("Bearer x"));
        assert!(!users.admits(""));
    }

    #[test]
    fn a_hash_that_is_not_phc_is_refused_by_name() {
        let error = Users::new(BTreeMap::from([("ann".to_string(), "plain".to_string())]))
            .err()
            .unwrap();
        assert!(error.contains("user 'ann'"), "{error}");
    }
}
