"""The gateway's hot path compiled to C with mypyc, when this machine can build it.

Why: with the request path already reduced to callbacks, what is left per request is the
interpreter running our own code (bench/README.md: the same modules compiled serve about
1.6x the requests per second). mypyc compiles the modules as they are, from their type
annotations; nothing is written twice, and the plain Python modules stay the reference.

`python3 manage.py` builds them after installing the lock (`native.build()`),
into `build/gateway-native/` (not in the source tree), stamped with a digest of the sources
it was built from and of this Python. `accord.gateway` then imports the compiled modules
only while that digest still matches; a source edited since, a machine without a C compiler
or `ACCORD_GATEWAY_PURE_PYTHON=1` (profiling with py-spy, say) gets the plain modules.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent
ROOT = PACKAGE.parent.parent
BUILD = ROOT / "build" / "gateway-native"
STAMP = BUILD / "SOURCES.sha256"
# The modules a request runs through; `builder`, `loader`, `recorder` and `app` use SQLAlchemy
# or run once, and stay plain Python (the recorder's per-request half is `tally`).
MODULES = ("server", "upstream", "proxy", "limits", "periods", "snapshot", "problems", "metrics", "tally")


def sources_digest() -> str:
    digest = hashlib.sha256(sys.version.encode())
    for name in MODULES:
        digest.update((PACKAGE / f"{name}.py").read_bytes())
    return digest.hexdigest()


def activate(package_path: list[str]) -> bool:
    """Put the compiled modules ahead of the plain ones in `accord.gateway`, if they match the sources."""
    if os.environ.get("ACCORD_GATEWAY_PURE_PYTHON") or not STAMP.exists():
        return False
    try:
        if STAMP.read_text() != sources_digest():
            return False
    except OSError:
        return False
    sys.path.append(str(BUILD))  # mypyc's shared library for the group is a top-level module
    package_path.insert(0, str(BUILD / "accord" / "gateway"))
    return True


def compiled() -> bool:
    """Whether the running gateway uses the compiled modules."""
    from accord.gateway import proxy

    return not proxy.__file__.endswith(".py") if proxy.__file__ else False


def build(force: bool = False) -> bool:
    """Compile the hot modules into BUILD unless they are current; False when this machine cannot."""
    digest = sources_digest()
    if not force and STAMP.exists() and STAMP.read_text() == digest:
        return True
    compiler = (sysconfig.get_config_var("CC") or "cc").split()[0]
    if not shutil.which(compiler):
        print("accord: no C compiler here; the gateway runs as plain Python", file=sys.stderr)
        return False
    print("accord: compiling the gateway's hot path with mypyc (about a minute) …", file=sys.stderr, flush=True)
    with tempfile.TemporaryDirectory(prefix="accord-native-") as work:
        out, temp, generated = (str(Path(work) / part) for part in ("out", "tmp", "c"))
        script = (  # setuptools drives the C compiler; mypyc's options are mypy's (imports it cannot see: Any)
            "import sys\n"
            "from setuptools import setup\n"
            "from mypyc.build import mypycify\n"
            "out, temp, generated, *modules = sys.argv[1:]\n"
            "extensions = mypycify(['--follow-imports=silent', '--ignore-missing-imports', *modules],\n"
            "                      opt_level='3', target_dir=generated)\n"
            "setup(name='accord-gateway-native', ext_modules=extensions,\n"
            "      script_args=['build_ext', '--build-lib', out, '--build-temp', temp])\n"
        )
        done = subprocess.run([sys.executable, "-c", script, out, temp, generated,
                               *(f"accord/gateway/{name}.py" for name in MODULES)],
                              cwd=ROOT, capture_output=True, text=True)
        if done.returncode != 0:
            print(f"accord: compiling the gateway failed; it runs as plain Python\n{done.stdout[-3000:]}"
                  f"{done.stderr[-3000:]}", file=sys.stderr)
            return False
        if BUILD.exists():
            shutil.rmtree(BUILD)
        shutil.copytree(out, BUILD)
    STAMP.write_text(digest)
    return True

