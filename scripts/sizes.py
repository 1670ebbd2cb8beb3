"""The size picture `make lint` prints: the largest files, classes and functions of a package.

A picture, not a gate: growth is seen while it happens. The shape aimed for is no file over
about 450 lines and no class over about 250 (docs/architecture.md); the hand-written backward
passes and the Typer signatures may stay long where splitting them would hide the equations or
the options.

    python scripts/sizes.py [PACKAGE_DIR] [--top N]
"""

from __future__ import annotations

import argparse
import ast
from pathlib import Path

FILE_LINES, CLASS_LINES = 450, 250


def measure(package: Path) -> tuple[list, list, list]:
    """(lines, name) of every file, class and function (methods included) under `package`."""
    files, classes, functions = [], [], []
    for path in sorted(package.rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        rel = path.as_posix()
        files.append((len(text.splitlines()), rel))
        for node in ast.walk(ast.parse(text)):
            size = (
                (node.end_lineno or node.lineno) - node.lineno + 1 if hasattr(node, "lineno") else 0
            )
            if isinstance(node, ast.ClassDef):
                classes.append((size, f"{rel}:{node.lineno} {node.name}"))
            elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                functions.append((size, f"{rel}:{node.lineno} {node.name}"))
    return files, classes, functions


def picture(package: Path, top: int = 5) -> str:
    files, classes, functions = measure(package)
    out = []
    for title, rows in (("files", files), ("classes", classes), ("functions", functions)):
        out.append(f"largest {title} (lines):")
        out += [f"  {n:>5}  {name}" for n, name in sorted(rows, reverse=True)[:top]]
    over_files = sum(n > FILE_LINES for n, _ in files)
    over_classes = sum(n > CLASS_LINES for n, _ in classes)
    out.append(
        f"{len(files)} files, {over_files} over {FILE_LINES} lines; "
        f"{len(classes)} classes, {over_classes} over {CLASS_LINES} lines; "
        f"{len(functions)} functions, {sum(n > 50 for n, _ in functions)} over 50 lines"
    )
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("package", nargs="?", default="nmt", type=Path)
    parser.add_argument("--top", type=int, default=5)
    args = parser.parse_args()
    print(picture(args.package, args.top))


if __name__ == "__main__":
    main()
