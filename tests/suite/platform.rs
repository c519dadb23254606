//! The instruction sets a build really runs. CI cross-tests set `LION_EXPECT_INSTRUCTIONS` to
//! what the portable backend must use on the target under test (`neon` on aarch64, `simd128` on
//! wasm32 with `+simd128`, `scalar` without it, `avx2` with `-C target-cpu=x86-64-v3`), so a build
//! that silently lost its SIMD fails instead of passing on the scalar fallback.

use lion_optim::Backend;

#[test]
fn portable_backend_uses_the_instructions_ci_expects() {
    let got = Backend::Portable.instructions();
    eprintln!(
        "portable backend: {got}; lion_optim::step runs on {}",
        Backend::detect()
    );
    if let Ok(want) = std::env::var("LION_EXPECT_INSTRUCTIONS") {
        assert_eq!(got, want, "Backend::Portable.instructions() on this build");
    }
}

#[test]
fn instructions_follow_the_target_features() {
    let portable = Backend::Portable.instructions();
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
        // The run-time-detected backends exist on x86_64 only.
        assert_eq!(Backend::detect(), Backend::Portable);
    }
    assert_eq!(Backend::Scalar.instructions(), "scalar");
    for backend in Backend::ALL.iter().filter(|b| b.is_available()) {
        assert!(!backend.instructions().is_empty(), "{backend:?}");
    }
    // Scalar and portable run everywhere; an unavailable backend says so and writes nothing.
    assert!(Backend::Scalar.is_available() && Backend::Portable.is_available());
    for &backend in Backend::ALL.iter().filter(|b| !b.is_available()) {
        let (mut p, mut m) = ([1.0f32], [0.0f32]);
        let hp = lion_optim::Hyperparams::default();
        let got = backend.step_with(&mut p, &[1.0f32], &mut m, &hp, &Default::default());
        assert_eq!(got, Err(lion_optim::Error::BackendUnavailable(backend)));
        assert_eq!((p, m), ([1.0], [0.0]));
    }
}
