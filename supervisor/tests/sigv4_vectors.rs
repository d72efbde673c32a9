//! Checks `sigv4` against requests captured on the wire from botocore/boto3
//! (`tests/data/sigv4_vectors.json`, made by `tests/tools/gen_sigv4_vectors.py`).

use std::collections::HashMap;

use base64::Engine as _;
use lamina::api::sigv4::{
    canonical_request, format_amz_date, sha256_hex, sign, verify, AuthError, Request,
};
use serde::Deserialize;

const SKEW: i64 = 900;

#[derive(Deserialize)]
struct File {
    vectors: Vec<Vector>,
}

#[derive(Deserialize, Clone)]
struct Vector {
    name: String,
    method: String,
    path: String,
    query: String,
    headers: Vec<(String, String)>,
    body_b64: String,
    access_key_id: String,
    secret_access_key: String,
    region: String,
    service: String,
    now: i64,
    authorization: String,
    botocore_canonical_request: String,
}

/// A vector decoded into owned bytes that can be mutated, then borrowed as a `Request`.
#[derive(Clone)]
struct Owned {
    method: String,
    path: String,
    query: String,
    headers: Vec<(String, Vec<u8>)>,
    body: Vec<u8>,
}

impl Owned {
    fn with<R>(&self, f: impl FnOnce(&Request) -> R) -> R {
        let headers: Vec<(&str, &[u8])> = self
            .headers
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_slice()))
            .collect();
        let req = Request {
            method: &self.method,
            raw_path: &self.path,
            raw_query: &self.query,
            headers: &headers,
            body: &self.body,
        };
        f(&req)
    }

    fn header_mut(&mut self, name: &str) -> &mut Vec<u8> {
        &mut self
            .headers
            .iter_mut()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .unwrap()
            .1
    }
}

fn latin1(s: &str) -> Vec<u8> {
    s.chars()
        .map(|c| u8::try_from(u32::from(c)).expect("header is latin-1"))
        .collect()
}

fn load() -> Vec<Vector> {
    let file: File = serde_json::from_str(include_str!("data/sigv4_vectors.json")).unwrap();
    assert!(file.vectors.len() >= 20);
    file.vectors
}

fn owned(v: &Vector) -> Owned {
    Owned {
        method: v.method.clone(),
        path: v.path.clone(),
        query: v.query.clone(),
        headers: v
            .headers
            .iter()
            .map(|(n, val)| (n.clone(), latin1(val)))
            .collect(),
        body: base64::engine::general_purpose::STANDARD
            .decode(&v.body_b64)
            .unwrap(),
    }
}

fn keys(v: &Vector) -> HashMap<String, String> {
    HashMap::from([
        (v.access_key_id.clone(), v.secret_access_key.clone()),
        ("AKIDOTHER".to_owned(), "other-secret".to_owned()),
    ])
}

fn check(v: &Vector, o: &Owned, now: i64) -> Result<lamina::api::sigv4::Verified, AuthError> {
    o.with(|r| verify(r, &keys(v), &[v.service.as_str()], now, SKEW))
}

fn auth_param<'a>(auth: &'a str, key: &str) -> &'a str {
    auth.split([' ', ','])
        .find_map(|p| p.strip_prefix(key).and_then(|p| p.strip_prefix('=')))
        .unwrap()
}

fn signed_headers(v: &Vector) -> Vec<String> {
    auth_param(&v.authorization, "SignedHeaders")
        .split(';')
        .map(str::to_owned)
        .collect()
}

fn is_mismatch(r: &Result<lamina::api::sigv4::Verified, AuthError>) -> bool {
    matches!(r, Err(AuthError::SignatureDoesNotMatch { .. }))
}

/// The canonical request the verifier builds for `o` (payload hash chosen as `verify` does).
fn our_canonical(v: &Vector, o: &Owned) -> Vec<u8> {
    let sh = auth_param(&v.authorization, "SignedHeaders");
    let content = sh
        .split(';')
        .any(|n| n == "x-amz-content-sha256")
        .then(|| {
            o.headers
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case("x-amz-content-sha256"))
                .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
        })
        .flatten();
    let hash = content.unwrap_or_else(|| sha256_hex(&o.body));
    o.with(|r| canonical_request(r, sh, &hash))
}

