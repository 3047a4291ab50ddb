"""Building API-format prompts for the test server."""
from __future__ import annotations


class Graph:
    """A tiny builder in the spirit of ComfyUI's GraphBuilder: node() returns the node's id."""

    def __init__(self):
        self.nodes: dict[str, dict] = {}

    def node(self, class_type: str, **inputs) -> str:
        nid = str(len(self.nodes) + 1)
        self.nodes[nid] = {"class_type": class_type, "inputs": inputs}
        return nid

    @staticmethod
    def out(nid: str, index: int = 0) -> list:
        return [nid, index]

    def prompt(self) -> dict:
        return self.nodes
