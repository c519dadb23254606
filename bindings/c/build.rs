//! The shared library's SONAME on Linux: liblion_optim.so.0.MINOR while the version is 0.x
//! (every 0.x minor may change the ABI: a program built against 0.1 does not load 0.2), then
//! liblion_optim.so.MAJOR. install.sh installs the file under that name with the usual links.
fn main() {
    println!("cargo::rerun-if-changed=build.rs");
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux") {
        let major = std::env::var("CARGO_PKG_VERSION_MAJOR").unwrap_or_default();
        let minor = std::env::var("CARGO_PKG_VERSION_MINOR").unwrap_or_default();
        let soname = if major == "0" {
            format!("liblion_optim.so.0.{minor}")
        } else {
            format!("liblion_optim.so.{major}")
        };
        println!("cargo::rustc-cdylib-link-arg=-Wl,-soname,{soname}");
    }
}