#[test]
fn every_vector_verifies() {
    for v in load() {
        let o = owned(&v);
        let got = check(&v, &o, v.now).unwrap_or_else(|e| panic!("{}: {e:?}", v.name));
        assert_eq!(got.access_key_id, v.access_key_id, "{}", v.name);
        assert_eq!(got.region, v.region, "{}", v.name);
        assert_eq!(got.service, v.service, "{}", v.name);
    }
}

#[test]
fn canonical_request_equals_botocores() {
    for v in load() {
        let ours = our_canonical(&v, &owned(&v));
        assert_eq!(
            String::from_utf8_lossy(&ours),
            v.botocore_canonical_request,
            "{}",
            v.name
        );
    }
}

#[test]
fn sign_reproduces_botocores_authorization() {
    for v in load() {
        let mut o = owned(&v);
        let signed = signed_headers(&v);
        // Sign exactly the headers botocore signed (it adds User-Agent, amz-sdk-*,
        // Content-Length, Accept-Encoding outside the signature or after signing).
        o.headers
            .retain(|(n, _)| signed.contains(&n.to_ascii_lowercase()));
        let amz_date = format_amz_date(v.now);
        let auth = o.with(|r| {
            sign(
                r,
                &v.access_key_id,
                &v.secret_access_key,
                &v.region,
                &v.service,
                &amz_date,
            )
        });
        assert_eq!(auth, v.authorization, "{}", v.name);
    }
}

#[test]
fn sign_then_verify_roundtrip_with_implicit_x_amz_date() {
    let v = load()
        .into_iter()
        .find(|v| v.name == "boto3_invoke_arn_qualifier")
        .unwrap();
    let mut o = owned(&v);
    o.headers
        .retain(|(n, _)| !n.eq_ignore_ascii_case("x-amz-date"));
    o.headers
        .retain(|(n, _)| !n.eq_ignore_ascii_case("authorization"));
    let amz_date = format_amz_date(v.now);
    let auth = o.with(|r| {
        sign(
            r,
            "AKIDOTHER",
            "other-secret",
            "eu-north-1",
            "lambda",
            &amz_date,
        )
    });
    // sign() included user-agent? No: it is never signed. amz-sdk-* and content-length are.
    assert!(auth.contains("SignedHeaders=accept-encoding;amz-sdk-invocation-id;amz-sdk-request;content-length;host;x-amz-date,"), "{auth}");
    o.headers.push(("X-Amz-Date".into(), amz_date.into_bytes()));
    o.headers.push(("Authorization".into(), auth.into_bytes()));
    let got = o
        .with(|r| verify(r, &keys(&v), &["lambda"], v.now, SKEW))
        .unwrap();
    assert_eq!(got.access_key_id, "AKIDOTHER");
    assert_eq!(got.region, "eu-north-1");
}

#[test]
fn unsigned_headers_may_change() {
    for v in load() {
        let mut o = owned(&v);
        let signed = signed_headers(&v);
        for (n, val) in o.headers.iter_mut() {
            if !signed.contains(&n.to_ascii_lowercase()) && !n.eq_ignore_ascii_case("authorization")
            {
                val.push(b'!');
            }
        }
        o.headers
            .push(("X-Amzn-Trace-Id".into(), b"Root=1-00000000".to_vec()));
        check(&v, &o, v.now).unwrap_or_else(|e| panic!("{}: {e:?}", v.name));
    }
}

#[test]
fn flipping_any_body_byte_fails() {
    let mut flips = 0;
    for v in load() {
        let o = owned(&v);
        let unsigned_payload = o.headers.iter().any(|(n, val)| {
            n.eq_ignore_ascii_case("x-amz-content-sha256") && val == b"UNSIGNED-PAYLOAD"
        });
        let content_sha = !unsigned_payload
            && signed_headers(&v)
                .iter()
                .any(|n| n == "x-amz-content-sha256");
        let mut variants: Vec<Vec<u8>> = (0..o.body.len())
            .map(|i| {
                let mut b = o.body.clone();
                b[i] ^= 0x01;
                b
            })
            .collect();
        variants.push([o.body.as_slice(), b" "].concat());
        if !o.body.is_empty() {
            variants.push(o.body[..o.body.len() - 1].to_vec());
        }
        for body in variants {
            let t = Owned { body, ..o.clone() };
            let r = check(&v, &t, v.now);
            if unsigned_payload {
                // By definition the body is not covered by the signature.
                assert!(r.is_ok(), "{}: {r:?}", v.name);
            } else if content_sha {
                assert_eq!(r, Err(AuthError::ContentSha256Mismatch), "{}", v.name);
            } else {
                assert!(is_mismatch(&r), "{}: {r:?}", v.name);
            }
            flips += 1;
        }
    }
    assert!(flips > 1000);
}

