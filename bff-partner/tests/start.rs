//! The binary as an operator meets it: with no config it refuses to start.

#[test]
fn without_a_config_it_refuses_to_start_and_says_what_to_pass() {
    bff_core::testing::binary::assert_refuses_without_config(env!("CARGO_BIN_EXE_bff-partner"), "config/partner.toml");
}

#[test]
fn it_allocates_through_jemalloc_as_configured() {
    bff_core::testing::binary::assert_allocator_configured(env!("CARGO_BIN_EXE_bff-partner"));
}
