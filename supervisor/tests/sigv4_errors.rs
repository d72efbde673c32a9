//! Each rejection path, with AWS's error type and exact message.

use std::collections::HashMap;

use lamina::api::sigv4::{
    format_amz_date, sign, verify, AuthError, Request, ScopeMismatch, UNSIGNED_PAYLOAD,
};

const AKID: &str = "AKIDEXAMPLE";
const SECRET: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";
const NOW: i64 = 1_795_793_738; // 20261127T153538Z
const DATE: &str = "20261127T153538Z";
const PATH: &str = "/2015-03-31/functions/arn%3Aaws%3Alambda%3Aus-east-1%3A123456789012%3Afunction%3Amy-fn/invocations";

fn keys() -> HashMap<String, String> {
    HashMap::from([(AKID.to_owned(), SECRET.to_owned())])
}

/// A request built and signed here (the same shape as boto3's Invoke).
struct Req {
    path: String,
    query: String,
    headers: Vec<(String, Vec<u8>)>,
    body: Vec<u8>,
}

impl Req {
    fn new() -> Self {
        Req {
            path: PATH.to_owned(),
            query: "Qualifier=%24LATEST".to_owned(),
            headers: vec![
                ("Host".into(), b"localhost:9001".to_vec()),
                ("X-Amz-Date".into(), DATE.into()),
            ],
            body: br#"{"x": 1}"#.to_vec(),
        }
    }

    fn with<R>(&self, f: impl FnOnce(&Request) -> R) -> R {
        let headers: Vec<(&str, &[u8])> = self
            .headers
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_slice()))
            .collect();
        f(&Request {
            method: "POST",
            raw_path: &self.path,
            raw_query: &self.query,
            headers: &headers,
            body: &self.body,
        })
    }

    /// Signs the current headers and adds the Authorization header.
    fn signed(mut self) -> Self {
        let auth = self.with(|r| sign(r, AKID, SECRET, "us-east-1", "lambda", DATE));
        self.headers
            .push(("Authorization".into(), auth.into_bytes()));
        self
    }

    fn auth(&self) -> String {
        self.headers
            .iter()
            .find(|(n, _)| n == "Authorization")
            .map(|(_, v)| String::from_utf8(v.clone()).unwrap())
            .unwrap()
    }

    fn set(&mut self, name: &str, value: &str) -> &mut Self {
        self.headers.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
        self.headers.push((name.into(), value.as_bytes().to_vec()));
        self
    }

    fn remove(&mut self, name: &str) -> &mut Self {
        self.headers.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
        self
    }

    fn verify(&self) -> Result<lamina::api::sigv4::Verified, AuthError> {
        self.with(|r| verify(r, &keys(), &["lambda"], NOW, 900))
    }

    fn err(&self) -> AuthError {
        self.verify().unwrap_err()
    }
}

fn good_signature() -> String {
    let r = Req::new().signed();
    let a = r.auth();
    a.rsplit("Signature=").next().unwrap().to_owned()
}

#[test]
fn baseline_verifies() {
    let v = Req::new().signed().verify().unwrap();
    assert_eq!(
        (
            v.access_key_id.as_str(),
            v.region.as_str(),
            v.service.as_str()
        ),
        (AKID, "us-east-1", "lambda")
    );
}

#[test]
fn missing_authorization() {
    let e = Req::new().err();
    assert_eq!(e, AuthError::MissingAuthenticationToken);
    assert_eq!(e.error_type(), "MissingAuthenticationTokenException");
    assert_eq!(e.message(), "Missing Authentication Token");
    assert_eq!(e.http_status(), 403);
    assert_eq!(
        e.to_string(),
        "MissingAuthenticationTokenException: Missing Authentication Token"
    );
}

