//! The instruction sets a build really runs. CI cross-tests set `LION_EXPECT_INSTRUCTIONS` to
//! what the portable path must use on the target under test (`neon` on aarch64, `simd128` on
//! wasm32 with `+simd128`, `scalar` without it, `avx2` with `-C target-cpu=x86-64-v3`), so a build
//! that silently lost its SIMD fails instead of passing on the scalar fallback.

use lion_optim::Path;

#[test]
fn portable_path_uses_the_instructions_ci_expects() {
    let got = Path::Portable.instructions();
    eprintln!(
        "portable path: {got}; lion_optim::step runs on {}",
        Path::detect()
    );
    if let Ok(want) = std::env::var("LION_EXPECT_INSTRUCTIONS") {
        assert_eq!(got, want, "Path::Portable.instructions() on this build");
    }
}

#[test]
fn instructions_follow_the_target_features() {
    let portable = Path::Portable.instructions();
    if cfg!(all(target_arch = "aarch64", target_feature = "neon")) {
        assert_eq!(portable, "neon");
    }
    if cfg!(all(target_arch = "wasm32", target_feature = "simd128")) {
        assert_eq!(portable, "simd128");
    }
    if cfg!(all(target_arch = "x86_64", target_feature = "avx2")) {
        assert_eq!(portable, "avx2");
    }
    if cfg!(not(target_arch = "x86_64")) {
        // The run-time-detected paths exist on x86_64 only.
        assert_eq!(Path::detect(), Path::Portable);
    }
    assert_eq!(Path::Scalar.instructions(), "scalar");
    for path in Path::ALL.iter().filter(|p| p.is_available()) {
        assert!(!path.instructions().is_empty(), "{path:?}");
    }
}
