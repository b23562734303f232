"""TLS for the proxy: the certificate files nginx serves, and a local CA for `make serve-secure`.

In the pod the certificate and key come from a Kubernetes Secret of type kubernetes.io/tls (tls.crt,
tls.key; docker/entrypoint.sh, k8s/README.md). On a developer's machine `local_certificates` makes a
CA and a certificate for 127.0.0.1 and localhost on first use, with the openssl command line, and
keeps them: clients trust the CA file (curl --cacert, requests' verify=, grpc's root certificates).

    python -m serving.tls .run/tls     # make (or reuse) them, print the paths
"""
from __future__ import annotations

import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

CA_DAYS = 3650
SERVER_DAYS = 825  # what browsers accept for a server certificate
SERVER_NAMES = "IP:127.0.0.1,IP:::1,DNS:localhost"
CURVE = "prime256v1"


class TLSError(RuntimeError):
    """The certificate files are missing or could not be made; the message says what to do."""


@dataclass(frozen=True)
class TLSFiles:
    certificate: Path      # PEM, the server's certificate (and any chain after it)
    key: Path              # PEM, its private key
    ca: Path | None = None  # the CA that signed it, for clients (local certificates only)

    def check(self) -> "TLSFiles":
        for what, path in (("certificate", self.certificate), ("key", self.key)):
            if not Path(path).is_file():
                raise TLSError(f"the TLS {what} {path} is missing")
        return self


def _openssl(*args: str, cwd: Path) -> None:
    binary = shutil.which("openssl")
    if binary is None:
        raise TLSError("openssl is not installed; it makes the local certificates. Install it "
                       "(Debian/Ubuntu: sudo apt-get install openssl) and try again.")
    result = subprocess.run([binary, *args], cwd=cwd, capture_output=True, text=True)
    if result.returncode != 0:
        raise TLSError(f"openssl {args[0]} failed: {result.stderr.strip()[-500:]}")


def local_certificates(folder: Path) -> TLSFiles:
    """A CA and a server certificate for 127.0.0.1, ::1 and localhost under `folder` (made on first
    use, kept after): ca.pem for clients, server.pem and server.key for nginx (keys readable by
    their owner only)."""
    folder = Path(folder).resolve()
    files = TLSFiles(folder / "server.pem", folder / "server.key", folder / "ca.pem")
    if all(path.is_file() for path in (files.certificate, files.key, files.ca)):
        return files
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o700)
    key = ["-newkey", "ec", "-pkeyopt", f"ec_paramgen_curve:{CURVE}", "-nodes"]
    _openssl("req", "-x509", *key, "-keyout", "ca.key", "-out", "ca.pem", "-days", str(CA_DAYS),
             "-subj", "/CN=tinyserve local CA", "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=folder)
    _openssl("req", *key, "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=localhost",
             "-addext", f"subjectAltName={SERVER_NAMES}", "-addext", "extendedKeyUsage=serverAuth", cwd=folder)
    _openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
             "-copy_extensions", "copy", "-days", str(SERVER_DAYS), "-out", "server.pem", cwd=folder)
    (folder / "server.csr").unlink()
    for secret in ("ca.key", "server.key"):
        (folder / secret).chmod(0o600)
    return files


def main(argv=None) -> int:
    folder = Path((argv or sys.argv[1:] or [".run/tls"])[0])
    try:
        files = local_certificates(folder)
    except TLSError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"certificate {files.certificate}\nkey {files.key}\nCA (for clients) {files.ca}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
