//! The `ucspitlsd` binary alone: the program is [`tlsd::programs::ucspitlsd`].

#![forbid(unsafe_code)]

fn main() {
    tlsd::programs::ucspitlsd::main()
}