#[test]
fn not_a_sigv4_header() {
    let mut r = Req::new();
    r.set("Authorization", "Bearer eyJhbGciOi.x.y");
    let e = r.err();
    assert_eq!(e.error_type(), "IncompleteSignatureException");
    assert_eq!(
        e.message(),
        "Authorization header requires 'Credential' parameter. Authorization header requires \
         'Signature' parameter. Authorization header requires 'SignedHeaders' parameter. \
         Authorization=Bearer eyJhbGciOi.x.y"
    );
    r.remove("X-Amz-Date");
    assert_eq!(
        r.err().message(),
        "Authorization header requires 'Credential' parameter. Authorization header requires \
         'Signature' parameter. Authorization header requires 'SignedHeaders' parameter. \
         Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' header. \
         Authorization=Bearer eyJhbGciOi.x.y"
    );
    r.set("Authorization", "");
    assert_eq!(r.err().error_type(), "IncompleteSignatureException");
}

#[test]
fn missing_parameters_and_date() {
    let mut r = Req::new();
    r.set(
        "Authorization",
        "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20261127/us-east-1/lambda/aws4_request",
    );
    assert_eq!(
        r.err().message(),
        "Authorization header requires 'Signature' parameter. Authorization header requires \
         'SignedHeaders' parameter. Authorization=AWS4-HMAC-SHA256 \
         Credential=AKIDEXAMPLE/20261127/us-east-1/lambda/aws4_request"
    );
    // A correctly signed request without any date header.
    let mut r = Req::new().signed();
    r.remove("X-Amz-Date");
    let e = r.err();
    assert_eq!(e.error_type(), "IncompleteSignatureException");
    assert!(
        e.message().starts_with(
            "Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' \
             header. Authorization=AWS4-HMAC-SHA256 Credential="
        ),
        "{}",
        e.message()
    );
}

#[test]
fn pair_without_equal_sign() {
    // What a stray space after "Credential=" produces (seen from real AWS).
    let mut r = Req::new().signed();
    let auth = r.auth().replace("Credential=", "Credential= ");
    r.set("Authorization", &auth);
    let e = r.err();
    assert_eq!(e.error_type(), "IncompleteSignatureException");
    assert_eq!(
        e.message(),
        format!(
            "'AKIDEXAMPLE/20261127/us-east-1/lambda/aws4_request' not a valid key=value pair \
             (missing equal-sign) in Authorization header: '{auth}'."
        )
    );
}

#[test]
fn separators_commas_or_whitespace() {
    let r = Req::new().signed();
    let auth = r.auth();
    for variant in [
        auth.replace(", ", ","),
        auth.replace(", ", " "),
        auth.replace(", ", " ,\t "),
        format!("  {auth}  "),
        auth.replace("AWS4-HMAC-SHA256 ", "AWS4-HMAC-SHA256\t"),
        // Unknown parameters are ignored.
        format!("{auth}, Extra=1"),
        // Trailing slashes after the credential are ignored.
        auth.replace("aws4_request", "aws4_request/"),
    ] {
        let mut r2 = Req::new();
        r2.set("Authorization", &variant);
        assert!(r2.verify().is_ok(), "{variant}: {:?}", r2.verify());
    }
}

#[test]
fn malformed_date() {
    for bad in [
        "2026-11-27T15:35:38Z",
        "20261127T153538",
        "20261132T153538Z",
        "",
        "now",
    ] {
        let mut r = Req::new().signed();
        r.set("X-Amz-Date", bad);
        let e = r.err();
        assert_eq!(e.error_type(), "IncompleteSignatureException", "{bad}");
        if !bad.is_empty() {
            assert_eq!(
                e.message(),
                format!(
                    "Date must be in ISO-8601 'basic format'. Got '{bad}'. See \
                     http://en.wikipedia.org/wiki/ISO_8601"
                )
            );
        }
    }
}

#[test]
fn date_header_is_used_when_x_amz_date_is_absent() {
    let mut r = Req::new();
    r.remove("X-Amz-Date")
        .set("Date", "Fri, 27 Nov 2026 15:35:38 GMT");
    let r = r.signed();
    assert!(
        r.auth().contains("SignedHeaders=date;host,"),
        "{}",
        r.auth()
    );
    r.verify().unwrap();
    // X-Amz-Date wins when both are present: a bogus Date is then irrelevant...
    let mut r = Req::new();
    r.set("Date", "garbage");
    let r = r.signed();
    r.verify().unwrap();
    // ... and a Date header that disagrees with X-Amz-Date does not change the time used.
    let mut r = Req::new();
    r.set("Date", "Fri, 27 Nov 2026 10:00:00 GMT");
    r.signed().verify().unwrap();
}

