fn main() -> std::process::ExitCode {
    voltlens::cli::main()
}
