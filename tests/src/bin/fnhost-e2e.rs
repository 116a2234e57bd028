fn main() -> std::process::ExitCode {
    fnhost::cli::main()
}
