//! Inbound gateway policies, one folder each.

pub mod auth;
