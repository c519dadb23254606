//! Writes `bindings/c/include/lion_optim.h` from the sources of `bindings/c` (cbindgen, with
//! `bindings/c/cbindgen.toml`), or with `--check` compares the committed header with a fresh
//! generation and fails (exit 1, with a diff hint) if they differ.
//!
//! ```text
//! cargo run --release --manifest-path bindings/c/tools/gen-header/Cargo.toml             # write
//! cargo run --release --manifest-path bindings/c/tools/gen-header/Cargo.toml -- --check  # CI
//! ```

use std::path::{Path, PathBuf};
use std::process::ExitCode;

fn main() -> ExitCode {
    let check = match std::env::args().nth(1).as_deref() {
        None => false,
        Some("--check") => true,
        Some(other) => {
            eprintln!("gen-header: unknown argument {other:?} (use --check, or nothing)");
            return ExitCode::from(2);
        }
    };
    let crate_dir: PathBuf = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let crate_dir = crate_dir.canonicalize().expect("bindings/c exists");
    let header = crate_dir.join("include/lion_optim.h");
    let config = cbindgen::Config::from_file(crate_dir.join("cbindgen.toml"))
        .expect("bindings/c/cbindgen.toml parses");
    let bindings = match cbindgen::Builder::new()
        .with_crate(&crate_dir)
        .with_config(config)
        .generate()
    {
        Ok(b) => b,
        Err(e) => {
            eprintln!("gen-header: cbindgen failed: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut fresh = Vec::new();
    bindings.write(&mut fresh);
    if check {
        let committed = std::fs::read(&header).unwrap_or_default();
        if committed != fresh {
            let tmp = std::env::temp_dir().join("lion_optim.fresh.h");
            let _ = std::fs::write(&tmp, &fresh);
            eprintln!(
                "gen-header: {} is not what the sources generate (fresh copy: {}; diff them). \
                 Regenerate it: cargo run --release --manifest-path \
                 bindings/c/tools/gen-header/Cargo.toml",
                header.display(),
                tmp.display()
            );
            return ExitCode::FAILURE;
        }
        println!("gen-header: {} is up to date", header.display());
    } else {
        std::fs::write(&header, &fresh).expect("the header is writable");
        println!("gen-header: wrote {}", header.display());
    }
    ExitCode::SUCCESS
}
