//! AWS Signature Version 4 (`AWS4-HMAC-SHA256`, `Authorization` header form) for lamina's API.
//!
//! [`verify`] authenticates a request from boto3, the AWS CLI or any AWS SDK; [`sign`] is the
//! matching client-side signer (tests, lamina's own CLI). Both follow botocore's `SigV4Auth`
//! (botocore 1.44.8), which is what the test vectors in `tests/vectors.json` were made with.
//!
//! # What is checked, in AWS's order
//! 1. An `Authorization` header exists, else `MissingAuthenticationTokenException`.
//! 2. It parses as `<algorithm> Credential=.., SignedHeaders=.., Signature=..` (pairs separated by
//!    commas and/or whitespace, as AWS accepts) and the request has `X-Amz-Date` or `Date`.
//! 3. The date is valid and within `max_skew_secs` of `now_unix` (both directions).
//! 4. `host` is among the signed headers (binds the signature to the endpoint).
//! 5. The algorithm is `AWS4-HMAC-SHA256`; the credential has 5 parts; the scope's service is
//!    one of `expected_service`, its terminator is `aws4_request`, its date is the request's.
//!    Any well-formed region (`[a-z0-9-]+`) is accepted: it is returned in [`Verified`] and the
//!    caller decides. Messages are AWS's own, as recorded from real responses.
//! 6. The access key is known ([`KeyStore`]), else `UnrecognizedClientException`.
//! 7. The signature matches (constant-time comparison), then, if a signed
//!    `x-amz-content-sha256` carried a hex digest, that digest matches the body.
//!
//! # Canonical request (what both sides hash)
//! * Method, upper-cased.
//! * URI: the path *as sent* (already percent-encoded once), with `.`/`..` segments and empty
//!   segments removed exactly as botocore's `remove_dot_segments` does, then percent-encoded
//!   *again* leaving only `A-Z a-z 0-9 - _ . ~ /`: `%3A` on the wire becomes `%253A`.
//! * Query: split on `&` (empty pieces dropped), each `key[=value]` percent-decoded (`+` decodes
//!   to a space, see below) and re-encoded with only the unreserved set left alone, sorted by
//!   key then value, repeated keys kept, a key without `=` rendered `key=`.
//! * Headers: exactly those named in `SignedHeaders`, in that order (names as the client wrote
//!   them, matched case-insensitively), each line `name:value` where the value is trimmed and
//!   internal whitespace runs are collapsed to one space (whitespace as Python's `str.split()`
//!   sees it in ASCII, which is what botocore uses), and repeated headers are comma-joined in the
//!   order received. A signed header that is absent contributes `name:` (the signature fails).
//! * Payload hash: the value of `x-amz-content-sha256` when that header is present *and signed*
//!   (`UNSIGNED-PAYLOAD` or a 64-hex-digit digest; other values are rejected), else the hex
//!   SHA-256 of the body. botocore never sends this header for Lambda or Logs, so normally the
//!   server hashes the body it received.
//!
//! # Notes
//! * `x-amz-security-token`: lamina issues no session tokens. A request that carries one (boto3
//!   with session credentials) is accepted if its signature checks with the access key's secret:
//!   the token is only one more signed header, its value is not looked at.
//! * `UNSIGNED-PAYLOAD` means the body is *not* authenticated. It is accepted only when the
//!   request says so in a signed `x-amz-content-sha256` header.
//! * `+` in the query is decoded as a space (form encoding). botocore's `AWSRequest(params=..)`
//!   path needs it: urllib's `urlencode` puts `a+b` on the wire while botocore signs `a%20b`.
//!   boto3's API calls always send `%20`/`%2B`, so they do not depend on it. The API server's
//!   own query parser should agree.
//! * The time is `X-Amz-Date` (`YYYYMMDDTHHMMSSZ`); without it, `Date` (`Fri, 27 Nov 2026
//!   15:35:38 GMT`, or botocore's `-0000` form), converted to that form for the string to sign.
//! * Client quirks that no server can fix (seen while making the vectors): botocore signs a
//!   header it was given twice but sends only the last value; urllib3 upper-cases `%2f` to `%2F`
//!   in the path after botocore signed it. boto3's own calls trigger neither.
//! * The caller passes `host` for HTTP/2 requests too (from `:authority`), the raw request target
//!   split at the first `?`, header values as received (bytes), and the full body.
//! * Nothing here panics on any input; every input-derived error is an [`AuthError`].

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt::Write as _;
use std::hash::BuildHasher;

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// The only algorithm supported.
pub const ALGORITHM: &str = "AWS4-HMAC-SHA256";
/// `x-amz-content-sha256` value for a body that is not covered by the signature.
pub const UNSIGNED_PAYLOAD: &str = "UNSIGNED-PAYLOAD";
const TERMINATOR: &str = "aws4_request";
/// Headers botocore never signs (`SIGNED_HEADERS_BLACKLIST`); [`sign`] skips them too.
const UNSIGNABLE_HEADERS: &[&str] = &[
    "authorization",
    "baggage",
    "connection",
    "expect",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "traceparent",
    "tracestate",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "user-agent",
    "x-amzn-trace-id",
];

/// An HTTP request as received (server) or about to be sent (client).
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    pub method: &'a str,
    /// The path as sent on the wire, percent-encoded, without the query.
    pub raw_path: &'a str,
    /// Everything after the first `?`, as sent; `""` when there is none.
    pub raw_query: &'a str,
    /// Headers as received: names in any case, values as bytes, repeats allowed, in order.
    pub headers: &'a [(&'a str, &'a [u8])],
    pub body: &'a [u8],
}

