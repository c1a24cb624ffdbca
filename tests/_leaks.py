"""What "gives a line of the solution" means, for the handout and lecture-copy tests (issue #23).

A solution line is normalised by dropping its comment and every whitespace character, so
``return x + out  # (B, D, h, w)`` and ``return x+out`` are the same line. Lines with fewer than
``MIN_LINE`` characters left (``else:``, ``return x``) say nothing about the answer and are skipped.
Cards are also searched for the solution's key *expressions*, each at least ``MIN_EXPR`` characters
once normalised: a call with arguments, or arithmetic/indexing/comparison nested in another such
operation. A hint that quotes ``3 * L // 4`` or ``x[:, :1].expand_as(patches)`` gives the answer even
though it is not a whole line; a card that states the interface (``dec_depth <= 9`` raises,
``fusion[3]`` has no skip unit, ``feature_dim // 2`` channels) does not, and single operations pass.
"""
from __future__ import annotations

import ast
import io
import re
import tokenize

from dptlearn.course.exercises import BEGIN, END, source_of, tags_of

MIN_LINE = 12
MIN_EXPR = 6
WS = re.compile(r"\s+")
KEY_NODES = (ast.Call, ast.BinOp, ast.Subscript, ast.Compare, ast.BoolOp, ast.ListComp,
             ast.GeneratorExp, ast.DictComp)


def squash(text: str) -> str:
    """``text`` without any whitespace (Markdown backticks stay: they never sit inside code)."""
    return WS.sub("", text)


def strip_comment(line: str) -> str:
    """The line without its ``#`` comment (a ``#`` inside a string literal stays)."""
    try:
        toks = list(tokenize.generate_tokens(io.StringIO(line).readline))
    except (tokenize.TokenError, IndentationError, SyntaxError):
        return line.split("#", 1)[0]
    for tok in toks:
        if tok.type == tokenize.COMMENT:
            return line[: tok.start[1]]
    return line


def solution_regions(cell: dict) -> list[str]:
    """The code between each ``### BEGIN SOLUTION`` / ``### END SOLUTION`` pair of a cell."""
    regions, inside = [], None
    for line in source_of(cell).splitlines():
        if line.strip() == BEGIN:
            inside = []
        elif line.strip() == END:
            regions.append("\n".join(inside))
            inside = None
        elif inside is not None:
            inside.append(line)
    return regions


def dedent_block(text: str) -> str:
    lines = [ln for ln in text.splitlines() if ln.strip()]
    pad = min((len(ln) - len(ln.lstrip()) for ln in lines), default=0)
    return "\n".join(ln[pad:] for ln in text.splitlines())


def solution_lines(code: str) -> set[str]:
    """Normalised lines of a solution region (comments and whitespace gone, short lines skipped)."""
    out = set()
    for line in code.splitlines():
        s = squash(strip_comment(line))
        if len(s) >= MIN_LINE:
            out.add(s)
    return out


def key_expressions(code: str) -> set[str]:
    """Normalised source of the solution's calls, arithmetic and indexing (``MIN_EXPR`` chars or more)."""
    source = dedent_block(code)
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return set()
    out = set()
    for node in ast.walk(tree):
        ops = sum(isinstance(n, KEY_NODES) for n in ast.walk(node))
        is_call = isinstance(node, ast.Call) and (node.args or node.keywords)
        if isinstance(node, KEY_NODES) and (is_call or ops >= 2):
            # as written and as ast spells it (unparse turns 1e-8 into 1e-08, quotes into ')
            for s in (squash(ast.get_source_segment(source, node) or ""), squash(ast.unparse(node))):
                if len(s) >= MIN_EXPR:
                    out.add(s)
    return out


def exercise_solutions(nb: dict) -> dict[str, list[str]]:
    """Exercise id -> the code of its solution regions, from a solutions/ notebook."""
    out: dict[str, list[str]] = {}
    for cell in nb["cells"]:
        tags = tags_of(cell)
        if "solution" in tags:
            ex = next(t[3:] for t in tags if t.startswith("ex:"))
            out.setdefault(ex, []).extend(solution_regions(cell))
    return out


