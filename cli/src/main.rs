//! The `lbc` binary: everything is in the library.

fn main() {
    std::process::exit(lbc::main());
}
