// libgcc's unwinder linked into the library rather than loaded beside it: every process
// that preloads the library would otherwise map, relocate and initialise libgcc_s.so too
// (about 60 us per exec, measured), although only a panic caught in a hook unwinds.
// libgcc_eh.a comes first on the link line, so the unwinder's symbols resolve there and
// the linker's --as-needed drops libgcc_s.so; without it (another compiler), nothing
// changes.
fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() != Ok("linux") {
        return;
    }
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let Ok(out) = std::process::Command::new(cc)
        .arg("-print-file-name=libgcc_eh.a")
        .output()
    else {
        return;
    };
    let path = std::path::PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    if let (true, Some(dir)) = (path.is_absolute() && path.is_file(), path.parent()) {
        println!("cargo:rustc-link-search=native={}", dir.display());
        println!("cargo:rustc-link-lib=static:-bundle=gcc_eh");
    }
}
