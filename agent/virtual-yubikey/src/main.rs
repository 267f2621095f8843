fn main() {
    eprintln!("kleidia-virtual-yubikey: not built yet");
    std::process::exit(2);
}
