"""Build the course website from the notebooks' stored outputs, without executing them (`make book`).

    python book/build.py [--out build/book] [--repo OWNER/NAME] [--branch BRANCH]

Stages, under OUT/src, every page at its path in the repository -- notebooks/*.ipynb (the lectures),
exercises/*.ipynb (the handouts: stubs, never solutions/), docs/**/*.md -- and a landing page
(book/index.md with the course map made from the notebooks' titles), then runs Sphinx
(book/conf.py) into OUT/html. Whatever lectures, handouts and docs pages exist at build time are in
the book; nothing is listed by hand.

--repo (default: $GITHUB_REPOSITORY, set in GitHub Actions) turns on the per-notebook Binder launch
button (mybinder.org builds environment.yml at BRANCH, default $GITHUB_REF_NAME or main), and points
links to repository files that are not pages of the book (README.md, dptlearn/...) at GitHub.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BOOK = ROOT / "book"
SECTIONS = [  # (folder in the repository, glob, caption of its part of the book)
    ("notebooks", "*.ipynb", "Lectures"),
    ("exercises", "*.ipynb", "Exercises"),
    ("docs", "**/*.md", "Reference"),
]
TITLE = re.compile(r"^#\s+(.+?)\s*$", re.M)


def title_of(path: Path) -> str:
    """The page's first level-1 heading (what Sphinx shows as its title), else its file name."""
    if path.suffix == ".ipynb":
        cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
        text = "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "markdown")
    else:
        text = path.read_text(encoding="utf-8")
    match = TITLE.search(text)
    return match.group(1).strip() if match else path.stem


def pages(root: Path = ROOT) -> dict[str, list[Path]]:
    """Caption -> the repository paths of its pages, sorted (lectures in number order)."""
    return {caption: sorted(p.relative_to(root) for p in (root / folder).glob(pattern)
                            if ".ipynb_checkpoints" not in p.parts)
            for folder, pattern, caption in SECTIONS}


def number(path: Path) -> str | None:
    match = re.match(r"(\d+)_", path.name)
    return match.group(1) if match else None


def cell(text: str) -> str:
    return text.replace("|", "\\|")


def course_map(found: dict[str, list[Path]], root: Path = ROOT) -> str:
    """The landing page's course map: one row per lecture, with its exercise handout where one exists;
    then the handouts without a lecture of their number and the reference pages."""
    handouts = {number(p): p for p in found["Exercises"]}
    rows = ["| | lecture | exercises |", "|---|---|---|"]
    for lecture in found["Lectures"]:
        n = number(lecture)
        name = re.sub(r"^\d+\s*·\s*", "", title_of(root / lecture))
        handout = handouts.pop(n, None)
        ex = f"[{cell(title_of(root / handout))}]({handout.as_posix()})" if handout else ""
        rows.append(f"| {n or ''} | [{cell(name)}]({lecture.as_posix()}) | {ex} |")
    for handout in handouts.values():
        rows.append(f"| {number(handout) or ''} | | [{cell(title_of(root / handout))}]({handout.as_posix()}) |")
    refs = [f"- [{title_of(root / p)}]({p.as_posix()})" for p in found["Reference"]]
    return "\n".join(rows) + ("\n\n## Reference\n\n" + "\n".join(refs) if refs else "") + "\n"


def toctrees(found: dict[str, list[Path]]) -> str:
    return "".join(f"\n```{{toctree}}\n:hidden:\n:caption: {caption}\n\n"
                   + "".join(f"{p.with_suffix('').as_posix()}\n" for p in paths) + "```\n"
                   for caption, paths in found.items() if paths)


LINK = re.compile(r"(\]\()([^)\s#:]+)(#[^)\s]*)?(\))")     # a markdown link to a relative path


