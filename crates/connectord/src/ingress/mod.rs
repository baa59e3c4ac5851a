//! The public webhook: verify, normalize, dispatch, record.

pub mod body;
pub mod dispatch;
pub mod envelope;
pub mod handler;
pub mod signature;

pub use handler::router;
