// Records allocate a handful of small strings each; glibc's malloc spent a
// quarter of the per-record instructions on them (callgrind).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    sluice_cli::main_with::<sluice_app::cli::AppCommand>(sluice_app::catalog())
}
