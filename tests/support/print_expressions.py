"""Run Python read from stdin as an interactive session would, printing the value of each top-level
expression statement as one JSON line, in order (the READMEs' examples end in `.json()` calls whose
values a reader sees in the REPL; tests/e2e/test_readme_examples.py reads them from here).

    python tests/support/print_expressions.py < example.py

Standard library only: it runs in a bare subprocess, as a reader would run the example.
"""
from __future__ import annotations

import ast
import json
import sys


def main() -> int:
    tree = ast.parse(sys.stdin.read(), "<example>")
    namespace: dict = {"__name__": "__main__"}
    for node in tree.body:
        if isinstance(node, ast.Expr):
            value = eval(compile(ast.Expression(node.value), "<example>", "eval"), namespace)
            print(json.dumps(value), flush=True)
        else:
            exec(compile(ast.Module([node], type_ignores=[]), "<example>", "exec"), namespace)
    return 0


if __name__ == "__main__":
    sys.exit(main())
