//! Sign-in sessions: the API key stays here, in memory; the browser holds
//! only a random session id in an HttpOnly, SameSite=Strict cookie (Secure
//! over TLS). Each session has its own CSRF token, which every
//! state-changing form carries and every POST must present.
//!
//! Sessions live in this process only: a restart signs everyone out, and
//! several consoles behind a load balancer need sticky sessions (see
//! docs/console.md). Nothing here is ever logged.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use herald_core::secret::Secret;
use herald_proto::v1::Caller;

/// The session cookie's name.
pub const SESSION_COOKIE: &str = "herald_session";
/// The sign-in form's CSRF cookie (there is no session yet to hold it).
pub const LOGIN_COOKIE: &str = "herald_login";

/// One signed-in person.
pub struct Session {
    pub token: Secret<String>,
    pub csrf: String,
    /// Who the key is (WhoAmI at sign-in): decides which actions pages show.
    pub caller: Caller,
    expires: Instant,
    /// A signing secret to show on a webhook's page after the POST that made
    /// it redirected there. Kept here, not in a URL, so that it never lands
    /// in history or logs; the redirect carries only a one-time name for it.
    new_secret: Mutex<Option<NewSecret>>,
}

/// How long the page a create or rotate form redirects to shows the new
/// secret. Not just its first view: a browser may request the redirect's
/// target twice (Chromium 156 did, under load, showing the second answer),
/// and a first view that consumed the secret left the user without it.
pub const SHOWN_FOR: Duration = Duration::from_secs(60);

struct NewSecret {
    webhook_id: String,
    /// Names this secret in the redirect's URL (`?shown=`).
    nonce: String,
    secret: Secret<String>,
    until: Instant,
}

impl Session {
    /// Whether the key may change things (admin scope).
    pub fn is_admin(&self) -> bool {
        self.caller.scopes.iter().any(|s| s == "admin")
    }

    /// Keeps `secret` to show on `webhook_id`'s page; returns the name the
    /// redirect to that page carries (`?shown=`).
    pub fn keep_new_secret(&self, webhook_id: &str, secret: String) -> String {
        let nonce = random_token();
        *self.new_secret.lock().unwrap_or_else(|e| e.into_inner()) = Some(NewSecret {
            webhook_id: webhook_id.to_owned(),
            nonce: nonce.clone(),
            secret: Secret::new(secret),
            until: Instant::now() + SHOWN_FOR,
        });
        nonce
    }

    /// The secret kept for `webhook_id`'s page under `nonce`, for
    /// [`SHOWN_FOR`] after it was kept; a view without the nonce (a later
    /// visit, a link) never shows it.
    pub fn new_secret(&self, webhook_id: &str, nonce: &str) -> Option<String> {
        let mut kept = self.new_secret.lock().unwrap_or_else(|e| e.into_inner());
        if kept.as_ref().is_some_and(|k| Instant::now() >= k.until) {
            *kept = None;
        }
        kept.as_ref()
            .filter(|k| k.webhook_id == webhook_id && same(nonce, &k.nonce))
            .map(|k| k.secret.expose().clone())
    }

    /// Whether `presented` is this session's CSRF token.
    pub fn csrf_matches(&self, presented: &str) -> bool {
        same(presented, &self.csrf)
    }
}

/// Compares in time independent of where the texts differ.
pub fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// 32 random bytes, base64url: session ids and CSRF tokens.
pub fn random_token() -> String {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).expect("the operating system's random source works");
    URL_SAFE_NO_PAD.encode(bytes)
}

pub struct Sessions {
    ttl: Duration,
    by_id: Mutex<HashMap<String, Arc<Session>>>,
}

