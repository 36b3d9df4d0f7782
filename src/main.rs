//! The `ptune` command: a thin layer over the library; each subcommand lives in `cli/`.

mod cli;

fn main() {
    // Before any other thread exists, so that every worker inherits both settings; see the
    // modules for the measured trades.
    ptune::cpu_env::flush_denormals();
    ptune::train::memory::use_profile(ptune::train::memory::Profile::Throughput);
    std::process::exit(cli::main());
}
