//! Shared-secret authentication.
//!
//! Native clients send `Authorization: Bearer <token>`. Browsers cannot set headers on a
//! WebSocket, so they offer the token as a subprotocol, `hlm-token.<token>`, next to the protocol
//! name [`PROTOCOL`]; the server answers with [`PROTOCOL`] as the selected subprotocol (a browser
//! drops a connection whose response selects none of its offers). Tokens are therefore limited to
//! characters valid in a subprotocol: `A-Z a-z 0-9 . _ ~ -`.

use axum::http::HeaderMap;

/// The subprotocol name the server selects.
pub const PROTOCOL: &str = "hlm-v1";
/// Prefix of the subprotocol that carries a token.
pub const TOKEN_PREFIX: &str = "hlm-token.";

/// Checks that a token can travel as a subprotocol.
pub fn valid_token(t: &str) -> bool {
    !t.is_empty()
        && t.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'~' | b'-'))
}

/// The token a request presents, from the `Authorization` header or a `hlm-token.` subprotocol.
pub fn presented_token(headers: &HeaderMap) -> Option<String> {
    if let Some(v) = headers.get(axum::http::header::AUTHORIZATION) {
        if let Some(t) = v.to_str().ok().and_then(|s| s.strip_prefix("Bearer ")) {
            return Some(t.trim().to_string());
        }
    }
    headers
        .get_all(axum::http::header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .find_map(|p| p.trim().strip_prefix(TOKEN_PREFIX).map(str::to_string))
}

/// Compares `presented` with every configured token in time independent of where they differ
/// (and of which token matches).
pub fn token_matches(presented: &str, tokens: &[String]) -> bool {
    let mut ok = false;
    for t in tokens {
        ok |= constant_time_eq(presented.as_bytes(), t.as_bytes());
    }
    ok
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = (a.len() ^ b.len()) as u64;
    for i in 0..a.len().max(b.len()) {
        let x = a.get(i).copied().unwrap_or(0);
        let y = b.get(i).copied().unwrap_or(0);
        diff |= (x ^ y) as u64;
    }
    diff == 0
}

/// Whether a browser page at `Origin` may open a session. Requests without an `Origin` header
/// (native clients) are allowed: the check protects browsers' ambient credentials from
/// cross-site pages (WebSocket hijacking). A page from the server's own host is allowed, and so is
/// any origin in `allowed` (`*` allows all).
pub fn origin_allowed(headers: &HeaderMap, allowed: &[String]) -> bool {
    let Some(origin) = headers
        .get(axum::http::header::ORIGIN)
        .and_then(|v| v.to_str().ok())
    else {
        return true;
    };
    if allowed
        .iter()
        .any(|a| a == "*" || a.trim_end_matches('/') == origin)
    {
        return true;
    }
    let host = headers
        .get(axum::http::header::HOST)
        .and_then(|v| v.to_str().ok());
    let origin_host = origin
        .split_once("://")
        .map(|(_, rest)| rest)
        .unwrap_or(origin);
    host.is_some_and(|h| h.eq_ignore_ascii_case(origin_host))
}

/// Reads tokens from a file: one per line, blank lines and `#` comments ignored.
/// Why a caller is turned away before any session starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denied {
    /// A browser page from an origin not allowed.
    Origin,
    /// The server has tokens and the caller presented none of them.
    Unauthorized,
}

/// The checks every entry point makes (WebSocket sessions, the OpenAI-compatible endpoint): the
/// origin against `allowed_origins`, then the token against `tokens` (none configured: open).
pub fn check_caller(
    headers: &HeaderMap,
    allowed_origins: &[String],
    tokens: &[String],
) -> Result<(), Denied> {
    if !origin_allowed(headers, allowed_origins) {
        return Err(Denied::Origin);
    }
    if !tokens.is_empty() && !presented_token(headers).is_some_and(|t| token_matches(&t, tokens)) {
        return Err(Denied::Unauthorized);
    }
    Ok(())
}

pub fn tokens_from_file(path: &std::path::Path) -> std::io::Result<Vec<String>> {
    Ok(std::fs::read_to_string(path)?
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_string)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_from_header_or_subprotocol() {
        let mut h = HeaderMap::new();
        assert_eq!(presented_token(&h), None);
        h.insert(
            "sec-websocket-protocol",
            "hlm-v1, hlm-token.abc-123".parse().unwrap(),
        );
        assert_eq!(presented_token(&h).as_deref(), Some("abc-123"));
        h.insert("authorization", "Bearer xyz".parse().unwrap());
        assert_eq!(presented_token(&h).as_deref(), Some("xyz"));
    }

    #[test]
    fn origins() {
        let mut h = HeaderMap::new();
        assert!(origin_allowed(&h, &[]), "native clients send no Origin");
        h.insert("host", "verifier.example:8080".parse().unwrap());
        h.insert("origin", "https://verifier.example:8080".parse().unwrap());
        assert!(origin_allowed(&h, &[]), "same origin");
        h.insert("origin", "https://evil.example".parse().unwrap());
        assert!(!origin_allowed(&h, &[]));
        assert!(origin_allowed(&h, &["https://evil.example/".into()]));
        assert!(origin_allowed(&h, &["*".into()]));
    }

    #[test]
    fn comparison() {
        let tokens = vec!["alpha".to_string(), "beta-2".to_string()];
        assert!(token_matches("beta-2", &tokens));
        assert!(!token_matches("beta-", &tokens));
        assert!(!token_matches("beta-22", &tokens));
        assert!(!token_matches("", &tokens));
        assert!(valid_token("a.b_c~d-9") && !valid_token("a b") && !valid_token("a/b"));
    }
}
