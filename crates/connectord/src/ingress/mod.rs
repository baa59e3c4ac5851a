pub mod dispatch;
pub mod envelope;
pub mod signature;
