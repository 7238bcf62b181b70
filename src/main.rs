//! The `dpo` command line: see `dpo --help` and CONTRACT.md section 5.

fn main() {
    autograd::keep_freed_memory();
    std::process::exit(dpo::cli::main());
}
