//! `bff-partner`: work in progress.
