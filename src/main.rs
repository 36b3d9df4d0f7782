//! The `ptune` command: a thin layer over the library; each subcommand lives in `cli/`.

mod cli;

fn main() {
    // Before any other thread exists; see the module for the measured trade.
    ptune::train::memory::use_profile(ptune::train::memory::Profile::Throughput);
    std::process::exit(cli::main());
}
