//! The `ptune` command: a thin layer over the library; each subcommand lives in `cli/`.

mod cli;

fn main() {
    std::process::exit(cli::main());
}
