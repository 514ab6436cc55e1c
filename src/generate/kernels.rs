//! Which llama.cpp CPU kernels answer (issue 24). llama.cpp's matrix kernels are compiled for
//! one instruction-set level; built for the baseline x86-64 they run without AVX, several times
//! slower than the CPU allows, and built for AVX2 they die with SIGILL on older CPUs.
//!
//! A `llama-cpu-variants` build carries one `libggml-cpu-<variant>.so` per level beside the
//! binary (`x64`, `sse42`, `sandybridge`, `haswell`, `skylakex`, `icelake`, `zen4`,
//! `sapphirerapids`, ...). Before the first model loads, each library scores itself for this CPU
//! (0: it cannot run here) and the best one is loaded, or the one `generator.cpu_variant` names
//! if this CPU can run it. A static build has its one set of kernels, compiled for the build
//! target (`static`). Either way ggml reports the features the loaded kernels were compiled
//! with, which `/stats` and `/health/ready` show.

use std::ffi::{c_char, CStr};

use llama_cpp_sys_2 as sys;

use super::CpuKernels;

/// The features ggml's CPU backend was compiled with (`AVX2`, `FMA`, ...; non-flag entries as
/// `NAME=value`), read from its registry once a CPU backend is registered.
fn features() -> Vec<String> {
    // SAFETY: ggml's registry calls; the feature array is static in the backend and ends with
    // a null name, and the proc address, when present, has this signature (ggml-backend.h).
    unsafe {
        let reg = sys::ggml_backend_reg_by_name(c"CPU".as_ptr());
        if reg.is_null() {
            return Vec::new();
        }
        let f = sys::ggml_backend_reg_get_proc_address(reg, c"ggml_backend_get_features".as_ptr());
        let Some(f) =
            std::mem::transmute::<*mut std::ffi::c_void, sys::ggml_backend_get_features_t>(f)
        else {
            return Vec::new();
        };
        let mut out = Vec::new();
        let mut p = f(reg);
        while !p.is_null() && !(*p).name.is_null() {
            let text = |s: *const c_char| CStr::from_ptr(s).to_string_lossy().into_owned();
            let (name, value) = (text((*p).name), text((*p).value));
            out.push(if value == "1" {
                name
            } else {
                format!("{name}={value}")
            });
            p = p.add(1);
        }
        out
    }
}

/// The kernels of a static build: the ones linked in.
#[cfg(not(feature = "llama-cpu-variants"))]
pub(super) fn load(wanted: &str) -> Result<CpuKernels, String> {
    if wanted != "auto" && wanted != "static" {
        return Err(format!(
            "generator.cpu_variant = {wanted:?}: this binary has one set of CPU kernels, \
             compiled in (build with --features llama-cpu-variants to choose)"
        ));
    }
    Ok(CpuKernels {
        variant: "static".into(),
        features: features(),
    })
}

/// Chooses and registers the CPU variant (see the module docs).
#[cfg(feature = "llama-cpu-variants")]
pub(super) fn load(wanted: &str) -> Result<CpuKernels, String> {
    let exe = std::env::current_exe().map_err(|e| format!("the binary's own path: {e}"))?;
    let dir = exe.parent().unwrap_or(std::path::Path::new("."));
    let found = variants(dir);
    if found.is_empty() {
        return Err(format!(
            "no llama.cpp CPU kernels (libggml-cpu-*.so) beside {}: install them with the \
             binary, or build without the llama-cpu-variants feature",
            exe.display()
        ));
    }
    let scored: Vec<(String, std::path::PathBuf, i32)> = found
        .into_iter()
        .map(|(name, path)| {
            let s = score(&path);
            (name, path, s)
        })
        .collect();
    let chosen = choose(&scored, wanted)?;
    let path = std::ffi::CString::new(chosen.1.as_os_str().as_encoded_bytes())
        .map_err(|e| e.to_string())?;
    // SAFETY: a no-op log callback, then the library's backend registered in ggml's global
    // registry, once per process (the caller's lock); ggml keeps the library loaded. ggml
    // would announce the load on stderr, outside Cairn's (JSON) log; the model's load line
    // names the variant instead.
    let reg = unsafe {
        sys::ggml_log_set(Some(quiet), std::ptr::null_mut());
        sys::ggml_backend_load(path.as_ptr())
    };
    if reg.is_null() {
        return Err(format!("llama.cpp could not load {}", chosen.1.display()));
    }
    Ok(CpuKernels {
        variant: chosen.0.clone(),
        features: features(),
    })
}