def link_out(text: str, page: Path, published: set[Path], repo: str, branch: str, root: Path = ROOT) -> str:
    """Links from ``page`` to repository files that are not in the book (README.md, dptlearn/...) point
    at them on GitHub; links to pages of the book, and to missing files (Sphinx warns), stay."""
    def fix(m: re.Match) -> str:
        target = os.path.normpath(page.parent / m.group(2))
        if target.startswith("..") or Path(target) in published or not (root / target).exists():
            return m.group(0)
        kind = "tree" if (root / target).is_dir() else "blob"
        return f"{m.group(1)}https://github.com/{repo}/{kind}/{branch}/{target}{m.group(3) or ''}{m.group(4)}"
    return LINK.sub(fix, text) if repo else text


def copy_page(rel: Path, src: Path, published: set[Path], repo: str, branch: str, root: Path = ROOT) -> None:
    dest = src / rel
    dest.parent.mkdir(parents=True, exist_ok=True)
    text = (root / rel).read_text(encoding="utf-8")
    if rel.suffix == ".ipynb":
        nb = json.loads(text)
        cells = [c for c in nb["cells"] if c["cell_type"] == "markdown"]
        fixed = [link_out("".join(c["source"]), rel, published, repo, branch, root) for c in cells]
        if fixed != ["".join(c["source"]) for c in cells]:
            for c, source in zip(cells, fixed):
                c["source"] = source
            text = json.dumps(nb, ensure_ascii=False, indent=1) + "\n"
    else:
        text = link_out(text, rel, published, repo, branch, root)
    dest.write_text(text, encoding="utf-8")
    shutil.copystat(root / rel, dest)     # mtimes kept: Sphinx re-reads only what changed


def stage(src: Path, repo: str = "", branch: str = "main", root: Path = ROOT) -> dict[str, list[Path]]:
    """Copy the pages (links to files outside the book sent to GitHub) and write index.md."""
    if src.exists():
        shutil.rmtree(src)
    found = pages(root)
    published = {p for paths in found.values() for p in paths}
    for p in published:
        copy_page(p, src, published, repo, branch, root)
    # assets next to the docs pages (pictures they show), but no other markdown or notebooks
    for p in (root / "docs").rglob("*"):
        if p.is_file() and p.suffix not in (".md", ".ipynb") and not (src / p.relative_to(root)).exists():
            (src / p.relative_to(root)).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(p, src / p.relative_to(root))
    landing = (BOOK / "index.md").read_text(encoding="utf-8")
    (src / "index.md").write_text(landing.replace("{course_map}", course_map(found, root)) + toctrees(found),
                                  encoding="utf-8")
    return found


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=ROOT / "build" / "book")
    ap.add_argument("--repo", default=os.environ.get("GITHUB_REPOSITORY", ""),
                    help="OWNER/NAME on GitHub, for the Binder launch buttons (default: $GITHUB_REPOSITORY)")
    ap.add_argument("--branch", default=os.environ.get("GITHUB_REF_NAME") or "main")
    args = ap.parse_args(argv)
    if args.repo and not re.fullmatch(r"[\w.-]+/[\w.-]+", args.repo):
        ap.error(f"--repo: expected OWNER/NAME, got {args.repo!r}")
    t0 = time.monotonic()
    out = args.out.resolve()
    found = stage(out / "src", args.repo, args.branch)
    env = dict(os.environ, DPTLEARN_BOOK_REPO=args.repo, DPTLEARN_BOOK_BRANCH=args.branch)
    cmd = [sys.executable, "-m", "sphinx", "-b", "html", "-q", "-c", str(BOOK), "-d", str(out / "doctrees"),
           "-w", str(out / "warnings.txt"), str(out / "src"), str(out / "html")]
    proc = subprocess.run(cmd, env=env)
    if proc.returncode:
        return proc.returncode
    counts = ", ".join(f"{len(v)} {k.lower()}" for k, v in found.items())
    launch = f"Binder launch buttons for {args.repo}@{args.branch}" if args.repo else \
        "no launch buttons (no --repo / $GITHUB_REPOSITORY)"
    print(f"book: {counts} -> {out / 'html' / 'index.html'} in {time.monotonic() - t0:.0f} s; {launch}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
