fn main() {
    stls::wrap::tlsd()
}
