//! lamina: a self-hosted AWS Lambda for Linux edge appliances.
//!
//! The supervisor crate builds the single `lamina` binary: the API, registry, scheduler and
//! the sandbox launcher. `lamina init` (the code in the `lamina-init` crate) runs as PID 1 of
//! every execution environment.

pub mod api;
pub mod cli;
pub mod layers;
pub mod logs;
pub mod metrics;
pub mod registry;
pub mod run;
pub mod sandbox;
pub mod scheduler;
pub mod secrets;
pub mod serve;
pub mod util;