/// Looks up the secret access key for an access key id.
pub trait KeyStore {
    fn secret_for(&self, access_key_id: &str) -> Option<String>;
}

impl<S: BuildHasher> KeyStore for HashMap<String, String, S> {
    fn secret_for(&self, access_key_id: &str) -> Option<String> {
        self.get(access_key_id).cloned()
    }
}

/// The identity a request was signed with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    pub access_key_id: String,
    pub region: String,
    pub service: String,
}

/// Why a request was not authenticated. Every variant is HTTP 403; [`AuthError::error_type`] is
/// the `x-amzn-ErrorType` and [`AuthError::message`] the body's `message`, as AWS words them.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {}", self.error_type(), self.message())]
pub enum AuthError {
    /// No `Authorization` header.
    MissingAuthenticationToken,
    /// A piece of the `Authorization` header without `=`.
    MissingEqualSign { pair: String, header: String },
    /// Parameters or the date header are missing (or the scheme is not `AWS4-*`).
    IncompleteAuthorization {
        credential: bool,
        signature: bool,
        signed_headers: bool,
        date: bool,
        header: String,
    },
    /// `X-Amz-Date` (or `Date`) does not parse.
    MalformedDate { value: String },
    /// The request time (unix seconds) is more than `max_skew_secs` before `now`.
    SignatureExpired {
        request_time: i64,
        now: i64,
        max_skew_secs: i64,
    },
    /// The request time (unix seconds) is more than `max_skew_secs` after `now`.
    SignatureNotYetCurrent {
        request_time: i64,
        now: i64,
        max_skew_secs: i64,
    },
    /// `host` is not among the signed headers.
    HostNotSigned,
    /// An `AWS4-*` algorithm other than `AWS4-HMAC-SHA256`.
    UnsupportedAlgorithm { algorithm: String },
    /// The credential is not `keyid/date/region/service/aws4_request`.
    MalformedCredential { credential: String },
    /// The credential scope is wrong (boxed to keep `AuthError` small).
    InvalidCredentialScope(Box<ScopeMismatch>),
    /// The access key id is unknown.
    UnrecognizedClient,
    /// The signature does not match. The fields are what the server computed, for logs only.
    SignatureDoesNotMatch {
        canonical_request: String,
        string_to_sign: String,
    },
    /// A signed `x-amz-content-sha256` is neither `UNSIGNED-PAYLOAD` nor a SHA-256 hex digest.
    InvalidContentSha256 { value: String },
    /// A signed `x-amz-content-sha256` digest does not match the body received.
    ContentSha256Mismatch,
}

/// What is wrong with a credential scope: each `Some` is one complaint, reported together as
/// AWS does.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ScopeMismatch {
    /// The region given, when it is empty or not a region name (`[a-z0-9-]+`).
    pub region: Option<String>,
    /// The service expected (the first of `expected_service`), when the scope names another.
    pub service: Option<String>,
    /// The terminator given, when it is not `aws4_request`.
    pub terminator: Option<String>,
    /// (scope date, request date `YYYYMMDD`, request time), when the dates differ.
    pub date: Option<(String, String, String)>,
}

const MSG_SIGNATURE_MISMATCH: &str = "The request signature we calculated does not match the \
    signature you provided. Check your AWS Secret Access Key and signing method. Consult the \
    service documentation for details.";

