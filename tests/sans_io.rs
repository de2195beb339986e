//! The engine and HTTP modules are sans-IO: no clock reads, no sockets, no
//! threads. clippy's `disallowed-methods` (clippy.toml) enforces it at the
//! call; this test also catches the paths clippy cannot see (a `use` alias,
//! a type's associated function reached through a re-export).
use std::fs;
use std::path::Path;

const FORBIDDEN: &[&str] = &[
    "Instant::now",
    "SystemTime::now",
    "thread::spawn",
    "std::thread",
    "std::net::TcpListener",
    "std::net::TcpStream",
    "std::net::UdpSocket",
    "mio::",
    "socket2",
    "tokio",
    "turmoil",
    "HashMap",
    "HashSet",
];

fn sources(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn engine_and_http_modules_touch_no_clock_socket_or_thread() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    for dir in ["src/engine", "src/http"] {
        sources(&root.join(dir), &mut files);
    }
    files.push(root.join("src/config.rs"));
    assert!(files.len() >= 10, "found {} files", files.len());
    let mut offences = Vec::new();
    for file in &files {
        let text = fs::read_to_string(file).unwrap();
        for (n, line) in text.lines().enumerate() {
            let code = line.split("//").next().unwrap_or("");
            for word in FORBIDDEN {
                if code.contains(word) {
                    offences.push(format!("{}:{}: {word}", file.display(), n + 1));
                }
            }
        }
    }
    assert!(
        offences.is_empty(),
        "sans-IO modules use forbidden APIs:\n{}",
        offences.join("\n")
    );
}
