//! Light fuzzing: `verify` and `sign` must never panic, whatever the input.

use std::collections::HashMap;

use lamina::api::sigv4::{sign, verify, Request};
use proptest::prelude::*;

const NOW: i64 = 1_795_793_738;

fn keys() -> HashMap<String, String> {
    HashMap::from([("AKIDEXAMPLE".to_owned(), "secret".to_owned())])
}

fn run(
    method: &str,
    path: &str,
    query: &str,
    headers: &[(String, Vec<u8>)],
    body: &[u8],
    now: i64,
    skew: i64,
) {
    let h: Vec<(&str, &[u8])> = headers
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_slice()))
        .collect();
    let req = Request {
        method,
        raw_path: path,
        raw_query: query,
        headers: &h,
        body,
    };
    let _ = verify(&req, &keys(), &["lambda"], now, skew);
    let _ = verify(&req, &keys(), &[], now, skew);
    let _ = sign(&req, "AKIDEXAMPLE", "secret", "us-east-1", "lambda", path);
}

/// Pieces that make random Authorization headers get far into the parser.
fn auth_strategy() -> impl Strategy<Value = Vec<u8>> {
    let piece = prop_oneof![
        Just("AWS4-HMAC-SHA256".to_owned()),
        Just("AWS4-".to_owned()),
        Just("Credential=".to_owned()),
        Just("AKIDEXAMPLE/20261127/us-east-1/lambda/aws4_request".to_owned()),
        Just("SignedHeaders=".to_owned()),
        Just("host;x-amz-date;x-amz-content-sha256".to_owned()),
        Just("Signature=".to_owned()),
        Just("0123456789abcdef".to_owned()),
        Just(", ".to_owned()),
        Just(" ".to_owned()),
        Just("/".to_owned()),
        Just("=".to_owned()),
        Just("é".to_owned()),
        ".{0,8}",
    ];
    prop_oneof![
        proptest::collection::vec(piece, 0..14).prop_map(|v| v.concat().into_bytes()),
        proptest::collection::vec(any::<u8>(), 0..64),
    ]
}

fn header_strategy() -> impl Strategy<Value = (String, Vec<u8>)> {
    let name = prop_oneof![
        Just("Host".to_owned()),
        Just("X-Amz-Date".to_owned()),
        Just("Date".to_owned()),
        Just("x-amz-content-sha256".to_owned()),
        Just("X-Amz-Security-Token".to_owned()),
        ".{0,12}",
    ];
    let value = prop_oneof![
        Just(b"20261127T153538Z".to_vec()),
        Just(b"Fri, 27 Nov 2026 15:35:38 GMT".to_vec()),
        Just(b"UNSIGNED-PAYLOAD".to_vec()),
        proptest::collection::vec(any::<u8>(), 0..40),
        "[0-9A-Za-z ,:+-]{0,40}".prop_map(String::into_bytes),
    ];
    (name, value)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 3000, ..ProptestConfig::default() })]

    #[test]
    fn never_panics(
        method in ".{0,8}",
        path in prop_oneof![".{0,40}", "[/.%a-f0-9A-F]{0,40}"],
        query in prop_oneof![".{0,40}", "[=&%+a-f0-9A-F]{0,40}"],
        mut headers in proptest::collection::vec(header_strategy(), 0..6),
        auth in auth_strategy(),
        body in proptest::collection::vec(any::<u8>(), 0..64),
        now in prop_oneof![Just(NOW), any::<i64>()],
        skew in prop_oneof![Just(900i64), any::<i64>()],
    ) {
        headers.push(("Authorization".to_owned(), auth));
        run(&method, &path, &query, &headers, &body, now, skew);
    }
}

/// Byte-level mutations of a real boto3 request (from the vectors), many thousand times.
#[test]
fn mutated_real_requests_never_panic_and_never_verify_when_changed() {
    let auth = b"AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20261127/us-east-1/lambda/aws4_request, SignedHeaders=host;x-amz-date, Signature=83db18e43346fafcabb3f9e05166893d2e585c5550c5091ec922229cbd8f3ed1".to_vec();
    let base: Vec<(String, Vec<u8>)> = vec![
        ("Host".into(), b"127.0.0.1:9001".to_vec()),
        ("X-Amz-Date".into(), b"20261127T153538Z".to_vec()),
        ("Authorization".into(), auth),
    ];
    let path = "/2015-03-31/functions/arn%3Aaws%3Alambda%3Aus-east-1%3A123456789012%3Afunction%3Amy-fn/invocations";
    let query = "Qualifier=%24LATEST";
    let body = br#"{"x": 1}"#;
    let keys = HashMap::from([(
        "AKIDEXAMPLE".to_owned(),
        "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY".to_owned(),
    )]);
    let check = |headers: &[(String, Vec<u8>)]| {
        let h: Vec<(&str, &[u8])> = headers
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_slice()))
            .collect();
        let req = Request {
            method: "POST",
            raw_path: path,
            raw_query: query,
            headers: &h,
            body,
        };
        verify(&req, &keys, &["lambda"], NOW, 900)
    };
    assert!(check(&base).is_ok());

    // xorshift: deterministic and dependency-free.
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut rejected = 0;
    for _ in 0..20_000 {
        let mut headers = base.clone();
        let which = (next() % 3) as usize;
        let v = &mut headers[which].1;
        for _ in 0..=(next() % 3) {
            let pos = (next() as usize) % (v.len() + 1);
            match next() % 3 {
                0 if pos < v.len() => v[pos] = next() as u8,
                1 => v.insert(pos, next() as u8),
                _ if pos < v.len() => {
                    v.remove(pos);
                }
                _ => {}
            }
        }
        let changed = headers != base;
        let r = check(&headers);
        if changed && r.is_ok() {
            // Only changes that canonicalise away may pass (e.g. an added trailing space in a
            // header value, or "Signature=" -> "Signature= " being re-split).
            let a = String::from_utf8_lossy(&headers[2].1).into_owned();
            let hv: Vec<String> = headers[..2]
                .iter()
                .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
                .collect();
            // Whitespace as botocore (Python's str.split) sees it, which the verifier mirrors.
            let normal = |s: &str| {
                s.split(|c: char| {
                    matches!(
                        c,
                        ' ' | '\t' | '\n' | '\r' | '\x0b' | '\x0c' | '\x1c'..='\x1f'
                    )
                })
                .filter(|p| !p.is_empty())
                .collect::<Vec<_>>()
                .join(" ")
            };
            assert!(
                normal(&hv[0]) == "127.0.0.1:9001"
                    && normal(&hv[1]) == "20261127T153538Z"
                    && a.contains(
                        "Signature=83db18e43346fafcabb3f9e05166893d2e585c5550c5091ec922229cbd8f3ed1"
                    ),
                "mutated request verified: {headers:?}"
            );
        } else if changed {
            rejected += 1;
        }
    }
    assert!(rejected > 15_000, "{rejected}");
}