impl AuthError {
    /// The AWS error code (`x-amzn-ErrorType`).
    #[must_use]
    pub fn error_type(&self) -> &'static str {
        use AuthError::*;
        match self {
            MissingAuthenticationToken => "MissingAuthenticationTokenException",
            MissingEqualSign { .. }
            | IncompleteAuthorization { .. }
            | MalformedDate { .. }
            | UnsupportedAlgorithm { .. }
            | MalformedCredential { .. } => "IncompleteSignatureException",
            UnrecognizedClient => "UnrecognizedClientException",
            SignatureExpired { .. }
            | SignatureNotYetCurrent { .. }
            | HostNotSigned
            | InvalidCredentialScope(_)
            | SignatureDoesNotMatch { .. }
            | InvalidContentSha256 { .. }
            | ContentSha256Mismatch => "InvalidSignatureException",
        }
    }

    /// The HTTP status: always 403.
    #[must_use]
    pub fn http_status(&self) -> u16 {
        403
    }

    /// The message AWS sends for this error (trailing spaces included where AWS has them).
    #[must_use]
    pub fn message(&self) -> String {
        use AuthError::*;
        match self {
            MissingAuthenticationToken => "Missing Authentication Token".to_owned(),
            MissingEqualSign { pair, header } => format!(
                "'{pair}' not a valid key=value pair (missing equal-sign) in Authorization \
                 header: '{header}'."
            ),
            IncompleteAuthorization {
                credential,
                signature,
                signed_headers,
                date,
                header,
            } => {
                let mut m = String::new();
                for (missing, name) in [
                    (credential, "Credential"),
                    (signature, "Signature"),
                    (signed_headers, "SignedHeaders"),
                ] {
                    if *missing {
                        m.push_str("Authorization header requires '");
                        m.push_str(name);
                        m.push_str("' parameter. ");
                    }
                }
                if *date {
                    m.push_str(
                        "Authorization header requires existence of either a 'X-Amz-Date' or a \
                         'Date' header. ",
                    );
                }
                m.push_str("Authorization=");
                m.push_str(header);
                m
            }
            MalformedDate { value } => format!(
                "Date must be in ISO-8601 'basic format'. Got '{value}'. See \
                 http://en.wikipedia.org/wiki/ISO_8601"
            ),
            SignatureExpired {
                request_time,
                now,
                max_skew_secs,
            } => format!(
                "Signature expired: {} is now earlier than {} ({} - {})",
                format_amz_date(*request_time),
                format_amz_date(now.saturating_sub(*max_skew_secs)),
                format_amz_date(*now),
                skew_text(*max_skew_secs),
            ),
            SignatureNotYetCurrent {
                request_time,
                now,
                max_skew_secs,
            } => format!(
                "Signature not yet current: {} is still later than {} ({} + {})",
                format_amz_date(*request_time),
                format_amz_date(now.saturating_add(*max_skew_secs)),
                format_amz_date(*now),
                skew_text(*max_skew_secs),
            ),
            HostNotSigned => {
                "'Host' or ':authority' must be a 'SignedHeader' in the AWS Authorization."
                    .to_owned()
            }
            UnsupportedAlgorithm { algorithm } => format!(
                "Unsupported AWS 'algorithm': '{algorithm}' (only AWS4-HMAC-SHA256 for now). "
            ),
            MalformedCredential { credential } => format!(
                "Credential must have exactly 5 slash-delimited elements, e.g. \
                 keyid/date/region/service/term, got '{credential}'"
            ),
            InvalidCredentialScope(scope) => {
                let mut m = String::new();
                if let Some(r) = &scope.region {
                    let _ = write!(
                        m,
                        "Credential should be scoped to a valid region, not '{r}'. "
                    );
                }
                if let Some(s) = &scope.service {
                    let _ = write!(m, "Credential should be scoped to correct service: '{s}'. ");
                }
                if let Some(t) = &scope.terminator {
                    let _ = write!(
                        m,
                        "Credential should be scoped with a valid terminator: 'aws4_request', \
                         not '{t}'. "
                    );
                }
                if let Some((scope_date, expected, from)) = &scope.date {
                    let _ = write!(
                        m,
                        "Date in Credential scope does not match YYYYMMDD from ISO-8601 version \
                         of date from HTTP: '{scope_date}' != '{expected}', from '{from}'."
                    );
                }
                m
            }
            UnrecognizedClient => {
                "The security token included in the request is invalid.".to_owned()
            }
            SignatureDoesNotMatch { .. } => MSG_SIGNATURE_MISMATCH.to_owned(),
            InvalidContentSha256 { value } => format!(
                "x-amz-content-sha256 must be UNSIGNED-PAYLOAD or a valid sha256 value, got \
                 '{value}'."
            ),
            ContentSha256Mismatch => {
                "The provided 'x-amz-content-sha256' header does not match what was computed."
                    .to_owned()
            }
        }
    }
}

/// The parsed `Authorization` header.
struct Authorization<'h> {
    algorithm: &'h str,
    credential: &'h str,
    signed_headers: &'h str,
    signature: &'h str,
}

fn is_ows(c: char) -> bool {
    c == ' ' || c == '\t'
}

/// Parses the header; on failure returns the error, except for the date complaint, which the
/// caller adds (`date_missing`).
fn parse_authorization(header: &str, date_missing: bool) -> Result<Authorization<'_>, AuthError> {
    let header = header.trim_matches(is_ows);
    let (algorithm, rest) = match header.find(is_ows) {
        Some(i) => (&header[..i], &header[i..]),
        None => (header, ""),
    };
    let (mut credential, mut signed_headers, mut signature) = ("", "", "");
    if algorithm.starts_with("AWS4-") {
        for piece in rest
            .split(|c: char| c == ',' || is_ows(c))
            .filter(|p| !p.is_empty())
        {
            let Some((key, value)) = piece.split_once('=') else {
                return Err(AuthError::MissingEqualSign {
                    pair: piece.to_owned(),
                    header: header.to_owned(),
                });
            };
            let slot = match key {
                "Credential" => &mut credential,
                "SignedHeaders" => &mut signed_headers,
                "Signature" => &mut signature,
                _ => continue,
            };
            if slot.is_empty() {
                *slot = value;
            }
        }
    }
    if credential.is_empty() || signed_headers.is_empty() || signature.is_empty() || date_missing {
        return Err(AuthError::IncompleteAuthorization {
            credential: credential.is_empty(),
            signature: signature.is_empty(),
            signed_headers: signed_headers.is_empty(),
            date: date_missing,
            header: header.to_owned(),
        });
    }
    Ok(Authorization {
        algorithm,
        credential,
        signed_headers,
        signature,
    })
}

/// First value of a header, OWS-trimmed.
fn first_header<'a>(headers: &'a [(&'a str, &'a [u8])], name: &str) -> Option<&'a [u8]> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| trim_ows(v))
}

fn trim_ows(v: &[u8]) -> &[u8] {
    let start = v
        .iter()
        .position(|b| !matches!(b, b' ' | b'\t'))
        .unwrap_or(v.len());
    let end = v
        .iter()
        .rposition(|b| !matches!(b, b' ' | b'\t'))
        .map_or(start, |i| i + 1);
    v.get(start..end).unwrap_or(&[])
}

fn lossy(v: &[u8]) -> Cow<'_, str> {
    String::from_utf8_lossy(v)
}

