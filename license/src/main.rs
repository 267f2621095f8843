fn main() {
    eprintln!("kleidia-license: not built yet");
    std::process::exit(2);
}