impl Sessions {
    pub fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            by_id: Mutex::new(HashMap::new()),
        }
    }

    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Starts a session; returns its id (the cookie's value).
    pub fn create(&self, token: Secret<String>, caller: Caller) -> String {
        let id = random_token();
        let session = Session {
            token,
            csrf: random_token(),
            caller,
            expires: Instant::now() + self.ttl,
            new_secret: Mutex::new(None),
        };
        self.lock().insert(id.clone(), Arc::new(session));
        id
    }

    /// The live session of `id`.
    pub fn get(&self, id: &str) -> Option<Arc<Session>> {
        let mut map = self.lock();
        match map.get(id) {
            Some(s) if s.expires > Instant::now() => Some(s.clone()),
            Some(_) => {
                map.remove(id);
                None
            }
            None => None,
        }
    }

    pub fn remove(&self, id: &str) {
        self.lock().remove(id);
    }

    /// Drops expired sessions.
    pub fn sweep(&self) {
        let now = Instant::now();
        self.lock().retain(|_, s| s.expires > now);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Session>>> {
        self.by_id.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The value of cookie `name` in a request's `Cookie` headers.
pub fn cookie<'a>(headers: &'a http::HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// A `Set-Cookie` value: HttpOnly, SameSite=Strict, Path=/, Secure when
/// asked; `max_age` None removes the cookie.
pub fn set_cookie(name: &str, value: &str, max_age: Option<Duration>, secure: bool) -> String {
    let age = max_age.map_or(0, |d| d.as_secs());
    let secure = if secure { "; Secure" } else { "" };
    format!("{name}={value}; Max-Age={age}; Path=/; HttpOnly; SameSite=Strict{secure}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_expire_and_can_be_removed() {
        let sessions = Sessions::new(Duration::from_millis(50));
        let id = sessions.create(Secret::new("hrk_x".into()), Caller::default());
        assert!(sessions.get(&id).is_some());
        assert!(sessions.get("other").is_none());
        sessions.remove(&id);
        assert!(sessions.get(&id).is_none());
        let id = sessions.create(Secret::new("hrk_x".into()), Caller::default());
        std::thread::sleep(Duration::from_millis(60));
        assert!(sessions.get(&id).is_none(), "expired");
    }

    #[test]
    fn cookies_are_read_and_written() {
        let mut headers = http::HeaderMap::new();
        headers.insert(
            http::header::COOKIE,
            "a=1; herald_session=abc; b=2".parse().unwrap(),
        );
        assert_eq!(cookie(&headers, SESSION_COOKIE), Some("abc"));
        assert_eq!(cookie(&headers, "missing"), None);
        assert_eq!(
            set_cookie("n", "v", Some(Duration::from_secs(60)), true),
            "n=v; Max-Age=60; Path=/; HttpOnly; SameSite=Strict; Secure"
        );
        assert!(!set_cookie("n", "", None, false).contains("Secure"));
    }

    #[test]
    fn a_new_secret_shows_on_its_redirect_only_and_survives_a_repeated_view() {
        let sessions = Sessions::new(Duration::from_secs(60));
        let id = sessions.create(Secret::new("hrk_x".into()), Caller::default());
        let session = sessions.get(&id).unwrap();
        let nonce = session.keep_new_secret("w1", "whsec_1".into());
        // The browser may ask for the redirect's target twice.
        for _ in 0..2 {
            assert_eq!(session.new_secret("w1", &nonce).as_deref(), Some("whsec_1"));
        }
        assert_eq!(session.new_secret("w1", "guessed"), None);
        assert_eq!(session.new_secret("w2", &nonce), None);
        // A newer secret replaces it.
        let newer = session.keep_new_secret("w1", "whsec_2".into());
        assert_eq!(session.new_secret("w1", &nonce), None);
        assert_eq!(session.new_secret("w1", &newer).as_deref(), Some("whsec_2"));
    }

    #[test]
    fn tokens_compare_whole() {
        assert!(same("abc", "abc"));
        assert!(!same("abc", "abd"));
        assert!(!same("abc", "ab"));
        assert_ne!(random_token(), random_token());
    }
}
