//! The web rules both hosts enforce the same way, as pure functions over
//! strings: the [`origin`] rule and the user [`credentials`] rules. Each
//! host keeps only a thin adapter from its own request and header types.

pub mod credentials;
pub mod origin;
