//! The `dpo` command line: see `dpo --help` and docs/spec.md section 5.

fn main() {
    autograd::keep_freed_memory();
    std::process::exit(dpo_rs::cli::main());
}
