//! Lambda's REST API (2015-03-31 and its dated sub-APIs), SigV4-authenticated.

pub mod access_log;
pub mod account;
pub mod config;
pub mod error;
pub mod http;
pub mod lambda;
pub mod layers;
pub mod logs;
pub mod metrics;
pub mod policy;
pub mod sigv4;
pub mod validate;
pub mod versions;
