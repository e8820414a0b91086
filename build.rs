//! Build script of the root (test) package:
//!
//! - bindgen over `ffi/include/ha_balancer.h`, with layout assertions, so
//!   `tests/abi.rs` can compare the C view of every type and constant with
//!   the Rust one (drift fails the build or the tests);
//! - bindgen again, functions only, over the Rust types, so that the same
//!   test compares every function's signature with the Rust export's;
//! - cc compiles `tests/c/abi_driver.c`, a C program that drives the ABI as
//!   nginx-module/ does, linked into the ABI test.

use std::env;
use std::path::PathBuf;

fn main() {
    let header = "ffi/include/ha_balancer.h";
    println!("cargo:rerun-if-changed={header}");
    println!("cargo:rerun-if-changed=tests/c/abi_driver.c");

    let out = PathBuf::from(env::var("OUT_DIR").expect("OUT_DIR is set by cargo"));

    bindgen::Builder::default()
        .header(header)
        .allowlist_type("(hab|HAB)_.*")
        .allowlist_var("(hab|HAB)_.*")
        .rustified_enum("hab_result")
        .rustified_enum("hab_policy")
        .layout_tests(true)
        .derive_debug(true)
        .generate()
        .expect("bindgen could not parse ha_balancer.h (is libclang-dev installed?)")
        .write_to_file(out.join("hab_sys.rs"))
        .expect("write bindings");

    // The functions alone, over the Rust crate's own types: the ABI test
    // checks that each Rust export has exactly the header's signature.
    bindgen::Builder::default()
        .header(header)
        .allowlist_function("hab_.*")
        .blocklist_type(".*")
        .generate()
        .expect("bindgen could not parse ha_balancer.h")
        .write_to_file(out.join("hab_fns.rs"))
        .expect("write function bindings");

    cc::Build::new()
        .file("tests/c/abi_driver.c")
        .include("ffi/include")
        .warnings(true)
        .extra_warnings(true)
        .warnings_into_errors(true)
        .flag("-std=c11")
        .compile("hab_abi_driver");
}
