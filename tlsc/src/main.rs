//! The `tlsc` binary alone: the program is [`tlsc::programs::tlsc`].

#![forbid(unsafe_code)]

fn main() {
    tlsc::programs::tlsc::main()
}
