"""Workarounds for the Python versions the grader supports (grader/compat.py)."""

from __future__ import annotations

import ast
import threading

from grader import compat


def test_ast_parsing_is_serialized_across_threads_and_stays_reentrant(monkeypatch):
    monkeypatch.setattr(ast, "parse", ast.parse)  # restored after the test
    compat.serialize_ast_parsing()
    compat.serialize_ast_parsing()  # once is enough: no second wrapper
    assert ast.parse.__wrapped__.__name__ == "parse" and not hasattr(ast.parse.__wrapped__, "__wrapped__")
    parsed = []
    with compat._AST_LOCK:  # another thread parsing: this one waits for it
        worker = threading.Thread(target=lambda: parsed.append(ast.parse("x = 1")))
        worker.start()
        worker.join(0.3)
        assert worker.is_alive() and parsed == []
        assert ast.dump(ast.parse("y = 2")).startswith("Module")  # the holder itself may parse again
    worker.join(10)
    assert len(parsed) == 1 and isinstance(parsed[0].body[0], ast.Assign)
