//! Compiles `bpf/*.c` into BPF objects in `OUT_DIR` with clang
//! (`-target bpf -O2 -g`, so the objects carry BTF for the ABI test).
//!
//! `LB_EBPF_CLANG` overrides the compiler; otherwise `clang-19`, then `clang`.

use std::path::{Path, PathBuf};
use std::process::Command;

fn find_clang() -> String {
    if let Ok(c) = std::env::var("LB_EBPF_CLANG") {
        return c;
    }
    for c in ["/usr/bin/clang-19", "clang-19", "clang"] {
        if Command::new(c)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
        {
            return c.to_owned();
        }
    }
    panic!(
        "lb-ebpf: no clang found to compile the BPF programs in bpf/. \
         Install clang (e.g. `apt-get install clang-19 libbpf-dev`) or set LB_EBPF_CLANG."
    );
}

fn main() {
    println!("cargo:rerun-if-changed=bpf");
    println!("cargo:rerun-if-env-changed=LB_EBPF_CLANG");
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR"));
    let clang = find_clang();
    let arch_inc = format!(
        "-I/usr/include/{}-linux-gnu",
        std::env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_else(|_| "x86_64".into())
    );
    let mut sources: Vec<PathBuf> = std::fs::read_dir("bpf")
        .expect("read bpf/")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "c"))
        .collect();
    sources.sort();
    for src in sources {
        println!("cargo:rerun-if-changed={}", src.display());
        let stem = src.file_stem().and_then(|s| s.to_str()).expect("file name");
        let obj = out.join(format!("{stem}.o"));
        compile(&clang, &arch_inc, &src, &obj);
    }
}

fn compile(clang: &str, arch_inc: &str, src: &Path, obj: &Path) {
    let output = Command::new(clang)
        .args([
            "-target", "bpf", "-O2", "-g", "-Wall", "-Werror", arch_inc, "-Ibpf", "-c",
        ])
        .arg(src)
        .arg("-o")
        .arg(obj)
        .output()
        .unwrap_or_else(|e| panic!("lb-ebpf: running {clang}: {e}"));
    if !output.status.success() {
        panic!(
            "lb-ebpf: {clang} failed on {}:\n{}",
            src.display(),
            String::from_utf8_lossy(&output.stderr)
        );
    }
}