/// Verifies a SigV4-signed request. See the module documentation for the rules.
///
/// `expected_service` lists the scope services accepted (`["lambda"]`, `["logs"]`, ...);
/// `max_skew_secs` is the allowed clock difference either way (AWS: 300; lamina: 900).
///
/// # Errors
/// An [`AuthError`] naming the first check that failed, in the order of the module docs.
pub fn verify(
    req: &Request,
    keys: &dyn KeyStore,
    expected_service: &[&str],
    now_unix: i64,
    max_skew_secs: i64,
) -> Result<Verified, AuthError> {
    let auth_raw =
        first_header(req.headers, "authorization").ok_or(AuthError::MissingAuthenticationToken)?;
    let auth_text = lossy(auth_raw);
    let date = DateHeader::find(req.headers);
    let auth = parse_authorization(&auth_text, date.is_none())?;
    // parse_authorization has already rejected a request without a date header.
    let request_time = date.map_or(
        Err(AuthError::MissingAuthenticationToken),
        DateHeader::parse,
    )?;
    check_skew(request_time, now_unix, max_skew_secs)?;
    if !lists(auth.signed_headers, "host") {
        return Err(AuthError::HostNotSigned);
    }
    if auth.algorithm != ALGORITHM {
        return Err(AuthError::UnsupportedAlgorithm {
            algorithm: auth.algorithm.to_owned(),
        });
    }
    let amz_date = format_amz_date(request_time);
    let scope = CredentialScope::parse(auth.credential)?;
    scope.check(expected_service, &amz_date)?;
    let secret = keys
        .secret_for(scope.access_key_id)
        .ok_or(AuthError::UnrecognizedClient)?;
    let payload = Payload::of(req, auth.signed_headers)?;

    let canonical = canonical_request_inner(req, auth.signed_headers, payload.hash_line(), None);
    let scope_text = [scope.date, scope.region, scope.service, TERMINATOR].join("/");
    let string_to_sign = string_to_sign(&amz_date, &scope_text, &canonical);
    let key = signing_key(&secret, scope.date, scope.region, scope.service);
    let expected = hex::encode(hmac_sha256(&key, string_to_sign.as_bytes()));
    if !bool::from(expected.as_bytes().ct_eq(auth.signature.as_bytes())) {
        return Err(AuthError::SignatureDoesNotMatch {
            canonical_request: lossy(&canonical).into_owned(),
            string_to_sign,
        });
    }
    payload.check_body(req.body)?;
    Ok(Verified {
        access_key_id: scope.access_key_id.to_owned(),
        region: scope.region.to_owned(),
        service: scope.service.to_owned(),
    })
}

/// Whether a `;`-separated `SignedHeaders` list names `header` (any case).
fn lists(signed_headers: &str, header: &str) -> bool {
    signed_headers
        .split(';')
        .any(|n| n.eq_ignore_ascii_case(header))
}

/// The header that carries the request time: `X-Amz-Date`, else `Date`.
#[derive(Clone, Copy)]
enum DateHeader<'a> {
    AmzDate(&'a [u8]),
    Date(&'a [u8]),
}

impl<'a> DateHeader<'a> {
    fn find(headers: &'a [(&'a str, &'a [u8])]) -> Option<Self> {
        first_header(headers, "x-amz-date")
            .map(DateHeader::AmzDate)
            .or_else(|| first_header(headers, "date").map(DateHeader::Date))
    }

    /// Unix seconds.
    fn parse(self) -> Result<i64, AuthError> {
        let (parsed, raw) = match self {
            DateHeader::AmzDate(v) => (parse_amz_date(v), v),
            DateHeader::Date(v) => (std::str::from_utf8(v).ok().and_then(parse_http_date), v),
        };
        parsed.ok_or_else(|| AuthError::MalformedDate {
            value: lossy(raw).into_owned(),
        })
    }
}

fn check_skew(request_time: i64, now: i64, max_skew_secs: i64) -> Result<(), AuthError> {
    let skew = max_skew_secs.max(0);
    if request_time < now.saturating_sub(skew) {
        return Err(AuthError::SignatureExpired {
            request_time,
            now,
            max_skew_secs: skew,
        });
    }
    if request_time > now.saturating_add(skew) {
        return Err(AuthError::SignatureNotYetCurrent {
            request_time,
            now,
            max_skew_secs: skew,
        });
    }
    Ok(())
}

/// `Credential=<access key id>/<date>/<region>/<service>/aws4_request`.
struct CredentialScope<'a> {
    access_key_id: &'a str,
    date: &'a str,
    region: &'a str,
    service: &'a str,
    terminator: &'a str,
}

impl<'a> CredentialScope<'a> {
    fn parse(credential: &'a str) -> Result<Self, AuthError> {
        // Trailing slashes are ignored, as AWS does.
        let mut parts = credential.trim_end_matches('/').split('/');
        match (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) {
            (
                Some(access_key_id),
                Some(date),
                Some(region),
                Some(service),
                Some(terminator),
                None,
            ) => Ok(CredentialScope {
                access_key_id,
                date,
                region,
                service,
                terminator,
            }),
            _ => Err(AuthError::MalformedCredential {
                credential: credential.to_owned(),
            }),
        }
    }

    fn check(&self, expected_service: &[&str], amz_date: &str) -> Result<(), AuthError> {
        let request_day = amz_date.get(..8).unwrap_or_default();
        let region_ok = !self.region.is_empty()
            && self
                .region
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        let mismatch = ScopeMismatch {
            region: (!region_ok).then(|| self.region.to_owned()),
            service: (!expected_service.contains(&self.service)).then(|| {
                expected_service
                    .first()
                    .copied()
                    .unwrap_or_default()
                    .to_owned()
            }),
            terminator: (self.terminator != TERMINATOR).then(|| self.terminator.to_owned()),
            date: (self.date != request_day).then(|| {
                (
                    self.date.to_owned(),
                    request_day.to_owned(),
                    amz_date.to_owned(),
                )
            }),
        };
        if mismatch == ScopeMismatch::default() {
            Ok(())
        } else {
            Err(AuthError::InvalidCredentialScope(Box::new(mismatch)))
        }
    }
}

