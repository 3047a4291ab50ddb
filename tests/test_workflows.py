"""The example workflows are current and valid against the real server's node definitions."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("make_workflows", REPO / "scripts" / "make_workflows.py")
make_workflows = importlib.util.module_from_spec(spec)
spec.loader.exec_module(make_workflows)
FILES = make_workflows.render()


@pytest.mark.parametrize("fname", sorted(FILES))
def test_workflow_files_are_current(fname):
    assert (REPO / fname).read_text() == FILES[fname], "run scripts/make_workflows.py"


def test_the_templates_folder_holds_only_the_ui_workflows_with_thumbnails():
    """ComfyUI's templates browser lists every .json directly in workflows/: only UI-format graphs of the pack's
    own nodes belong there (API files opened as an empty tab with an alert; the toy demo needs nodes a plain
    install does not load), each with a .jpg thumbnail of the same name; no stale files."""
    shipped = sorted(p.name for p in (REPO / "workflows").glob("*.json"))
    assert shipped == sorted(Path(f).name for f in FILES if f.startswith("workflows/") and f.count("/") == 1)
    assert len(shipped) == 16  # one per edit for SD1.5 and SDXL alike (make_workflows.title), 3 per DiT family
    for name in shipped:
        wf = json.loads((REPO / "workflows" / name).read_text())
        assert "version" in wf and "nodes" in wf, name
        assert not any(n["type"].startswith("DragonToy_") for n in wf["nodes"]), name
        assert name.startswith("Dragon - ") and "_" not in name and len(Path(name).stem) <= 30, name  # the card shows ~30
        thumb = (REPO / "workflows" / name).with_suffix(".jpg")
        assert thumb.read_bytes()[:2] == b"\xff\xd8", f"{name}: no JPEG thumbnail"
    assert sorted(p.name for p in (REPO / "workflows" / "api").glob("*.json")) == sorted(
        Path(f).name for f in FILES if f.startswith("workflows/api/"))


def test_the_server_offers_the_templates_and_their_thumbnails(server):
    """What the frontend's templates browser asks the real server for: the list, then <name>.json and <name>.jpg."""
    import urllib.parse

    lists = server.get("/workflow_templates")
    module = "comfyui-dragondiffusion"  # the pack's folder in custom_nodes
    assert sorted(lists[module]) == sorted(Path(f).stem for f in FILES if f.startswith("workflows/") and f.count("/") == 1)
    # the toy demo is a template of the toy nodes' own folder, which the test server loads (a plain install does not)
    assert sorted(lists["dragon_toy"]) == ["Toy demo - move on the toy DiT", "Toy demo - move the painted object"]
    for name in lists[module][:2]:
        wf = server.get(f"/api/workflow_templates/{module}/{urllib.parse.quote(name)}.json")
        assert wf["nodes"], name
        assert server.get_bytes(f"/api/workflow_templates/{module}/{urllib.parse.quote(name)}.jpg")[:2] == b"\xff\xd8"


@pytest.mark.parametrize("fname", sorted(f for f in FILES if f.endswith(".api.json")))
def test_api_workflow_matches_the_node_definitions(server, fname):
    info = server.get("/object_info")
    prompt = json.loads(FILES[fname])
    for nid, node in prompt.items():
        assert node["class_type"] in info, node["class_type"]
        spec = info[node["class_type"]]["input"]
        for name, (typ, *_rest) in spec.get("required", {}).items():
            assert name in node["inputs"], f"{fname} node {nid} misses {name}"
        declared = {**spec.get("required", {}), **spec.get("optional", {})}
        for name, value in node["inputs"].items():
            assert name in declared, f"{fname} node {nid} has unknown input {name}"
            if isinstance(value, list) and len(value) == 2 and isinstance(value[0], str):
                src = prompt[value[0]]
                out_types = info[src["class_type"]]["output"]
                want = declared[name][0]
                assert out_types[value[1]] == want, f"{fname}: {name} gets {out_types[value[1]]}, wants {want}"
            elif isinstance(declared[name][0], list) and name not in make_workflows.FILE_INPUTS:
                assert value in declared[name][0], f"{fname}: {name}={value!r} not an option"


@pytest.mark.parametrize("fname", sorted(f for f in FILES if not f.endswith(".api.json")))
def test_ui_workflow_links_are_consistent(fname):
    wf = json.loads(FILES[fname])
    nodes = {n["id"]: n for n in wf["nodes"]}
    for lid, src, sslot, dst, dslot, typ in wf["links"]:
        assert lid in nodes[src]["outputs"][sslot]["links"]
        assert nodes[dst]["inputs"][dslot]["link"] == lid and nodes[dst]["inputs"][dslot]["type"] == typ


def test_landmark_point_boxes_are_labelled(server):
    """Dragon Landmarks' two JSON boxes showed no label (a multiline box shows its placeholder only when empty)."""
    req = server.get("/object_info")["DragonDiffusion_Landmarks"]["input"]["required"]
    for name in ("source_points", "target_points"):
        opts = req[name][1]
        assert opts["default"] == "" and opts["placeholder"].startswith(f"{name}: "), opts
