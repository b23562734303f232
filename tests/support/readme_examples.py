"""The examples the READMEs give for talking to a running server (on 127.0.0.1:8080), read from
their fenced code blocks, and run against another port: curl commands from ```sh blocks, Python
from ```python blocks. Read, never copied, so a test fails when an example stops working.
"""
from __future__ import annotations

import ast
import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

DOCUMENTED_ADDRESS = re.compile(r"\b(127\.0\.0\.1|localhost):8080\b")  # `make serve`'s inference port
FENCE = re.compile(r"^```(\w*)[^\n]*\n(.*?)^```", re.MULTILINE | re.DOTALL)
PRINT_EXPRESSIONS = Path(__file__).resolve().with_name("print_expressions.py")


def fenced_blocks(markdown: str, language: str) -> list[str]:
    """The bodies of the ```<language> blocks, in order."""
    return [body for lang, body in FENCE.findall(markdown) if lang == language]


def curl_commands(markdown: str) -> list[str]:
    """Each curl command line of the ```sh blocks that talks to the documented server."""
    return [line.strip() for block in fenced_blocks(markdown, "sh") for line in block.splitlines()
            if line.strip().startswith("curl ") and DOCUMENTED_ADDRESS.search(line)]


def python_examples(markdown: str) -> list[str]:
    """Each ```python block that talks to the documented server."""
    return [block for block in fenced_blocks(markdown, "python") if DOCUMENTED_ADDRESS.search(block)]


def on_port(example: str, port: int) -> str:
    """The example with the documented server's address replaced by 127.0.0.1:<port>."""
    return DOCUMENTED_ADDRESS.sub(f"127.0.0.1:{port}", example)


def expression_count(code: str) -> int:
    """How many top-level expression statements (values a reader sees in the REPL) the code has."""
    return sum(isinstance(node, ast.Expr) for node in ast.parse(code).body)


def run_curl(command: str, cwd: Path, timeout: float = 60) -> bytes:
    """Run one curl command line (no shell; `# comments` dropped) from `cwd`; its stdout."""
    result = subprocess.run(shlex.split(command, comments=True), cwd=cwd, capture_output=True, timeout=timeout)
    assert result.returncode == 0, f"{command}: exit {result.returncode}\n{result.stderr.decode(errors='replace')}"
    return result.stdout


def run_python(code: str, cwd: Path, timeout: float = 120) -> list[object]:
    """Run the code from `cwd` with this interpreter (the venv's), as a reader would in the REPL; the
    value of each top-level expression statement, in order."""
    result = subprocess.run([sys.executable, str(PRINT_EXPRESSIONS)], input=code, cwd=cwd, capture_output=True,
                            text=True, timeout=timeout)
    assert result.returncode == 0, f"the example failed (exit {result.returncode}):\n{code}\n{result.stderr}"
    return [json.loads(line) for line in result.stdout.splitlines()]