#[test]
fn host_must_be_signed() {
    let mut r = Req::new().signed();
    let auth = r
        .auth()
        .replace("SignedHeaders=host;x-amz-date", "SignedHeaders=x-amz-date");
    r.set("Authorization", &auth);
    let e = r.err();
    assert_eq!(e, AuthError::HostNotSigned);
    assert_eq!(e.error_type(), "InvalidSignatureException");
    assert_eq!(
        e.message(),
        "'Host' or ':authority' must be a 'SignedHeader' in the AWS Authorization."
    );
}

#[test]
fn unsupported_algorithm() {
    let mut r = Req::new().signed();
    let auth = r.auth().replace("AWS4-HMAC-SHA256", "AWS4-HMAC-SHA25");
    r.set("Authorization", &auth);
    let e = r.err();
    assert_eq!(e.error_type(), "IncompleteSignatureException");
    assert_eq!(
        e.message(),
        "Unsupported AWS 'algorithm': 'AWS4-HMAC-SHA25' (only AWS4-HMAC-SHA256 for now). "
    );
}

#[test]
fn malformed_credential() {
    let sig = good_signature();
    let mut r = Req::new();
    r.set(
        "Authorization",
        &format!("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20261127/us-east-1/lambda, SignedHeaders=host;x-amz-date, Signature={sig}"),
    );
    let e = r.err();
    assert_eq!(e.error_type(), "IncompleteSignatureException");
    assert_eq!(
        e.message(),
        "Credential must have exactly 5 slash-delimited elements, e.g. \
         keyid/date/region/service/term, got 'AKIDEXAMPLE/20261127/us-east-1/lambda'"
    );
}

#[test]
fn credential_scope_errors() {
    let sig = good_signature();
    let with_cred = |cred: &str| {
        let mut r = Req::new();
        r.set(
            "Authorization",
            &format!(
                "AWS4-HMAC-SHA256 Credential={cred}, SignedHeaders=host;x-amz-date, Signature={sig}"
            ),
        );
        r.err()
    };
    let e = with_cred("AKIDEXAMPLE/20261126/us-east-1/lambda/aws4_request");
    assert_eq!(e.error_type(), "InvalidSignatureException");
    assert_eq!(
        e.message(),
        "Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date from \
         HTTP: '20261126' != '20261127', from '20261127T153538Z'."
    );
    let e = with_cred("AKIDEXAMPLE/20261127/us-east-1/s3/aws4_request");
    assert_eq!(
        e.message(),
        "Credential should be scoped to correct service: 'lambda'. "
    );
    let e = with_cred("AKIDEXAMPLE/20261127/us-east-1/lambda/aws4_reques");
    assert_eq!(
        e.message(),
        "Credential should be scoped with a valid terminator: 'aws4_request', not 'aws4_reques'. "
    );
    let e = with_cred("AKIDEXAMPLE/x/US_East/Lambda/aws5_request");
    assert_eq!(e.error_type(), "InvalidSignatureException");
    assert_eq!(
        e.message(),
        "Credential should be scoped to a valid region, not 'US_East'. Credential should be \
         scoped to correct service: 'lambda'. Credential should be scoped with a valid \
         terminator: 'aws4_request', not 'aws5_request'. Date in Credential scope does not match \
         YYYYMMDD from ISO-8601 version of date from HTTP: 'x' != '20261127', from \
         '20261127T153538Z'."
    );
    // The scope is checked before the key: an unknown key with a bad scope reports the scope.
    let e = with_cred("AKIDUNKNOWN/20261127/us-east-1/s3/aws4_request");
    assert!(matches!(e, AuthError::InvalidCredentialScope(_)));
    let e = with_cred("AKIDUNKNOWN/20261127/us-east-1/lambda/aws4_request");
    assert_eq!(e, AuthError::UnrecognizedClient);
}