#[test]
fn flipping_any_path_or_query_byte_fails_unless_canonically_equal() {
    let mut equivalent = Vec::new();
    for v in load() {
        let o = owned(&v);
        let original = our_canonical(&v, &o);
        for field in ["path", "query"] {
            let src = if field == "path" { &o.path } else { &o.query };
            for i in 0..src.len() {
                let mut bytes = src.clone().into_bytes();
                bytes[i] ^= 0x01;
                let Ok(s) = String::from_utf8(bytes) else {
                    continue;
                };
                let mut t = o.clone();
                if field == "path" {
                    t.path = s;
                } else {
                    t.query = s;
                }
                let r = check(&v, &t, v.now);
                if our_canonical(&v, &t) == original {
                    // e.g. "/./" -> "///": both normalise to "/".
                    assert!(r.is_ok(), "{} {field}[{i}]: {r:?}", v.name);
                    equivalent.push(format!(
                        "{} {field} {:?} -> {:?}",
                        v.name,
                        src,
                        if field == "path" { &t.path } else { &t.query }
                    ));
                } else {
                    assert!(is_mismatch(&r), "{} {field}[{i}]: {r:?}", v.name);
                }
            }
        }
    }
    // Only the dot-segment vector has flips that normalise to the same canonical URI.
    assert!(
        equivalent
            .iter()
            .all(|e| e.starts_with("raw_path_dot_segments path")),
        "{equivalent:#?}"
    );
    assert!(!equivalent.is_empty());
}

#[test]
fn flipping_any_signed_header_byte_fails() {
    for v in load() {
        let o = owned(&v);
        for name in signed_headers(&v) {
            for (idx, _) in o
                .headers
                .iter()
                .enumerate()
                .filter(|(_, (n, _))| n.eq_ignore_ascii_case(&name))
            {
                for i in 0..o.headers[idx].1.len() {
                    let mut t = o.clone();
                    t.headers[idx].1[i] ^= 0x01;
                    let r = check(&v, &t, v.now);
                    let what = format!("{} {name}[{i}]: {r:?}", v.name);
                    match name.as_str() {
                        // A different time: malformed, outside the skew, a scope date mismatch,
                        // or (same day, within skew) a different string to sign.
                        "x-amz-date" | "date" => assert!(
                            matches!(
                                r,
                                Err(AuthError::MalformedDate { .. }
                                    | AuthError::SignatureExpired { .. }
                                    | AuthError::SignatureNotYetCurrent { .. }
                                    | AuthError::InvalidCredentialScope(_)
                                    | AuthError::SignatureDoesNotMatch { .. })
                            ),
                            "{what}"
                        ),
                        "x-amz-content-sha256" => assert!(
                            matches!(
                                r,
                                Err(AuthError::InvalidContentSha256 { .. }
                                    | AuthError::SignatureDoesNotMatch { .. })
                            ),
                            "{what}"
                        ),
                        _ => assert!(is_mismatch(&r), "{what}"),
                    }
                }
            }
        }
    }
}

#[test]
fn dropping_or_repeating_a_signed_header_fails() {
    for v in load() {
        let o = owned(&v);
        for name in signed_headers(&v) {
            if name == "x-amz-date" || name == "date" {
                continue;
            }
            let mut dropped = o.clone();
            dropped
                .headers
                .retain(|(n, _)| !n.eq_ignore_ascii_case(&name));
            let r = check(&v, &dropped, v.now);
            assert!(is_mismatch(&r), "{} drop {name}: {r:?}", v.name);

            let mut repeated = o.clone();
            let first = repeated
                .headers
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(&name))
                .unwrap()
                .clone();
            repeated.headers.push(first);
            let r = check(&v, &repeated, v.now);
            assert!(
                matches!(
                    r,
                    Err(AuthError::SignatureDoesNotMatch { .. }
                        | AuthError::InvalidContentSha256 { .. })
                ),
                "{} repeat {name}: {r:?}",
                v.name
            );
        }
    }
}

