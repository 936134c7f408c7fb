"""An emulated aarch64 Python with numpy, numba and imageio, built from Debian and PyPI packages.

Nothing is booted: Debian's ``qemu-aarch64-static`` runs the ``python3.X`` binary of Debian's arm64
packages, unpacked with ``dpkg -x`` into ROOT (``-L ROOT`` makes qemu resolve the dynamic loader
and libraries there), with ``PYTHONPATH`` on PyPI's aarch64 wheels unpacked into SITE. The wheels
are pinned to the versions installed beside the calling interpreter, so both sides of a parity
run use the same numpy / numba / llvmlite.

Everything is cached under ``$RCLUT_ARM_CACHE`` (default ``~/.cache/rclut_numba/arm``), outside
any clone, so a fresh CI clone on the same machine reuses it. A build goes to a temporary folder
and is renamed into place when complete, under a file lock, so an interrupted or concurrent build
never leaves a half-made environment.

Run alone, it builds (or finds) the environment and prints how to call its interpreter.
"""
from __future__ import annotations

import argparse
import fcntl
import importlib.metadata
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

# The interpreter and the shared libraries its stdlib modules and the wheels load (numpy and
# pillow bundle their own; llvmlite links LLVM statically but needs libstdc++).
DEBIAN_PACKAGES = ("python{v}-minimal", "libpython{v}-minimal", "libpython{v}-stdlib", "libc6",
                   "libgcc-s1", "libstdc++6", "zlib1g", "libexpat1", "libffi8", "libssl3",
                   "libbz2-1.0", "liblzma5", "libsqlite3-0", "libuuid1")
WHEELS = ("numpy", "numba", "llvmlite", "imageio", "pillow")
QEMU = "qemu-aarch64-static"


class SetupError(RuntimeError):
    """The environment cannot be built here; the message says why in one line."""


@dataclass(frozen=True)
class ArmEnv:
    qemu: str
    root: Path
    site: Path
    python_version: str

    @property
    def python(self) -> Path:
        return self.root / "usr" / "bin" / f"python{self.python_version}"

    def command(self, *args: str) -> list[str]:
        return [self.qemu, "-L", str(self.root), str(self.python), *args]

    def environ(self, *extra_paths: Path, **overrides: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "NUMBA_"))}
        env["PYTHONPATH"] = os.pathsep.join(str(p) for p in (*extra_paths, self.site))
        env["PYTHONNOUSERSITE"] = "1"
        env.update(overrides)
        return env


def default_cache_dir() -> Path:
    if os.environ.get("RCLUT_ARM_CACHE"):
        return Path(os.environ["RCLUT_ARM_CACHE"])
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg) / "rclut_numba" / "arm"


def _run(cmd: list[str], what: str, **kwargs) -> str:
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, **kwargs)
    except FileNotFoundError:
        raise SetupError(f"{what}: {cmd[0]} not found") from None
    except subprocess.TimeoutExpired as e:
        raise SetupError(f"{what}: no answer in {e.timeout:.0f} s (network?)") from None
    if done.returncode != 0:
        lines = (done.stderr or done.stdout).strip().splitlines()
        last = next((ln for ln in reversed(lines) if ln.startswith(("E:", "ERROR"))),
                    lines[-1] if lines else "")
        raise SetupError(f"{what} failed (exit {done.returncode}): {last.strip()}")
    return done.stdout


# ---- qemu -------------------------------------------------------------------------------------
def ensure_qemu() -> str:
    found = shutil.which(QEMU)
    if found:
        return found
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        raise SetupError(f"{QEMU} not found; install Debian's qemu-user-static "
                         "(apt-get install qemu-user-static, as root)")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    install = ["apt-get", "install", "-y", "-q", "qemu-user-static"]
    try:
        _run(install, "apt-get install qemu-user-static", env=env, timeout=600)
    except SetupError:  # the system's lists may be missing or name superseded versions
        _run(["apt-get", "-q", "update"], "apt-get update", env=env, timeout=600)
        _run(install, "apt-get install qemu-user-static", env=env, timeout=600)
    found = shutil.which(QEMU)
    if not found:
        raise SetupError(f"apt-get installed qemu-user-static but {QEMU} is not on PATH")
    return found


