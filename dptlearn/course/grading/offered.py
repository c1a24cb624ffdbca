"""The packages a graded notebook can import: what the exercises need, nothing else.

The course environment holds other implementations of the component the exercises ask for
(transformers' DPT, Depth Anything, ZoeDepth... and whatever is installed later). An answer that
delegates to one of them must not score. So the sandbox offers only the distributions that
dptlearn itself requires, that run the notebook (pytest, nbval, ipykernel) and that the solutions'
set-up cells import, with everything they require in turn (``offered``); every other top-level
entry of the venv's site-packages is covered by a stub (``stub_for``) whose import raises
``ModuleNotFoundError: <name> is not available when grading: ...``, and the other site folders
a student could add to ``sys.path`` (the base interpreter's, Debian's ``dist-packages``) are
covered by empty folders (``bwrap_args``). The rule is an allowlist: a package installed
tomorrow is hidden until something the exercises need requires it.
"""
from __future__ import annotations

import importlib.metadata as md
import re
import sys
import sysconfig
from pathlib import Path

RUNTIME = ("pytest", "nbval", "ipykernel")      # what runs a notebook in the sandbox
PACKAGE = "dptlearn"
MARKER = "is not available when grading"        # in every stub's message (scoring flags it)
STUB = '''raise ModuleNotFoundError(
    "{name} {marker}: the grader offers only what the exercises need (their cards' 'May use' "
    "line: torch, einops and your own answers); write your own", name={name!r})
'''


def _key(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _requirements(dist: md.Distribution) -> list[str]:
    """The distributions ``dist`` requires for a plain install (no extras), by normalised name."""
    from packaging.requirements import InvalidRequirement, Requirement

    out = []
    for text in dist.requires or []:
        try:
            req = Requirement(text)
        except InvalidRequirement:
            continue
        if req.marker is None or req.marker.evaluate({"extra": ""}):
            out.append(_key(req.name))
    return out


def offered(roots: list[str], path: list[str] | None = None) -> set[str]:
    """The normalised names of ``roots`` and of every distribution they require, transitively."""
    dists = {_key(d.metadata["Name"] or ""): d for d in md.distributions(path=path)}
    seen: set[str] = set()
    todo = [_key(r) for r in roots]
    while todo:
        name = todo.pop()
        if name in seen or name not in dists:
            continue
        seen.add(name)
        todo += _requirements(dists[name])
    return seen


def roots_for(modules: list[str]) -> list[str]:
    """The distributions that dptlearn, the runtime and ``modules`` (imported by the solutions'
    set-up cells) come from."""
    owners = md.packages_distributions()
    dist = md.distribution(PACKAGE)
    roots = [PACKAGE, *RUNTIME, *_requirements(dist)]
    for module in modules:
        roots += owners.get(module.split(".")[0], [])
    return roots


def site_packages() -> Path:
    """The running interpreter's (the venv's) site-packages."""
    return Path(sysconfig.get_paths()["purelib"])


def hidden_entries(site: Path, keep: set[str]) -> list[Path]:
    """Top-level entries of ``site`` that no kept distribution installed (by the distributions'
    RECORD files; an entry no distribution claims is hidden too)."""
    owner: dict[str, set[str]] = {}
    for dist in md.distributions(path=[str(site)]):
        name = _key(dist.metadata["Name"] or "")
        for f in dist.files or []:
            if f.parts and f.parts[0] not in ("..", ""):
                owner.setdefault(f.parts[0], set()).add(name)
        owner.setdefault(Path(str(dist._path)).name, set()).add(name)   # its own .dist-info
    return sorted(p for p in site.iterdir()
                  if p.name != "__pycache__" and not (owner.get(p.name, set()) & keep))


def stub_for(entry: Path, out: Path) -> Path:
    """A file or folder under ``out`` that covers ``entry``: importing it raises ModuleNotFoundError
    naming it (a folder holds an ``__init__.py``; a module file is replaced by that source; any
    other file by an empty one)."""
    name = entry.name.split(".")[0].split("-")[0]
    text = STUB.format(name=name, marker=MARKER)
    if entry.is_dir():
        stub = out / "dirs" / entry.name
        stub.mkdir(parents=True, exist_ok=True)
        (stub / "__init__.py").write_text(text, encoding="utf-8")
    else:
        stub = out / "files" / entry.name
        stub.parent.mkdir(parents=True, exist_ok=True)
        stub.write_text(text if entry.suffix == ".py" else "", encoding="utf-8")
    return stub


def other_sites() -> list[Path]:
    """Site folders besides the venv's that the sandbox sees (the base interpreter's, Debian's)."""
    ver = f"python{sys.version_info.major}.{sys.version_info.minor}"
    base = Path(sys.base_prefix)
    cands = [base / "lib" / ver / "site-packages", Path("/usr/lib/python3/dist-packages"),
             Path(f"/usr/lib/{ver}/site-packages"), Path(f"/usr/local/lib/{ver}/dist-packages"),
             Path(f"/usr/local/lib/{ver}/site-packages")]
    own = site_packages().resolve()
    return [p for p in cands if p.is_dir() and p.resolve() != own]


class Hider:
    """One grading run's stubs: built once, bound over the hidden entries in every sandbox."""

    def __init__(self, out: Path, modules: list[str]):
        self.site = site_packages()
        self.keep = offered(roots_for(modules), [str(self.site)])
        self.pairs = [(stub_for(e, out), e) for e in hidden_entries(self.site, self.keep)]
        self.empty = out / "empty"
        self.empty.mkdir(parents=True, exist_ok=True)
        self.fallback = out / "dirs"            # without bwrap: first on PYTHONPATH
        self.fallback.mkdir(parents=True, exist_ok=True)
        for path in [out, *out.rglob("*")]:
            path.chmod(0o755 if path.is_dir() else 0o644)

    @property
    def hidden(self) -> list[str]:
        return [e.name for _, e in self.pairs]

    def bwrap_args(self) -> list[str]:
        """bwrap arguments (after the venv's bind) that cover every hidden entry and other site."""
        args: list[str] = []
        for stub, entry in self.pairs:
            args += ["--ro-bind", str(stub), str(entry)]
        for site in other_sites():
            args += ["--ro-bind", str(self.empty), str(site)]
        return args