def exercise_given(nb: dict) -> dict[str, str]:
    """Exercise id -> the code of its cells tagged ``given`` (a find-the-bug exercise's handed-out code)."""
    out: dict[str, str] = {}
    for cell in nb["cells"]:
        tags = tags_of(cell)
        if "given" in tags and cell.get("cell_type") == "code":
            ex = next(t[3:] for t in tags if t.startswith("ex:"))
            out[ex] = out.get(ex, "") + source_of(cell) + "\n"
    return out


def quoted_variants(expr: str) -> set[str]:
    """An expression as a card may quote it: with either kind of string quote."""
    return {expr, expr.replace("'", '"'), expr.replace('"', "'")}


def leaks(code: str, whole_text: str, card_text: str, given: str = "") -> list[str]:
    """What of ``code`` appears in the handout: whole lines anywhere, key expressions on the card.

    ``given``: the code a find-the-bug exercise hands out; its lines and expressions are the
    exercise, so only what the fix changes (``fix_of``) must not appear.
    """
    whole, card = squash(whole_text), squash(card_text)
    lines, exprs = fix_of(code, given)
    found = [f"line {line!r}" for line in sorted(lines)
             if any(v in whole for v in quoted_variants(line))]
    found += [f"expression {e!r}" for e in sorted(exprs)
              if any(v in card for v in quoted_variants(e))]
    return found


def fix_of(code: str, given: str = "") -> tuple[set[str], set[str]]:
    """The solution's normalised lines and key expressions that the given code does not have."""
    return (solution_lines(code) - solution_lines(given), key_expressions(code) - key_expressions(given))


# ----------------------------------------------------------------------------- near copies of lecture code

class _Anon(ast.NodeTransformer):
    """Names, attributes, arguments and constants renamed by first appearance: a copy with other names
    (or other numbers) normalises to the same tree."""

    def __init__(self):
        self.names: dict[str, str] = {}

    def _n(self, name: str) -> str:
        return self.names.setdefault(name, f"v{len(self.names)}")

    def visit_Name(self, node):
        return ast.copy_location(ast.Name(id=self._n(node.id), ctx=node.ctx), node)

    def visit_arg(self, node):
        node.arg, node.annotation = self._n(node.arg), None
        return node

    def visit_Attribute(self, node):
        if isinstance(node.value, ast.Name):     # `mine.f`, `self.f`, `F.f` and `f` are one call
            return ast.copy_location(ast.Name(id=self._n(node.attr), ctx=node.ctx), node)
        self.generic_visit(node)
        node.attr = self._n(node.attr)
        return node

    def visit_Constant(self, node):
        return ast.copy_location(ast.Constant(value="c" if isinstance(node.value, str) else 0), node)

    def visit_Expr(self, node):   # docstrings and bare strings say nothing about the code
        if isinstance(node.value, ast.Constant) and isinstance(node.value.value, str):
            return None
        return self.generic_visit(node)


def units(source: str) -> list[str]:
    """The normalised token stream of each function or class of ``source`` (and of the whole source)."""
    try:
        tree = ast.parse(dedent_block(source))
    except SyntaxError:
        return []
    out = []
    nodes = [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.ClassDef))] or [tree]
    for node in nodes:
        body = node.body if not isinstance(node, ast.Module) else node.body
        mod = _Anon().visit(ast.Module(body=[ast.fix_missing_locations(b) for b in body], type_ignores=[]))
        out.append(ast.unparse(ast.fix_missing_locations(mod)))
    return out


def tokens(dump: str) -> list[str]:
    return re.findall(r"\w+|[^\w\s]", dump)


def similarity(a, b) -> float:
    """difflib's ratio of two normalised dumps (or their token lists), over their tokens."""
    import difflib
    ta, tb = (tokens(x) if isinstance(x, str) else x for x in (a, b))
    if min(len(ta), len(tb)) < 0.5 * max(len(ta), len(tb)):
        return 0.0                               # one is less than half the other: not a copy
    return difflib.SequenceMatcher(None, ta, tb, autojunk=False).ratio()


def calls(source: str) -> list[str]:
    """The names of the functions a piece of code calls, in source order (``mine.f`` and ``f`` alike)."""
    try:
        tree = ast.parse(dedent_block(source))
    except SyntaxError:
        return []
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            f = node.func
            name = f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) else None
            if name:
                found.append((node.lineno, node.col_offset, name))
    return [n for *_, n in sorted(found)]