#[test]
fn signature_mismatch_message() {
    let mut r = Req::new().signed();
    r.body.push(b' ');
    let e = r.err();
    assert_eq!(e.error_type(), "InvalidSignatureException");
    assert_eq!(
        e.message(),
        "The request signature we calculated does not match the signature you provided. Check \
         your AWS Secret Access Key and signing method. Consult the service documentation for \
         details."
    );
    let AuthError::SignatureDoesNotMatch {
        canonical_request,
        string_to_sign,
    } = e
    else {
        panic!()
    };
    assert!(canonical_request.starts_with("POST\n/2015-03-31/functions/arn%253Aaws%253A"));
    assert!(string_to_sign.starts_with(
        "AWS4-HMAC-SHA256\n20261127T153538Z\n20261127/us-east-1/lambda/aws4_request\n"
    ));
}

#[test]
fn first_authorization_header_is_used() {
    let mut r = Req::new().signed();
    r.headers
        .push(("authorization".into(), b"AWS4-HMAC-SHA256 garbage".to_vec()));
    r.verify().unwrap();
}

#[test]
fn session_token_is_just_a_signed_header() {
    let mut r = Req::new();
    r.set("X-Amz-Security-Token", "any-token-we-never-issued");
    let r = r.signed();
    assert!(r.auth().contains("x-amz-security-token"));
    r.verify().unwrap();
    let mut t = r;
    t.set("X-Amz-Security-Token", "another-token");
    assert!(matches!(t.err(), AuthError::SignatureDoesNotMatch { .. }));
}

#[test]
fn unsigned_payload_only_when_declared() {
    let mut r = Req::new();
    r.set("X-Amz-Content-SHA256", UNSIGNED_PAYLOAD);
    let mut r = r.signed();
    r.verify().unwrap();
    r.body = b"anything".to_vec();
    r.verify().unwrap(); // the body is not covered: that is what UNSIGNED-PAYLOAD means
                         // Without the header the server hashes the body and the signature no longer matches.
    r.remove("X-Amz-Content-SHA256");
    assert!(matches!(r.err(), AuthError::SignatureDoesNotMatch { .. }));
}

#[test]
fn content_sha256_must_be_signed_to_count() {
    // Signed without the header, which is added afterwards: it is ignored, the body is hashed.
    let mut r = Req::new().signed();
    r.set("X-Amz-Content-SHA256", UNSIGNED_PAYLOAD);
    r.verify().unwrap();
    r.body.push(b'!');
    assert!(matches!(r.err(), AuthError::SignatureDoesNotMatch { .. }));
}

#[test]
fn content_sha256_digest_is_checked_against_the_body() {
    let body = Req::new().body;
    let mut r = Req::new();
    r.set(
        "x-amz-content-sha256",
        &lamina::api::sigv4::sha256_hex(&body),
    );
    let mut r = r.signed();
    r.verify().unwrap();
    r.body[0] ^= 1;
    let e = r.err();
    assert_eq!(e, AuthError::ContentSha256Mismatch);
    assert_eq!(e.error_type(), "InvalidSignatureException");
    // Uppercase hex is still a digest.
    let mut r = Req::new();
    r.set(
        "x-amz-content-sha256",
        &lamina::api::sigv4::sha256_hex(&body).to_uppercase(),
    );
    r.signed().verify().unwrap();
}

#[test]
fn content_sha256_other_values_are_rejected() {
    for value in [
        "STREAMING-AWS4-HMAC-SHA256-PAYLOAD",
        "STREAMING-UNSIGNED-PAYLOAD-TRAILER",
        "abc",
        "",
    ] {
        let mut r = Req::new();
        r.set("X-Amz-Content-SHA256", value);
        let e = r.signed().err();
        assert_eq!(e.error_type(), "InvalidSignatureException", "{value}");
        assert!(
            matches!(e, AuthError::InvalidContentSha256 { .. }),
            "{value}: {e:?}"
        );
    }
}

#[test]
fn header_whitespace_and_case_do_not_matter() {
    let mut r = Req::new();
    r.set("X-Amz-Meta-A", "a   b\t c");
    let mut r = r.signed();
    r.set("x-amz-meta-a", " a b c ");
    r.verify().unwrap();
    r.set("X-AMZ-META-A", "a\t\tb c");
    r.verify().unwrap();
    r.set("X-AMZ-META-A", "a bc");
    assert!(matches!(r.err(), AuthError::SignatureDoesNotMatch { .. }));
}

