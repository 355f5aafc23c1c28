//! The `tlsd` binary alone: the program is [`tlsd::programs::tlsd`].

#![forbid(unsafe_code)]

fn main() {
    tlsd::programs::tlsd::main()
}
