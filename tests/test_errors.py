"""Every refusal the nodes can raise has the form README promises: '<node>: input '<name>': <problem>. <fix>'
(no ComfyUI: the sources are read, and the error class checked)."""
from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.append(str(REPO))
from dragon_core.errors import DragonInputError  # noqa: E402

NODES = {"Dragon DDIM Invert", "Dragon Guidance Setup", "Dragon Sampler", "Dragon Cross-Branch Attention Patch",
         "Dragon Mask/Point Editor", "Dragon Landmarks"}


def _refusals():
    """(file:line, call) of every DragonInputError(...) in dragon_core/ and nodes/."""
    out = []
    for f in sorted([*(REPO / "dragon_core").glob("*.py"), *(REPO / "nodes").glob("*.py")]):
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "DragonInputError":
                out.append((f"{f.relative_to(REPO)}:{node.lineno}", node))
    return out


def _constants(f: Path) -> dict:
    """Module-level NAME = "text" assignments (NODE, SETUP, ...)."""
    out = {}
    for node in ast.parse(f.read_text()).body:
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str):
            for t in node.targets:
                if isinstance(t, ast.Name):
                    out[t.id] = node.value.value
    return out


REFUSALS = _refusals()


def test_the_walk_finds_the_refusals():
    assert len(REFUSALS) > 90  # the nodes refuse about a hundred kinds of input


@pytest.mark.parametrize("where,call", REFUSALS, ids=[w for w, _ in REFUSALS])
def test_every_refusal_names_node_input_problem_and_fix(where, call):
    args = call.args + [k.value for k in call.keywords]
    assert len(args) == 4, f"{where}: node, input, problem and fix"
    node, input_name, problem, fix = args
    consts = _constants(REPO / where.split(":")[0])
    if isinstance(node, ast.Name) and node.id in consts:
        assert consts[node.id] in NODES, where
    elif isinstance(node, ast.Constant):
        assert node.value in NODES, where
    else:  # passed through from the caller (points, landmarks helpers): the callers are walked too
        assert isinstance(node, ast.Name) and node.id == "node", where
    for part, what in ((input_name, "input"), (problem, "problem"), (fix, "fix")):
        assert not (isinstance(part, ast.Constant) and not part.value), f"{where}: empty {what}"
    if isinstance(fix, ast.Constant):
        assert fix.value[:1].isupper() and fix.value.rstrip().endswith((".", ")")), f"{where}: {fix.value!r}"


def test_the_error_refuses_to_be_made_without_a_fix():
    with pytest.raises(TypeError):
        DragonInputError("Dragon Sampler", "cfg", "is NaN.", "")
    e = DragonInputError("Dragon Sampler", "cfg", "is NaN.", "Use e.g. 4.")
    assert str(e) == "Dragon Sampler: input 'cfg': is NaN. Use e.g. 4." and (e.node, e.input_name) == ("Dragon Sampler", "cfg")