/// The payload hash line, and what it commits the body to.
enum Payload<'a> {
    /// No signed `x-amz-content-sha256`: the hash of the body received.
    Hashed(String),
    /// Signed `x-amz-content-sha256: UNSIGNED-PAYLOAD`: the body is not authenticated.
    Unsigned,
    /// Signed `x-amz-content-sha256: <hex>`: the body must hash to it.
    Claimed { text: &'a str, digest: [u8; 32] },
}

impl<'a> Payload<'a> {
    fn of(req: &Request<'a>, signed_headers: &str) -> Result<Self, AuthError> {
        let header = if lists(signed_headers, "x-amz-content-sha256") {
            first_header(req.headers, "x-amz-content-sha256")
        } else {
            None
        };
        match header {
            None => Ok(Payload::Hashed(sha256_hex(req.body))),
            Some(v) if v == UNSIGNED_PAYLOAD.as_bytes() => Ok(Payload::Unsigned),
            Some(v) => {
                let mut digest = [0u8; 32];
                match (hex::decode_to_slice(v, &mut digest), std::str::from_utf8(v)) {
                    (Ok(()), Ok(text)) => Ok(Payload::Claimed { text, digest }),
                    _ => Err(AuthError::InvalidContentSha256 {
                        value: lossy(v).into_owned(),
                    }),
                }
            }
        }
    }

    fn hash_line(&self) -> &str {
        match self {
            Payload::Hashed(h) => h,
            Payload::Unsigned => UNSIGNED_PAYLOAD,
            Payload::Claimed { text, .. } => text,
        }
    }

    fn check_body(&self, body: &[u8]) -> Result<(), AuthError> {
        if let Payload::Claimed { digest, .. } = self {
            let actual: [u8; 32] = Sha256::digest(body).into();
            if !bool::from(actual.ct_eq(digest)) {
                return Err(AuthError::ContentSha256Mismatch);
            }
        }
        Ok(())
    }
}

/// Signs a request the way botocore does and returns the `Authorization` header value.
///
/// Every header in `req.headers` is signed except those botocore never signs (`user-agent`,
/// `expect`, `connection`, `x-amzn-trace-id`, ...). `req.headers` must contain `host`. If it has
/// neither `x-amz-date` nor `date`, the signature covers `x-amz-date: <amz_date>` and the caller
/// must send that header. `amz_date` is `YYYYMMDDTHHMMSSZ` (see [`format_amz_date`]); when a
/// `date` header is signed instead, it must be the same instant. If the
/// request has an `x-amz-content-sha256` header its value is the payload hash, else the body's
/// SHA-256.
#[must_use]
pub fn sign(
    req: &Request,
    access_key_id: &str,
    secret_access_key: &str,
    region: &str,
    service: &str,
    amz_date: &str,
) -> String {
    let mut names: Vec<String> = req
        .headers
        .iter()
        .map(|(n, _)| n.to_ascii_lowercase())
        .filter(|n| !UNSIGNABLE_HEADERS.contains(&n.as_str()))
        .collect();
    let has_date = names.iter().any(|n| n == "x-amz-date" || n == "date");
    if !has_date {
        names.push("x-amz-date".to_owned());
    }
    names.sort();
    names.dedup();
    let signed_headers = names.join(";");

    let body_hash;
    let payload_hash = match first_header(req.headers, "x-amz-content-sha256") {
        Some(v) => lossy(v),
        None => {
            body_hash = sha256_hex(req.body);
            Cow::Borrowed(body_hash.as_str())
        }
    };
    let fallback = (!has_date).then_some(("x-amz-date", amz_date.as_bytes()));
    let canonical = canonical_request_inner(req, &signed_headers, &payload_hash, fallback);
    let date = amz_date.get(..8).unwrap_or(amz_date);
    let scope = [date, region, service, TERMINATOR].join("/");
    let sts = string_to_sign(amz_date, &scope, &canonical);
    let signature = hex::encode(hmac_sha256(
        &signing_key(secret_access_key, date, region, service),
        sts.as_bytes(),
    ));
    format!(
        "{ALGORITHM} Credential={access_key_id}/{scope}, SignedHeaders={signed_headers}, \
         Signature={signature}"
    )
}

/// The canonical request for `req` given the `SignedHeaders` list (`;`-separated, used as is)
/// and the payload hash line. Exposed for tests and debugging.
#[must_use]
pub fn canonical_request(req: &Request, signed_headers: &str, payload_hash: &str) -> Vec<u8> {
    canonical_request_inner(req, signed_headers, payload_hash, None)
}

