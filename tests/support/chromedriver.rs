//! Headless Chromium for browser tests, driven through `chromedriver` (WebDriver) on a free
//! port of 127.0.0.1: Debian's `chromium` and `chromium-driver`, which `cargo xtask test`
//! installs. The driver (and the browsers it started) is killed when dropped.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder};

/// A running chromedriver.
pub(crate) struct ChromeDriver {
    child: Child,
    port: u16,
}

fn find(program: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/bin", "/usr/lib/chromium"].map(PathBuf::from))
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
        .unwrap_or_else(|| {
            panic!("{program} is not installed: `cargo xtask test` installs chromium and chromium-driver")
        })
}

impl ChromeDriver {
    /// Starts chromedriver and waits until it answers.
    pub(crate) fn start() -> ChromeDriver {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new(find("chromedriver"))
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts");
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "chromedriver did not listen in 20 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        ChromeDriver { child, port }
    }

    /// A new headless browser session, 1400×2200 (tall: screenshots show whole pages).
    pub(crate) async fn browser(&self) -> Client {
        let mut options = serde_json::json!({
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                     "--disable-dev-shm-usage", "--window-size=1400,2200"],
        });
        let chromium = Path::new("/usr/bin/chromium");
        if chromium.is_file() {
            options["binary"] = chromium.display().to_string().into();
        }
        let mut capabilities = serde_json::Map::new();
        capabilities.insert("goog:chromeOptions".into(), options);
        ClientBuilder::rustls()
            .expect("TLS roots")
            .capabilities(capabilities)
            .connect(&format!("http://127.0.0.1:{}", self.port))
            .await
            .expect("a browser session")
    }
}

impl Drop for ChromeDriver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Where a test's screenshots go: `<target>/test-artifacts/<test>/`.
pub(crate) fn artifacts(test: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let target = exe.ancestors().nth(3).unwrap();
    let dir = target.join("test-artifacts").join(test);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
