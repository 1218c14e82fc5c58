//! Inbound gateway policies, one folder each.

#![cfg_attr(not(any(test, feature = "test-util")), allow(unreachable_pub, reason = "public with `test-util` only"))]

pub mod access;
pub mod api_key;
pub mod auth;
