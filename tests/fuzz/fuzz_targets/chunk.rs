//! Fuzz target: the chunker on arbitrary blocks and limits (see `cairn_fuzz::check_chunking`).
#![no_main]

libfuzzer_sys::fuzz_target!(init: cairn_fuzz::init(), |data: &[u8]| {
    cairn_fuzz::check_chunking(data)
});
