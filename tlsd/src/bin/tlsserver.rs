//! The `tlsserver` binary alone: the program is [`tlsd::programs::tlsserver`].

#![forbid(unsafe_code)]

fn main() {
    tlsd::programs::tlsserver::main()
}
