//! Link settings for the shipped binary that Cargo profiles cannot express (issue 25, "A smaller
//! binary"; docs/benchmarks.md). In the release profile on Linux the `cairn` binary links as a
//! fixed-address executable, which drops the 8 MB of load-time relocations a position-
//! independent one carries; on x86-64, where Rust links with its own lld, also with identical-
//! code folding, which merges the identical generic instances that every crate compiles for
//! itself (GNU ld, the usual linker elsewhere, has no such option). Debug and test builds are
//! untouched.
//!
//! With `llama-cpu-variants`, llama.cpp is shared libraries: its build hard-links `libllama.so`
//! and `libggml*.so` beside the executables it builds for, and installs the CPU variants
//! (`libggml-cpu-<variant>.so`) in its own out dir. Those are copied beside the executables
//! too, and every executable finds its libraries beside itself (`$ORIGIN`), as a release
//! tarball or the image lays them out.

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
    if std::env::var_os("CARGO_FEATURE_LLAMA_CPU_VARIANTS").is_some() {
        llama_cpu_variants();
    }
}

fn llama_cpu_variants() {
    println!("cargo:rerun-if-env-changed=DEP_LLAMA_BACKENDS_DIR");
    println!("cargo:rustc-link-arg=-Wl,-rpath,$ORIGIN");
    let backends = std::path::PathBuf::from(
        std::env::var("DEP_LLAMA_BACKENDS_DIR")
            .expect("llama-cpp-sys-2 with dynamic-backends names its backends dir"),
    );
    println!("cargo:rerun-if-changed={}", backends.display());
    // OUT_DIR is <target>/<profile>/build/cairn-<hash>/out.
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    let profile_dir = out
        .ancestors()
        .nth(3)
        .expect("OUT_DIR under the target dir");
    // llama-cpp-sys-2 links only the unversioned names (`libllama.so`, itself a link to
    // `libllama.so.0`); the loader wants the versioned ones, so the whole set is mirrored.
    let libs = backends
        .parent()
        .expect("the backends dir is in llama's out dir");
    let wanted = |name: &str| {
        name.starts_with("libggml-cpu-") && name.ends_with(".so")
            || (name.starts_with("libggml") || name.starts_with("libllama.so"))
                && name.contains(".so.")
    };
    for dir in [profile_dir.to_path_buf(), profile_dir.join("deps")] {
        std::fs::create_dir_all(&dir).expect("the target dir is writable");
        for src in [backends.clone(), libs.join("lib"), libs.join("lib64")] {
            for entry in std::fs::read_dir(&src).into_iter().flatten().flatten() {
                let name = entry.file_name();
                if wanted(&name.to_string_lossy()) {
                    mirror(&entry.path(), &dir.join(&name));
                }
            }
        }
    }
}

/// Copies a file, or recreates a symbolic link, replacing what `dst` held.
fn mirror(src: &std::path::Path, dst: &std::path::Path) {
    let _ = std::fs::remove_file(dst);
    match std::fs::read_link(src) {
        Ok(target) => std::os::unix::fs::symlink(target, dst).expect("linking a library"),
        Err(_) => {
            std::fs::copy(src, dst).expect("copying a library");
        }
    }
}
