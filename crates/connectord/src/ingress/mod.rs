//! The public webhook: verify, normalize, dispatch, record.

pub mod body;
pub mod dispatch;
pub mod envelope;
pub mod handler;
pub mod signature;
mod slim;

pub use handler::router;