#[test]
fn flipping_any_signature_byte_fails() {
    for v in load() {
        let o = owned(&v);
        let sig = auth_param(&v.authorization, "Signature").to_owned();
        assert_eq!(sig.len(), 64);
        let mut variants: Vec<String> = (0..sig.len())
            .map(|i| {
                let mut b = sig.clone().into_bytes();
                b[i] ^= 0x01;
                String::from_utf8(b).unwrap()
            })
            .collect();
        variants.push(sig[..63].to_owned());
        variants.push(format!("{sig}0"));
        variants.push(sig.to_ascii_uppercase());
        for bad in variants {
            let mut t = o.clone();
            let auth = v.authorization.replace(&sig, &bad);
            *t.header_mut("authorization") = auth.into_bytes();
            let r = check(&v, &t, v.now);
            assert!(is_mismatch(&r), "{}: {r:?}", v.name);
        }
    }
}

#[test]
fn wrong_secret_fails_and_unknown_key_is_unrecognized() {
    for v in load() {
        let o = owned(&v);
        let wrong = HashMap::from([(v.access_key_id.clone(), format!("{}x", v.secret_access_key))]);
        let r = o.with(|req| verify(req, &wrong, &[v.service.as_str()], v.now, SKEW));
        assert!(is_mismatch(&r), "{}", v.name);
        let none: HashMap<String, String> = HashMap::new();
        let r = o.with(|req| verify(req, &none, &[v.service.as_str()], v.now, SKEW));
        assert_eq!(r, Err(AuthError::UnrecognizedClient), "{}", v.name);
        let e = r.unwrap_err();
        assert_eq!(e.error_type(), "UnrecognizedClientException");
        assert_eq!(
            e.message(),
            "The security token included in the request is invalid."
        );
    }
}

#[test]
fn skew_is_checked_both_ways() {
    for v in load() {
        let o = owned(&v);
        let t = v.now; // the vectors were signed at `now`
        assert!(check(&v, &o, t + SKEW).is_ok(), "{}", v.name);
        assert!(check(&v, &o, t - SKEW).is_ok(), "{}", v.name);
        let late = check(&v, &o, t + SKEW + 1).unwrap_err();
        assert!(
            matches!(late, AuthError::SignatureExpired { .. }),
            "{}: {late:?}",
            v.name
        );
        let early = check(&v, &o, t - SKEW - 1).unwrap_err();
        assert!(
            matches!(early, AuthError::SignatureNotYetCurrent { .. }),
            "{}: {early:?}",
            v.name
        );
        assert_eq!(late.error_type(), "InvalidSignatureException");
        assert_eq!(early.error_type(), "InvalidSignatureException");
    }
    // Exact AWS wording, request at 15:35:38, server clock 20 minutes later, 15 min allowed.
    let v = load().into_iter().next().unwrap();
    let now = v.now + 20 * 60;
    let e = check(&v, &owned(&v), now).unwrap_err();
    assert_eq!(
        e.message(),
        "Signature expired: 20261127T153538Z is now earlier than 20261127T154038Z \
         (20261127T155538Z - 15 min.)"
    );
    let e = check(&v, &owned(&v), v.now - 20 * 60).unwrap_err();
    assert_eq!(
        e.message(),
        "Signature not yet current: 20261127T153538Z is still later than 20261127T153038Z \
         (20261127T151538Z + 15 min.)"
    );
    let e = owned(&v)
        .with(|r| verify(r, &keys(&v), &["lambda"], v.now + 301, 300))
        .unwrap_err();
    assert_eq!(
        e.message(),
        "Signature expired: 20261127T153538Z is now earlier than 20261127T153539Z \
         (20261127T154039Z - 5 min.)"
    );
}

#[test]
fn wrong_service_is_rejected_with_awss_message() {
    let v = load().into_iter().find(|v| v.service == "lambda").unwrap();
    let e = owned(&v)
        .with(|r| verify(r, &keys(&v), &["logs"], v.now, SKEW))
        .unwrap_err();
    assert_eq!(e.error_type(), "InvalidSignatureException");
    assert_eq!(
        e.message(),
        "Credential should be scoped to correct service: 'logs'. "
    );
    // Accepting several services works.
    let ok = owned(&v)
        .with(|r| verify(r, &keys(&v), &["logs", "lambda"], v.now, SKEW))
        .unwrap();
    assert_eq!(ok.service, "lambda");
    let logs = load().into_iter().find(|v| v.service == "logs").unwrap();
    assert!(check(&logs, &owned(&logs), logs.now).is_ok());
}
