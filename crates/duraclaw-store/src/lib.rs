//! SessionStore backends.
