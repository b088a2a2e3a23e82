"""The packages users install outside a checkout.

- The Python distribution (`herald-channels`): `python -m build` makes an sdist and a wheel, `twine
  check --strict` accepts them, and the wheel installed into a fresh venv (away from the checkout)
  gives a `herald` command that prints its version and serves.
- The React package (`herald-channels-react`): `npm pack` makes the tarball, a fresh project installs
  it with React and pusher-js and type-checks (tsc) code using it; Node loads both its ESM and CommonJS
  builds.
- The recovery helper (`herald-channels-recovery`): the same, with pusher-js only.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tomllib
import urllib.request
import zipfile
from pathlib import Path

import pusher
import pytest

import herald
from tests.helpers import REPO, free_port, wait_http_ok

pytestmark = pytest.mark.timeout(600)

REACT = REPO / "react"
RECOVERY = REPO / "recovery"
DIST_NAME = "herald-channels"
NPM_NAME = "herald-channels-react"
RECOVERY_NAME = "herald-channels-recovery"


def _run(cmd: list[str], cwd: Path, timeout: float = 300, env: dict[str, str] | None = None) -> str:
    out = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env)
    assert out.returncode == 0, f"{' '.join(cmd)} failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
    return out.stdout


def _clean_env() -> dict[str, str]:
    """The environment without this venv or checkout on any path."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep) if not p.startswith(sys.prefix))
    return env


