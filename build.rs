//! Link settings for the shipped binary that Cargo profiles cannot express (issue 25, "A smaller
//! binary"; docs/benchmarks.md). In the release profile on Linux the `cairn` binary links as a
//! fixed-address executable, which drops the 8 MB of load-time relocations a position-
//! independent one carries; on x86-64, where Rust links with its own lld, also with identical-
//! code folding, which merges the identical generic instances that every crate compiles for
//! itself (GNU ld, the usual linker elsewhere, has no such option). Debug and test builds are
//! untouched.

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let release = std::env::var("PROFILE").as_deref() == Ok("release");
    let target = std::env::var("TARGET").unwrap_or_default();
    if release && target.ends_with("-linux-gnu") {
        println!("cargo:rustc-link-arg-bins=-no-pie");
        if target.starts_with("x86_64-") {
            println!("cargo:rustc-link-arg-bins=-Wl,--icf=all");
        }
    }
}