#[cfg(feature = "llama-cpu-variants")]
unsafe extern "C" fn quiet(_: sys::ggml_log_level, _: *const c_char, _: *mut std::ffi::c_void) {}

/// `libggml-cpu-<variant>.so` files in `dir`, by variant name.
#[cfg(feature = "llama-cpu-variants")]
fn variants(dir: &std::path::Path) -> Vec<(String, std::path::PathBuf)> {
    let mut found: Vec<_> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let variant = name.strip_prefix("libggml-cpu-")?.strip_suffix(".so")?;
            Some((variant.to_string(), e.path()))
        })
        .collect();
    found.sort();
    found
}

/// The library's own score for this CPU (0 when it cannot run here, or cannot be read).
#[cfg(feature = "llama-cpu-variants")]
fn score(path: &std::path::Path) -> i32 {
    // SAFETY: the libraries are llama.cpp's own CPU backends; loading one runs no code that
    // needs its instruction set (ggml's loader does the same), and `ggml_backend_score` is
    // `int (void)` in every one of them.
    unsafe {
        let Ok(lib) = libloading::Library::new(path) else {
            return 0;
        };
        lib.get::<unsafe extern "C" fn() -> std::ffi::c_int>(b"ggml_backend_score\0")
            .map_or(0, |f| f())
    }
}

/// The best-scoring variant for `auto`, else the named one if this CPU can run it.
#[cfg_attr(not(feature = "llama-cpu-variants"), allow(dead_code))]
fn choose<'a, P>(
    scored: &'a [(String, P, i32)],
    wanted: &str,
) -> Result<&'a (String, P, i32), String> {
    let names = || {
        let mut v: Vec<String> = scored
            .iter()
            .filter(|s| s.2 > 0)
            .map(|s| s.0.clone())
            .collect();
        v.sort();
        v.join(", ")
    };
    let pick = if wanted == "auto" {
        scored.iter().filter(|s| s.2 > 0).max_by_key(|s| s.2)
    } else {
        scored.iter().find(|s| s.0 == wanted && s.2 > 0)
    };
    pick.ok_or_else(|| match wanted {
        "auto" => "none of llama.cpp's CPU kernels runs on this CPU".to_string(),
        _ => format!(
            "generator.cpu_variant = {wanted:?} is not a CPU variant this CPU can run; it can \
             run: auto, {}",
            names()
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scored() -> Vec<(String, (), i32)> {
        [("x64", 1), ("haswell", 12), ("skylakex", 0), ("sse42", 3)]
            .iter()
            .map(|(n, s)| (n.to_string(), (), *s))
            .collect()
    }

    #[test]
    fn auto_takes_the_best_score_and_a_named_variant_must_run_here() {
        let s = scored();
        assert_eq!(choose(&s, "auto").unwrap().0, "haswell");
        assert_eq!(choose(&s, "x64").unwrap().0, "x64");
        // Scored 0: loading it would end in SIGILL on the first kernel.
        let e = choose(&s, "skylakex").unwrap_err();
        assert!(e.contains("auto, haswell, sse42, x64"), "{e}");
        assert!(choose(&s, "nope").is_err());
        let none: Vec<(String, (), i32)> = vec![("skylakex".into(), (), 0)];
        assert!(choose(&none, "auto").unwrap_err().contains("none of"));
    }
}
