#!/usr/bin/env python3
"""Checks the library's layering (docs/ARCHITECTURE.md) against its imports.

Every module of src/ (one file a module; the binaries, src/main.rs and src/bin/, are left
out) belongs to one layer of LAYERS, lowest first. A module may use modules of lower layers
only: every `crate::`, `super::` and child-module path in its code (comments left out) is
an edge, and an edge to the same or a higher layer fails the check, but for the engine and
the plugins (ENGINE_FACING), which face each other. A module missing from LAYERS fails too.

Usage: ./scripts/check-layers.py        (prints the edges with --verbose)
"""

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SRC = ROOT / "src"

# Lowest first. A module's layer is that of its longest listed prefix (`store` holds
# `store::memory`), unless the module is listed itself.
LAYERS = [
    # Leaves: they use nothing of pollgate. The client is one on its own.
    ["config", "params", "timer", "panics", "metrics", "http::body", "client"],
    # The wire: identifiers, tokens and texts; what a request is read with; CORS.
    ["protocol", "http::request", "http::cors"],
    # State, users and rights, and the HTTP/1.1 of a connection.
    ["store", "auth", "conn"],
    ["http::error"],
    # The engine and the plugins face each other: the engine runs the plugins through their
    # trait (and the system plugin's `send` and `echo` through `plugins::HotTokens`, on the
    # hot path); a plugin works through its context, which reaches the engine.
    ["engine", "plugins"],
    # The shared poll (one held sync for several connectors), and what the service routes
    # to besides the endpoint.
    ["shared_poll", "http::static_files", "http::admin"],
    # The service: routing and the endpoint.
    ["http"],
    ["server"],
    # The crate root: declarations and the public re-exports.
    ["lib"],
]
# Modules of the same layer that may use each other.
ENGINE_FACING = {"engine", "plugins"}

COMMENT = re.compile(r"//[^\n]*")
STRING = re.compile(r'"(?:\\.|[^"\\])*"')
USE = re.compile(r"\buse\s+([^;]+);", re.S)
TESTS = re.compile(r"#\[cfg\(test\)\]\s*mod\s+\w+\s*\{")
INLINE = re.compile(r"\b(crate|super)((?:::[A-Za-z_][A-Za-z0-9_]*)+)")


def module_of(path: Path) -> str:
    rel = path.relative_to(SRC).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "mod":
        parts.pop()
    return "::".join(parts) if parts != ["lib"] else "lib"


def expand(tree: str) -> list[str]:
    """`a::{b, c::{d, e}}` as `a::b`, `a::c::d`, `a::c::e`."""
    tree = "".join(tree.split())
    depth, start = 0, None
    for i, ch in enumerate(tree):
        if ch == "{":
            if depth == 0:
                start = i
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                prefix, inner, rest = tree[:start], tree[start + 1 : i], tree[i + 1 :]
                out, part, d = [], "", 0
                for c in inner + ",":
                    if c == "," and d == 0:
                        if part:
                            out.extend(expand(prefix + part + rest))
                        part = ""
                        continue
                    d += c == "{"
                    d -= c == "}"
                    part += c
                return out
    return [tree.split(" as ")[0]]


def layer_of(module: str, index: dict[str, int]) -> int | None:
    parts = module.split("::")
    for n in range(len(parts), 0, -1):
        if "::".join(parts[:n]) in index:
            return index["::".join(parts[:n])]
    return None


def unit_of(module: str) -> str:
    """The module as LAYERS names it (its longest listed prefix)."""
    parts = module.split("::")
    for n in range(len(parts), 0, -1):
        name = "::".join(parts[:n])
        if any(name in layer for layer in LAYERS):
            return name
    return module


def main() -> int:
    verbose = "--verbose" in sys.argv
    files = [p for p in SRC.rglob("*.rs") if p.name != "main.rs" and "bin" not in p.relative_to(SRC).parts]
    modules = {module_of(p): p for p in files}
    index = {name: i for i, layer in enumerate(LAYERS) for name in layer}
    failures, edges = [], set()
    for module, path in sorted(modules.items()):
        if layer_of(module, index) is None:
            failures.append(f"{module}: in no layer of LAYERS")
            continue
        code = COMMENT.sub("", STRING.sub('""', path.read_text()))
        # A file's unit tests (its last item) use the module itself and test helpers.
        code = TESTS.split(code, maxsplit=1)[0]
        here = [] if module == "lib" else module.split("::")
        # `super` of a file module is its parent; of a mod.rs, the folder's parent.
        parent = here[:-1]
        targets = []
        for tree in USE.findall(code):
            for used in expand(tree.replace("pub ", "")):
                targets.append(used)
        targets += [m.group(1) + m.group(2) for m in INLINE.finditer(code)]
        # Child modules named in code (`admin::serve(…)`), not only in `use`.
        for child in {m.split("::")[len(here)] for m in modules if m.split("::")[: len(here)] == here and m != module}:
            if re.search(rf"(?<![:\w]){child}::", code):
                targets.append(child)
        for used in targets:
            segments = used.split("::")
            if segments[0] == "crate":
                absolute = segments[1:]
            elif segments[0] == "super":
                absolute = parent + segments[1:]
            elif "::".join(here + segments[:1]) in modules:
                absolute = here + segments
            else:
                continue
            # The longest prefix that is a module of src/.
            target = None
            for n in range(len(absolute), 0, -1):
                if "::".join(absolute[:n]) in modules:
                    target = "::".join(absolute[:n])
                    break
            if target is None or target == module or module == "lib":
                continue
            src_unit, dst_unit = unit_of(module), unit_of(target)
            if src_unit == dst_unit:
                continue
            # The engine faces the plugins only through their trait and context (plugins'
            # own module), never through one plugin.
            if src_unit == "engine" and target.startswith("plugins::"):
                failures.append(f"{module} -> {target}: the engine uses only `plugins` itself")
            edges.add((src_unit, dst_unit))
    for src_unit, dst_unit in sorted(edges):
        a, b = layer_of(src_unit, index), layer_of(dst_unit, index)
        if a is None or b is None:
            failures.append(f"{src_unit if a is None else dst_unit}: in no layer of LAYERS")
            continue
        same_group = {src_unit.split("::")[0], dst_unit.split("::")[0]} <= ENGINE_FACING
        ok = b < a or (a == b and same_group)
        if verbose or not ok:
            print(f"{'ok  ' if ok else 'UP  '} {src_unit} (layer {a}) -> {dst_unit} (layer {b})")
        if not ok:
            failures.append(f"{src_unit} -> {dst_unit}: not a lower layer")
    sys.stdout.flush()
    for f in failures:
        print(f"FAIL {f}", file=sys.stderr)
    if not failures:
        print(f"layers ok: {len(modules)} modules, {len(edges)} edges between layer units")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
