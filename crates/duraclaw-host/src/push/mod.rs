//! Web Push.

pub mod action;
