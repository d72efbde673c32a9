//! Lambda's REST API (2015-03-31 and its dated sub-APIs), SigV4-authenticated.

pub mod http;
pub mod sigv4;
