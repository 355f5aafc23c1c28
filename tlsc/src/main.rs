fn main() {
    std::process::exit(stls::exit::USAGE);
}