# ---- Debian arm64 packages, through an apt of our own --------------------------------------------
class PrivateApt:
    """apt-get / apt-cache for arm64 with its own lists and archives (the system's sources): the
    system's apt state, its architectures and its package cache stay untouched."""

    def __init__(self, state: Path):
        self.state = state
        for sub in ("lists/partial", "archives/partial"):
            (state / sub).mkdir(parents=True, exist_ok=True)
        (state / "status").touch()
        self.options = []
        for key, value in (("Dir::State", state), ("Dir::State::Lists", state / "lists"),
                           ("Dir::State::status", state / "status"), ("Dir::Cache", state),
                           ("Dir::Cache::archives", state / "archives"),
                           ("APT::Architecture", "arm64"), ("APT::Architectures::", "arm64"),
                           ("Debug::NoLocking", "1"), ("APT::Sandbox::User", "root")):
            self.options += ["-o", f"{key}={value}"]

    def update(self) -> None:
        if not shutil.which("apt-get"):
            raise SetupError("apt-get not found: the aarch64 Python comes from Debian packages")
        out = _run(["apt-get", *self.options, "-q", "update"], "apt-get update (arm64 lists)",
                   timeout=600)
        (self.state / "debian-versions").unlink(missing_ok=True)  # re-read from the new lists
        if not any((self.state / "lists").glob("*arm64_Packages*")):  # apt exits 0 regardless
            failed = [ln for ln in out.splitlines() if ln.startswith(("Err", "W:", "E:"))]
            why = failed[0].strip() if failed else "no arm64 Packages list came back"
            raise SetupError(f"apt-get update fetched no arm64 package lists (mirror "
                             f"unreachable?): {why}")

    def candidate(self, package: str) -> str:
        out = _run(["apt-cache", *self.options, "policy", package], f"apt-cache policy {package}")
        for line in out.splitlines():
            if line.strip().startswith("Candidate:"):
                version = line.split(":", 1)[1].strip()
                if version and version != "(none)":
                    return version
        raise SetupError(f"Debian's arm64 lists have no {package}")

    def download(self, packages: list[str], dest: Path) -> list[Path]:
        _run(["apt-get", *self.options, "-q", "download", *packages],
             "apt-get download (arm64 .debs)", cwd=dest, timeout=900)
        return sorted(dest.glob("*.deb"))


def _debian_release() -> str:
    try:
        return Path("/etc/debian_version").read_text().strip().replace(" ", "_") or "unknown"
    except OSError:
        return "unknown"


def debian_versions(apt: PrivateApt) -> tuple[str, str]:
    """(python major.minor, glibc major.minor) of the Debian release the machine runs, read from
    the lists once and kept beside them (apt-cache takes seconds)."""
    known = apt.state / "debian-versions"
    release = _debian_release()
    if known.is_file():
        python_version, glibc, seen_release = known.read_text().split()
        if seen_release == release:
            return python_version, glibc
        apt.update()  # the machine moved to another release: its lists are stale
    upstream = apt.candidate("python3").split(":")[-1].split("-")[0]  # 3.11.2-1+b1 -> 3.11.2
    glibc = apt.candidate("libc6").split(":")[-1].split("-")[0]      # 2.36-9+deb12u7 -> 2.36
    python_version, glibc = ".".join(upstream.split(".")[:2]), ".".join(glibc.split(".")[:2])
    known.write_text(f"{python_version} {glibc} {release}\n")
    return python_version, glibc


