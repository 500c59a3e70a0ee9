//! `kiln-osbuild`: runs osbuild v2 manifests with osbuild's command-line
//! contract (see `kiln_executor::cli`).

fn main() -> std::process::ExitCode {
    kiln_executor::cli::main(std::env::args().collect())
}