fn canonical_request_inner(
    req: &Request,
    signed_headers: &str,
    payload_hash: &str,
    fallback: Option<(&str, &[u8])>,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(
        256 + req.raw_path.len() * 2 + req.raw_query.len() * 2 + signed_headers.len() * 2,
    );
    out.extend(req.method.bytes().map(|b| b.to_ascii_uppercase()));
    out.push(b'\n');
    canonical_uri(&mut out, req.raw_path);
    out.push(b'\n');
    canonical_query(&mut out, req.raw_query);
    out.push(b'\n');
    for name in signed_headers.split(';') {
        out.extend_from_slice(name.as_bytes());
        out.push(b':');
        let mut first = true;
        for (_, value) in req
            .headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
        {
            if !first {
                out.push(b',');
            }
            first = false;
            push_collapsed(&mut out, value);
        }
        match fallback {
            Some((fname, fvalue)) if first && fname.eq_ignore_ascii_case(name) => {
                push_collapsed(&mut out, fvalue);
            }
            _ => {}
        }
        out.push(b'\n');
    }
    out.push(b'\n');
    out.extend_from_slice(signed_headers.as_bytes());
    out.push(b'\n');
    out.extend_from_slice(payload_hash.as_bytes());
    out
}

/// Whitespace as Python's `str.split()` sees it in ASCII (botocore's `' '.join(v.split())`).
fn is_py_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c | 0x1c..=0x1f)
}

/// Appends `value` trimmed, with each internal whitespace run replaced by one space.
fn push_collapsed(out: &mut Vec<u8>, value: &[u8]) {
    let mut pending_space = false;
    let mut any = false;
    for &b in value {
        if is_py_space(b) {
            pending_space = any;
        } else {
            if pending_space {
                out.push(b' ');
                pending_space = false;
            }
            out.push(b);
            any = true;
        }
    }
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~')
}

const HEX_UPPER: &[u8; 16] = b"0123456789ABCDEF";

fn push_encoded(out: &mut Vec<u8>, bytes: &[u8], keep_slash: bool) {
    for &b in bytes {
        if is_unreserved(b) || (keep_slash && b == b'/') {
            out.push(b);
        } else {
            out.extend_from_slice(&[
                b'%',
                HEX_UPPER[(b >> 4) as usize],
                HEX_UPPER[(b & 15) as usize],
            ]);
        }
    }
}

/// botocore's `quote(remove_dot_segments(path) or '/', safe='/~')`.
fn canonical_uri(out: &mut Vec<u8>, raw_path: &str) {
    if raw_path.is_empty() {
        out.push(b'/');
        return;
    }
    let mut segments: Vec<&str> = Vec::new();
    for seg in raw_path.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            s => segments.push(s),
        }
    }
    if raw_path.starts_with('/') {
        out.push(b'/');
    }
    for (i, seg) in segments.iter().enumerate() {
        if i > 0 {
            out.push(b'/');
        }
        push_encoded(out, seg.as_bytes(), false);
    }
    if raw_path.ends_with('/') && !segments.is_empty() {
        out.push(b'/');
    }
}

fn hex_val(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Form-style percent-decoding: `+` is a space; a `%` not followed by two hex digits stays.
fn query_decode(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => match (
                b.get(i + 1).copied().and_then(hex_val),
                b.get(i + 2).copied().and_then(hex_val),
            ) {
                (Some(h), Some(l)) => {
                    out.push(h << 4 | l);
                    i += 3;
                    continue;
                }
                _ => out.push(b'%'),
            },
            b'+' => out.push(b' '),
            c => out.push(c),
        }
        i += 1;
    }
    out
}

fn canonical_query(out: &mut Vec<u8>, raw_query: &str) {
    if raw_query.is_empty() {
        return;
    }
    let mut pairs: Vec<(Vec<u8>, Vec<u8>)> = raw_query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            let mut ek = Vec::with_capacity(k.len());
            push_encoded(&mut ek, &query_decode(k), false);
            let mut ev = Vec::with_capacity(v.len());
            push_encoded(&mut ev, &query_decode(v), false);
            (ek, ev)
        })
        .collect();
    pairs.sort_unstable();
    for (i, (k, v)) in pairs.iter().enumerate() {
        if i > 0 {
            out.push(b'&');
        }
        out.extend_from_slice(k);
        out.push(b'=');
        out.extend_from_slice(v);
    }
}

fn string_to_sign(amz_date: &str, scope: &str, canonical_request: &[u8]) -> String {
    format!(
        "{ALGORITHM}\n{amz_date}\n{scope}\n{}",
        sha256_hex(canonical_request)
    )
}

/// Hex SHA-256, lowercase.
#[must_use]
pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

fn hmac_sha256(key: &[u8], msg: &[u8]) -> [u8; 32] {
    // HMAC accepts keys of any length (RFC 2104: long keys are hashed, short ones padded), so
    // `new_from_slice` cannot fail for it; the error branch only exists for fixed-size-key MACs.
    let Ok(mut mac) = <Hmac<Sha256> as Mac>::new_from_slice(key) else {
        return [0; 32];
    };
    mac.update(msg);
    mac.finalize().into_bytes().into()
}

/// `kSigning = HMAC(HMAC(HMAC(HMAC("AWS4" + secret, date), region), service), "aws4_request")`.
fn signing_key(secret: &str, date: &str, region: &str, service: &str) -> [u8; 32] {
    let mut k = Vec::with_capacity(4 + secret.len());
    k.extend_from_slice(b"AWS4");
    k.extend_from_slice(secret.as_bytes());
    let k_date = hmac_sha256(&k, date.as_bytes());
    let k_region = hmac_sha256(&k_date, region.as_bytes());
    let k_service = hmac_sha256(&k_region, service.as_bytes());
    hmac_sha256(&k_service, TERMINATOR.as_bytes())
}

// ---- time ---------------------------------------------------------------------------------------

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's `days_from_civil`).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (
        if m <= 2 {
            yoe + era * 400 + 1
        } else {
            yoe + era * 400
        },
        m,
        d,
    )
}

fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        4 | 6 | 9 | 11 => 30,
        2 if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        2 => 28,
        _ => 31,
    }
}

const MIN_UNIX: i64 = -62_167_219_200; // 0000-01-01T00:00:00Z
const MAX_UNIX: i64 = 253_402_300_799; // 9999-12-31T23:59:59Z

/// `15 min.` as AWS writes the allowed skew (`N sec.` when not a whole number of minutes).
fn skew_text(secs: i64) -> String {
    if secs % 60 == 0 {
        format!("{} min.", secs / 60)
    } else {
        format!("{secs} sec.")
    }
}

/// Formats unix seconds as `YYYYMMDDTHHMMSSZ` (clamped to years 0000..=9999).
#[must_use]
pub fn format_amz_date(unix: i64) -> String {
    let t = unix.clamp(MIN_UNIX, MAX_UNIX);
    let (y, m, d) = civil_from_days(t.div_euclid(86_400));
    let s = t.rem_euclid(86_400);
    format!(
        "{y:04}{m:02}{d:02}T{:02}{:02}{:02}Z",
        s / 3600,
        s / 60 % 60,
        s % 60
    )
}

/// A short run of ASCII digits (at most 9, so no overflow is possible).
fn digits(b: &[u8]) -> Option<i64> {
    if b.is_empty() || b.len() > 9 || !b.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(b.iter().fold(0i64, |acc, d| acc * 10 + i64::from(d - b'0')))
}

fn to_unix(y: i64, mo: i64, d: i64, h: i64, mi: i64, s: i64) -> Option<i64> {
    let ok = (1..=12).contains(&mo)
        && (1..=days_in_month(y, mo)).contains(&d)
        && (0..24).contains(&h)
        && (0..60).contains(&mi)
        && (0..60).contains(&s);
    ok.then(|| days_from_civil(y, mo, d) * 86_400 + h * 3600 + mi * 60 + s)
}

/// Parses `YYYYMMDDTHHMMSSZ`.
#[must_use]
pub fn parse_amz_date(v: &[u8]) -> Option<i64> {
    if v.len() != 16 || v[8] != b'T' || v[15] != b'Z' {
        return None;
    }
    to_unix(
        digits(&v[0..4])?,
        digits(&v[4..6])?,
        digits(&v[6..8])?,
        digits(&v[9..11])?,
        digits(&v[11..13])?,
        digits(&v[13..15])?,
    )
}

