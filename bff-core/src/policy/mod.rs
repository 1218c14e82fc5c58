//! Inbound gateway policies, one folder each.

pub mod access;
pub mod api_key;
pub mod auth;
