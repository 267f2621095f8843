fn main() {
    eprintln!("kleidia-agent: not built yet");
    std::process::exit(2);
}
