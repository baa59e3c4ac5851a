//! connectord keeps a platform's content in step with GitHub repositories.
//!
//! A delivery's path: [`ingress`] verifies and normalizes it and
//! [`ingress::dispatch`] decides what it means; the [`store`] records it and
//! enqueues sync jobs in one transaction; [`sync`] workers claim the jobs and
//! run them through a [`sync::Reconciler`]; [`admin`] shows all of it.

pub mod admin;
pub mod cli;
pub mod config;
pub mod domain;
pub mod edge;
pub mod error;
#[doc(hidden)]
pub mod fuzz_targets;
pub mod github;
pub mod ingress;
pub mod private_fs;
pub mod recovery;
pub mod retry;
pub mod secrets;
pub mod shutdown;
pub mod startup;
pub mod store;
pub mod sync;
pub mod telemetry;
