//! Fuzz target: `.md` files through extraction and chunking (see `cairn_fuzz::check_file`).
#![no_main]

libfuzzer_sys::fuzz_target!(init: cairn_fuzz::init(), |data: &[u8]| {
    cairn_fuzz::check_file("fuzz.md", data)
});
