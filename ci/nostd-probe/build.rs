fn main() {
    // A freestanding binary: no C runtime start files; the entry point is `_start` below.
    println!("cargo:rustc-link-arg-bins=-nostartfiles");
    println!("cargo:rustc-link-arg-bins=-static");
}