def test_wheel_builds_checks_and_serves_from_a_clean_venv(tmp_path: Path) -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert project["name"] == DIST_NAME
    dist = tmp_path / "dist"
    _run([sys.executable, "-m", "build", "--outdir", str(dist), str(REPO)], cwd=tmp_path, timeout=300)
    version = herald.__version__
    wheel = dist / f"herald_channels-{version}-py3-none-any.whl"
    sdist = dist / f"herald_channels-{version}.tar.gz"
    assert wheel.is_file() and sdist.is_file(), sorted(p.name for p in dist.iterdir())
    _run([sys.executable, "-m", "twine", "check", "--strict", str(wheel), str(sdist)], cwd=tmp_path)

    with zipfile.ZipFile(wheel) as whl:
        names = whl.namelist()
        metadata = whl.read(f"herald_channels-{version}.dist-info/METADATA").decode()
        entry_points = whl.read(f"herald_channels-{version}.dist-info/entry_points.txt").decode()
    assert {n.split("/")[0] for n in names if n.endswith(".py")} == {"herald", "gateway", "trigger_api", "shared"}
    assert f"Name: {DIST_NAME}\n" in metadata and f"Version: {version}\n" in metadata
    assert "License-Expression: MIT" in metadata and "Description-Content-Type: text/markdown" in metadata
    assert "herald = herald.cli:main" in entry_points

    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", str(venv)], cwd=tmp_path)
    _run([str(venv / "bin" / "pip"), "install", "-q", "--disable-pip-version-check", str(wheel)], cwd=tmp_path,
         env=_clean_env())
    command = venv / "bin" / "herald"
    assert _run([str(command), "--version"], cwd=tmp_path, env=_clean_env()).strip() == f"herald {version}"
    # Imported from the venv, not from this checkout.
    where = _run([str(venv / "bin" / "python"), "-c", "import herald, shared; print(herald.__file__, shared.__file__)"],
                 cwd=tmp_path, env=_clean_env())
    assert str(REPO) not in where and str(venv) in where

    port = free_port()
    log = tmp_path / "serve.log"
    env = {**_clean_env(), "HERALD_APP_KEY": "wheel-key", "HERALD_APP_SECRET": "wheel-secret"}
    with open(log, "wb") as out:
        proc = subprocess.Popen([str(command), "serve", "--host", "127.0.0.1", "--port", str(port)], cwd=tmp_path,
                                env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_http_ok(f"http://127.0.0.1:{port}/ready", proc, log)
        sdk = pusher.Pusher(app_id="1", key="wheel-key", secret="wheel-secret", host="127.0.0.1", port=port,
                            ssl=False)
        assert sdk.trigger("from-wheel", "ping", {"ok": True}) == {}
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
            assert b"herald_connections" in resp.read()
    finally:
        proc.terminate()
        proc.wait(20)
    # uvicorn re-raises SIGTERM after its graceful shutdown: -15 is a clean stop too.
    assert proc.returncode in (0, -15) and "Finished server process" in log.read_text(), log.read_text()


CONSUMER = """\
import { useState, type ReactNode } from 'react';
import Pusher from 'pusher-js';
import {
  HeraldProvider, useChannel, useConnectionState, useEvent, usePresenceChannel, useClientTrigger, recoveryFor,
  type ConnectionState, type PresenceState, type RecoveryResult,
} from 'herald-channels-react';

function Feed(): ReactNode {
  const [last, setLast] = useState<string>('');
  const channel = useChannel('news');
  const { recovered } = useEvent<{ text: string }>(channel, 'posted', (data, meta) =>
    setLast(data.text + meta.position));
  const outcome: RecoveryResult | null = channel ? recoveryFor(channel.pusher).channel('news').lastRecovery : null;
  const state: ConnectionState = useConnectionState();
  const room: PresenceState<{ name: string }> = usePresenceChannel<{ name: string }>('presence-room');
  const trigger = useClientTrigger('private-room');
  const summary = `${state} ${last} ${room.count} ${String(recovered)} ${outcome?.count}`;
  return <p onClick={() => trigger('client-hi', { at: Date.now() })}>{summary}</p>;
}

export function App({ client }: { client: Pusher }): ReactNode {
  return <HeraldProvider client={client}><Feed /></HeraldProvider>;
}

export function AppFromOptions(): ReactNode {
  return (
    <HeraldProvider appKey="key" options={{ cluster: '', wsHost: '127.0.0.1', wsPort: 6001, forceTLS: false }}>
      <Feed />
    </HeraldProvider>
  );
}
"""


def test_react_package_packs_and_builds_in_a_fresh_project(tmp_path: Path) -> None:
    if shutil.which("npm") is None:
        pytest.fail("npm is not installed (scripts/test.sh installs Node.js)")
    if not (REACT / "node_modules").is_dir():
        pytest.fail("react/node_modules missing: run `cd react && npm ci` (scripts/test.sh does)")
    package = json.loads((REACT / "package.json").read_text())
    assert package["name"] == NPM_NAME and "private" not in package
    out = _run(["npm", "pack", "--json", "--pack-destination", str(tmp_path)], cwd=REACT)
    packed = json.loads(out[out.index("\n[\n") if not out.startswith("[") else 0:])  # after the build's log
    (info,) = packed
    tarball = tmp_path / info["filename"]
    files = {f["path"] for f in info["files"]}
    assert {"package.json", "README.md", "dist/index.js", "dist/index.cjs", "dist/index.d.ts"} <= files
    assert not [f for f in files if f.startswith(("src/", "test/", "node_modules/"))]

    dev = package["devDependencies"]
    app = tmp_path / "app"
    (app / "src").mkdir(parents=True)
    (app / "package.json").write_text(json.dumps({
        "name": "consumer", "private": True,
        "dependencies": {NPM_NAME: f"file:{tarball}", "pusher-js": dev["pusher-js"], "react": dev["react"]},
        "devDependencies": {"typescript": dev["typescript"], "@types/react": dev["@types/react"]},
    }))
    # Two ways apps resolve it: a bundler's (Vite, Next.js: the ESM build's types) and Node's own for
    # CommonJS (the .d.cts). (Node's ESM resolution, NodeNext with "type": "module", is left out:
    # pusher-js's own typings don't resolve there, whatever imports them.)
    (app / "tsconfig.json").write_text(json.dumps({"compilerOptions": {
        "target": "ES2022", "module": "ESNext", "moduleResolution": "Bundler", "jsx": "react-jsx",
        "strict": True, "outDir": "out", "skipLibCheck": False, "types": []}, "include": ["src"]}))
    (app / "tsconfig.node16.json").write_text(json.dumps({
        "extends": "./tsconfig.json", "compilerOptions": {"module": "Node16", "moduleResolution": "Node16",
                                                          "outDir": "out-cjs"}}))
    (app / "src" / "app.tsx").write_text(CONSUMER)
    _run(["npm", "install", "--no-audit", "--no-fund", "--prefer-offline"], cwd=app, timeout=300)
    _run(["npx", "tsc", "-p", "tsconfig.json"], cwd=app)
    _run(["npx", "tsc", "-p", "tsconfig.node16.json"], cwd=app)
    assert (app / "out" / "app.js").is_file() and (app / "out-cjs" / "app.js").is_file()
    # Node resolves both builds through the package's exports map.
    names = "['HeraldProvider','useChannel','useEvent','usePresenceChannel','useUser'].map(n => typeof m[n]).join()"
    expected = ",".join(["function"] * 5)
    assert _run(["node", "--input-type=module", "-e",
                 f"import * as m from '{NPM_NAME}'; console.log({names})"], cwd=app).strip() == expected
    assert _run(["node", "--input-type=commonjs", "-e",
                 f"const m = require('{NPM_NAME}'); console.log({names})"], cwd=app).strip() == expected
    # The recovery helper is built in: the package has no runtime dependency to resolve.
    assert "dependencies" not in package


RECOVERY_CONSUMER = """\
import Pusher from 'pusher-js';
import { recoveryFor, type RecoveryResult } from 'herald-channels-recovery';

export function follow(pusher: Pusher, onOrder: (order: { id: number }) => void): () => void {
  const orders = recoveryFor(pusher).subscribe('orders');
  orders.bind<{ id: number }>('order-created', (order, meta) => onOrder({ id: order.id + (meta.position ? 0 : 1) }));
  return orders.onRecovery((result: RecoveryResult) => {
    if (!result.recovered) console.log('reload', result.reason);
  });
}
"""


def test_recovery_package_packs_and_builds_in_a_fresh_project(tmp_path: Path) -> None:
    if shutil.which("npm") is None:
        pytest.fail("npm is not installed (scripts/test.sh installs Node.js)")
    if not (RECOVERY / "node_modules").is_dir():
        pytest.fail("recovery/node_modules missing: run `cd recovery && npm ci` (scripts/test.sh does)")
    package = json.loads((RECOVERY / "package.json").read_text())
    assert package["name"] == RECOVERY_NAME and "private" not in package and "dependencies" not in package
    out = _run(["npm", "pack", "--json", "--pack-destination", str(tmp_path)], cwd=RECOVERY)
    packed = json.loads(out[out.index("\n[\n") if not out.startswith("[") else 0:])
    (info,) = packed
    files = {f["path"] for f in info["files"]}
    assert {"package.json", "README.md", "dist/index.js", "dist/index.cjs", "dist/index.d.ts"} <= files
    assert not [f for f in files if f.startswith(("src/", "test/", "node_modules/"))]
    dev = package["devDependencies"]
    app = tmp_path / "app"
    (app / "src").mkdir(parents=True)
    (app / "package.json").write_text(json.dumps({
        "name": "consumer", "private": True,
        "dependencies": {RECOVERY_NAME: f"file:{tmp_path / info['filename']}", "pusher-js": dev["pusher-js"]},
        "devDependencies": {"typescript": dev["typescript"]},
    }))
    (app / "tsconfig.json").write_text(json.dumps({"compilerOptions": {
        "target": "ES2022", "module": "ESNext", "moduleResolution": "Bundler", "strict": True, "outDir": "out",
        "skipLibCheck": False, "types": [], "lib": ["ES2022", "DOM"]}, "include": ["src"]}))
    (app / "src" / "follow.ts").write_text(RECOVERY_CONSUMER)
    _run(["npm", "install", "--no-audit", "--no-fund", "--prefer-offline"], cwd=app, timeout=300)
    _run(["npx", "tsc", "-p", "tsconfig.json"], cwd=app)
    names = "['recoveryFor','HeraldRecovery','RecoveredChannel','parsePosition'].map(n => typeof m[n]).join()"
    expected = ",".join(["function"] * 4)
    assert _run(["node", "--input-type=module", "-e",
                 f"import * as m from '{RECOVERY_NAME}'; console.log({names})"], cwd=app).strip() == expected
    assert _run(["node", "--input-type=commonjs", "-e",
                 f"const m = require('{RECOVERY_NAME}'); console.log({names})"], cwd=app).strip() == expected
