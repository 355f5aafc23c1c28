//! The `ucspitlsc` binary alone: the program is [`tlsc::programs::ucspitlsc`].

#![forbid(unsafe_code)]

fn main() {
    tlsc::programs::ucspitlsc::main()
}
