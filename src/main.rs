//! The `dpo` command line: see `dpo --help` and CONTRACT.md section 5.

fn main() {
    std::process::exit(dpo::cli::main());
}
