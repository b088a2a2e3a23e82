"""Install `promtool` for the monitoring tests (the chart's alert rules, its Grafana dashboard's PromQL
and a real scrape of Herald's /metrics).

    python deploy/helm/install_promtool.py [DEST_DIR]   # default: the running Python's bin/ (a venv's)

The project's machines reach only PyPI, npm and Debian. Debian's `prometheus` package ships the
`promtool` binary beside the server; this downloads that package with `apt-get download` (apt checks
it against the archive's signed index), extracts only `usr/bin/promtool` and installs nothing else: no
Prometheus server, no service. Needs a Debian-family system with apt (as CI and the dev machines are).
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

PACKAGE = "prometheus"
MEMBER = "./usr/bin/promtool"


def installed_version(promtool: Path) -> str | None:
    if not promtool.is_file():
        return None
    try:
        out = subprocess.run([str(promtool), "--version"], capture_output=True, text=True, timeout=30, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    text = out.stdout or out.stderr
    return text.splitlines()[0] if text else None


def download(tmp: Path) -> Path:
    def attempt() -> subprocess.CompletedProcess[str]:
        return subprocess.run(["apt-get", "download", "-q", PACKAGE], cwd=tmp, capture_output=True, text=True)

    result = attempt()
    if result.returncode != 0 and os.geteuid() == 0:
        # A fresh machine may have no package lists yet.
        subprocess.run(["apt-get", "update", "-qq"], check=True)
        result = attempt()
    if result.returncode != 0:
        raise SystemExit(f"install_promtool: apt-get download {PACKAGE} failed:\n{result.stderr}")
    return next(tmp.glob(f"{PACKAGE}_*.deb"))


def extract(deb: Path) -> bytes:
    tar_bytes = subprocess.run(["dpkg-deb", "--fsys-tarfile", str(deb)], capture_output=True, check=True).stdout
    with tarfile.open(fileobj=io.BytesIO(tar_bytes)) as tar:
        member = tar.extractfile(MEMBER)
        if member is None:
            raise SystemExit(f"install_promtool: {deb.name} has no {MEMBER}")
        return member.read()


def install(dest: Path) -> Path:
    promtool = dest / "promtool"
    if installed_version(promtool):
        return promtool
    if shutil.which("apt-get") is None or shutil.which("dpkg-deb") is None:
        raise SystemExit("install_promtool: needs apt-get and dpkg-deb (Debian/Ubuntu); otherwise install "
                         f"promtool yourself and put it at {promtool}")
    with tempfile.TemporaryDirectory() as tmp:
        binary = extract(download(Path(tmp)))
    dest.mkdir(parents=True, exist_ok=True)
    part = dest / f".promtool.{os.getpid()}.part"
    part.write_bytes(binary)
    part.chmod(0o755)
    part.replace(promtool)
    if not installed_version(promtool):
        raise SystemExit(f"install_promtool: {promtool} does not run")
    return promtool


def main(argv: list[str]) -> int:
    dest = Path(argv[0]) if argv else Path(sys.prefix) / "bin"
    promtool = install(dest)
    print(f"{installed_version(promtool)} at {promtool}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