# ---- PyPI aarch64 wheels ----------------------------------------------------------------------
def pinned_wheels() -> list[str]:
    """The packages the engine needs, at the versions installed beside this interpreter."""
    pins = []
    for name in WHEELS:
        try:
            pins.append(f"{name}=={importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            pins.append(name)
    return pins


def manylinux_platforms(glibc: str) -> list[str]:
    # pip takes --platform literally: list every manylinux tag this glibc can load
    major, minor = (int(v) for v in glibc.split("."))
    tags = ["manylinux2014_aarch64"]
    tags += [f"manylinux_{major}_{m}_aarch64" for m in range(17, minor + 1)]
    return tags


def download_wheels(pins: list[str], python_version: str, glibc: str, dest: Path) -> list[Path]:
    abi = "cp" + python_version.replace(".", "")
    cmd = [sys.executable, "-m", "pip", "download", "--disable-pip-version-check", "-q",
           "--dest", str(dest), "--only-binary=:all:", "--python-version", python_version,
           "--implementation", "cp", "--abi", abi, "--abi", "abi3", "--abi", "none"]
    for tag in manylinux_platforms(glibc):
        cmd += ["--platform", tag]
    _run([*cmd, *pins], f"pip download of aarch64 wheels ({' '.join(pins)}; PyPI unreachable, "
         f"or no aarch64 cp{abi[2:]} wheel of that version?)", timeout=900)
    return sorted(dest.glob("*.whl"))


# ---- the environment --------------------------------------------------------------------------
def _build(cache: Path, key_dir: Path, python_version: str, glibc: str, apt: PrivateApt,
           pins: list[str]) -> None:
    work = Path(tempfile.mkdtemp(prefix=".build-", dir=cache))
    try:
        debs = work / "debs"
        debs.mkdir()
        names = [p.format(v=python_version) for p in DEBIAN_PACKAGES]
        for deb in apt.download(names, debs):
            _run(["dpkg", "-x", str(deb), str(work / "root")], f"dpkg -x {deb.name}")
        wheels = work / "wheels"
        wheels.mkdir()
        for wheel in download_wheels(pins, python_version, glibc, wheels):
            with zipfile.ZipFile(wheel) as zf:  # modes are dropped: .so files need only read
                zf.extractall(work / "site")
        for name in (wheels, debs):  # the unpacked trees are all that is used
            shutil.rmtree(name)
        (work / "packages.txt").write_text("\n".join(names + pins) + "\n")
        work.rename(key_dir)
    finally:
        if work.exists():
            shutil.rmtree(work, ignore_errors=True)


def ensure_env(cache: Path | None = None, log=print) -> ArmEnv:
    """Find or build the emulated environment; raise SetupError with a one-line reason."""
    cache = cache or default_cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    qemu = ensure_qemu()
    pins = pinned_wheels()
    with open(cache / "lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        apt = PrivateApt(cache / "apt")
        updated = not any((cache / "apt" / "lists").glob("*Packages*"))
        if updated:
            apt.update()
        python_version, glibc = debian_versions(apt)
        key_dir = cache / f"py{python_version}-{'-'.join(p.replace('==', '') for p in pins)}"
        if not key_dir.is_dir():
            t0 = time.perf_counter()
            log(f"arm: building the aarch64 environment in {key_dir} ...")
            if not updated:  # old lists may name .debs the mirror no longer has
                apt.update()
            _build(cache, key_dir, python_version, glibc, apt, pins)
            log(f"arm: built in {time.perf_counter() - t0:.1f} s")
    env = ArmEnv(qemu, key_dir / "root", key_dir / "site", python_version)
    if not env.python.is_file():
        raise SetupError(f"{env.python} missing: delete {key_dir} and run again")
    return env


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cache", type=Path, help="cache folder (default: $RCLUT_ARM_CACHE or "
                   "~/.cache/rclut_numba/arm)")
    args = p.parse_args(argv)
    t0 = time.perf_counter()
    try:
        env = ensure_env(args.cache)
    except SetupError as e:
        print(f"arm setup: {e}", file=sys.stderr)
        return 2
    print(f"arm: environment ready in {time.perf_counter() - t0:.1f} s")
    print(f"PYTHONPATH={env.site} {' '.join(env.command())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
