//! The AWS side of the deployment tests: a moto server of the test's own (never the shared one
//! other tests use), the stack deployed to it by `scripts/deploy --local`, and the venv's tools
//! (boto3, cfn-lint, sam, hadolint) that scripts/lib.sh installs next to `CHRONOS_TEST_PYTHON`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// The repository root (scripts/, infra/, Dockerfile).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace root").to_path_buf()
}

/// The test venv's Python (scripts/test exports it).
pub fn venv_python() -> PathBuf {
    let py = std::env::var("CHRONOS_TEST_PYTHON")
        .unwrap_or_else(|_| panic!("CHRONOS_TEST_PYTHON is not set: run the tests with scripts/test, which installs the venv"));
    PathBuf::from(py)
}

/// A tool in the venv's bin directory (cfn-lint, sam, hadolint, moto_server).
pub fn venv_tool(name: &str) -> PathBuf {
    let p = venv_python().parent().expect("venv bin").join(name);
    assert!(p.is_file(), "{} not found: run scripts/test (scripts/lib.sh ensure_venv installs the pinned tools)", p.display());
    p
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// `moto_server` on a free port, stopped when dropped.
pub struct PrivateMoto {
    pub port: u16,
    child: std::process::Child,
}

impl PrivateMoto {
    pub fn start() -> PrivateMoto {
        let port = free_port();
        let child = Command::new(venv_tool("moto_server"))
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start moto_server");
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "moto_server on port {port} did not start within 30 s");
            std::thread::sleep(Duration::from_millis(50));
        }
        PrivateMoto { port, child }
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Environment for a process talking to this emulator with dummy credentials.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ENDPOINT_URL", self.endpoint()),
            ("AWS_REGION", "us-east-1".into()),
            ("AWS_DEFAULT_REGION", "us-east-1".into()),
            ("AWS_ACCESS_KEY_ID", "test".into()),
            ("AWS_SECRET_ACCESS_KEY", "test".into()),
        ]
    }

    /// Run `code` (Python, with `boto3`, `json` and a `c(service)` client factory bound to this
    /// emulator) and parse what it prints as JSON: the tests read each service's own API.
    pub fn query(&self, code: &str) -> Value {
        let prelude = "import boto3, json, os\n\
                       def c(name):\n    return boto3.client(name, endpoint_url=os.environ['AWS_ENDPOINT_URL'])\n";
        let mut cmd = Command::new(venv_python());
        cmd.arg("-c").arg(format!("{prelude}{code}"));
        for (k, v) in self.env() {
            cmd.env(k, v);
        }
        let out = cmd.output().expect("run the venv's python");
        assert!(out.status.success(), "query failed: {}\n{code}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("query printed no JSON ({e}): {}", String::from_utf8_lossy(&out.stdout)))
    }
}

impl Drop for PrivateMoto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What `scripts/deploy --local` left behind.
pub struct Deployed {
    pub stack: String,
    /// The stack's Outputs.
    pub outputs: Value,
    /// The expanded template (plain CloudFormation), as AWS would receive it.
    pub template: Value,
    /// What the deploy printed (stderr), for assertion messages.
    pub log: String,
    pub dir: PathBuf,
}

impl Deployed {
    pub fn output(&self, key: &str) -> String {
        self.outputs[key].as_str().unwrap_or_else(|| panic!("no output {key} in {}", self.outputs)).to_owned()
    }
}

/// The Lambda binaries built next to the test executable, zipped as cargo-lambda lays them out
/// (`<dir>/<binary>/bootstrap.zip`): the code the emulator stores (it never runs it).
pub fn lambda_zips(dir: &Path) -> PathBuf {
    let zips = dir.join("lambda");
    for bin in ["chronos-api-lambda", "chronos-tick-lambda", "chronos-scaler-lambda"] {
        let built = crate::chronos_bin().with_file_name(bin);
        assert!(built.exists(), "{} not found: cargo build --bins", built.display());
        let d = zips.join(bin);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::copy(&built, d.join("bootstrap")).unwrap();
        let st =
            Command::new(venv_python()).current_dir(&d).args(["-m", "zipfile", "-c", "bootstrap.zip", "bootstrap"]).status().expect("zip");
        assert!(st.success());
        std::fs::remove_file(d.join("bootstrap")).unwrap();
    }
    zips
}

/// Run `scripts/deploy --local` against `moto` with template parameters `params`; panics with
/// the script's output when it fails.
pub fn deploy(moto: &PrivateMoto, dir: &Path, stack: &str, params: &[&str]) -> Deployed {
    let zips = dir.join("lambda");
    if !zips.exists() {
        lambda_zips(dir);
    }
    let out_dir = dir.join("out");
    let mut cmd = Command::new(repo_root().join("scripts/deploy"));
    cmd.arg("--local").args(params).stdin(Stdio::null());
    for (k, v) in moto.env() {
        cmd.env(k, v);
    }
    cmd.env("CHRONOS_STACK", stack).env("CHRONOS_LAMBDA_DIR", &zips).env("CHRONOS_DEPLOY_OUT", &out_dir);
    let out = cmd.output().expect("run scripts/deploy");
    let log = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "scripts/deploy --local failed:\n{log}\n{}", String::from_utf8_lossy(&out.stdout));
    let read = |f: &str| -> Value { serde_json::from_slice(&std::fs::read(out_dir.join(f)).unwrap()).unwrap() };
    Deployed { stack: stack.to_owned(), outputs: read("outputs.json"), template: read("template.json"), log, dir: dir.to_owned() }
}

/// A scratch directory under the system temp dir, removed when dropped.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(what: &str) -> TempDir {
        let p = std::env::temp_dir().join(format!("chronos-{what}-{}", crate::random_suffix()));
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
