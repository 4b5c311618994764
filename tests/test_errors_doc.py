"""docs/errors.md lists every error message kgmeta raises (its fixed text, values as placeholders)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ERRORS = {"KGMetaError", "OntologyError", "DataError", "ConfigError", "CheckpointError", "TrainingError",
          "UsageError", "_KeyedError"}


def _static_parts(node: ast.expr) -> list[str]:
    """The literal pieces of a message expression (f-string parts, concatenations)."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return [node.value]
    if isinstance(node, ast.JoinedStr):
        return [v.value for v in node.values if isinstance(v, ast.Constant) and isinstance(v.value, str)]
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        return _static_parts(node.left) + _static_parts(node.right)
    return []


def raised_messages() -> list[tuple[str, int, str]]:
    """(file, line, longest literal piece) of every ``raise <KGMetaError subclass>(message)``."""
    out = []
    for path in sorted((ROOT / "kgmeta").rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if not (isinstance(node, ast.Raise) and isinstance(node.exc, ast.Call)):
                continue
            func = node.exc.func
            name = func.id if isinstance(func, ast.Name) else getattr(func, "attr", "")
            if name not in ERRORS or not node.exc.args:
                continue
            arg = node.exc.args[-1] if name == "_KeyedError" else node.exc.args[0]
            pieces = [" ".join(p.split()) for p in _static_parts(arg)]
            pieces = [p.strip(" ;:,.()'\"") for p in pieces]
            pieces = [p for p in pieces if len(p) >= 12]
            if pieces:
                out.append((str(path.relative_to(ROOT)), node.lineno, max(pieces, key=len)))
    return out


def test_every_error_message_is_in_docs_errors_md():
    text = (ROOT / "docs" / "errors.md").read_text(encoding="utf-8")
    doc = " ".join(text.replace("\\|", "|").replace("`", "").split())  # code marks are formatting
    messages = raised_messages()
    assert len(messages) > 150  # the scan finds the raise sites
    missing = [f"{f}:{line}: {msg!r}" for f, line, msg in messages if msg.replace("`", "") not in doc]
    assert not missing, "add these messages to docs/errors.md:\n" + "\n".join(missing)
