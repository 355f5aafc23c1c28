fn main() {
    stls::wrap::tlsc()
}