/// Parses an HTTP `Date` (`Fri, 27 Nov 2026 15:35:38 GMT`, or botocore's `... -0000`, any
/// `+HHMM`/`-HHMM` offset, `UT`, `UTC`, `Z`; weekday optional).
fn parse_http_date(v: &str) -> Option<i64> {
    let mut tokens = v.split_ascii_whitespace().peekable();
    if tokens.peek()?.ends_with(',') {
        tokens.next();
    }
    let day = digits(tokens.next()?.as_bytes())?;
    let month = match tokens.next()? {
        "Jan" => 1,
        "Feb" => 2,
        "Mar" => 3,
        "Apr" => 4,
        "May" => 5,
        "Jun" => 6,
        "Jul" => 7,
        "Aug" => 8,
        "Sep" => 9,
        "Oct" => 10,
        "Nov" => 11,
        "Dec" => 12,
        _ => return None,
    };
    let year = tokens.next()?;
    if year.len() != 4 {
        return None;
    }
    let year = digits(year.as_bytes())?;
    let mut hms = tokens.next()?.split(':');
    let (h, mi, s) = (hms.next()?, hms.next()?, hms.next()?);
    if hms.next().is_some() || h.len() != 2 || mi.len() != 2 || s.len() != 2 {
        return None;
    }
    let offset = match tokens.next()? {
        "GMT" | "UT" | "UTC" | "Z" => 0,
        z if z.len() == 5 && (z.starts_with('+') || z.starts_with('-')) => {
            let hh = digits(&z.as_bytes()[1..3])?;
            let mm = digits(&z.as_bytes()[3..5])?;
            if mm >= 60 {
                return None;
            }
            let o = hh * 3600 + mm * 60;
            if z.starts_with('-') {
                -o
            } else {
                o
            }
        }
        _ => return None,
    };
    if tokens.next().is_some() {
        return None;
    }
    let local = to_unix(
        year,
        month,
        day,
        digits(h.as_bytes())?,
        digits(mi.as_bytes())?,
        digits(s.as_bytes())?,
    )?;
    Some(local - offset)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn uri(p: &str) -> String {
        let mut out = Vec::new();
        canonical_uri(&mut out, p);
        String::from_utf8(out).unwrap()
    }

    fn query(q: &str) -> String {
        let mut out = Vec::new();
        canonical_query(&mut out, q);
        String::from_utf8(out).unwrap()
    }

    fn collapse(v: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        push_collapsed(&mut out, v);
        out
    }

    #[test]
    fn uri_matches_botocore_normalisation() {
        // Expected values are botocore's quote(normalize_url_path(p), safe='/~').
        assert_eq!(uri(""), "/");
        assert_eq!(uri("/"), "/");
        assert_eq!(uri("//"), "/");
        assert_eq!(uri("/a/b/../c"), "/a/c");
        assert_eq!(uri("/a/b/.."), "/a");
        assert_eq!(uri("/a/./b/"), "/a/b/");
        assert_eq!(uri("/a//b///"), "/a/b/");
        assert_eq!(uri("/.."), "/");
        assert_eq!(uri("/../../a"), "/a");
        assert_eq!(uri("/a/.."), "/");
        assert_eq!(uri("a/b"), "a/b");
        assert_eq!(uri("/fn/arn%3Aaws%3Alambda"), "/fn/arn%253Aaws%253Alambda");
        assert_eq!(uri("/a b/$/é"), "/a%20b/%24/%C3%A9");
        assert_eq!(uri("/~user/x-y_z.w"), "/~user/x-y_z.w");
        assert_eq!(uri("/%2e%2E/"), "/%252e%252E/");
    }

    #[test]
    fn query_canonicalisation() {
        assert_eq!(query(""), "");
        assert_eq!(query("b=2&a=1"), "a=1&b=2");
        assert_eq!(query("k=b&k=a&k=a"), "k=a&k=a&k=b");
        assert_eq!(query("acl"), "acl=");
        assert_eq!(query("acl&x="), "acl=&x=");
        assert_eq!(query("&&a=1&"), "a=1");
        assert_eq!(query("a=x%7Ey"), "a=x~y");
        assert_eq!(query("a=%2f%2F"), "a=%2F%2F");
        assert_eq!(query("a=b:c"), "a=b%3Ac");
        assert_eq!(query("a=b+c%2Bd"), "a=b%20c%2Bd");
        assert_eq!(query("a=1=2"), "a=1%3D2");
        assert_eq!(query("a=%zz%4"), "a=%25zz%254");
        assert_eq!(query("Qualifier=%24LATEST"), "Qualifier=%24LATEST");
        // Sorted by encoded key: uppercase before lowercase, as bytes.
        assert_eq!(query("find=LayerVersion&Arn=x"), "Arn=x&find=LayerVersion");
        assert_eq!(query("a%20b=1&a=2"), "a=2&a%20b=1");
    }

    #[test]
    fn header_values_are_trimmed_and_collapsed() {
        assert_eq!(collapse(b"  a   b \t\t c  "), b"a b c");
        assert_eq!(collapse(b"\x0ba\x1fb\x0c"), b"a b");
        assert_eq!(collapse(b"   "), b"");
        assert_eq!(collapse(b"x"), b"x");
        assert_eq!(collapse(b"caf\xc3\xa9  \xa0"), b"caf\xc3\xa9 \xa0");
    }

    #[test]
    fn dates() {
        assert_eq!(parse_amz_date(b"19700101T000000Z"), Some(0));
        assert_eq!(parse_amz_date(b"20261127T153538Z"), Some(1_795_793_738));
        assert_eq!(format_amz_date(1_795_793_738), "20261127T153538Z");
        assert_eq!(parse_amz_date(b"20240229T235959Z"), Some(1_709_251_199));
        assert_eq!(parse_amz_date(b"20230229T000000Z"), None);
        assert_eq!(parse_amz_date(b"20261327T153538Z"), None);
        assert_eq!(parse_amz_date(b"20261127T243538Z"), None);
        assert_eq!(parse_amz_date(b"2026-11-27T15:35:38Z"), None);
        assert_eq!(parse_amz_date(b"20261127 153538Z"), None);
        assert_eq!(parse_amz_date(b"+0261127T153538Z"), None);
        assert_eq!(
            parse_http_date("Fri, 27 Nov 2026 15:35:38 GMT"),
            Some(1_795_793_738)
        );
        assert_eq!(
            parse_http_date("Fri, 27 Nov 2026 15:35:38 -0000"),
            Some(1_795_793_738)
        );
        assert_eq!(
            parse_http_date("27 Nov 2026 16:35:38 +0100"),
            Some(1_795_793_738)
        );
        assert_eq!(parse_http_date("Fri, 27 Nov 2026 15:35:38"), None);
        assert_eq!(parse_http_date("Fri, 27 Foo 2026 15:35:38 GMT"), None);
        assert_eq!(parse_http_date(""), None);
        assert_eq!(
            parse_http_date("Fri, 99999999999999999999999 Nov 2026 15:35:38 GMT"),
            None
        );
        assert_eq!(
            parse_http_date("Fri, 00000000027 Nov 2026 15:35:38 GMT"),
            None
        );
        for t in [MIN_UNIX, -1, 0, 951_782_400, 4_102_444_800, MAX_UNIX] {
            assert_eq!(
                parse_amz_date(format_amz_date(t).as_bytes()),
                Some(t),
                "{t}"
            );
        }
        assert_eq!(format_amz_date(i64::MAX), "99991231T235959Z");
        assert_eq!(format_amz_date(i64::MIN), "00000101T000000Z");
    }

    #[test]
    fn days_roundtrip() {
        for z in (-800_000..800_000).step_by(37) {
            let (y, m, d) = civil_from_days(z);
            assert_eq!(days_from_civil(y, m, d), z);
        }
    }

    #[test]
    fn aws_documentation_get_vanilla() {
        // The "get-vanilla" case of AWS's SigV4 test suite.
        let headers: &[(&str, &[u8])] = &[
            ("Host", b"example.amazonaws.com"),
            ("X-Amz-Date", b"20150830T123600Z"),
        ];
        let req = Request {
            method: "GET",
            raw_path: "/",
            raw_query: "",
            headers,
            body: b"",
        };
        let auth = sign(
            &req,
            "AKIDEXAMPLE",
            "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
            "us-east-1",
            "service",
            "20150830T123600Z",
        );
        assert_eq!(
            auth,
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, \
             SignedHeaders=host;x-amz-date, \
             Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"
        );
    }
}