#[test]
fn repeated_headers_are_joined_in_order() {
    let mut r = Req::new();
    r.headers.push(("X-Amz-Meta-R".into(), b"one".to_vec()));
    r.headers.push(("x-amz-meta-r".into(), b"two".to_vec()));
    let r = r.signed();
    r.verify().unwrap();
    let mut swapped = Req {
        headers: r.headers.clone(),
        ..Req::new()
    };
    let i = swapped
        .headers
        .iter()
        .position(|(n, _)| n == "X-Amz-Meta-R")
        .unwrap();
    swapped.headers.swap(i, i + 1);
    assert!(matches!(
        swapped.err(),
        AuthError::SignatureDoesNotMatch { .. }
    ));
}

#[test]
fn implicit_x_amz_date_in_sign() {
    let mut r = Req::new();
    r.remove("X-Amz-Date");
    let auth = r.with(|q| {
        sign(
            q,
            AKID,
            SECRET,
            "us-east-1",
            "lambda",
            &format_amz_date(NOW),
        )
    });
    assert!(auth.contains("SignedHeaders=host;x-amz-date,"));
    r.set("X-Amz-Date", DATE).set("Authorization", &auth);
    r.verify().unwrap();
}

#[test]
fn error_types_and_statuses() {
    let all = [
        (
            AuthError::MissingAuthenticationToken,
            "MissingAuthenticationTokenException",
        ),
        (
            AuthError::MissingEqualSign {
                pair: "a".into(),
                header: "h".into(),
            },
            "IncompleteSignatureException",
        ),
        (
            AuthError::IncompleteAuthorization {
                credential: true,
                signature: false,
                signed_headers: false,
                date: false,
                header: "h".into(),
            },
            "IncompleteSignatureException",
        ),
        (
            AuthError::MalformedDate { value: "x".into() },
            "IncompleteSignatureException",
        ),
        (
            AuthError::UnsupportedAlgorithm {
                algorithm: "x".into(),
            },
            "IncompleteSignatureException",
        ),
        (
            AuthError::MalformedCredential {
                credential: "x".into(),
            },
            "IncompleteSignatureException",
        ),
        (
            AuthError::SignatureExpired {
                request_time: 0,
                now: 1000,
                max_skew_secs: 900,
            },
            "InvalidSignatureException",
        ),
        (
            AuthError::SignatureNotYetCurrent {
                request_time: 1000,
                now: 0,
                max_skew_secs: 90,
            },
            "InvalidSignatureException",
        ),
        (AuthError::HostNotSigned, "InvalidSignatureException"),
        (
            AuthError::InvalidCredentialScope(Box::new(ScopeMismatch {
                service: Some("lambda".into()),
                ..ScopeMismatch::default()
            })),
            "InvalidSignatureException",
        ),
        (AuthError::UnrecognizedClient, "UnrecognizedClientException"),
        (
            AuthError::SignatureDoesNotMatch {
                canonical_request: String::new(),
                string_to_sign: String::new(),
            },
            "InvalidSignatureException",
        ),
        (
            AuthError::InvalidContentSha256 { value: "x".into() },
            "InvalidSignatureException",
        ),
        (
            AuthError::ContentSha256Mismatch,
            "InvalidSignatureException",
        ),
    ];
    for (e, t) in all {
        assert_eq!(e.error_type(), t, "{e:?}");
        assert_eq!(e.http_status(), 403);
        assert!(!e.message().is_empty());
        assert_eq!(e.to_string(), format!("{t}: {}", e.message()));
    }
    // Skews that are not whole minutes are given in seconds.
    let e = AuthError::SignatureNotYetCurrent {
        request_time: 1000,
        now: 0,
        max_skew_secs: 90,
    };
    assert_eq!(
        e.message(),
        "Signature not yet current: 19700101T001640Z is still later than 19700101T000130Z \
         (19700101T000000Z + 90 sec.)"
    );
}
