//! The `tlsclient` binary alone: the program is [`tlsc::programs::tlsclient`].

#![forbid(unsafe_code)]

fn main() {
    tlsc::programs::tlsclient::main()
}
