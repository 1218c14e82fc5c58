//! `bff-web`: work in progress.
